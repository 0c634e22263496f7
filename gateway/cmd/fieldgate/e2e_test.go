package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldgate/firmware/ociimage"
	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
)

// e2e is one end-to-end setup: a private containerd, a broker, the fieldgate
// binary and a collector image built from testdata/sleeper.
type e2e struct {
	t      testing.TB
	dir    string // data_dir, images, config
	bin    string // fieldgate binary
	config string
	addr   string // HTTP listen
	ctrd   *testpeer.ContainerdPeer
	broker string
	brk    *testpeer.Broker // the broker at broker, to stop and restart it

	notifyPath string
	notify     *net.UnixConn // systemd's side of NOTIFY_SOCKET

	mu   sync.Mutex
	proc *exec.Cmd
	logs *testpeer.SyncBuffer
	done chan struct{}
}

var buildOnce struct {
	sync.Once
	dir, fieldgate, sleeper string
	err                     error
}

// buildBinaries builds fieldgate and the sleeper once per test binary.
func buildBinaries(t testing.TB) (fieldgate, sleeper string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fg-e2e-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.dir = dir
		buildOnce.fieldgate = filepath.Join(dir, "fieldgate")
		buildOnce.sleeper = filepath.Join(dir, "sleeper")
		for _, b := range []struct{ out, pkg string }{
			{buildOnce.fieldgate, "."},
			{buildOnce.sleeper, "./testdata/sleeper"},
		} {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildOnce.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.fieldgate, buildOnce.sleeper
}

const e2eCollector = `  - name: %s
    image: fieldgate/collector-modbus:e2e
    poll_interval: %s
    restart: always
    env: {LOG_LEVEL: debug}
    resources: {cpus: 0.5, memory: 32MiB}
    modbus:
      transport: tcp
      tcp: {address: "127.0.0.1:1502"}
      devices:
        - name: plc
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
`

// newE2E starts the peers; brokerOpts configure its mosquitto.
func newE2E(t testing.TB, brokerOpts ...testpeer.BrokerOption) *e2e {
	t.Helper()
	testpeer.Require(t, "containerd", "mosquitto")
	bin, sleeper := buildBinaries(t)
	e := &e2e{t: t, bin: bin, ctrd: testpeer.Containerd(t), brk: testpeer.StartBroker(t, brokerOpts...)}
	e.broker = e.brk.Addr
	dir, err := os.MkdirTemp("", "fg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.dir = dir
	e.addr = fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	e.config = filepath.Join(dir, "gateway.yaml")
	e.addImage("fieldgate/collector-modbus", "e2e", sleeper)
	e.writeConfig("1s", "2s")
	e.notifyPath = filepath.Join(dir, "notify.sock")
	e.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: e.notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.notify.Close() })
	t.Cleanup(func() {
		e.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("fieldgate log:\n%s", e.logs)
		}
	})
	return e
}

// addImage packs binary into an OCI archive name:tag for this host's
// platform, with the same builder as `make images`, into images_dir.
func (e *e2e) addImage(name, tag, binary string) {
	e.t.Helper()
	dir := filepath.Join(e.dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if _, err := ociimage.Build(ociimage.Config{
		Name:     name,
		Tags:     []string{tag},
		Binaries: map[string]string{"linux/" + goruntime.GOARCH: binary},
	}, filepath.Join(dir, filepath.Base(name)+"-"+tag+".tar")); err != nil {
		e.t.Fatal(err)
	}
}

// writeConfig writes gateway.yaml with collectors a and b at these poll
// intervals (atomically, as an editor saving with rename would).
func (e *e2e) writeConfig(pollA, pollB string) {
	e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `version: 1
gateway: {id: e2e-gw, data_dir: %q, listen: %q}
runtime: {address: %q, namespace: %q, snapshotter: %q}
mqtt: {broker: %q}
collectors:
`, e.dir, e.addr, e.ctrd.Address, e.ctrd.Namespace, e.ctrd.Snapshotter, e.broker)
	fmt.Fprintf(&b, e2eCollector, "a", pollA)
	fmt.Fprintf(&b, e2eCollector, "b", pollB)
	e.writeRaw(b.String())
}

func (e *e2e) writeRaw(s string) {
	e.t.Helper()
	tmp := e.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.config); err != nil {
		e.t.Fatal(err)
	}
}

