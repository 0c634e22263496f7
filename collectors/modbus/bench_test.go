package modbus

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"fieldgate/collectors/publish"
	"fieldgate/collectors/reading"
	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
	"fieldgate/internal/testpeer"
)

// The benchmarks poll fieldgate's devsim simulator. It runs in a child
// process (this test binary re-executed, see TestMain) so that the CPU time
// measured with getrusage(RUSAGE_SELF) is the collector's alone.

// simEnv carries the child simulator's settings (JSON of simSpec).
const simEnv = "FIELDGATE_BENCH_DEVSIM"

type simSpec struct {
	TCP     string  `json:"tcp,omitempty"`
	Hosts   int     `json:"hosts,omitempty"`
	RTU     string  `json:"rtu,omitempty"`
	Baud    int     `json:"baud,omitempty"`
	Emulate bool    `json:"emulate,omitempty"`
	Units   []uint8 `json:"units"`
	Profile string  `json:"profile"`
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(simEnv); spec != "" {
		if err := runSimChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "devsim child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runSimChild serves devsim until stdin closes (the parent exits or kills
// it), printing "ADDR host:port" (or "ADDR rtu") once ready.
func runSimChild(js string) error {
	var s simSpec
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return err
	}
	p, err := profiles.Lookup(s.Profile)
	if err != nil {
		return err
	}
	cfg := devsim.Config{TCP: s.TCP, TCPHosts: s.Hosts, RTU: s.RTU, EmulateWire: s.Emulate, Serial: devsim.Serial{Baud: s.Baud}}
	for _, id := range s.Units {
		cfg.Units = append(cfg.Units, devsim.Unit{ID: id, Profile: p})
	}
	sim, err := devsim.NewModbus(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	if err := sim.WaitReady(ctx); err != nil {
		return err
	}
	if s.TCP != "" {
		fmt.Printf("ADDR %s\n", sim.Addr())
	} else {
		fmt.Printf("ADDR rtu\n")
	}
	return <-done
}

// startSim runs the simulator child and returns its TCP address.
func startSim(b *testing.B, s simSpec) string {
	b.Helper()
	js, _ := json.Marshal(s)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), simEnv+"="+string(js))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("devsim child did not start: %v", err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
}

// countSink counts readings; with encode it also builds each batch's
// contract payload, as the MQTT publisher does.
type countSink struct {
	readings atomic.Int64
	bad      atomic.Int64
	encode   bool
	buf      []byte
	first    chan struct{}
	once     atomic.Bool
	// perDevice counts readings by device when it is not nil.
	mu        sync.Mutex
	perDevice map[string]int64
}

// spread is the fewest and the most readings of one device.
func (s *countSink) spread() (lo, hi int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lo = -1
	for _, n := range s.perDevice {
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return lo, hi
}

func (s *countSink) Publish(_ context.Context, b reading.Batch) error {
	if s.encode {
		s.buf = b.AppendJSON(s.buf[:0])
	}
	for i := range b.Readings {
		if b.Readings[i].Quality != reading.Good {
			s.bad.Add(1)
		}
	}
	s.readings.Add(int64(len(b.Readings)))
	if s.perDevice != nil {
		s.mu.Lock()
		s.perDevice[b.Device] += int64(len(b.Readings))
		s.mu.Unlock()
	}
	if s.once.CompareAndSwap(false, true) {
		close(s.first)
	}
	return nil
}

func (s *countSink) SetDeviceStatus(string, string) {}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runBench polls with cfg until b.N units (readings, or registers per
// reading with perReading) have been counted after the first batch, and
// reports the rate and the CPU time.
func runBench(b *testing.B, cfg *Config, interval time.Duration, sink *countSink) (rate float64, cpuPerMillion float64) {
	b.Helper()
	sink.first = make(chan struct{})
	p, err := NewPoller(cfg, interval, sink, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-sink.first:
	case <-time.After(10 * time.Second):
		b.Fatal("no batch within 10 s")
	}
	b.ResetTimer()
	start, cpu0, n0 := time.Now(), cpuTime(), sink.readings.Load()
	target := n0 + int64(b.N)
	for sink.readings.Load() < target {
		time.Sleep(time.Millisecond)
	}
	elapsed, cpu, n := time.Since(start), cpuTime()-cpu0, sink.readings.Load()-n0
	b.StopTimer()
	if bad := sink.bad.Load(); bad > 0 {
		b.Fatalf("%d bad readings", bad)
	}
	for _, st := range p.Stats() {
		if st.Errors > 0 {
			b.Fatalf("errors while benchmarking: %+v", st)
		}
	}
	return float64(n) / elapsed.Seconds(), cpu.Seconds() / float64(n) * 1e6
}

// loadBenchConfig builds a config through ParseConfig so that profile
// expansion and defaults are the real ones.
func loadBenchConfig(b *testing.B, yaml string) *Config {
	b.Helper()
	cfg, err := ParseConfig("bench.yaml", []byte(yaml))
	if err != nil {
		b.Fatalf("bench config: %v", err)
	}
	return cfg
}

// benchmarkTCP: devsim over TCP on loopback, 4 units with the
// fieldgate-bench profile (624 tags, 6 reads each) behind one address; the
// collector on one core (GOMAXPROCS=1), the simulator in another process.
func benchmarkTCP(b *testing.B, encode bool) {
	addr := startSim(b, simSpec{TCP: "127.0.0.1:0", Units: []uint8{1, 2, 3, 4}, Profile: "fieldgate-bench"})
	var devs strings.Builder
	for i := 1; i <= 4; i++ {
		fmt.Fprintf(&devs, "  - {name: bench%d, unit_id: %d, profile: fieldgate-bench}\n", i, i)
	}
	cfg := loadBenchConfig(b, fmt.Sprintf("transport: tcp\ntcp: {address: %q}\ntimeout: 2s\ndevices:\n%s", addr, devs.String()))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	rate, cpu := runBench(b, cfg, time.Millisecond, &countSink{encode: encode})
	b.ReportMetric(rate, "readings/s")
	b.ReportMetric(cpu, "cpu-s/Mreadings")
}

func BenchmarkTCPPoll(b *testing.B)       { benchmarkTCP(b, false) }
func BenchmarkTCPPollEncode(b *testing.B) { benchmarkTCP(b, true) }

// rtuWireLimit is what a 19200 baud line carries at most in full
// 125-register reads: 808 registers/s (8 request and 255 answer bytes plus
// two 3.5-character silences per read, 11 bits a character).
const rtuWireLimit = 19200.0 / 11 / (8 + 255 + 7) * 125

// benchmarkRTUWire: devsim on a socat pty emulating a 19200 baud line,
// units devices of 125×reads holding registers each, read in full
// 125-register requests every interval. One op is one register; "wire-%"
// is the share of the line's limit. With several devices "fair-%" is the
// least-polled device's readings over the most-polled one's.
func benchmarkRTUWire(b *testing.B, units, reads int, interval time.Duration) {
	testpeer.Require(b, "socat")
	master, slave := testpeer.PtyPair(b)
	ids := make([]uint8, units)
	for i := range ids {
		ids[i] = uint8(i + 1)
	}
	startSim(b, simSpec{RTU: slave, Baud: 19200, Emulate: true, Units: ids, Profile: "fieldgate-bench"})
	var y strings.Builder
	fmt.Fprintf(&y, "transport: rtu\nserial: {port: %s, baud: 19200}\ntimeout: 1s\ndevices:\n", master)
	for _, id := range ids {
		fmt.Fprintf(&y, "  - name: bench%d\n    unit_id: %d\n    tags:\n", id, id)
		for a := 0; a < 125*reads; a++ {
			fmt.Fprintf(&y, "      - {name: h%03d, table: holding_register, address: %d, type: uint16}\n", a, a)
		}
	}
	cfg := loadBenchConfig(b, y.String())
	sink := &countSink{perDevice: map[string]int64{}}
	rate, _ := runBench(b, cfg, interval, sink)
	b.ReportMetric(rate, "registers/s")
	b.ReportMetric(100*rate/rtuWireLimit, "wire-%")
	if units > 1 {
		lo, hi := sink.spread()
		b.ReportMetric(100*float64(lo)/float64(hi), "fair-%")
	}
}

// BenchmarkRTUWire: one device, four full reads a cycle, polled as fast as
// the line allows (interval 1 ms).
func BenchmarkRTUWire(b *testing.B) { benchmarkRTUWire(b, 1, 4, time.Millisecond) }

// BenchmarkRTUWireOverrun: one full read (155 ms on the wire) every 100 ms:
// the interval is shorter than one read, so cycles run back to back.
func BenchmarkRTUWireOverrun(b *testing.B) { benchmarkRTUWire(b, 1, 1, 100*time.Millisecond) }

// BenchmarkRTUWireFair: three devices, one full read each, every 100 ms on
// one line: back to back, every device in turn.
func BenchmarkRTUWireFair(b *testing.B) { benchmarkRTUWire(b, 3, 1, 100*time.Millisecond) }

// throttled holds the poller back while the publisher has more than 256
// batches pending, so the benchmark measures the sustained rate rather than
// filling the disk queue as fast as devsim answers.
type throttled struct{ *publish.Publisher }

func (t throttled) Publish(ctx context.Context, b reading.Batch) error {
	for t.Stats().Pending > 256 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return t.Publisher.Publish(ctx, b)
}

// BenchmarkTCPToMQTT is the whole collector path: devsim TCP (child
// process) -> poller -> the real publisher (durable queue, QoS 1) ->
// mosquitto. One op is one reading acknowledged by the broker; the CPU time
// is the collector process's (poller, encoding, queue, paho) on one core.
func BenchmarkTCPToMQTT(b *testing.B) {
	testpeer.Require(b, "mosquitto")
	addr := startSim(b, simSpec{TCP: "127.0.0.1:0", Units: []uint8{1, 2, 3, 4}, Profile: "fieldgate-bench"})
	var devs strings.Builder
	for i := 1; i <= 4; i++ {
		fmt.Fprintf(&devs, "  - {name: bench%d, unit_id: %d, profile: fieldgate-bench}\n", i, i)
	}
	cfg := loadBenchConfig(b, fmt.Sprintf("transport: tcp\ntcp: {address: %q}\ntimeout: 2s\ndevices:\n%s", addr, devs.String()))
	perBatch := int64(len(cfg.Devices[0].Tags))
	broker := testpeer.Mosquitto(b)
	pub, err := publish.New(publish.Config{Broker: broker, GatewayID: "bench", CollectorName: "modbus",
		DataDir: b.TempDir(), Interval: time.Second}, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx, cancel := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(ctx) }()
	p, err := NewPoller(cfg, time.Millisecond, throttled{pub}, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	pollDone := make(chan error, 1)
	go func() { pollDone <- p.Run(ctx) }()
	defer func() { cancel(); <-pollDone; <-pubDone }()
	deadline := time.Now().Add(20 * time.Second)
	for pub.Stats().Published == 0 {
		if time.Now().After(deadline) {
			b.Fatalf("nothing acknowledged in 20 s: %+v", pub.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	start, cpu0, n0 := time.Now(), cpuTime(), int64(pub.Stats().Published)*perBatch
	for int64(pub.Stats().Published)*perBatch-n0 < int64(b.N) {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	n := int64(pub.Stats().Published)*perBatch - n0
	b.StopTimer()
	if st := pub.Stats(); st.Dropped > 0 || st.Rejected > 0 {
		b.Fatalf("publisher dropped batches: %+v", st)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "readings/s")
	b.ReportMetric(cpu.Seconds()/float64(n)*1e6, "cpu-s/Mreadings")
}

// BenchmarkTCPToMQTTPlant is the reference load in one process, for
// profiling (-cpuprofile): 50 PLCs on their own loopback addresses × 100
// registers at 100 ms, through the real publisher to mosquitto. One op is
// one reading acknowledged by the broker. bench.BenchmarkModbusTCP50x100 is
// the same load on the built collector, measured from outside.
func BenchmarkTCPToMQTTPlant(b *testing.B) {
	testpeer.Require(b, "mosquitto")
	const devices, registers = 50, 100
	first := startSim(b, simSpec{TCP: "127.0.1.1:0", Hosts: devices, Units: []uint8{1}, Profile: "fieldgate-bench"})
	hosts, err := devsim.HostRange(first, devices)
	if err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(first)
	var y strings.Builder
	y.WriteString("transport: tcp\ntimeout: 2s\ndevices:\n")
	for i, h := range hosts {
		fmt.Fprintf(&y, "  - name: plc%04d\n    address: %s\n    tags:\n", i+1, net.JoinHostPort(h, port))
		for r := 0; r < registers; r++ {
			fmt.Fprintf(&y, "      - {name: r%03d, table: holding_register, address: %d, type: uint16, unit: count}\n", r, r)
		}
	}
	cfg := loadBenchConfig(b, y.String())
	broker := testpeer.Mosquitto(b)
	pub, err := publish.New(publish.Config{Broker: broker, GatewayID: "bench", CollectorName: "modbus",
		DataDir: b.TempDir(), Interval: 100 * time.Millisecond}, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(ctx) }()
	p, err := NewPoller(cfg, 100*time.Millisecond, pub, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	pollDone := make(chan error, 1)
	go func() { pollDone <- p.Run(ctx) }()
	defer func() { cancel(); <-pollDone; <-pubDone }()
	for deadline := time.Now().Add(20 * time.Second); pub.Stats().Published < 2*devices; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("nothing acknowledged in 20 s: %+v", pub.Stats())
		}
	}
	b.ResetTimer()
	start, cpu0, n0 := time.Now(), cpuTime(), int64(pub.Stats().Published)*registers
	for int64(pub.Stats().Published)*registers-n0 < int64(b.N) {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	n := int64(pub.Stats().Published)*registers - n0
	b.StopTimer()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "readings/s")
	b.ReportMetric(cpu.Seconds()/float64(n)*1e6, "cpu-s/Mreadings")
}
