package fieldgatetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/httpapi"
	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
)

// GatewayID is the gateway id of every Gateway's config (topics
// fieldgate/e2e-gw/…).
const GatewayID = "e2e-gw"

// Gateway is one end-to-end setup: a private containerd, a broker, the
// fieldgate binary, its data dir (which holds images_dir and gateway.yaml)
// and a socket standing in for systemd's NOTIFY_SOCKET.
type Gateway struct {
	T      testing.TB
	Dir    string // gateway.data_dir; images in Dir/images, config in Config
	Bin    string // the fieldgate binary
	Config string
	Addr   string // gateway.listen
	Ctrd   *testpeer.ContainerdPeer
	Broker string           // "127.0.0.1:PORT"
	Brk    *testpeer.Broker // to stop and restart the broker
	Notify *net.UnixConn    // systemd's side of NOTIFY_SOCKET

	notifyPath string
	mu         sync.Mutex
	proc       *exec.Cmd
	logs       *testpeer.SyncBuffer
	done       chan struct{}
}

// NewGateway starts containerd and mosquitto (brokerOpts configure it) and
// prepares the data dir; it writes no config (see Header, WriteRaw) and
// starts no fieldgate (Start). Everything stops when t ends.
func NewGateway(t testing.TB, brokerOpts ...testpeer.BrokerOption) *Gateway {
	t.Helper()
	testpeer.Require(t, "containerd", "mosquitto")
	g := &Gateway{T: t}
	// Registered first, so it runs last: after the peers' cleanups, which
	// can still fail the test (something of the run left behind).
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fieldgate log:\n%s", g.Logs())
		}
	})
	g.Bin, g.Ctrd, g.Brk = Fieldgate(t), testpeer.Containerd(t), testpeer.StartBroker(t, brokerOpts...)
	g.Broker = g.Brk.Addr
	dir, err := os.MkdirTemp("", "fg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	g.Dir = dir
	g.Addr = fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	g.Config = filepath.Join(dir, "gateway.yaml")
	g.notifyPath = filepath.Join(dir, "notify.sock")
	g.Notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: g.notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Notify.Close() })
	t.Cleanup(func() { g.Kill(syscall.SIGKILL) })
	return g
}

// ImagesDir is runtime.images_dir.
func (g *Gateway) ImagesDir() string { return filepath.Join(g.Dir, "images") }

// AddImage packs binary into images_dir as name:tag (archive
// NAME-TAG.tar).
func (g *Gateway) AddImage(name, tag, binary string) {
	g.T.Helper()
	g.AddArchive(filepath.Base(name)+"-"+tag+".tar", name, binary, tag)
}

// AddArchive writes images_dir/file holding binary as name with tags and
// returns the image's digest. Writing over an archive is what installing a
// new bundle does.
func (g *Gateway) AddArchive(file, name, binary string, tags ...string) string {
	g.T.Helper()
	return ImageArchive(g.T, filepath.Join(g.ImagesDir(), file), name, binary, tags...)
}

// Header is gateway.yaml up to `collectors:`, pointing at this setup's
// containerd, broker and address; mqttExtra adds keys to mqtt: (", username: gw").
func (g *Gateway) Header(mqttExtra string) string {
	return fmt.Sprintf(`version: 1
gateway: {id: %s, data_dir: %q, listen: %q}
runtime: {address: %q, namespace: %q, snapshotter: %q}
mqtt: {broker: %q%s}
collectors:
`, GatewayID, g.Dir, g.Addr, g.Ctrd.Address, g.Ctrd.Namespace, g.Ctrd.Snapshotter, g.Broker, mqttExtra)
}

// WriteRaw writes gateway.yaml atomically, as an editor saving with rename
// would.
func (g *Gateway) WriteRaw(s string) {
	g.T.Helper()
	tmp := g.Config + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		g.T.Fatal(err)
	}
	if err := os.Rename(tmp, g.Config); err != nil {
		g.T.Fatal(err)
	}
}

