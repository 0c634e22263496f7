package watch_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// waitLong bounds every wait on a real peer: the machine may be loaded.
const waitLong = 90 * time.Second

// build compiles the fieldgate commands the test runs into dir.
func build(t *testing.T, dir string, pkgs ...string) {
	t.Helper()
	args := append([]string{"build", "-o", dir + "/"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
	}
}

// tmuxSession is a detached tmux session on a private server socket.
type tmuxSession struct {
	t      *testing.T
	socket string
	name   string
}

func newTmux(t *testing.T, dir string, width, height int, command ...string) *tmuxSession {
	t.Helper()
	s := &tmuxSession{t: t, socket: filepath.Join(dir, "tmux.sock"), name: "watch"}
	args := append([]string{"new-session", "-d", "-s", s.name, "-x", fmt.Sprint(width), "-y", fmt.Sprint(height)}, command...)
	if out, err := s.cmd(args...).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = s.cmd("kill-server").Run() })
	return s
}

func (s *tmuxSession) cmd(args ...string) *exec.Cmd {
	return exec.Command("tmux", append([]string{"-S", s.socket}, args...)...)
}

// capture returns the pane's screen as text.
func (s *tmuxSession) capture() string {
	out, err := s.cmd("capture-pane", "-p", "-t", s.name).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func (s *tmuxSession) keys(keys ...string) {
	s.t.Helper()
	if out, err := s.cmd(append([]string{"send-keys", "-t", s.name}, keys...)...).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys %q: %v\n%s", keys, err, out)
	}
}

