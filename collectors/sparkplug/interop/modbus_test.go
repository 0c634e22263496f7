package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

const (
	group   = "plant1"
	gateway = "gw1"
	edge    = "gw1-plc"
	wait    = 60 * time.Second // real peers on a loaded machine
)

// plcSlave is a pymodbus TCP slave with two units:
//
//	unit 1 "press":  hr 100-101 setpoint (float32 CDAB, scale 0.1), hr 0 count (int16),
//	                 coil 10 run, hr 7 (bit 3: alarm)
//	unit 2 "oven":   hr 0 temp (uint16, scale 0.1)
func plcSlave(t *testing.T) *testpeer.PyModbusServer {
	return testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 0xFFFE, 7: 0x0008, 100: 0x8000, 101: 0x43D4}, Coils: map[uint16]bool{10: false}},
		2: {Holding: map[uint16]uint16{0: 2301}},
	}})
}

func plcConfig(t *testing.T, addr string, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "collector.yaml")
	cfg := fmt.Sprintf(`transport: tcp
tcp: {address: %q}
timeout: 300ms
backoff: {initial: 200ms, max: 1s}
devices:
  - name: press
    unit_id: 1
    tags:
      - {name: setpoint, table: holding_register, address: 100, type: float32, byte_order: CDAB, scale: 0.1, unit: bar, writable: true, min: 0, max: 500}
      - {name: count, table: holding_register, address: 0, type: int16}
      - {name: run, table: coil, address: 10, writable: true}
      - {name: alarm, table: holding_register, address: 7, type: bool, bit: 3}
      - {name: missing, table: holding_register, address: 50, type: uint16}
  - name: oven
    unit_id: 2
    tags:
      - {name: temp, table: holding_register, address: 0, type: uint16, scale: 0.1, unit: degC}
%s`, addr, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func collectorEnv(t *testing.T, broker, cfgPath string, kv ...string) []string {
	env := []string{
		"POLL_INTERVAL=200ms",
		"MQTT_BROKER=" + broker,
		"GATEWAY_ID=" + gateway,
		"COLLECTOR_NAME=plc",
		"COLLECTOR_CONFIG=" + cfgPath,
		"DATA_DIR=" + filepath.Join(t.TempDir(), "data"),
		"MQTT_PAYLOAD=sparkplug",
		"SPARKPLUG_GROUP_ID=" + group,
		"LOG_LEVEL=debug",
	}
	return testpeer.Env(env, kv...)
}

func isKind(kind, device string) func(testpeer.SparkplugMessage) bool {
	return func(m testpeer.SparkplugMessage) bool {
		return m.Edge == edge && m.Kind == kind && m.Device == device
	}
}

func metricInt(t *testing.T, p *testpeer.SparkplugPayload, name string) int64 {
	t.Helper()
	m := p.Metric(name)
	if m == nil {
		t.Fatalf("no metric %q in %+v", name, p)
	}
	f, ok := m.Value.(float64)
	if !ok {
		t.Fatalf("metric %q value %#v is not a number", name, m.Value)
	}
	return int64(f)
}

// checkSeq checks that the messages of one session (from its NBIRTH on)
// number 0, 1, 2, …, 255, 0, …
func checkSeq(t *testing.T, msgs []testpeer.SparkplugMessage) int {
	t.Helper()
	return checkSeqOf(t, msgs, edge)
}

func checkSeqOf(t *testing.T, msgs []testpeer.SparkplugMessage, edge string) int {
	t.Helper()
	want, n := int64(-1), 0
	for _, m := range msgs {
		if m.Edge != edge || m.Load == nil || m.Kind == "NDEATH" || m.Kind == "NCMD" || m.Kind == "DCMD" {
			continue
		}
		if m.Kind == "NBIRTH" {
			want = 0
		}
		if want < 0 {
			continue
		}
		if m.Load.Seq == nil || *m.Load.Seq != want {
			got := "none"
			if m.Load.Seq != nil {
				got = fmt.Sprint(*m.Load.Seq)
			}
			t.Fatalf("%s %s: seq %s, want %d", m.Kind, m.Device, got, want)
		}
		want = (want + 1) % 256
		n++
	}
	return n
}

func TestModbusSparkplugSession(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus", "node")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/modbus-collector")
	broker := testpeer.Mosquitto(t)
	slave := plcSlave(t)
	host := testpeer.StartSparkplugHost(t, testpeer.SparkplugHostConfig{Broker: broker})
	env := collectorEnv(t, broker, plcConfig(t, slave.Addr, ""), "POLL_INTERVAL=50ms")
	col := testpeer.StartCollector(t, bin, env...)

	nb := host.WaitFor(wait, "NBIRTH", isKind("NBIRTH", ""))
	if got := metricInt(t, nb.Load, "bdSeq"); got != 0 {
		t.Errorf("first NBIRTH bdSeq %d, want 0", got)
	}
	if m := nb.Load.Metric("Node Control/Rebirth"); m == nil || m.Value != false || m.Type != "Boolean" || m.Alias != nil {
		t.Errorf("NBIRTH Node Control/Rebirth = %+v, want Boolean false without alias", m)
	}
	db := host.WaitFor(wait, "DBIRTH press", isKind("DBIRTH", "press"))
	types := map[string]string{"setpoint": "Double", "count": "Int16", "run": "Boolean", "alarm": "Boolean", "missing": "UInt16"}
	for name, typ := range types {
		m := db.Load.Metric(name)
		if m == nil || m.Type != typ {
			t.Errorf("DBIRTH press metric %s = %+v, want type %s", name, m, typ)
		}
	}
	// Each metric is listed with its current value once the device answered.
	host.WaitFor(wait, "DDATA press with every value", func(m testpeer.SparkplugMessage) bool {
		if !isKind("DDATA", "press")(m) {
			return false
		}
		sp, cnt, miss := m.Load.Metric("setpoint"), m.Load.Metric("count"), m.Load.Metric("missing")
		if sp == nil || cnt == nil || miss == nil {
			return false
		}
		if sp.Value != 42.5 || cnt.Value != -2.0 || miss.Value != nil {
			t.Errorf("DDATA press: setpoint %v count %v missing %v; want 42.5, -2, null", sp.Value, cnt.Value, miss.Value)
		}
		q := miss.Properties["Quality"]
		if q.Value != 0.0 || !strings.Contains(fmt.Sprint(miss.Properties["error"].Value), "exception 2") {
			t.Errorf("missing tag properties %+v, want Quality 0 and the exception", miss.Properties)
		}
		return true
	})
	// seq wraps: 300 messages of this session in a row.
	host.WaitFor(wait, "300 messages", func(testpeer.SparkplugMessage) bool {
		n := 0
		for _, m := range host.Messages() {
			if m.Edge == edge && (m.Kind == "DDATA" || m.Kind == "DBIRTH" || m.Kind == "NBIRTH") {
				n++
			}
		}
		return n >= 300
	})
	if n := checkSeq(t, host.Messages()); n < 300 {
		t.Fatalf("only %d messages checked", n)
	}

	// A stop publishes NDEATH with the session's bdSeq; the next session
	// uses the next bdSeq in its will and its NBIRTH.
	mark := host.Len()
	col.Stop()
	nd := host.WaitSince(mark, wait, "NDEATH at stop", isKind("NDEATH", ""))
	if got := metricInt(t, nd.Load, "bdSeq"); got != 0 || nd.Load.Seq != nil {
		t.Errorf("NDEATH bdSeq %d seq %v, want bdSeq 0 and no seq", got, nd.Load.Seq)
	}
	mark = host.Len()
	col.Start()
	nb = host.WaitSince(mark, wait, "NBIRTH after restart", isKind("NBIRTH", ""))
	if got := metricInt(t, nb.Load, "bdSeq"); got != 1 {
		t.Errorf("NBIRTH after restart bdSeq %d, want 1", got)
	}
	// A crash: the broker publishes the will, NDEATH with the same bdSeq.
	host.WaitSince(mark, wait, "DDATA after restart", isKind("DDATA", "oven"))
	mark = host.Len()
	col.Kill()
	nd = host.WaitSince(mark, wait, "NDEATH will after kill", isKind("NDEATH", ""))
	if got := metricInt(t, nd.Load, "bdSeq"); got != 1 {
		t.Errorf("will NDEATH bdSeq %d, want 1", got)
	}
	mark = host.Len()
	col.Start()
	nb = host.WaitSince(mark, wait, "NBIRTH after kill", isKind("NBIRTH", ""))
	if got := metricInt(t, nb.Load, "bdSeq"); got != 2 {
		t.Errorf("NBIRTH after kill bdSeq %d, want 2", got)
	}
	host.WaitSince(mark, wait, "DBIRTH oven", isKind("DBIRTH", "oven"))

	// A rebirth request: a fresh NBIRTH (same bdSeq, seq 0) and every DBIRTH.
	mark = host.Len()
	host.Send(map[string]any{"cmd": "rebirth", "group": group, "edge": edge})
	nb = host.WaitSince(mark, wait, "NBIRTH on rebirth", isKind("NBIRTH", ""))
	if got := metricInt(t, nb.Load, "bdSeq"); got != 2 {
		t.Errorf("rebirth NBIRTH bdSeq %d, want 2 (same session)", got)
	}
	host.WaitSince(mark, wait, "DBIRTH press on rebirth", isKind("DBIRTH", "press"))
	host.WaitSince(mark, wait, "DBIRTH oven on rebirth", isKind("DBIRTH", "oven"))

	// The device stops answering: DDEATH; it comes back: DBIRTH.
	mark = host.Len()
	slave.Stop()
	host.WaitSince(mark, wait, "DDEATH press", isKind("DDEATH", "press"))
	host.WaitSince(mark, wait, "DDEATH oven", isKind("DDEATH", "oven"))
	mark = host.Len()
	slave.Restart()
	host.WaitSince(mark, wait, "DBIRTH press again", isKind("DBIRTH", "press"))
	host.WaitSince(mark, wait, "DDATA press again", isKind("DDATA", "press"))
	checkSeq(t, host.Messages())
	if col.Exited() {
		t.Fatalf("collector exited:\n%s", col.Output())
	}
}