// start runs `fieldgate run` and waits until /status answers.
func (e *e2e) start(extra ...string) {
	e.t.Helper()
	e.mu.Lock()
	cmd := exec.Command(e.bin, append([]string{"run", "--config", e.config, "--log-level", "debug"}, extra...)...)
	if e.logs == nil {
		e.logs = &testpeer.SyncBuffer{}
	}
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+e.notifyPath)
	if err := cmd.Start(); err != nil {
		e.mu.Unlock()
		e.t.Fatal(err)
	}
	e.proc = cmd
	done := make(chan struct{})
	e.done = done
	e.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	testpeer.WaitFor(e.t, 30*time.Second, "fieldgate /status", func() bool {
		_, _, err := fetchStatus(context.Background(), e.addr)
		return err == nil
	})
}

// kill signals the supervisor process and waits for it to exit.
func (e *e2e) kill(sig syscall.Signal) {
	e.mu.Lock()
	cmd, done := e.proc, e.done
	e.proc = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		e.t.Errorf("fieldgate did not exit on %v", sig)
	}
}

func (e *e2e) status() supervisor.Status {
	e.t.Helper()
	st, _, err := fetchStatus(context.Background(), e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *e2e) collector(name string) supervisor.CollectorStatus {
	e.t.Helper()
	for _, c := range e.status().Collectors {
		if c.Name == name {
			return c
		}
	}
	return supervisor.CollectorStatus{}
}

func (e *e2e) waitRunning(what string, cond func(a, b supervisor.CollectorStatus) bool) (a, b supervisor.CollectorStatus) {
	e.t.Helper()
	testpeer.WaitFor(e.t, 60*time.Second, what, func() bool {
		a, b = e.collector("a"), e.collector("b")
		return a.State == supervisor.StateRunning && b.State == supervisor.StateRunning && cond(a, b)
	})
	return a, b
}

// notified reads the next systemd notification.
func (e *e2e) notified() string {
	e.t.Helper()
	buf := make([]byte, 256)
	e.notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := e.notify.Read(buf)
	if err != nil {
		e.t.Fatalf("no systemd notification: %v", err)
	}
	return string(buf[:n])
}

func alive(pid uint32) bool { return pid != 0 && syscall.Kill(int(pid), 0) == nil }

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	return 0
}

