package interop

import (
	"fmt"
	"os"
	"path/filepath"
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