// byAlias finds a metric by alias in a payload (DDATA with aliases).
func byAlias(p *testpeer.SparkplugPayload, alias int64) *testpeer.SparkplugMetric {
	if p == nil {
		return nil
	}
	for i := range p.Metrics {
		if a := p.Metrics[i].Alias; a != nil && *a == alias {
			return &p.Metrics[i]
		}
	}
	return nil
}

func TestModbusSparkplugAliasesAndWrites(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus", "node")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/modbus-collector")
	broker := testpeer.Mosquitto(t)
	slave := plcSlave(t)
	host := testpeer.StartSparkplugHost(t, testpeer.SparkplugHostConfig{Broker: broker})
	col := testpeer.StartCollector(t, bin, collectorEnv(t, broker, plcConfig(t, slave.Addr, ""), "SPARKPLUG_ALIASES=true")...)

	db := host.WaitFor(wait, "DBIRTH press", isKind("DBIRTH", "press"))
	aliases := map[string]int64{}
	seen := map[int64]bool{}
	for _, m := range db.Load.Metrics {
		if m.Alias == nil || m.Name == "" {
			t.Fatalf("DBIRTH metric %+v: births carry name and alias", m)
		}
		if seen[*m.Alias] {
			t.Fatalf("alias %d used twice", *m.Alias)
		}
		seen[*m.Alias], aliases[m.Name] = true, *m.Alias
	}
	dd := host.WaitFor(wait, "DDATA press", isKind("DDATA", "press"))
	for _, m := range dd.Load.Metrics {
		if m.Name != "" || m.Alias == nil {
			t.Fatalf("DDATA metric %+v: with aliases, DATA carry the alias only", m)
		}
	}
	if m := byAlias(dd.Load, aliases["setpoint"]); m == nil || m.Value != 42.5 {
		t.Fatalf("DDATA setpoint by alias: %+v", m)
	}

	// DCMD by name (float32 CDAB, scale 0.1) and by alias (a coil).
	host.Send(map[string]any{"cmd": "dcmd", "group": group, "edge": edge, "device": "press",
		"metrics": []map[string]any{{"name": "setpoint", "type": "Double", "value": 55.5}}})
	host.Send(map[string]any{"cmd": "dcmd", "group": group, "edge": edge, "device": "press",
		"metrics": []map[string]any{{"alias": aliases["run"], "type": "Boolean", "value": true}}})
	// The next DDATA confirms each write.
	host.WaitFor(wait, "DDATA with the new setpoint and run", func(m testpeer.SparkplugMessage) bool {
		if !isKind("DDATA", "press")(m) {
			return false
		}
		sp, run := byAlias(m.Load, aliases["setpoint"]), byAlias(m.Load, aliases["run"])
		return sp != nil && sp.Value == 55.5 && run != nil && run.Value == true
	})
	// pymodbus' own client reads what was written: 555.0 as float32 is
	// 0x440AC000, CDAB puts C000 first.
	if got := slave.Read(1, "hr", 100, 2); got[0] != 0xC000 || got[1] != 0x440A {
		t.Errorf("setpoint registers %04x, want c000 440a", got)
	}
	if got := slave.Read(1, "co", 10, 1); got[0] != 1 {
		t.Errorf("run coil %v, want 1", got)
	}
	writes := slave.Writes()
	if len(writes) != 2 {
		t.Fatalf("pymodbus saw writes %q, want 2", writes)
	}

	// Refused before the wire: a tag that is not writable, a value out of range.
	host.Send(map[string]any{"cmd": "dcmd", "group": group, "edge": edge, "device": "press",
		"metrics": []map[string]any{{"name": "count", "type": "Int16", "value": 5}}})
	host.Send(map[string]any{"cmd": "dcmd", "group": group, "edge": edge, "device": "press",
		"metrics": []map[string]any{{"name": "setpoint", "type": "Double", "value": 600}}})
	testpeer.WaitFor(t, wait, "both refusals in the collector log", func() bool {
		out := col.Output()
		return strings.Contains(out, `tag=count`) && strings.Contains(out, "not writable") &&
			strings.Contains(out, "out of range: 600 is above max 500")
	})
	if got := slave.Writes(); len(got) != 2 {
		t.Fatalf("refused writes reached the device: %q", got)
	}
}

