package testpeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// ContainerdPeer is a private containerd daemon started by Containerd for one
// test: its own root, state and socket under a temporary directory.
type ContainerdPeer struct {
	// Address is the daemon's gRPC unix socket path.
	Address string
	// Namespace is a containerd namespace unique to this peer
	// ("fieldgate-test-<random>"): runc keeps its state under
	// /run/containerd/runc/<namespace> whatever containerd's state dir is, so
	// a shared name would let parallel or leftover runs collide.
	Namespace string
	// Snapshotter is the snapshotter to use with this daemon: "overlayfs"
	// when the kernel and file system support it, else "native".
	Snapshotter string
	// Dir is the temporary directory holding root, state, socket and log.
	Dir string
	// LogPath is the daemon's log file (its tail is logged if the test fails).
	LogPath string
}

// containerdBinary is Debian's containerd 1.6.
const containerdBinary = "/usr/bin/containerd"

// Containerd starts a private containerd (root only) and stops it when the
// test ends, after killing and deleting every container left in its
// namespace. It calls Require(t, "containerd") first, so it skips (or fails
// under FIELDGATE_REQUIRE_ALL=1) when containerd, runc or root is missing.
// The daemon has no CRI plugin and listens only on a unix socket.
func Containerd(t testing.TB) *ContainerdPeer {
	t.Helper()
	Require(t, "containerd")
	if os.Geteuid() != 0 {
		// Require normally covers this; keep the guard so a misconfigured
		// Require cannot let a non-root run go on to fail obscurely.
		t.Fatalf("containerd peer needs root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("containerd peer: runc not found: %v", err)
	}

	// os.MkdirTemp("", ...) rather than t.TempDir(): the socket path must stay
	// below the 108-byte unix socket limit, and t.TempDir embeds the test name.
	dir, err := os.MkdirTemp("", "fgctd-")
	if err != nil {
		t.Fatalf("containerd peer: %v", err)
	}
	p := &ContainerdPeer{
		Address:     filepath.Join(dir, "containerd.sock"),
		Namespace:   "fieldgate-test-" + ctrdRandomHex(6),
		Snapshotter: "overlayfs",
		Dir:         dir,
		LogPath:     filepath.Join(dir, "containerd.log"),
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(containerdConfig(dir, p.Address)), 0o600); err != nil {
		t.Fatalf("containerd peer: %v", err)
	}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatalf("containerd peer: %v", err)
	}
	cmd := exec.Command(containerdBinary, "--config", cfgPath, "--log-level", "info")
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The daemon dies with the test binary even if cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("containerd peer: start %s: %v", containerdBinary, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()

	t.Cleanup(func() {
		p.cleanup(t, cmd, exited)
	})

	client, err := p.waitServing(exited, 20*time.Second)
	if err != nil {
		t.Fatalf("containerd peer: %v\n%s", err, ctrdTailFile(p.LogPath, 30))
	}
	defer client.Close()
	snap, err := pickSnapshotter(client)
	if err != nil {
		t.Fatalf("containerd peer: %v\n%s", err, ctrdTailFile(p.LogPath, 30))
	}
	p.Snapshotter = snap
	return p
}

// containerdConfig is a version 2 config keeping every path under dir.
func containerdConfig(dir, address string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), address, address+".ttrpc", filepath.Join(dir, "opt"))
}

// waitServing polls the socket until the daemon answers, it exits, or the
// deadline passes.
func (p *ContainerdPeer) waitServing(exited <-chan struct{}, timeout time.Duration) (*containerd.Client, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if _, err := os.Stat(p.Address); err == nil {
			client, err := containerd.New(p.Address, containerd.WithTimeout(2*time.Second))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				ok, err := client.IsServing(ctx)
				cancel()
				if ok {
					return client, nil
				}
				client.Close()
				lastErr = err
			} else {
				lastErr = err
			}
		}
		select {
		case <-exited:
			return nil, errors.New("containerd exited before serving")
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd at %q not serving after %s: %v", p.Address, timeout, lastErr)
		}
	}
}

// pickSnapshotter returns "overlayfs" if that plugin initialised, else
// "native" (the daemon reports why overlayfs was skipped, e.g. the file
// system under the root dir does not support it).
func pickSnapshotter(client *containerd.Client) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.IntrospectionService().Plugins(ctx, []string{`type==io.containerd.snapshotter.v1`})
	if err != nil {
		return "", fmt.Errorf("list snapshotter plugins: %w", err)
	}
	ok := map[string]bool{}
	for _, pl := range resp.Plugins {
		ok[pl.ID] = pl.InitErr == nil
	}
	for _, name := range []string{"overlayfs", "native"} {
		if ok[name] {
			return name, nil
		}
	}
	return "", fmt.Errorf("neither overlayfs nor native snapshotter is available (plugins: %v)", ok)
}

// cleanup kills and deletes every container in the peer's namespace, stops
// the daemon (SIGTERM, SIGKILL after 10 s), checks that nothing of the run
// is left (verifyClean) and removes its directories.
func (p *ContainerdPeer) cleanup(t testing.TB, cmd *exec.Cmd, exited <-chan struct{}) {
	if t.Failed() {
		t.Logf("containerd peer log tail (%s):\n%s", p.LogPath, ctrdTailFile(p.LogPath, 40))
	}
	select {
	case <-exited:
	default:
		if err := p.removeContainers(); err != nil {
			t.Logf("containerd peer: removing leftover containers: %v", err)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	// Nothing of the run may outlive it: shims, mounts, runc state, cgroups
	// (each leak fails the test, after it is removed).
	p.verifyClean(t)
	// Anything still mounted below dir (a rootfs of a task that could not be
	// deleted) would make RemoveAll fail; detach it first.
	ctrdUnmountBelow(p.Dir)
	if err := os.RemoveAll(p.Dir); err != nil {
		t.Logf("containerd peer: remove %s: %v", p.Dir, err)
	}
}

func (p *ContainerdPeer) removeContainers() error {
	client, err := containerd.New(p.Address, containerd.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), p.Namespace), 20*time.Second)
	defer cancel()
	ctrs, err := client.Containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range ctrs {
		if task, err := c.Task(ctx, nil); err == nil {
			if st, err := task.Wait(ctx); err == nil {
				_ = task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
				select {
				case <-st:
				case <-ctx.Done():
				}
			}
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
				errs = append(errs, fmt.Errorf("delete task %q: %w", c.ID(), err))
			}
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			errs = append(errs, fmt.Errorf("delete container %q: %w", c.ID(), err))
		}
	}
	return errors.Join(errs...)
}

// ctrdUnmountBelow lazily unmounts every mount point under dir, deepest first.
func ctrdUnmountBelow(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func ctrdTailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func ctrdRandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
