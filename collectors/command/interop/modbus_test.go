package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldgate/internal/testpeer"
)

func TestModbusJSONWrites(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/modbus-collector")
	broker := aclBroker(t)
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 7, 100: 0, 101: 0}, Coils: map[uint16]bool{10: false}},
	}})
	cfg := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`transport: tcp
tcp: {address: %q}
devices:
  - name: press
    tags:
      - {name: setpoint, table: holding_register, address: 100, type: float32, byte_order: CDAB, scale: 0.1, writable: true, min: 0, max: 500}
      - {name: run, table: coil, address: 10, writable: true}
      - {name: count, table: holding_register, address: 0, type: int16}
      - {name: ghost, table: holding_register, address: 60, type: uint16, writable: true}
`, slave.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"POLL_INTERVAL=300ms", "MQTT_BROKER=" + broker, "GATEWAY_ID=gw1", "COLLECTOR_NAME=plc",
		"COLLECTOR_CONFIG=" + cfg, "DATA_DIR=" + filepath.Join(t.TempDir(), "data"),
		"MQTT_USERNAME=collector", "MQTT_PASSWORD_FILE=" + passwordFile(t), "LOG_LEVEL=debug"}
	col := testpeer.StartCollector(t, bin, env...)
	scada := connect(t, broker, "scada")
	viewer := connect(t, broker, "viewer")
	const cmd = "fieldgate/gw1/cmd/plc/press"
	if r := scada.ready(cmd, `{"id":"ping","tag":"count","value":1}`, "ping"); !strings.Contains(r.Topic, "cmd-reply/plc/press") {
		t.Fatalf("reply on %s", r.Topic)
	}

	tests := []struct {
		name, payload, id string
		ok                bool
		readBack          any
		err               string
	}{
		{"float32 CDAB scaled", `{"id":"sp","tag":"setpoint","value":42.5}`, "sp", true, 42.5, ""},
		{"coil", `{"id":"run","writes":[{"tag":"run","value":true}]}`, "run", true, true, ""},
		{"not writable", `{"id":"ro","tag":"count","value":1}`, "ro", false, nil, "not writable"},
		{"out of range", `{"id":"big","tag":"setpoint","value":501}`, "big", false, nil, "out of range: 501 is above max 500"},
		{"type mismatch", `{"id":"str","tag":"run","value":"on"}`, "str", false, nil, "type mismatch"},
		{"device exception", `{"id":"ex","tag":"ghost","value":1}`, "ex", false, nil, "device exception 2: illegal data address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scada.send(cmd, tt.payload, false)
			ok, rb, errText := oneResult(t, scada.await(tt.id))
			if ok != tt.ok || rb != tt.readBack || !strings.HasPrefix(errText, tt.err) {
				t.Fatalf("result ok=%v read_back=%v error=%q; want %v %v %q", ok, rb, errText, tt.ok, tt.readBack, tt.err)
			}
		})
	}
	// pymodbus' own client reads what was written: 425.0 as float32 is
	// 0x43D48000, CDAB puts 8000 first.
	if got := slave.Read(1, "hr", 100, 2); got[0] != 0x8000 || got[1] != 0x43D4 {
		t.Errorf("setpoint registers %04x, want 8000 43d4", got)
	}
	if got := slave.Read(1, "co", 10, 1); got[0] != 1 {
		t.Errorf("run coil %v, want 1", got)
	}
	// Refused commands never reached the device: two writes in all (the
	// exception is pymodbus refusing an address it does not have).
	if w := slave.Writes(); len(w) != 2 {
		t.Fatalf("pymodbus carried out %q, want the two good writes only", w)
	}

	// The ACL: a viewer's command is dropped by the broker.
	viewer.send(cmd, `{"id":"v1","tag":"setpoint","value":1}`, false)
	scada.send(cmd, `{"id":"after","tag":"setpoint","value":10}`, false)
	scada.await("after")
	if w := slave.Writes(); len(w) != 3 {
		t.Fatalf("writes %q: want the viewer's command dropped and scada's done", w)
	}

	// A retained command runs once, live; a reconnect does not run it again.
	scada.send(cmd, `{"id":"ret","tag":"run","value":false}`, true)
	scada.await("ret")
	col.Stop()
	col.Start()
	testpeer.WaitFor(t, wait, "the retained command to be ignored", func() bool {
		return strings.Contains(col.Output(), "retained command ignored")
	})
	if w := slave.Writes(); len(w) != 4 {
		t.Fatalf("writes %q: the retained command ran again", w)
	}
	scada.send(cmd, "", true) // clear it
}

// TestModbusSparkplugDCMDUnderACL: with the ACL, the operator's DCMD
// writes, a viewer's is dropped, and the Sparkplug DATA flow (their
// confirmation round trip is allowed to the collector account).
func TestModbusSparkplugDCMDUnderACL(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus", "node")
	bin := testpeer.GoBuild(t, "fieldgate/collectors/cmd/modbus-collector")
	broker := aclBroker(t)
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{100: 0, 101: 0}},
	}})
	cfg := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`transport: tcp
tcp: {address: %q}
devices:
  - name: press
    tags:
      - {name: setpoint, table: holding_register, address: 100, type: float32, byte_order: CDAB, scale: 0.1, writable: true}
`, slave.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	testpeer.StartCollector(t, bin, "POLL_INTERVAL=200ms", "MQTT_BROKER="+broker, "GATEWAY_ID=gw1", "COLLECTOR_NAME=plc",
		"COLLECTOR_CONFIG="+cfg, "DATA_DIR="+dataDir, "MQTT_PAYLOAD=sparkplug",
		"MQTT_USERNAME=collector", "MQTT_PASSWORD_FILE="+passwordFile(t))
	scada := testpeer.StartSparkplugHost(t, testpeer.SparkplugHostConfig{Broker: broker, User: "scada", Password: users["scada"]})
	viewer := testpeer.StartSparkplugHost(t, testpeer.SparkplugHostConfig{Broker: broker, User: "viewer", Password: users["viewer"]})
	isData := func(m testpeer.SparkplugMessage) bool { return m.Kind == "DDATA" && m.Device == "press" }
	scada.WaitFor(wait, "DDATA", isData)
	viewer.WaitFor(wait, "DDATA seen by the viewer", isData)

	dcmd := func(value float64) map[string]any {
		return map[string]any{"cmd": "dcmd", "group": "gw1", "edge": "gw1-plc", "device": "press",
			"metrics": []map[string]any{{"name": "setpoint", "type": "Double", "value": value}}}
	}
	viewer.Send(dcmd(11))
	scada.Send(dcmd(22))
	scada.WaitFor(wait, "DDATA with 22", func(m testpeer.SparkplugMessage) bool {
		return isData(m) && m.Load.Metric("setpoint") != nil && m.Load.Metric("setpoint").Value == 22.0
	})
	if w := slave.Writes(); len(w) != 1 {
		t.Fatalf("writes %q: want scada's only", w)
	}
	// The DATA are confirmed and leave the queue.
	testpeer.WaitFor(t, wait, "DATA confirmed under the ACL (status.json mqtt.published)", func() bool {
		b, err := os.ReadFile(filepath.Join(dataDir, "status.json"))
		var st struct {
			MQTT struct {
				Published int `json:"published"`
			} `json:"mqtt"`
		}
		return err == nil && json.Unmarshal(b, &st) == nil && st.MQTT.Published >= 5
	})
}