// TestModbusSparkplugPrimaryHost: no birth before the primary host is
// online; its offline STATE ends the session (NDEATH), an older one is
// ignored; what was polled meanwhile arrives afterwards, historical, in
// order, nothing lost.
func TestModbusSparkplugPrimaryHost(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus", "node")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/modbus-collector")
	broker := testpeer.Mosquitto(t)
	slave := plcSlave(t)
	host := testpeer.StartSparkplugHost(t, testpeer.SparkplugHostConfig{Broker: broker, HostID: "scada", Offline: true})
	env := collectorEnv(t, broker, plcConfig(t, slave.Addr, ""), "SPARKPLUG_PRIMARY_HOST_ID=scada")
	col := testpeer.StartCollector(t, bin, env...)
	statusFile := filepath.Join(strings.TrimPrefix(env[5], "DATA_DIR="), "status.json")

	// Connected, polling, queueing — and silent.
	testpeer.WaitFor(t, wait, "5 batches queued while the host is offline", func() bool {
		return queuePending(statusFile) >= 5
	})
	for _, m := range host.Messages() {
		if m.Edge == edge {
			t.Fatalf("%s before the primary host was online", m.Kind)
		}
	}
	offlineFrom := time.Now()
	mark := host.Len()
	host.Send(map[string]any{"cmd": "online"})
	host.WaitSince(mark, wait, "NBIRTH once online", isKind("NBIRTH", ""))
	hist := host.WaitSince(mark, wait, "historical DDATA", func(m testpeer.SparkplugMessage) bool {
		return isKind("DDATA", "oven")(m) && m.Load.Metrics[0].IsHistorical
	})
	if *hist.Load.Timestamp > offlineFrom.UnixMilli() {
		t.Errorf("first historical batch polled at %d, after the host came online (%d)", *hist.Load.Timestamp, offlineFrom.UnixMilli())
	}
	host.WaitSince(mark, wait, "live DDATA", func(m testpeer.SparkplugMessage) bool {
		return isKind("DDATA", "oven")(m) && !m.Load.Metrics[0].IsHistorical
	})
	testpeer.WaitFor(t, wait, "the backlog to drain", func() bool { return queuePending(statusFile) <= 2 })

	// An older offline STATE is ignored.
	mark = host.Len()
	host.Send(map[string]any{"cmd": "publish", "topic": "spBv1.0/STATE/scada", "payload": `{"online":false,"timestamp":1000}`})
	testpeer.WaitFor(t, wait, "the old STATE to be ignored", func() bool { return strings.Contains(col.Output(), "older STATE ignored") })
	host.WaitSince(mark, wait, "DDATA after the old STATE", isKind("DDATA", "oven"))
	for _, m := range host.Since(mark) {
		if m.Kind == "NDEATH" {
			t.Fatal("an older offline STATE ended the session")
		}
	}

	// A newer offline STATE: NDEATH (this session's bdSeq), then silence
	// until the host is back; then a new session (next bdSeq) and the
	// backlog, historical.
	mark = host.Len()
	host.Send(map[string]any{"cmd": "offline"})
	nd := host.WaitSince(mark, wait, "NDEATH on offline", isKind("NDEATH", ""))
	if got := metricInt(t, nd.Load, "bdSeq"); got != 0 {
		t.Errorf("NDEATH bdSeq %d, want 0", got)
	}
	testpeer.WaitFor(t, wait, "batches queued while the host is offline again", func() bool {
		return queuePending(statusFile) >= 5
	})
	mark = host.Len()
	host.Send(map[string]any{"cmd": "online"})
	nb := host.WaitSince(mark, wait, "NBIRTH after the host's return", isKind("NBIRTH", ""))
	if got := metricInt(t, nb.Load, "bdSeq"); got != 1 {
		t.Errorf("NBIRTH bdSeq %d, want 1 (a new MQTT session)", got)
	}
	host.WaitSince(mark, wait, "historical DDATA again", func(m testpeer.SparkplugMessage) bool {
		return isKind("DDATA", "oven")(m) && m.Load.Metrics[0].IsHistorical
	})
	testpeer.WaitFor(t, wait, "the backlog to drain", func() bool { return queuePending(statusFile) <= 2 })
	last := host.WaitSince(host.Len(), wait, "live DDATA again", isKind("DDATA", "oven"))

	// Nothing lost, in order: every oven batch from the first to the last
	// one arrived, historical ones in poll order.
	var stamps []int64
	var prevHist int64
	for _, m := range host.Messages() {
		if !isKind("DDATA", "oven")(m) {
			continue
		}
		ts := *m.Load.Timestamp
		stamps = append(stamps, ts)
		if m.Load.Metrics[0].IsHistorical {
			if ts <= prevHist {
				t.Errorf("historical batch %d after %d: out of order", ts, prevHist)
			}
			prevHist = ts
		}
		if ts == *last.Load.Timestamp {
			break
		}
	}
	checkNoGap(t, stamps, 2*time.Second)
	checkSeq(t, host.Messages())
}

func checkNoGap(t *testing.T, stamps []int64, maxGap time.Duration) {
	t.Helper()
	sorted := append([]int64(nil), stamps...)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			t.Errorf("batch polled at %d arrived twice", sorted[i])
		}
		if gap := time.Duration(sorted[i]-sorted[i-1]) * time.Millisecond; gap > maxGap {
			t.Errorf("no batch between %d and %d (%v): lost", sorted[i-1], sorted[i], gap)
		}
	}
	if len(sorted) < 20 {
		t.Errorf("only %d batches", len(sorted))
	}
}

// queuePending reads the collector's status.json queue.pending (-1 when
// unreadable).
func queuePending(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	var st struct {
		Queue struct {
			Pending int `json:"pending"`
		} `json:"queue"`
	}
	if json.Unmarshal(b, &st) != nil {
		return -1
	}
	return st.Queue.Pending
}
