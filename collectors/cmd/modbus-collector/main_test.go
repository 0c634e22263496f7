package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds modbus-collector once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "modbus-collector-test")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(binDir, "modbus-collector")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

type payload struct {
	Gateway   string `json:"gateway"`
	Collector string `json:"collector"`
	Device    string `json:"device"`
	Seq       uint64 `json:"seq"`
	TS        int64  `json:"ts"`
	Readings  []struct {
		Tag     string `json:"tag"`
		Value   any    `json:"value"`
		Unit    string `json:"unit"`
		Quality string `json:"quality"`
		Error   string `json:"error"`
		TS      int64  `json:"ts"`
	} `json:"readings"`
}

// TestBinaryEnvOnly starts the built binary the way a lab bench does — the
// environment and a device file, nothing else — against a real mosquitto
// and a pymodbus TCP slave, then stops it with SIGTERM.
func TestBinaryEnvOnly(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus")
	bin := buildBinary(t)
	broker := testpeer.Mosquitto(t)
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 2301, 1: 7}, Coils: map[uint16]bool{4: true}},
	}})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "collector.yaml")
	cfg := fmt.Sprintf(`transport: tcp
tcp: {address: %q}
devices:
  - name: meter1
    unit_id: 1
    tags:
      - {name: voltage, table: holding_register, address: 0, type: uint16, scale: 0.1, unit: V}
      - {name: mode, table: holding_register, address: 1, type: int16}
      - {name: running, table: coil, address: 4, type: bool}
`, slave.Addr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	data := testpeer.Subscribe(t, broker, "fieldgate/+/data/modbus/meter1")
	status := testpeer.Subscribe(t, broker, "fieldgate/+/status/modbus")

	cmd := exec.Command(bin)
	cmd.Env = []string{
		"POLL_INTERVAL=200ms",
		"MQTT_BROKER=" + broker,
		"COLLECTOR_CONFIG=" + cfgPath,
		"DATA_DIR=" + filepath.Join(dir, "data"),
	}
	var stderr testpeer.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("collector output:\n%s", stderr.String())
		}
	})

	var seqs []uint64
	deadline := time.After(20 * time.Second)
	for len(seqs) < 3 {
		select {
		case m := <-data:
			var p payload
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				t.Fatalf("payload %s: %v", m.Payload, err)
			}
			gw := strings.Split(m.Topic, "/")[1]
			if p.Gateway != gw || p.Collector != "modbus" || p.Device != "meter1" || p.TS == 0 {
				t.Errorf("payload header %+v on %s", p, m.Topic)
			}
			if len(p.Readings) != 3 {
				t.Fatalf("readings %s", m.Payload)
			}
			for i, want := range []struct {
				tag, unit string
				value     any
			}{{"voltage", "V", 230.1}, {"mode", "", 7.0}, {"running", "", true}} {
				r := p.Readings[i]
				if r.Tag != want.tag || r.Unit != want.unit || !sameJSON(r.Value, want.value) || r.Quality != "good" || r.Error != "" || r.TS == 0 {
					t.Errorf("reading %d = %+v, want %s=%v %s good", i, r, want.tag, want.value, want.unit)
				}
			}
			seqs = append(seqs, p.Seq)
		case err := <-exited:
			t.Fatalf("collector exited early: %v", err)
		case <-deadline:
			t.Fatalf("only %d data messages in 20 s", len(seqs))
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Errorf("seq %v, want 1, 2, 3", seqs)
			break
		}
	}
	waitStatus(t, status, func(st map[string]any) bool {
		devs, _ := st["devices"].(map[string]any)
		poll, _ := st["poll"].(map[string]any) // the schedule's figures
		_, hasOverruns := poll["overruns"]
		_, hasLate := poll["late_p99_ms"]
		return st["state"] == "online" && devs["meter1"] == "ok" && hasOverruns && hasLate
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15 s of SIGTERM")
	}
	waitStatus(t, status, func(st map[string]any) bool { return st["state"] == "offline" })
}

// sameJSON compares a decoded JSON value; numbers within float64 rounding
// (230.1 may arrive as 2301*0.1 = 230.10000000000002).
func sameJSON(got, want any) bool {
	g, gok := got.(float64)
	w, wok := want.(float64)
	if gok && wok {
		return math.Abs(g-w) <= 1e-9*math.Max(1, math.Abs(w))
	}
	return got == want
}

func waitStatus(t *testing.T, ch <-chan testpeer.Message, ok func(map[string]any) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			var st map[string]any
			if err := json.Unmarshal(m.Payload, &st); err != nil {
				t.Fatalf("status %s: %v", m.Payload, err)
			}
			if ok(st) {
				return
			}
		case <-deadline:
			t.Fatal("expected status message not seen within 10 s")
		}
	}
}

// TestBinaryRejectsBadConfig: a malformed device file ends the collector
// with status 2 and every problem as FILE:LINE: message.
func TestBinaryRejectsBadConfig(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "collector.yaml")
	bad := `transport: tcp
tcp: {address: "127.0.0.1:502"}
devices:
  - name: meter1
    tags:
      - {name: v, table: holding_registr, address: 0, type: uint16}
      - {name: s, table: holding_register, address: 2, type: string}
`
	if err := os.WriteFile(cfgPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"COLLECTOR_CONFIG=" + cfgPath, "DATA_DIR=" + filepath.Join(dir, "data"), "MQTT_BROKER=127.0.0.1:1"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2; output:\n%s", err, out.String())
	}
	for _, want := range []string{cfgPath + ":6:", cfgPath + ":7:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBinaryRejectsBadEnvironment: a bad variable is named, status 2.
func TestBinaryRejectsBadEnvironment(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"POLL_INTERVAL=fast", "DATA_DIR=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "POLL_INTERVAL") {
		t.Fatalf("exit %v, output %q; want status 2 naming POLL_INTERVAL", err, out)
	}
}

func TestCollectLessOften(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	if got := collectLessOften(func(k string) string { return map[string]string{"GOGC": "50"}[k] }); got != 0 {
		t.Errorf("with GOGC set: %d, want 0 (the environment decides)", got)
	}
	if got := collectLessOften(func(string) string { return "" }); got != 200 {
		t.Errorf("small heap: %d, want 200", got)
	}
	if got := debug.SetGCPercent(100); got != 200 {
		t.Errorf("GOGC in effect %d, want 200", got)
	}
}
