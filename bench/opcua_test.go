package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// opcuaLoad is n monitored items (devsim opcua's bulk variables, every one
// changing every second) in devices of perDevice items, subscribed by one
// opcua-collector process publishing to mosquitto.
type opcuaLoad struct {
	Items, PerDevice int
	Warmup, Window   time.Duration
}

type opcuaResult struct {
	ReadingsPerSec     float64
	CorePercent        float64
	PeakRSS, WindowRSS float64
}

func runOPCUA(b *testing.B, load opcuaLoad) opcuaResult {
	b.Helper()
	broker := benchBroker(b)
	port := testpeer.FreePort(b)
	devsim := testpeer.GoBuild(b, "fieldgate/devices/cmd/devsim")
	sim := testpeer.Start(b, devsim, "opcua", "--port", fmt.Sprint(port), "--vars", fmt.Sprint(load.Items), "--log-level", "warn")
	testpeer.WaitFor(b, 2*time.Minute, "devsim opcua listening", func() bool {
		return dialable(fmt.Sprintf("127.0.0.1:%d", port))
	})
	_ = sim
	dir := b.TempDir()
	cfgPath := filepath.Join(dir, "collector.yaml")
	f, err := os.Create(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "endpoint: opc.tcp://127.0.0.1:%d\nsecurity: {policy: None, mode: None}\nnodes:\n", port)
	devices := load.Items / load.PerDevice
	for i := 0; i < load.Items; i++ {
		fmt.Fprintf(w, "  - {device: dev%04d, name: v%d, node_id: \"ns=1;s=Bulk.%d\"}\n", i%devices, i, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	sub := subscribe(b, broker, "fieldgate/bench/data/opcua/+")
	bin := testpeer.GoBuild(b, "fieldgate/collectors/cmd/opcua-collector")
	c := testpeer.StartCollector(b, bin, "POLL_INTERVAL=1s", "MQTT_BROKER="+broker, "COLLECTOR_CONFIG="+cfgPath,
		"DATA_DIR="+filepath.Join(dir, "data"), "GATEWAY_ID=bench", "COLLECTOR_NAME=opcua", "LOG_LEVEL=warn")
	m := measureCollector(b, c, sub, devices, load.Warmup, load.Window)
	tr := m.traffic
	r := opcuaResult{ReadingsPerSec: m.readingsPerS, CorePercent: m.corePercent, PeakRSS: m.peakRSS, WindowRSS: m.rss}
	b.Logf("%d items: %.0f readings/s, %.1f %% of a core, RSS peak %.1f MiB (window %.1f MiB), latency p50 %v p99 %v, %d bad",
		load.Items, r.ReadingsPerSec, r.CorePercent, r.PeakRSS, r.WindowRSS, tr.P50, tr.P99, tr.Bad)
	if tr.Bad > 0 {
		b.Errorf("%d bad readings", tr.Bad)
	}
	if r.ReadingsPerSec < 0.9*float64(load.Items) {
		b.Errorf("%.0f readings/s of %d items changing every second", r.ReadingsPerSec, load.Items)
	}
	return r
}

// BenchmarkOPCUA50k: 50,000 monitored items at 1 s (500 devices of 100),
// every value changing every second, the built collector to mosquitto.
func BenchmarkOPCUA50k(b *testing.B) {
	for range b.N {
		r := runOPCUA(b, opcuaLoad{Items: 50000, PerDevice: 100, Warmup: 20 * time.Second, Window: 30 * time.Second})
		b.ReportMetric(r.CorePercent, "core-%")
		b.ReportMetric(r.PeakRSS, "peak-rss-MiB")
		b.ReportMetric(r.WindowRSS, "rss-MiB")
		b.ReportMetric(r.ReadingsPerSec, "readings/s")
	}
}
