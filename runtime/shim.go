package runtime

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
)

// shimSocketDir is where containerd's runtime v2 puts the shims' sockets,
// whatever its state dir (containerd's defaults.DefaultStateDir + "/s").
const shimSocketDir = "/run/containerd/s"

// shimDialTimeout bounds connecting to a shim's socket.
const shimDialTimeout = time.Second

// shimSocket is the socket of the shim serving container id, computed as
// containerd's runtime v2 does (shim.SocketAddress: the SHA-256 of the
// daemon's address, the namespace and the id).
func (r *Runtime) shimSocket(id string) string {
	sum := sha256.Sum256([]byte(filepath.Join(r.address, r.namespace, id)))
	return filepath.Join(shimSocketDir, fmt.Sprintf("%x", sum))
}

// reapShim shuts down a shim still serving container id after containerd
// forgot its task. containerd 1.6 removes a task from its list before it
// tells the shim to exit; when the caller of Delete dies in between (a
// supervisor killed half-way through removing a collector), the shim is left
// running with nothing to serve, and nothing ever stops it once the
// container is deleted (containerd issue 11392). Call it only when containerd
// reports no task for id: it deletes the shim's task, if the shim still has
// one, and asks it to shut down. No shim listening is no error.
func (r *Runtime) reapShim(ctx context.Context, id string) error {
	sock := r.shimSocket(id)
	if _, err := os.Lstat(sock); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	conn, err := net.DialTimeout("unix", sock, shimDialTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(sock) // a dead shim's socket
			return nil
		}
		return fmt.Errorf("container %q: leftover shim at %s: %w", id, sock, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(r.ctx(ctx), killWait)
	defer cancel()
	tasks := taskapi.NewTaskClient(client)
	// The shim may still hold the task containerd forgot: delete it first,
	// or Shutdown keeps the shim for it. Errors here mean there is none.
	if _, err := tasks.Delete(ctx, &taskapi.DeleteRequest{ID: id}); err != nil {
		r.log.Debug("leftover shim: delete task", "container", id, "err", err)
	}
	if _, err := tasks.Shutdown(ctx, &taskapi.ShutdownRequest{ID: id}); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		return fmt.Errorf("container %q: shut down leftover shim: %w", id, err)
	}
	r.log.Warn("leftover shim shut down", "container", id, "socket", sock)
	return nil
}
