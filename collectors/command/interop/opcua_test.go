package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"fieldgate/internal/testpeer"
)

// TestOPCUAJSONWrite writes an OPC UA Double over MQTT; node-opcua's own
// client reads it back.
func TestOPCUAJSONWrite(t *testing.T) {
	testpeer.Require(t, "mosquitto", "node")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/opcua-collector")
	broker := aclBroker(t)
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{})
	cfg := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
nodes:
  - {device: boiler1, name: setpoint, node_id: "ns=1;s=Boiler1.Setpoint", writable: true, min: 0, max: 120}
  - {device: boiler1, name: temperature, node_id: "ns=1;s=Boiler1.Temperature"}
`, srv.Endpoint)), 0o644); err != nil {
		t.Fatal(err)
	}
	testpeer.StartCollector(t, bin, "POLL_INTERVAL=500ms", "MQTT_BROKER="+broker, "GATEWAY_ID=gw1", "COLLECTOR_NAME=ua",
		"COLLECTOR_CONFIG="+cfg, "DATA_DIR="+filepath.Join(t.TempDir(), "data"),
		"MQTT_USERNAME=collector", "MQTT_PASSWORD_FILE="+passwordFile(t))
	scada := connect(t, broker, "scada")
	const cmd = "fieldgate/gw1/cmd/ua/boiler1"
	// Until the session is up a write fails ("not connected …"); retry.
	var ok bool
	var rb any
	var errText string
	testpeer.WaitFor(t, wait, "a write once the OPC UA session is up", func() bool {
		ok, rb, errText = oneResult(t, scada.ready(cmd, `{"id":"sp","tag":"setpoint","value":87.25}`, "sp"))
		return ok || errText != "not connected to the OPC UA server: no session yet"
	})
	if !ok || rb != 87.25 {
		t.Fatalf("write: ok=%v read_back=%v error=%q", ok, rb, errText)
	}
	if v, typ := srv.Read("ns=1;s=Boiler1.Setpoint"); v != 87.25 || typ != "Double" {
		t.Errorf("node-opcua reads %v (%s), want 87.25 Double", v, typ)
	}
	scada.send(cmd, `{"id":"hi","tag":"setpoint","value":121}`, false)
	if ok, _, e := oneResult(t, scada.await("hi")); ok || e != "out of range: 121 is above max 120" {
		t.Errorf("out of range write: ok=%v error=%q", ok, e)
	}
	scada.send(cmd, `{"id":"ro","tag":"temperature","value":1}`, false)
	if ok, _, e := oneResult(t, scada.await("ro")); ok || e != "not writable" {
		t.Errorf("non-writable write: ok=%v error=%q", ok, e)
	}
}
