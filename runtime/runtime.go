// Package runtime is everything fieldgate does with containerd: importing the
// collector image archives, turning a collector into a container spec (host
// network, env, mounts, read-only rootfs, privileged, devices, limits),
// starting, stopping and adopting tasks, and keeping their logs.
//
// It drives containerd through the 1.7 Go client and works with containerd
// 1.6 daemons. All calls work in one containerd namespace, given to New.
//
// Logs: a task's stdout and stderr go to a containerd "binary" log driver —
// a process the containerd shim starts next to the task and that lives as
// long as the task, not as long as the supervisor. It is the supervisor's own
// executable run in log driver mode (see IsLogDriver and RunLogDriver), which
// writes size-bounded, rotated files (package logrotate). A FIFO read by the
// supervisor was rejected: while the supervisor is down (an upgrade, a crash)
// nobody drains the pipe, and a collector blocks on its next log write —
// data would stop with the supervisor, which the contract forbids.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/identifiers"
	"github.com/containerd/containerd/namespaces"
)

// DefaultSnapshotter is the snapshotter used unless WithSnapshotter says
// otherwise.
const DefaultSnapshotter = "overlayfs"

// Runtime talks to one containerd daemon, in one namespace.
type Runtime struct {
	client      *containerd.Client
	address     string // the daemon's socket, which names its shims' sockets
	namespace   string
	log         *slog.Logger
	snapshotter string
	logDriver   string
	logMaxBytes int64
	logFiles    int
	private     string // WithPrivateDir
}

// Option configures a Runtime.
type Option func(*Runtime)

// WithSnapshotter selects the containerd snapshotter (default "overlayfs";
// "native" where the file system cannot do overlays).
func WithSnapshotter(name string) Option { return func(r *Runtime) { r.snapshotter = name } }

// WithLogDriver sets the executable the containerd shim runs as the tasks'
// log driver (default: this process's own executable, os.Executable). Its
// main must call IsLogDriver/RunLogDriver first thing.
func WithLogDriver(path string) Option { return func(r *Runtime) { r.logDriver = path } }

// WithLogRotation bounds each collector's log: files of at most maxBytes
// (default 1 MiB), keeping files rotated ones (default 3).
func WithLogRotation(maxBytes int64, files int) Option {
	return func(r *Runtime) { r.logMaxBytes, r.logFiles = maxBytes, files }
}

// New connects to the containerd socket at address and checks that it
// answers. namespace is the containerd namespace for every call (the
// contract's default is "fieldgate").
func New(address, namespace string, log *slog.Logger, opts ...Option) (*Runtime, error) {
	if address == "" {
		return nil, errors.New("containerd address is empty")
	}
	if err := identifiers.Validate(namespace); err != nil {
		return nil, fmt.Errorf("containerd namespace %q: %w", namespace, err)
	}
	if log == nil {
		return nil, errors.New("runtime: nil logger")
	}
	r := &Runtime{address: address, namespace: namespace, log: log, snapshotter: DefaultSnapshotter}
	for _, o := range opts {
		o(r)
	}
	if r.logMaxBytes < 0 || r.logFiles < 0 {
		return nil, fmt.Errorf("log rotation: max bytes %d and files %d must not be negative", r.logMaxBytes, r.logFiles)
	}
	if r.snapshotter == "" {
		return nil, errors.New("snapshotter name is empty")
	}
	if r.logDriver == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("log driver: own executable: %w", err)
		}
		r.logDriver = exe
	}
	if st, err := os.Stat(r.logDriver); err != nil {
		return nil, fmt.Errorf("log driver %q: %w", r.logDriver, err)
	} else if st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("log driver %q is not executable", r.logDriver)
	}

	client, err := containerd.New(address,
		containerd.WithDefaultNamespace(namespace),
		containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %q: %w", address, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Version(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("containerd at %q does not answer: %w", address, err)
	}
	r.client = client
	return r, nil
}

// Close closes the connection. Running tasks are not touched.
func (r *Runtime) Close() error { return r.client.Close() }

// Namespace is the containerd namespace this Runtime works in.
func (r *Runtime) Namespace() string { return r.namespace }

// ctx adds the namespace to a caller's context.
func (r *Runtime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.namespace)
}

// Version is the daemon's version (e.g. "1.6.20~ds1").
func (r *Runtime) Version(ctx context.Context) (string, error) {
	v, err := r.client.Version(r.ctx(ctx))
	if err != nil {
		return "", fmt.Errorf("containerd version: %w", err)
	}
	return v.Version, nil
}
