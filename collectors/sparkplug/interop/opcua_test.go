package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"fieldgate/internal/testpeer"
)

// TestOPCUASparkplug: an OPC UA collector as an edge node — DBIRTH
// datatypes come from the server's DataType attributes, a DCMD writes a
// Double (node-opcua's client reads it back), the next DDATA carries it.
func TestOPCUASparkplug(t *testing.T) {
	testpeer.Require(t, "mosquitto", "node")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/opcua-collector")
	broker := testpeer.Mosquitto(t)
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{})
	host := testpeer.StartSparkplugHost(t, testpeer.SparkplugHostConfig{Broker: broker})
	cfg := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
nodes:
  - {device: boiler1, name: setpoint, node_id: "ns=1;s=Boiler1.Setpoint", writable: true}
  - {device: boiler1, name: counter, node_id: "ns=1;s=Boiler1.Counter"}
  - {device: boiler1, name: running, node_id: "ns=1;s=Boiler1.Running"}
  - {device: boiler1, name: total, node_id: "ns=1;s=Boiler1.Total"}
  - {device: boiler1, name: offset, node_id: "ns=1;s=Boiler1.Offset"}
  - {device: boiler1, name: pressure, node_id: "ns=1;s=Boiler1.Pressure"}
  - {device: boiler1, name: name, node_id: "ns=1;s=Boiler1.Name"}
  - {device: pump1, name: speed, node_id: "ns=1;s=Pump1.Speed"}
`, srv.Endpoint)), 0o644); err != nil {
		t.Fatal(err)
	}
	testpeer.StartCollector(t, bin, "POLL_INTERVAL=500ms", "MQTT_BROKER="+broker, "GATEWAY_ID=gw1", "COLLECTOR_NAME=ua",
		"COLLECTOR_CONFIG="+cfg, "DATA_DIR="+filepath.Join(t.TempDir(), "data"), "MQTT_PAYLOAD=sparkplug")
	isUA := func(kind, device string) func(testpeer.SparkplugMessage) bool {
		return func(m testpeer.SparkplugMessage) bool {
			return m.Edge == "gw1-ua" && m.Kind == kind && m.Device == device
		}
	}
	db := host.WaitFor(wait, "DBIRTH boiler1", isUA("DBIRTH", "boiler1"))
	want := map[string]string{"setpoint": "Double", "counter": "Int32", "running": "Boolean", "total": "UInt64",
		"offset": "Int64", "pressure": "Float", "name": "String"}
	for name, typ := range want {
		if m := db.Load.Metric(name); m == nil || m.Type != typ {
			t.Errorf("DBIRTH metric %s: %+v, want type %s", name, m, typ)
		}
	}
	if m := db.Load.Metric("total"); m != nil && m.Value != 9e9 {
		t.Errorf("total = %v, want 9000000000", m.Value)
	}
	if m := db.Load.Metric("offset"); m != nil && m.Value != -42.0 {
		t.Errorf("offset = %v, want -42", m.Value)
	}
	host.WaitFor(wait, "DBIRTH pump1", isUA("DBIRTH", "pump1"))

	host.Send(map[string]any{"cmd": "dcmd", "group": "gw1", "edge": "gw1-ua", "device": "boiler1",
		"metrics": []map[string]any{{"name": "setpoint", "type": "Double", "value": 63.5}}})
	host.WaitFor(wait, "DDATA with the new setpoint", func(m testpeer.SparkplugMessage) bool {
		if !isUA("DDATA", "boiler1")(m) {
			return false
		}
		sp := m.Load.Metric("setpoint")
		return sp != nil && sp.Value == 63.5
	})
	if v, typ := srv.Read("ns=1;s=Boiler1.Setpoint"); v != 63.5 || typ != "Double" {
		t.Errorf("node-opcua reads %v (%s), want 63.5 Double", v, typ)
	}
	checkSeqOf(t, host.Messages(), "gw1-ua")
}