// waitScreen waits until cond holds for the captured screen and returns it.
func (s *tmuxSession) waitScreen(what string, cond func(string) bool) string {
	s.t.Helper()
	var screen string
	deadline := time.Now().Add(waitLong)
	for {
		screen = s.capture()
		if cond(screen) {
			return screen
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %v waiting for %s; screen:\n%s", waitLong, what, screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rowValue returns the VALUE column of the row of device and tag.
func rowValue(screen, device, tag string) string {
	re := regexp.MustCompile(`(?m)^modbus-a\s+` + regexp.QuoteMeta(device) + `\s+` + regexp.QuoteMeta(tag) + `\s+(\S+)`)
	if m := re.FindStringSubmatch(screen); m != nil {
		return m[1]
	}
	return ""
}

// TestWatchTmux runs `fieldgate watch` in a real terminal (tmux) against a
// real mosquitto, devsim serving an Eastron SDM120 on Modbus TCP and the
// modbus collector polling it plus a unit that never answers: the screen
// shows values changing, the bad readings with their error, the collector's
// state, filtering, the collector going offline, and q quitting.
func TestWatchTmux(t *testing.T) {
	testpeer.Require(t, "mosquitto", "tmux")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build(t, bin, "fieldgate/gateway/cmd/fieldgate", "fieldgate/devices/cmd/devsim", "fieldgate/collectors/cmd/modbus-collector")
	broker := testpeer.Mosquitto(t)

	port := testpeer.FreePort(t)
	sim := testpeer.Start(t, filepath.Join(bin, "devsim"), "modbus", "--tcp", fmt.Sprintf("127.0.0.1:%d", port),
		"--unit", "1=eastron-sdm120", "--silent-unit", "2")
	testpeer.WaitFor(t, waitLong, "devsim to listen", func() bool {
		return exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)).Run() == nil
	})
	_ = sim

	collectorCfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(collectorCfg, []byte(fmt.Sprintf(`transport: tcp
tcp: {address: "127.0.0.1:%d"}
timeout: 200ms
backoff: {initial: 500ms, max: 1s}
devices:
  - {name: meter1, unit_id: 1, profile: eastron-sdm120}
  - name: meter2
    unit_id: 2
    tags: [{name: voltage, table: input_register, address: 0, type: float32, unit: V}]
`, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	collector := exec.Command(filepath.Join(bin, "modbus-collector"))
	collector.Env = append(os.Environ(), "POLL_INTERVAL=500ms", "MQTT_BROKER=tcp://"+broker, "GATEWAY_ID=gw1",
		"COLLECTOR_NAME=modbus-a", "COLLECTOR_CONFIG="+collectorCfg, "DATA_DIR="+filepath.Join(dir, "data"), "LOG_LEVEL=warn")
	collectorLog := &testpeer.SyncBuffer{}
	collector.Stdout, collector.Stderr = collectorLog, collectorLog
	if err := collector.Start(); err != nil {
		t.Fatal(err)
	}
	collectorDone := make(chan struct{})
	go func() { _ = collector.Wait(); close(collectorDone) }()
	t.Cleanup(func() {
		_ = collector.Process.Kill()
		<-collectorDone
		if t.Failed() {
			t.Logf("collector log:\n%s", collectorLog.String())
		}
	})

	// The supervisor's retained gateway status, as fieldgate run publishes it.
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strings.Split(broker, ":")[1], "-r", "-q", "1",
		"-t", "fieldgate/gw1/status",
		"-m", `{"state":"online","ts":1,"version":"test","collectors":{"modbus-a":{"state":"running","restarts":3,"image_digest":"sha256:0"}}}`).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}

	tm := newTmux(t, dir, 160, 45, filepath.Join(bin, "fieldgate"), "watch", "--broker", "tcp://"+broker, "--gateway", "gw1")

	// Values, units and the collector's states.
	screen := tm.waitScreen("meter1's readings and the collector states", func(s string) bool {
		return rowValue(s, "meter1", "voltage") != "" && rowValue(s, "meter2", "voltage") != "" &&
			regexp.MustCompile(`(?m)^modbus-a\s+running\s+3\s+\d+\s+online\s+1/2 ok; meter2 error`).MatchString(s)
	})
	for _, want := range []string{"gateway gw1 online (fieldgate test)", "connected", "COLLECTOR", "QUALITY"} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q:\n%s", want, screen)
		}
	}
	if !regexp.MustCompile(`(?m)^modbus-a\s+meter1\s+voltage\s+[\d.]+\s+V\s+good\s`).MatchString(screen) {
		t.Errorf("meter1 voltage is not a good reading in volts:\n%s", screen)
	}
	// The silent unit: bad, no value, its error shown.
	if !regexp.MustCompile(`(?m)^modbus-a\s+meter2\s+voltage\s+—\s+V\s+bad\s+\S+\s+.*timeout`).MatchString(screen) {
		t.Errorf("meter2 is not shown bad with its timeout:\n%s", screen)
	}

	// Values change in place.
	first := rowValue(screen, "meter1", "voltage")
	tm.waitScreen("meter1 voltage to change from "+first, func(s string) bool {
		v := rowValue(s, "meter1", "voltage")
		return v != "" && v != first
	})

	// Filtering: only meter2's row is left.
	tm.keys("/", "d:meter2", "Enter")
	screen = tm.waitScreen("the filter d:meter2", func(s string) bool {
		return strings.Contains(s, "filter /d:meter2") && strings.Contains(s, "1 of ")
	})
	if rowValue(screen, "meter1", "voltage") != "" || rowValue(screen, "meter2", "voltage") == "" {
		t.Errorf("filter d:meter2 shows the wrong rows:\n%s", screen)
	}
	tm.keys("Escape")
	tm.waitScreen("the filter cleared", func(s string) bool {
		return rowValue(s, "meter1", "voltage") != "" && !strings.Contains(s, "filter /")
	})

	// The collector dies: its will marks it offline, and so its rows.
	_ = collector.Process.Kill()
	<-collectorDone
	tm.waitScreen("the collector offline", func(s string) bool {
		return regexp.MustCompile(`(?m)^modbus-a\s+running\s+3\s+\d+\s+offline`).MatchString(s) &&
			regexp.MustCompile(`(?m)^modbus-a\s+meter1\s+voltage\s.*offline`).MatchString(s)
	})

	// q quits: the pane's program ends and with it the session.
	tm.keys("q")
	testpeer.WaitFor(t, waitLong, "fieldgate watch to quit on q", func() bool {
		return tm.cmd("has-session", "-t", tm.name).Run() != nil
	})
}
