package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
	fgruntime "fieldgate/runtime"
)

// statusWatch polls /status every 100 ms until stopped and records the
// slowest answer and every failure (a 2 s client timeout).
type statusWatch struct {
	mu      sync.Mutex
	slowest time.Duration
	fails   []string
	bodies  [][]byte
	stop    chan struct{}
	done    chan struct{}
}

func watchStatus(addr string) *statusWatch {
	w := &statusWatch{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			t0 := time.Now()
			resp, err := client.Get("http://" + addr + "/status")
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			d := time.Since(t0)
			w.mu.Lock()
			if d > w.slowest {
				w.slowest = d
			}
			if err != nil {
				w.fails = append(w.fails, err.Error())
			} else {
				w.bodies = append(w.bodies, body)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *statusWatch) finish() (time.Duration, []string, [][]byte) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.slowest, w.fails, w.bodies
}

// TestHostileDataDir acts, from the host, as compromised collectors would
// from inside their containers — one not privileged (a) and one privileged
// (b): every log file a collector can reach becomes a link to a canary file
// (a host file), status.json becomes a FIFO, then a link to /dev/zero, then a
// link to a host JSON file, and the tasks are killed and recreated. The
// canary must be unchanged and never shown, /status must answer within 2 s
// throughout, and the collectors must come back.
func TestHostileDataDir(t *testing.T) {
	e := newE2E(t)
	hostile := strings.Replace(fmt.Sprintf(e2eCollector, "b", "2s"), "restart: always", "restart: always\n    privileged: true", 1)
	conf := func(pollA string) string {
		return e.Header("") + fmt.Sprintf(e2eCollector, "a", pollA) + hostile
	}
	e.WriteRaw(conf("1s"))
	e.Start()
	a, b := e.waitRunning("both collectors running", func(a, b supervisor.CollectorStatus) bool { return true })

	canaryDir := t.TempDir()
	canary := filepath.Join(canaryDir, "canary")
	const canaryText = "CANARY-b5d1f0 host file nobody may write\n"
	if err := os.WriteFile(canary, []byte(canaryText), 0o644); err != nil {
		t.Fatal(err)
	}
	hostJSON := filepath.Join(canaryDir, "host.json")
	if err := os.WriteFile(hostJSON, []byte(`{"canary":"CANARY-json-7c1e"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	watch := watchStatus(e.Addr)
	defer func() {
		if watch != nil {
			watch.finish()
		}
	}()

	logsOf := func(name string) string {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"logs", name, "--config", e.Config, "-n", "1000"}, &out, &errOut); err != nil {
			t.Fatalf("fieldgate logs %s: %v %s", name, err, errOut.String())
		}
		return out.String()
	}
	for _, name := range []string{"a", "b"} {
		testpeer.WaitFor(t, 30*time.Second, name+"'s first log line", func() bool {
			return strings.Count(logsOf(name), "sleeper "+name+" started") == 1
		})
	}

	// The data dirs, as the collectors see them (DATA_DIR).
	plant := func(name string, target func(p string) error) {
		t.Helper()
		p := filepath.Join(e.Dir, "collectors", name, "status.json")
		os.RemoveAll(p)
		if err := target(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"a", "b"} {
		data := filepath.Join(e.Dir, "collectors", name)
		logs := filepath.Join(data, "logs")
		if err := os.MkdirAll(logs, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"collector.log", "collector.log.1", "collector.log.2", "collector.log.3"} {
			if err := os.Symlink(canary, filepath.Join(logs, f)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(canary, filepath.Join(data, "collector.yaml")); err != nil {
			t.Fatal(err)
		}
		plant(name, func(p string) error { return syscall.Mkfifo(p, 0o644) })
	}
	kill := func(c supervisor.CollectorStatus, restarts int) supervisor.CollectorStatus {
		t.Helper()
		if err := syscall.Kill(int(c.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var got supervisor.CollectorStatus
		testpeer.WaitFor(t, 60*time.Second, c.Name+" restarted", func() bool {
			got = e.Collector(c.Name)
			return got.State == supervisor.StateRunning && got.Restarts == restarts && got.Pid != c.Pid
		})
		return got
	}
	a, b = kill(a, 1), kill(b, 1)

	for _, name := range []string{"a", "b"} {
		plant(name, func(p string) error { return os.Symlink("/dev/zero", p) })
	}
	a, b = kill(a, 2), kill(b, 2)
	for _, name := range []string{"a", "b"} {
		plant(name, func(p string) error { return os.Symlink(hostJSON, p) })
	}
	// A recreation re-owns the data dir: through none of the links.
	old := a
	e.WriteRaw(conf("3s"))
	a, _ = e.waitRunning("a recreated", func(na, nb supervisor.CollectorStatus) bool {
		return na.SpecHash != old.SpecHash && na.Pid != old.Pid
	})
	b = kill(b, 3)
	for _, name := range []string{"a", "b"} {
		testpeer.WaitFor(t, 30*time.Second, name+"'s restarts in its log", func() bool {
			return strings.Count(logsOf(name), "sleeper "+name+" started") >= 3
		})
	}

	slowest, fails, bodies := watch.finish()
	watch = nil
	if len(fails) > 0 || slowest > 2*time.Second {
		t.Errorf("/status: slowest answer %v, %d failures (first: %v)", slowest, len(fails), fails)
	}
	t.Logf("FIGURE /status under a hostile data dir: %d answers, slowest %v", len(bodies), slowest.Round(time.Millisecond))
	for _, body := range bodies {
		if bytes.Contains(body, []byte("CANARY")) {
			t.Fatalf("/status shows a host file: %s", body)
		}
	}
	if got, err := os.ReadFile(canary); err != nil || string(got) != canaryText {
		t.Errorf("canary changed: %q, %v", got, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(canary, &st); err != nil || st.Uid != 0 || st.Mode&0o777 != 0o644 {
		t.Errorf("canary re-owned or re-moded: uid %d mode %#o, %v", st.Uid, st.Mode&0o777, err)
	}
	for _, name := range []string{"a", "b"} {
		out := logsOf(name)
		if strings.Contains(out, "CANARY") {
			t.Errorf("fieldgate logs %s prints the canary:\n%s", name, out)
		}
		// The logs themselves live where no container writes.
		logDir := filepath.Join(e.Dir, "logs", name)
		if st, err := os.Stat(logDir); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", logDir, st, err)
		}
		if st, err := os.Lstat(filepath.Join(logDir, "collector.log")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
			t.Errorf("%s/collector.log: %v, %v; want a 0600 file", logDir, st, err)
		}
		if got := strings.Count(e.Logs(), `collector=`+name+` file=status.json problem=link`); got != 1 {
			t.Errorf("supervisor logged %d link warnings for %s, want 1", got, name)
		}
	}
	// a's data dir is its own user's; b, privileged, runs as root.
	for name, uid := range map[string]uint32{"a": fgruntime.DefaultUser("a").UID, "b": 0} {
		data := filepath.Join(e.Dir, "collectors", name)
		if err := syscall.Stat(data, &st); err != nil || st.Uid != uid || st.Mode&0o777 != 0o700 {
			t.Errorf("%s: owner %d mode %#o (%v), want %d and 0700", data, st.Uid, st.Mode&0o777, err, uid)
		}
	}
	if a.State != supervisor.StateRunning || b.State != supervisor.StateRunning {
		t.Errorf("collectors after the attack: a %s, b %s", a.State, b.State)
	}
}
