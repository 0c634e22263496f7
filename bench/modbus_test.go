package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"fieldgate/devices/devsim"
	"fieldgate/internal/testpeer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testpeer.CleanBuilds()
	os.Exit(code)
}

// modbusLoad is a plant of Modbus TCP PLCs, each on its own loopback
// address (devsim --tcp-hosts), polled by one modbus-collector process that
// publishes to mosquitto at QoS 1 through its durable queue.
type modbusLoad struct {
	Devices   int
	Registers int // holding registers 0..Registers-1 per device, one uint16 tag each
	// Profile, when set, gives each device its tags by profile instead of
	// writing them out (a small file for thousands of devices); Registers
	// must match it.
	Profile  string
	Interval time.Duration
	// Warmup runs before the measurement window (start-up, connections,
	// the heap finding its size); the peak RSS covers both.
	Warmup, Window time.Duration
}

// modbusResult is what a run measured. CPU is the collector process's
// alone (devsim, mosquitto and the subscriber are other processes).
type modbusResult struct {
	ReadingsPerSec float64
	CPUPerMillion  float64 // CPU-seconds per million readings delivered
	CorePercent    float64 // CPU time over wall time, in % of one core
	PeakRSS        float64 // MiB, VmHWM: start-up (config parse) included
	WindowRSS      float64 // MiB, the highest RSS sampled in the window
	LatP50, LatP99 time.Duration
	LatMax         time.Duration
	// MinShare is the least-served device's batches over the batches due
	// in the window (1 = every poll of every device arrived).
	MinShare float64
	Bad      int64
	Poll     pollStatus
}

// pollStatus is the "poll" object of the collector's status.json.
type pollStatus struct {
	Cycles    uint64  `json:"cycles"`
	Overruns  uint64  `json:"overruns"`
	Skipped   uint64  `json:"skipped"`
	LateP50Ms float64 `json:"late_p50_ms"`
	LateP99Ms float64 `json:"late_p99_ms"`
	LateMaxMs float64 `json:"late_max_ms"`
}

// benchBroker is a private mosquitto configured as a latency-minded site
// would: set_tcp_nodelay, so that neither the PUBACKs to the collector nor
// the messages to subscribers wait for Nagle's algorithm (without it the
// reference load's latency is p50 ~8 ms instead of ~1 ms).
func benchBroker(b *testing.B) string {
	testpeer.Require(b, "mosquitto")
	return testpeer.Mosquitto(b, testpeer.WithConfigLines("set_tcp_nodelay true"))
}

// perfStat waits d; with BENCH_PERFSTAT set it runs perf stat on pid
// meanwhile and logs the process's context switches and migrations.
func perfStat(b *testing.B, pid int, d time.Duration) {
	if os.Getenv("BENCH_PERFSTAT") == "" {
		time.Sleep(d)
		return
	}
	out, err := exec.Command("perf", "stat", "-e", "task-clock,context-switches,cpu-migrations",
		"-p", fmt.Sprint(pid), "--", "sleep", fmt.Sprint(d.Seconds())).CombinedOutput()
	b.Logf("perf stat (%v):\n%s", err, out)
}

var listenRe = regexp.MustCompile(`tcp listening on (\S+?),`)

// startPlant runs devsim serving unit 1 (fieldgate-plc100: holding
// registers 0..99) on n loopback addresses from 127.0.1.1 and returns their
// host:port.
func startPlant(b *testing.B, n int) []string {
	b.Helper()
	bin := testpeer.GoBuild(b, "fieldgate/devices/cmd/devsim")
	p := testpeer.Start(b, bin, "modbus", "--tcp", "127.0.1.1:0", "--tcp-hosts", fmt.Sprint(n),
		"--unit", "1=fieldgate-plc100", "--log-level", "warn")
	var first string
	testpeer.WaitFor(b, 60*time.Second, "devsim listening", func() bool {
		m := listenRe.FindStringSubmatch(p.Log.String())
		if m != nil {
			first = m[1]
		}
		return m != nil
	})
	hosts, err := devsim.HostRange(first, n)
	if err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(first)
	for i, h := range hosts {
		hosts[i] = net.JoinHostPort(h, port)
	}
	return hosts
}

