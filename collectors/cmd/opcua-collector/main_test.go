package main

import (
	"bytes"
	"context"
	"encoding/json"
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

	"fieldgate/devices/devsim/opcuasim"
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

// buildBinary builds opcua-collector once per test run.
func buildBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "opcua-collector-test")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(binDir, "opcua-collector")
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

// startSim serves devsim opcua in the test process.
func startSim(t *testing.T) *opcuasim.Sim {
	t.Helper()
	sim, err := opcuasim.New(opcuasim.Config{Port: testpeer.FreePort(t), Interval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// Run listens asynchronously; browse does not retry, so wait for it.
	addr := strings.TrimPrefix(sim.Endpoint(), "opc.tcp://")
	testpeer.WaitFor(t, 30*time.Second, "devsim opcua listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return sim
}

type payload struct {
	Gateway   string `json:"gateway"`
	Collector string `json:"collector"`
	Device    string `json:"device"`
	Seq       uint64 `json:"seq"`
	Readings  []struct {
		Tag     string `json:"tag"`
		Value   any    `json:"value"`
		Quality string `json:"quality"`
	} `json:"readings"`
}

// TestBinary runs the built collector against devsim opcua and a real
// mosquitto, checks the data and status messages, and stops it with SIGTERM.
func TestBinary(t *testing.T) {
	testpeer.Require(t, "mosquitto")
	bin := buildBinary(t)
	broker := testpeer.Mosquitto(t)
	sim := startSim(t)
	dir := t.TempDir()
	cfg := "endpoint: opc.tcp://wrong:1\nsecurity: {policy: None, mode: None}\nnodes:\n" +
		"  - {device: meter1, name: voltage, node_id: \"ns=1;s=meter1.voltage_l1\", unit: V}\n" +
		"  - {device: drive1, name: ghost, node_id: \"ns=1;s=drive1.nothing\"}\n"
	for _, id := range sim.NodeIDs() {
		if strings.HasPrefix(id, "ns=1;s=drive1.") {
			cfg += fmt.Sprintf("  - {device: drive1, name: %s, node_id: %q}\n", strings.TrimPrefix(id, "ns=1;s=drive1."), id)
		}
	}
	cfgPath := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfgPath, []byte("opcua:\n"+indent(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	data := testpeer.Subscribe(t, broker, "fieldgate/gw1/data/opcua-test/#")
	status := testpeer.Subscribe(t, broker, "fieldgate/gw1/status/opcua-test")

	cmd := exec.Command(bin)
	cmd.Env = []string{
		"MQTT_BROKER=" + broker, "GATEWAY_ID=gw1", "COLLECTOR_NAME=opcua-test", "POLL_INTERVAL=500ms",
		"COLLECTOR_CONFIG=" + cfgPath, "DATA_DIR=" + filepath.Join(dir, "data"), "LOG_LEVEL=debug",
		// The file's endpoint is wrong on purpose: the environment wins.
		"OPCUA_ENDPOINT=" + sim.Endpoint(),
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("collector output:\n%s", out.String())
		}
	}()

	seen := map[string]bool{}
	var lastSeq uint64
	deadline := time.After(60 * time.Second)
	for !(seen["meter1/voltage"] && seen["drive1/ghost"] && seen["drive1/good"]) {
		select {
		case m := <-data:
			var p payload
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				t.Fatalf("payload %s: %v", m.Payload, err)
			}
			if p.Gateway != "gw1" || p.Collector != "opcua-test" || !strings.HasSuffix(m.Topic, "/"+p.Device) {
				t.Errorf("message on %s: %s", m.Topic, m.Payload)
			}
			if p.Seq <= lastSeq {
				t.Errorf("seq %d after %d", p.Seq, lastSeq)
			}
			lastSeq = p.Seq
			for _, r := range p.Readings {
				switch {
				case p.Device == "meter1" && r.Tag == "voltage" && r.Quality == "good":
					if _, ok := r.Value.(float64); !ok {
						t.Errorf("voltage = %v", r.Value)
					}
					seen["meter1/voltage"] = true
				case r.Tag == "ghost" && r.Quality == "bad":
					seen["drive1/ghost"] = true
				case p.Device == "drive1" && r.Quality == "good":
					seen["drive1/good"] = true
				}
			}
		case err := <-exited:
			t.Fatalf("collector exited: %v", err)
		case <-deadline:
			t.Fatalf("missing readings after 60s, seen %v", seen)
		}
	}
	testpeer.WaitFor(t, 30*time.Second, "status online with meter1 ok", func() bool {
		for {
			select {
			case m := <-status:
				var st struct {
					State   string            `json:"state"`
					Devices map[string]string `json:"devices"`
				}
				if json.Unmarshal(m.Payload, &st) == nil && st.State == "online" && st.Devices["meter1"] == "ok" {
					return true
				}
			default:
				return false
			}
		}
	})

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("collector did not stop within 15s of SIGTERM")
	}
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestBadConfig: every problem printed as FILE:LINE, exit status 2.
func TestBadConfig(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfgPath, []byte("endpoint: opc.tcp://x:4840\nmode: push\nnodes:\n  - {device: d, name: t, node_id: \"ns=x\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"COLLECTOR_CONFIG=" + cfgPath, "DATA_DIR=" + dir}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !errorsAs(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
	}
	for _, want := range []string{cfgPath + ":2: mode: unknown mode \"push\"", cfgPath + ":4: nodes[0]: node_id: invalid node id"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// TestBrowse lists devsim's address space.
func TestBrowse(t *testing.T) {
	bin := buildBinary(t)
	sim := startSim(t)
	out, err := exec.Command(bin, "browse", "--endpoint", sim.Endpoint(), "--policy", "None",
		"--data-dir", t.TempDir(), "--depth", "4").CombinedOutput()
	if err != nil {
		t.Fatalf("browse: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ns=1;s=meter1.voltage_l1\t") || !strings.Contains(string(out), "\tFloat\n") {
		t.Errorf("browse output lacks meter1.voltage_l1 with its data type:\n%s", out)
	}
	// Without --policy, None is not chosen silently.
	out, err = exec.Command(bin, "browse", "--endpoint", sim.Endpoint(), "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--policy None") {
		t.Errorf("browse without --policy = %v\n%s", err, out)
	}
}

// procCPU returns the user+system CPU time of process pid.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procMiB returns a /proc/PID/status field (VmRSS, VmHWM) in MiB.
func procMiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkBinary10k runs the built collector — engine and MQTT publisher,
// as deployed — on 10,000 monitored items (100 devices × 100 tags, and
// 10 × 1000: one MQTT message per device per second) at
// POLL_INTERVAL=1s against devsim opcua (in the test process, every value
// changing every second) and mosquitto, and reports the collector process's
// CPU share of one core and its RSS. One op is 10,000 readings arriving on
// the broker.
//
//	go test -run '^$' -bench Binary10k -benchtime 30x ./collectors/cmd/opcua-collector/
func BenchmarkBinary10k(b *testing.B) {
	for _, devices := range []int{100, 10} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) { benchBinary(b, devices) })
	}
}

func benchBinary(b *testing.B, devices int) {
	const n = 10000
	testpeer.Require(b, "mosquitto")
	bin := buildBinary(b)
	broker := testpeer.Mosquitto(b)
	sim, err := opcuasim.New(opcuasim.Config{Port: testpeer.FreePort(b), Vars: n, Devices: []opcuasim.Device{{Name: "m", Profile: "eastron-sdm120"}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(ctx) }()
	defer func() { cancel(); <-simDone }()

	dir := b.TempDir()
	var cfg strings.Builder
	cfg.WriteString("endpoint: " + sim.Endpoint() + "\nsecurity: {policy: None, mode: None}\nnodes:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&cfg, "  - {device: dev%02d, name: v%d, node_id: \"ns=1;s=Bulk.%d\"}\n", i%devices, i, i)
	}
	cfgPath := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	data := testpeer.Subscribe(b, broker, "fieldgate/gw1/data/opcua/#")
	cmd := exec.Command(bin)
	cmd.Env = []string{"MQTT_BROKER=" + broker, "GATEWAY_ID=gw1", "POLL_INTERVAL=1s",
		"COLLECTOR_CONFIG=" + cfgPath, "DATA_DIR=" + filepath.Join(dir, "data"), "LOG_LEVEL=warn"}
	if v := os.Getenv("GOGC"); v != "" {
		cmd.Env = append(cmd.Env, "GOGC="+v) // to compare GC settings
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	readings := 0
	waitReadings := func(want int, timeout time.Duration) {
		deadline := time.After(timeout)
		for readings < want {
			select {
			case m := <-data:
				var p payload
				if err := json.Unmarshal(m.Payload, &p); err != nil {
					b.Fatalf("payload: %v", err)
				}
				readings += len(p.Readings)
			case <-deadline:
				b.Fatalf("only %d of %d readings within %v", readings, want, timeout)
			}
		}
	}
	waitReadings(3*n, 90*time.Second) // initial values and two cycles
	pid := cmd.Process.Pid
	b.ResetTimer()
	cpu0, t0, r0 := procCPU(pid), time.Now(), readings
	waitReadings(r0+b.N*n, time.Duration(b.N)*5*time.Second+30*time.Second)
	wall, cpu := time.Since(t0), procCPU(pid)-cpu0
	b.StopTimer()
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%")
	b.ReportMetric(procMiB(pid, "VmRSS"), "MiB-rss")
	b.ReportMetric(procMiB(pid, "VmHWM"), "MiB-peak")
	b.ReportMetric(float64(readings-r0)/wall.Seconds(), "readings/s")
}

// TestEnvOnly runs the collector from its environment alone (no file), as
// a lab bench does.
func TestEnvOnly(t *testing.T) {
	testpeer.Require(t, "mosquitto")
	bin := buildBinary(t)
	broker := testpeer.Mosquitto(t)
	sim := startSim(t)
	dir := t.TempDir()
	data := testpeer.Subscribe(t, broker, "fieldgate/+/data/opcua/meter1")
	cmd := exec.Command(bin)
	cmd.Env = []string{"MQTT_BROKER=" + broker, "POLL_INTERVAL=500ms", "DATA_DIR=" + dir,
		"COLLECTOR_CONFIG=" + filepath.Join(dir, "absent.yaml"),
		"OPCUA_ENDPOINT=" + sim.Endpoint(), "OPCUA_SECURITY=None", "OPCUA_MODE=poll",
		"OPCUA_NODES=meter1/voltage=ns=1;s=meter1.voltage_l1,meter1/frequency=ns=1;s=meter1.frequency"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("collector output:\n%s", out.String())
		}
	}()
	select {
	case m := <-data:
		var p payload
		if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Readings) != 2 {
			t.Fatalf("payload %s (%v), want 2 readings", m.Payload, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no data message within 60s")
	}
}
