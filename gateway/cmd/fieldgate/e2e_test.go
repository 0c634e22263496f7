package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
)

// TestMain removes the binaries the end-to-end tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	fieldgatetest.Cleanup()
	os.Exit(code)
}

// e2e is the end-to-end setup of these tests: fieldgatetest's gateway with
// the sleeper image as fieldgate/collector-modbus:e2e and two collectors, a
// and b, running it.
type e2e struct {
	*fieldgatetest.Gateway
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
	e := &e2e{fieldgatetest.NewGateway(t, brokerOpts...)}
	e.AddImage("fieldgate/collector-modbus", "e2e", fieldgatetest.Sleeper(t))
	e.writeConfig("1s", "2s")
	return e
}

// writeConfig writes gateway.yaml with collectors a and b at these poll
// intervals.
func (e *e2e) writeConfig(pollA, pollB string) {
	e.T.Helper()
	e.WriteRaw(e.Header("") + fmt.Sprintf(e2eCollector, "a", pollA) + fmt.Sprintf(e2eCollector, "b", pollB))
}

func (e *e2e) waitRunning(what string, cond func(a, b supervisor.CollectorStatus) bool) (a, b supervisor.CollectorStatus) {
	e.T.Helper()
	testpeer.WaitFor(e.T, 60*time.Second, what, func() bool {
		a, b = e.Collector("a"), e.Collector("b")
		return a.State == supervisor.StateRunning && b.State == supervisor.StateRunning && cond(a, b)
	})
	return a, b
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
	gwStatus := testpeer.Subscribe(t, e.Broker, "fieldgate/e2e-gw/status")
	e.Start()
	a, b := e.waitRunning("both collectors running", func(a, b supervisor.CollectorStatus) bool { return true })
	if !alive(a.Pid) || !alive(b.Pid) || a.Pid == b.Pid {
		t.Fatalf("pids a=%d b=%d", a.Pid, b.Pid)
	}
	if !strings.HasPrefix(a.ImageDigest, "sha256:") {
		t.Errorf("image digest = %q", a.ImageDigest)
	}
	t.Logf("started: a pid %d, b pid %d", a.Pid, b.Pid)
	if got := e.Notified(); !strings.HasPrefix(got, "READY=1") {
		t.Errorf("systemd notification = %q, want READY=1", got)
	}

	t.Run("status command", func(t *testing.T) {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"status", "--config", e.Config}, &out, &errOut); err != nil {
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
		case m := <-testpeer.Subscribe(t, e.Broker, "fieldgate/e2e-gw/status"):
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
			err := run(context.Background(), []string{"logs", "a", "--config", e.Config, "-n", "50"}, &out, &errOut)
			return err == nil && strings.Contains(out.String(), "sleeper a started: POLL_INTERVAL=1s GATEWAY_ID=e2e-gw")
		})
	})

	t.Run("figures", func(t *testing.T) {
		pid := e.Pid()
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
		if nb := e.Collector("b"); nb.Pid != b.Pid || nb.Restarts != 0 {
			t.Errorf("b touched: %+v", nb)
		}
		resp, err := http.Get("http://" + e.Addr + "/metrics")
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
		if nb := e.Collector("b"); nb.Pid != b.Pid || !alive(b.Pid) {
			t.Errorf("b was recreated: pid %d -> %d", b.Pid, nb.Pid)
		}
		testpeer.WaitFor(t, 30*time.Second, "a's log shows the new interval", func() bool {
			var out, errOut bytes.Buffer
			run(context.Background(), []string{"logs", "a", "--config", e.Config}, &out, &errOut)
			return strings.Contains(out.String(), "POLL_INTERVAL=3s")
		})
	})

	t.Run("invalid config on reload is rejected", func(t *testing.T) {
		good, _ := os.ReadFile(e.Config)
		e.WriteRaw(strings.Replace(string(good), "poll_interval: 3s", "poll_interval: 3 seconds", 1))
		testpeer.WaitFor(t, 30*time.Second, "reload rejected", func() bool {
			return strings.Contains(e.Status().LastReloadError, `invalid duration "3 seconds"`)
		})
		// SIGHUP on the same file: rejected again.
		e.Signal(syscall.SIGHUP)
		testpeer.WaitFor(t, 30*time.Second, "second rejection", func() bool { return e.Status().ReloadsFailed >= 2 })
		if na, nb := e.Collector("a"), e.Collector("b"); na.Pid != a.Pid || nb.Pid != b.Pid || na.State != "running" || nb.State != "running" {
			t.Errorf("collectors touched: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
		e.WriteRaw(string(good))
		testpeer.WaitFor(t, 30*time.Second, "good config accepted", func() bool { return e.Status().LastReloadError == "" })
	})

	t.Run("absent image is an error for that collector only", func(t *testing.T) {
		good, _ := os.ReadFile(e.Config)
		e.WriteRaw(string(good) + strings.ReplaceAll(fmt.Sprintf(e2eCollector, "c", "1s"), "collector-modbus:e2e", "collector-modbus:absent"))
		testpeer.WaitFor(t, 30*time.Second, "c in error", func() bool {
			c := e.Collector("c")
			return c.State == supervisor.StateError && strings.Contains(c.LastError, "not found")
		})
		e.WriteRaw(string(good))
		testpeer.WaitFor(t, 30*time.Second, "c removed", func() bool { return e.Collector("c").Name == "" })
		if na, nb := e.Collector("a"), e.Collector("b"); na.Pid != a.Pid || nb.Pid != b.Pid {
			t.Errorf("collectors touched: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
	})

	t.Run("crash loop is visible and backs off", func(t *testing.T) {
		good, _ := os.ReadFile(e.Config)
		crashing := strings.NewReplacer("restart: always", "restart: on-failure",
			"env: {LOG_LEVEL: debug}", "env: {LOG_LEVEL: debug, EXIT_AFTER: 100ms}").Replace(fmt.Sprintf(e2eCollector, "c", "1s"))
		e.WriteRaw(string(good) + crashing)
		testpeer.WaitFor(t, 60*time.Second, "c in crashloop", func() bool {
			c := e.Collector("c")
			return c.State == supervisor.StateCrashLoop && c.Restarts >= 2 && c.LastExit != nil && c.LastExit.Code == 3
		})
		e.WriteRaw(string(good))
		testpeer.WaitFor(t, 30*time.Second, "c removed", func() bool { return e.Collector("c").Name == "" })
		if na, nb := e.Collector("a"), e.Collector("b"); na.Pid != a.Pid || nb.Pid != b.Pid {
			t.Errorf("collectors touched: a %d->%d, b %d->%d", a.Pid, na.Pid, b.Pid, nb.Pid)
		}
	})

	t.Run("supervisor killed and restarted adopts the collectors", func(t *testing.T) {
		e.Kill(syscall.SIGKILL)
		if !alive(a.Pid) || !alive(b.Pid) {
			t.Fatal("collectors died with the supervisor")
		}
		e.Start()
		e.Notified()
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
		if na := e.Collector("a"); na.Pid != a.Pid {
			t.Errorf("a touched: %d -> %d", a.Pid, na.Pid)
		}
	})

	t.Run("SIGTERM leaves collectors running; --stop-collectors stops them", func(t *testing.T) {
		e.Kill(syscall.SIGTERM)
		if !alive(a.Pid) || !alive(b.Pid) {
			t.Fatal("collectors stopped with the supervisor")
		}
		e.Start("--stop-collectors")
		e.Notified()
		e.waitRunning("adopted again", func(na, nb supervisor.CollectorStatus) bool { return na.Pid == a.Pid && nb.Pid == b.Pid })
		e.Kill(syscall.SIGTERM)
		testpeer.WaitFor(t, 30*time.Second, "collectors stopped", func() bool { return !alive(a.Pid) && !alive(b.Pid) })
	})
}

// BenchmarkSupervisor reports the supervisor's RSS with two collectors and,
// per iteration, the time from a SIGKILLed supervisor's restart until both
// running collectors are adopted (their tasks untouched).
func BenchmarkSupervisor(b *testing.B) {
	e := newE2E(b)
	e.Start()
	a, c := e.waitRunning("both collectors running", func(a, b supervisor.CollectorStatus) bool { return true })
	time.Sleep(2 * time.Second) // let the heap settle before sampling RSS
	rss := rssKiB(e.Pid())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e.Kill(syscall.SIGKILL)
		b.StartTimer()
		e.Start()
		na, nc := e.waitRunning("adopted", func(na, nc supervisor.CollectorStatus) bool { return na.Adopted && nc.Adopted })
		if na.Pid != a.Pid || nc.Pid != c.Pid {
			b.Fatalf("pids changed: %d->%d, %d->%d", a.Pid, na.Pid, c.Pid, nc.Pid)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(rss), "rss-KiB")
}