// writeModbusConfig writes the collector file: one device per address,
// every register its own tag, written out (the way the 8 MB file
// for 1,000 PLCs is).
func writeModbusConfig(b *testing.B, path string, addrs []string, load modbusLoad) int64 {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "transport: tcp\ntimeout: 2s\ndevices:\n")
	for i, a := range addrs {
		if load.Profile != "" {
			fmt.Fprintf(w, "  - {name: plc%04d, address: %q, unit_id: 1, profile: %s}\n", i+1, a, load.Profile)
			continue
		}
		fmt.Fprintf(w, "  - name: plc%04d\n    address: %s\n    unit_id: 1\n    tags:\n", i+1, a)
		for r := 0; r < load.Registers; r++ {
			fmt.Fprintf(w, "      - {name: r%03d, table: holding_register, address: %d, type: uint16}\n", r, r)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	return st.Size()
}

// runModbus runs the load and measures it.
func runModbus(b *testing.B, load modbusLoad) modbusResult {
	b.Helper()
	broker := benchBroker(b)
	addrs := startPlant(b, load.Devices)
	dir := b.TempDir()
	cfgPath := filepath.Join(dir, "collector.yaml")
	size := writeModbusConfig(b, cfgPath, addrs, load)
	b.Logf("%d devices × %d registers at %v; config %.1f MB", load.Devices, load.Registers, load.Interval, float64(size)/1e6)
	sub := subscribe(b, broker, "fieldgate/bench/data/modbus/+")

	bin := testpeer.GoBuild(b, "fieldgate/collectors/cmd/modbus-collector")
	dataDir := filepath.Join(dir, "data")
	c := testpeer.StartCollector(b, bin, "POLL_INTERVAL="+load.Interval.String(), "MQTT_BROKER="+broker,
		"COLLECTOR_CONFIG="+cfgPath, "DATA_DIR="+dataDir, "GATEWAY_ID=bench", "COLLECTOR_NAME=modbus",
		"LOG_LEVEL=warn")
	m := measureCollector(b, c, sub, load.Devices, load.Warmup, load.Window)
	tr, elapsed := m.traffic, m.elapsed
	r := modbusResult{
		ReadingsPerSec: m.readingsPerS,
		CorePercent:    m.corePercent,
		PeakRSS:        m.peakRSS,
		WindowRSS:      m.rss,
		LatP50:         tr.P50, LatP99: tr.P99, LatMax: tr.Max,
		Bad: tr.Bad, MinShare: 1,
	}
	if tr.Readings > 0 {
		r.CPUPerMillion = m.cpu.Seconds() / float64(tr.Readings) * 1e6
	}
	due := elapsed.Seconds() / load.Interval.Seconds()
	for i := range load.Devices {
		r.MinShare = min(r.MinShare, float64(tr.Batches[fmt.Sprintf("plc%04d", i+1)])/due)
	}
	if st, err := os.ReadFile(filepath.Join(dataDir, "status.json")); err == nil {
		var s struct {
			Poll pollStatus `json:"poll"`
		}
		if json.Unmarshal(st, &s) == nil {
			r.Poll = s.Poll
		}
	}
	b.Logf("%.0f readings/s, %.2f CPU-s per million readings, %.1f %% of a core, RSS peak %.1f MiB (window %.1f MiB), latency p50 %v p99 %v max %v, least-served device %.1f %% of its polls, %d bad, poll %+v",
		r.ReadingsPerSec, r.CPUPerMillion, r.CorePercent, r.PeakRSS, r.WindowRSS, r.LatP50, r.LatP99, r.LatMax, 100*r.MinShare, r.Bad, r.Poll)
	if r.Bad > 0 {
		b.Errorf("%d bad readings", r.Bad)
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkModbusTCP50x100 is the reference load: 50 PLCs × 100
// registers at 100 ms (50,000 readings/s) to mosquitto at QoS 1.
func BenchmarkModbusTCP50x100(b *testing.B) {
	for range b.N {
		r := runModbus(b, modbusLoad{Devices: 50, Registers: 100, Interval: 100 * time.Millisecond,
			Warmup: 10 * time.Second, Window: 30 * time.Second})
		b.ReportMetric(r.CPUPerMillion, "cpu-s/Mreadings")
		b.ReportMetric(r.WindowRSS, "rss-MiB")
		b.ReportMetric(r.PeakRSS, "peak-rss-MiB")
		b.ReportMetric(ms(r.LatP50), "p50-ms")
		b.ReportMetric(ms(r.LatP99), "p99-ms")
		b.ReportMetric(r.ReadingsPerSec, "readings/s")
	}
}

// BenchmarkModbusTCP5000x100: 5,000 PLCs × 100 registers at 1 s, 500,000
// readings/s, sustained; the devices take their tags from a profile.
func BenchmarkModbusTCP5000x100(b *testing.B) {
	for range b.N {
		r := runModbus(b, modbusLoad{Devices: 5000, Registers: 100, Profile: "fieldgate-plc100", Interval: time.Second,
			Warmup: 20 * time.Second, Window: 30 * time.Second})
		b.ReportMetric(r.ReadingsPerSec, "readings/s")
		b.ReportMetric(r.CorePercent, "core-%")
		b.ReportMetric(r.PeakRSS, "peak-rss-MiB")
		b.ReportMetric(r.Poll.LateP99Ms, "late-p99-ms")
		b.ReportMetric(100*r.MinShare, "min-share-%")
		b.ReportMetric(r.CPUPerMillion, "cpu-s/Mreadings")
	}
}

// BenchmarkModbusTCP1000x100: 1,000 PLCs on distinct loopback addresses ×
// 100 registers at 1 s (100,000 readings/s), the collector file written out
// in full (about 8 MB).
func BenchmarkModbusTCP1000x100(b *testing.B) {
	for range b.N {
		r := runModbus(b, modbusLoad{Devices: 1000, Registers: 100, Interval: time.Second,
			Warmup: 15 * time.Second, Window: 30 * time.Second})
		b.ReportMetric(r.CorePercent, "core-%")
		b.ReportMetric(r.PeakRSS, "peak-rss-MiB")
		b.ReportMetric(r.WindowRSS, "rss-MiB")
		b.ReportMetric(r.Poll.LateP99Ms, "late-p99-ms")
		b.ReportMetric(100*r.MinShare, "min-share-%")
		b.ReportMetric(r.CPUPerMillion, "cpu-s/Mreadings")
		b.ReportMetric(r.ReadingsPerSec, "readings/s")
	}
}