// Start runs `fieldgate run` (extra flags appended) and waits until /status
// answers.
func (g *Gateway) Start(extra ...string) {
	g.T.Helper()
	g.mu.Lock()
	cmd := exec.Command(g.Bin, append([]string{"run", "--config", g.Config, "--log-level", "debug"}, extra...)...)
	if g.logs == nil {
		g.logs = &testpeer.SyncBuffer{}
	}
	cmd.Stdout, cmd.Stderr = g.logs, g.logs
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+g.notifyPath)
	if err := cmd.Start(); err != nil {
		g.mu.Unlock()
		g.T.Fatal(err)
	}
	g.proc = cmd
	done := make(chan struct{})
	g.done = done
	g.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	testpeer.WaitFor(g.T, 30*time.Second, "fieldgate /status", func() bool {
		_, _, err := FetchStatus(context.Background(), g.Addr)
		return err == nil
	})
}

// Run runs a fieldgate command to completion (`fieldgate stop NAME
// --config …`) and returns its combined output.
func (g *Gateway) Run(args ...string) (string, error) {
	out, err := exec.Command(g.Bin, args...).CombinedOutput()
	return string(out), err
}

// Kill signals the supervisor and waits (60 s at most) for it to exit.
func (g *Gateway) Kill(sig syscall.Signal) {
	g.mu.Lock()
	cmd, done := g.proc, g.done
	g.proc = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		g.T.Errorf("fieldgate did not exit on %v", sig)
	}
}

// Signal sends sig to the running supervisor (SIGHUP) without waiting.
func (g *Gateway) Signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc != nil {
		g.proc.Process.Signal(sig)
	}
}

// Pid is the running supervisor's pid (0 if none).
func (g *Gateway) Pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc == nil {
		return 0
	}
	return g.proc.Process.Pid
}

// Logs is everything the supervisor processes of this setup logged.
func (g *Gateway) Logs() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.logs == nil {
		return ""
	}
	return g.logs.String()
}

// Status is the supervisor's /status; an error fails the test.
func (g *Gateway) Status() supervisor.Status {
	g.T.Helper()
	st, _, err := FetchStatus(context.Background(), g.Addr)
	if err != nil {
		g.T.Fatal(err)
	}
	return st
}

// Collector is collector name's entry in /status (zero if absent).
func (g *Gateway) Collector(name string) supervisor.CollectorStatus {
	g.T.Helper()
	for _, c := range g.Status().Collectors {
		if c.Name == name {
			return c
		}
	}
	return supervisor.CollectorStatus{}
}

// WaitCollector waits until collector name is running and cond holds.
func (g *Gateway) WaitCollector(name, what string, timeout time.Duration, cond func(supervisor.CollectorStatus) bool) supervisor.CollectorStatus {
	g.T.Helper()
	var c supervisor.CollectorStatus
	testpeer.WaitFor(g.T, timeout, what, func() bool {
		st, _, err := FetchStatus(context.Background(), g.Addr)
		if err != nil {
			return false
		}
		for _, c = range st.Collectors {
			if c.Name == name {
				return c.State == supervisor.StateRunning && cond(c)
			}
		}
		return false
	})
	return c
}

// Notified reads the next systemd notification (30 s at most).
func (g *Gateway) Notified() string {
	g.T.Helper()
	buf := make([]byte, 256)
	g.Notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := g.Notify.Read(buf)
	if err != nil {
		g.T.Fatalf("no systemd notification: %v", err)
	}
	return string(buf[:n])
}

// DrainNotify discards the systemd notifications, for tests that do not
// check them, so the socket never fills.
func (g *Gateway) DrainNotify() {
	go func() {
		buf := make([]byte, 256)
		for {
			if _, err := g.Notify.Read(buf); err != nil {
				return
			}
		}
	}()
}

// Use points the setup at subtest t until the returned func runs.
func (g *Gateway) Use(t testing.TB) func() {
	old := g.T
	g.T = t
	return func() { g.T = old }
}

// FetchStatus reads a supervisor's /status at addr.
func FetchStatus(ctx context.Context, addr string) (supervisor.Status, []byte, error) {
	return httpapi.FetchStatus(ctx, addr)
}

// TaskRunning reports whether pid exists and is not a zombie (a task whose
// shim was killed is reparented and may wait a while to be reaped).
func TaskRunning(pid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}
