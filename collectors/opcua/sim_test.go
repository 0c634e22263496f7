package opcua

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldgate/collectors/reading"
	"fieldgate/devices/devsim/opcuasim"
	"fieldgate/internal/testpeer"
)

// TestMain doubles as the simulator process of the benchmark: with
// FIELDGATE_OPCUASIM_PORT set, the test binary serves devsim opcua instead of
// running tests, so the benchmark measures the collector's CPU and memory
// alone.
func TestMain(m *testing.M) {
	if port := os.Getenv("FIELDGATE_OPCUASIM_PORT"); port != "" {
		p, _ := strconv.Atoi(port)
		vars, _ := strconv.Atoi(os.Getenv("FIELDGATE_OPCUASIM_VARS"))
		sim, err := opcuasim.New(opcuasim.Config{Port: p, Vars: vars})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ctx, stop := context.WithCancel(context.Background())
		go func() {
			// The parent closes our stdin when it is done.
			_, _ = os.Stdin.Read(make([]byte, 1))
			stop()
		}()
		if err := sim.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startSim runs devsim opcua in-process on a free port.
func startSim(t testing.TB, vars int) *opcuasim.Sim {
	t.Helper()
	sim, err := opcuasim.New(opcuasim.Config{Port: testpeer.FreePort(t), Vars: vars, Interval: 200 * time.Millisecond})
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
	waitListening(t, strings.TrimPrefix(sim.Endpoint(), "opc.tcp://"))
	return sim
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	testpeer.WaitFor(t, 30*time.Second, "the simulator to listen on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// TestDevsim runs the collector against devsim opcua (gopcua's server, a
// second implementation next to node-opcua) in both modes.
func TestDevsim(t *testing.T) {
	sim := startSim(t, 0)
	var nodes []Node
	for _, id := range sim.NodeIDs() {
		dev, tagName, _ := strings.Cut(strings.TrimPrefix(id, "ns=1;s="), ".")
		nodes = append(nodes, Node{Device: dev, Name: tagName, NodeID: id})
	}
	for _, mode := range []string{ModeSubscribe, ModePoll} {
		t.Run(mode, func(t *testing.T) {
			sink, _ := runEngine(t, Config{Endpoint: sim.Endpoint(), Mode: mode, Security: insecure, Nodes: nodes},
				WithPollInterval(200*time.Millisecond))
			for _, n := range nodes {
				testpeer.WaitFor(t, 30*time.Second, "a good reading of "+n.NodeID, func() bool {
					_, ok := sink.lastGood(0, n.Device, n.Name)
					return ok
				})
			}
			r, _ := sink.lastGood(0, "meter1", "voltage_l1")
			if _, ok := r.Value.(float64); !ok {
				t.Errorf("meter1/voltage_l1 = %T %v, want a float64", r.Value, r.Value)
			}
			// Values change: some tag reports more than one value.
			testpeer.WaitFor(t, 30*time.Second, "a changing value", func() bool {
				for _, n := range nodes {
					rs := sink.readings(0, n.Device, n.Name)
					for _, x := range rs[1:] {
						if x.Value != rs[0].Value {
							return true
						}
					}
				}
				return false
			})
			for _, d := range []string{"meter1", "drive1"} {
				if st := sink.deviceStatus(d); st != "ok" {
					t.Errorf("status of %s = %q", d, st)
				}
			}
		})
	}
}

// jsonSink encodes every batch as the publisher would and counts readings.
type jsonSink struct {
	mu       sync.Mutex
	buf      []byte
	readings int
	cycle    chan struct{}
	perCycle int
	inCycle  int
}

func (s *jsonSink) Publish(_ context.Context, b reading.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = b.AppendJSON(s.buf[:0])
	s.readings += len(b.Readings)
	s.inCycle += len(b.Readings)
	if s.inCycle >= s.perCycle {
		s.inCycle = 0
		select {
		case s.cycle <- struct{}{}:
		default:
		}
	}
	return nil
}

func (s *jsonSink) SetDeviceStatus(string, string) {}

func rusageCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus returns a /proc/self/status field in MiB (VmRSS, VmHWM).
func procStatus(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkSubscribe10k measures the collector with 10,000 monitored items
// at a 1 s sampling and publishing interval against devsim opcua running in
// a child process (every value changes every second). One op is one
// publishing cycle delivering all 10,000 readings, encoded as MQTT payloads.
// It reports the collector's CPU share of one core and its RSS.
//
//	go test -run '^$' -bench Subscribe10k -benchtime 30x ./collectors/opcua/
func BenchmarkSubscribe10k(b *testing.B) { benchmarkSubscribe(b, 10000) }

// BenchmarkSubscribe50k is the same with 50,000 items (500 devices of 100).
func BenchmarkSubscribe50k(b *testing.B) { benchmarkSubscribe(b, 50000) }

func benchmarkSubscribe(b *testing.B, n int) {
	port := testpeer.FreePort(b)
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "FIELDGATE_OPCUASIM_PORT="+strconv.Itoa(port), "FIELDGATE_OPCUASIM_VARS="+strconv.Itoa(n))
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = child.Wait()
	}()
	waitListening(b, fmt.Sprintf("127.0.0.1:%d", port))

	var nodes []Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, Node{Device: fmt.Sprintf("dev%03d", i%(n/100)), Name: fmt.Sprintf("v%d", i), NodeID: fmt.Sprintf("ns=1;s=Bulk.%d", i)})
	}
	sink := &jsonSink{cycle: make(chan struct{}, 1), perCycle: n}
	e, err := New(Config{Endpoint: fmt.Sprintf("opc.tcp://127.0.0.1:%d", port), Security: insecure, Nodes: nodes}, sink,
		WithPollInterval(time.Second), WithDataDir(b.TempDir()), WithLogger(benchLogger()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	// Warm up: the initial values and two full cycles.
	for i := 0; i < 3; i++ {
		select {
		case <-sink.cycle:
		case <-time.After(60 * time.Second):
			b.Fatalf("no full cycle of %d readings within 60s (got %d readings)", n, sink.readings)
		}
	}
	b.ResetTimer()
	cpu0, t0 := rusageCPU(), time.Now()
	sink.mu.Lock()
	r0 := sink.readings
	sink.mu.Unlock()
	for i := 0; i < b.N; i++ {
		select {
		case <-sink.cycle:
		case <-time.After(30 * time.Second):
			b.Fatalf("cycle %d: no full cycle within 30s", i)
		}
	}
	wall := time.Since(t0)
	cpu := rusageCPU() - cpu0
	b.StopTimer()
	sink.mu.Lock()
	got := sink.readings - r0
	sink.mu.Unlock()
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%")
	b.ReportMetric(procStatus("VmRSS"), "MiB-rss")
	b.ReportMetric(procStatus("VmHWM"), "MiB-peak")
	b.ReportMetric(float64(got)/wall.Seconds(), "readings/s")
}

// benchLogger logs warnings (a session ending spoils the figures) to stderr.
func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