// TestEndToEnd drives the fieldgate binary against a private containerd: start,
// SIGKILL of a task, a config edit, an invalid config, a supervisor kill and
// restart (adoption), logs, the MQTT gateway status, and --stop-collectors.
func TestEndToEnd(t *testing.T) {
	e := newE2E(t)
	gwStatus := testpeer.Subscribe(t, e.broker, "fieldgate/e2e-gw/status")
	e.start()
	a, b := e.waitRunning("both collectors running", func(a, b supervisor.CollectorStatus) bool { return true })
	if !alive(a.Pid) || !alive(b.Pid) || a.Pid == b.Pid {
		t.Fatalf("pids a=%d b=%d", a.Pid, b.Pid)
	}
	if !strings.HasPrefix(a.ImageDigest, "sha256:") {
		t.Errorf("image digest = %q", a.ImageDigest)
	}
	t.Logf("started: a pid %d, b pid %d", a.Pid, b.Pid)
	if got := e.notified(); !strings.HasPrefix(got, "READY=1") {
		t.Errorf("systemd notification = %q, want READY=1", got)
	}

	t.Run("status command", func(t *testing.T) {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"status", "--config", e.config}, &out, &errOut); err != nil {
			t.Fatalf("status: %v %s", err, errOut.String())
		}
		for _, want := range []string{"gateway e2e-gw", fmt.Sprint(a.Pid), fmt.Sprint(b.Pid), "running", "fieldgate/collector-modbus:e2e"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("status lacks %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("gateway status on MQTT", func(t *testing.T) {
		testpeer.WaitFor(t, 30*time.Second, "online status with both collectors", func() bool {
			select {
			case m := <-gwStatus:
				var p struct {
					State      string
					Collectors map[string]struct{ State string }
				}
				json.Unmarshal(m.Payload, &p)
				return p.State == "online" && p.Collectors["a"].State == "running" && p.Collectors["b"].State == "running"
			default:
				return false
			}
		})
		// Retained: a subscriber arriving later gets it at once.
		select {
		case m := <-testpeer.Subscribe(t, e.broker, "fieldgate/e2e-gw/status"):
			if !m.Retained || !strings.Contains(string(m.Payload), `"state":"online"`) {
				t.Errorf("retained status: %v %s", m.Retained, m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Error("no retained gateway status")
		}
	})

	t.Run("logs", func(t *testing.T) {
		testpeer.WaitFor(t, 30*time.Second, "a's log", func() bool {
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"logs", "a", "--config", e.config, "-n", "50"}, &out, &errOut)
			return err == nil && strings.Contains(out.String(), "sleeper a started: POLL_INTERVAL=1s GATEWAY_ID=e2e-gw")
		})
	})

	t.Run("figures", func(t *testing.T) {
		e.mu.Lock()
		pid := e.proc.Process.Pid
		e.mu.Unlock()
		t.Logf("FIGURE supervisor RSS with two collectors: %d KiB", rssKiB(pid))
	})

	t.Run("SIGKILL of a task is restarted by policy", func(t *testing.T) {
		if err := syscall.Kill(int(a.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		old := a.Pid
		a, _ = e.waitRunning("a restarted", func(na, nb supervisor.CollectorStatus) bool {
			return na.Restarts == 1 && na.Pid != old
		})
		if a.LastExit == nil || a.LastExit.Code != 137 {
			t.Errorf("last_exit = %+v", a.LastExit)
		}
		if nb := e.collector("b"); nb.Pid != b.Pid || nb.Restarts != 0 {
			t.Errorf("b touched: %+v", nb)
		}
		resp, err := http.Get("http://" + e.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		for _, want := range []string{`fieldgate_collector_restarts_total{collector="a"} 1`, `fieldgate_collector_up{collector="b"} 1`} {
			if !strings.Contains(body.String(), want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	t.Run("config edit recreates only the changed collector", func(t *testing.T) {
		old := a
		e.writeConfig("3s", "2s")
		a, _ = e.waitRunning("a recreated", func(na, nb supervisor.CollectorStatus) bool {
			return na.SpecHash != old.SpecHash && na.Pid != old.Pid
		})
		if nb := e.collector("b"); nb.Pid != b.Pid || !alive(b.Pid) {
			t.Errorf("b was recreated: pid %d -> %d", b.Pid, nb.Pid)
		}
		testpeer.WaitFor(t, 30*time.Second, "a's log shows the new interval", func() bool {
			var out, errOut bytes.Buffer
			run(context.Background(), []string{"logs", "a", "--config", e.config}, &out, &errOut)
			return strings.Contains(out.String(), "POLL_INTERVAL=3s")
		})
	})

	t.Run("invalid config on reload is rejected", func(t *testing.T) {
		good, _ := os.ReadFile(e.config)
		e.writeRaw(strings.Replace(string(good), "poll_interval: 3s", "poll_interval: 3 seconds", 1))
		testpeer.WaitFor(t, 30*time.Second, "reload rejected", func() bool {
			return strings.Contains(e.status().LastReloadError, `invalid duration "3 seconds"`)
		})
		// SIGHUP on the same file: rejected again.
		e.mu.Lock()
		e.proc.Process.Signal(syscall.SIGHUP)
		e.mu.Unlock()
		testpeer.WaitFor(t, 30*time.Second, "second rejection", func() bool { return e.status().ReloadsFailed >= 2 })
		if na, nb := e.collector("a"), e.collector("b"); na.Pid != a.Pid || nb.Pid != b.Pid || na.State != "running" || nb.State != "running" {
			t.Errorf("collectors touched: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
		e.writeRaw(string(good))
		testpeer.WaitFor(t, 30*time.Second, "good config accepted", func() bool { return e.status().LastReloadError == "" })
	})

	t.Run("absent image is an error for that collector only", func(t *testing.T) {
		good, _ := os.ReadFile(e.config)
		e.writeRaw(string(good) + strings.ReplaceAll(fmt.Sprintf(e2eCollector, "c", "1s"), "collector-modbus:e2e", "collector-modbus:absent"))
		testpeer.WaitFor(t, 30*time.Second, "c in error", func() bool {
			c := e.collector("c")
			return c.State == supervisor.StateError && strings.Contains(c.LastError, "not found")
		})
		e.writeRaw(string(good))
		testpeer.WaitFor(t, 30*time.Second, "c removed", func() bool { return e.collector("c").Name == "" })
		if na, nb := e.collector("a"), e.collector("b"); na.Pid != a.Pid || nb.Pid != b.Pid {
			t.Errorf("collectors touched: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
	})

	t.Run("crash loop is visible and backs off", func(t *testing.T) {
		good, _ := os.ReadFile(e.config)
		crashing := strings.NewReplacer("restart: always", "restart: on-failure",
			"env: {LOG_LEVEL: debug}", "env: {LOG_LEVEL: debug, EXIT_AFTER: 100ms}").Replace(fmt.Sprintf(e2eCollector, "c", "1s"))
		e.writeRaw(string(good) + crashing)
		testpeer.WaitFor(t, 60*time.Second, "c in crashloop", func() bool {
			c := e.collector("c")
			return c.State == supervisor.StateCrashLoop && c.Restarts >= 2 && c.LastExit != nil && c.LastExit.Code == 3
		})
		e.writeRaw(string(good))
		testpeer.WaitFor(t, 30*time.Second, "c removed", func() bool { return e.collector("c").Name == "" })
		if na, nb := e.collector("a"), e.collector("b"); na.Pid != a.Pid || nb.Pid != b.Pid {
			t.Errorf("collectors touched: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
	})

	t.Run("supervisor killed and restarted adopts the collectors", func(t *testing.T) {
		e.kill(syscall.SIGKILL)
		if !alive(a.Pid) || !alive(b.Pid) {
			t.Fatal("collectors died with the supervisor")
		}
		e.start()
		e.notified()
		na, nb := e.waitRunning("adopted", func(na, nb supervisor.CollectorStatus) bool { return na.Adopted && nb.Adopted })
		if na.Pid != a.Pid || nb.Pid != b.Pid {
			t.Errorf("pids changed: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
		// started_at of an adopted task is the task's, not the adoption's.
		if na.StartedAt == nil || a.StartedAt == nil || na.StartedAt.Sub(*a.StartedAt).Abs() > 2*time.Second {
			t.Errorf("started_at %v, before the supervisor restart %v", na.StartedAt, a.StartedAt)
		}
		// An adopted task is supervised like one the supervisor started.
		if err := syscall.Kill(int(b.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		old := b.Pid
		_, b = e.waitRunning("adopted b restarted", func(na, nb supervisor.CollectorStatus) bool {
			return nb.Restarts == 1 && nb.Pid != old
		})
		if na := e.collector("a"); na.Pid != a.Pid {
			t.Errorf("a touched: %d -> %d", a.Pid, na.Pid)
		}
	})

	t.Run("SIGTERM leaves collectors running; --stop-collectors stops them", func(t *testing.T) {
		e.kill(syscall.SIGTERM)
		if !alive(a.Pid) || !alive(b.Pid) {
			t.Fatal("collectors stopped with the supervisor")
		}
		e.start("--stop-collectors")
		e.notified()
		e.waitRunning("adopted again", func(na, nb supervisor.CollectorStatus) bool { return na.Pid == a.Pid && nb.Pid == b.Pid })
		e.kill(syscall.SIGTERM)
		testpeer.WaitFor(t, 30*time.Second, "collectors stopped", func() bool { return !alive(a.Pid) && !alive(b.Pid) })
	})
}

// BenchmarkSupervisor reports the supervisor's RSS with two collectors and,
// per iteration, the time from a SIGKILLed supervisor's restart until both
// running collectors are adopted (their tasks untouched).
func BenchmarkSupervisor(b *testing.B) {
	e := newE2E(b)
	e.start()
	a, c := e.waitRunning("both collectors running", func(a, b supervisor.CollectorStatus) bool { return true })
	time.Sleep(2 * time.Second) // let the heap settle before sampling RSS
	e.mu.Lock()
	rss := rssKiB(e.proc.Process.Pid)
	e.mu.Unlock()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e.kill(syscall.SIGKILL)
		b.StartTimer()
		e.start()
		na, nc := e.waitRunning("adopted", func(na, nc supervisor.CollectorStatus) bool { return na.Adopted && nc.Adopted })
		if na.Pid != a.Pid || nc.Pid != c.Pid {
			b.Fatalf("pids changed: %d->%d, %d->%d", a.Pid, na.Pid, c.Pid, nc.Pid)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(rss), "rss-KiB")
}
