package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
)

// TestEndToEndCollectors runs the real collector images under the
// supervisor: a Modbus RTU collector whose /dev/ttyUSB0 is one end of a socat
// pty pair with pymodbus on the other, and an OPC UA collector against
// node-opcua. The readings the peers hold must arrive on the broker.
func TestEndToEndCollectors(t *testing.T) {
	testpeer.Require(t, "containerd", "mosquitto", "socat", "pymodbus", "node")
	e := newE2E(t)
	e.AddImage("fieldgate/collector-modbus", "real", fieldgatetest.Collector(t, "modbus-collector", ""))
	e.AddImage("fieldgate/collector-opcua", "real", fieldgatetest.Collector(t, "opcua-collector", ""))

	ours, theirs := testpeer.PtyPair(t)
	testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "rtu", Port: theirs, Baud: 19200, Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 1234, 1: 0x4148, 2: 0x0000}}, // 1234 and float32 12.5
	}})
	ua := testpeer.OPCUA(t, testpeer.OPCUAConfig{})

	e.WriteRaw(e.Header("") + fmt.Sprintf(`  - name: modbus-line3
    image: fieldgate/collector-modbus:real
    poll_interval: 500ms
    devices: ["%s:/dev/ttyUSB0"]
    modbus:
      transport: rtu
      serial: {port: /dev/ttyUSB0, baud: 19200}
      timeout: 1s
      devices:
        - name: meter1
          unit_id: 1
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
            - {name: level, table: holding_register, address: 1, type: float32, unit: m}
  - name: opcua-boiler
    image: fieldgate/collector-opcua:real
    poll_interval: 500ms
    opcua:
      endpoint: %q
      mode: subscribe
      security: {policy: None, mode: None}
      nodes:
        - {device: boiler1, name: temperature, node_id: "ns=1;s=Boiler1.Temperature", unit: degC}
        - {device: boiler1, name: running, node_id: "ns=1;s=Boiler1.Running"}
`, ours, ua.Endpoint))

	data := testpeer.Subscribe(t, e.Broker, "fieldgate/e2e-gw/data/#")
	e.Start()
	testpeer.WaitFor(t, 60*time.Second, "both collectors running", func() bool {
		m, o := e.Collector("modbus-line3"), e.Collector("opcua-boiler")
		return m.State == supervisor.StateRunning && o.State == supervisor.StateRunning
	})

	type reading struct {
		Tag     string
		Value   any
		Quality string
		Error   string
	}
	type batch struct {
		Gateway, Collector, Device string
		Seq                        uint64
		Readings                   []reading
	}
	want := map[string]any{
		"modbus-line3/meter1/speed":        1234.0,
		"modbus-line3/meter1/level":        12.5,
		"opcua-boiler/boiler1/temperature": 21.5,
		"opcua-boiler/boiler1/running":     true,
	}
	got := map[string]any{}
	deadline := time.After(90 * time.Second)
	for len(got) < len(want) {
		select {
		case m := <-data:
			var b batch
			if err := json.Unmarshal(m.Payload, &b); err != nil {
				t.Fatalf("payload on %s: %v: %s", m.Topic, err, m.Payload)
			}
			if want := "fieldgate/e2e-gw/data/" + b.Collector + "/" + b.Device; m.Topic != want || b.Gateway != "e2e-gw" || b.Seq == 0 {
				t.Errorf("batch on %s: %s", m.Topic, m.Payload)
			}
			for _, r := range b.Readings {
				key := b.Collector + "/" + b.Device + "/" + r.Tag
				if r.Quality == "good" && r.Value == want[key] {
					got[key] = r.Value
				}
			}
		case <-deadline:
			t.Fatalf("readings missing: got %v, want %v\nmodbus log:\n%s\nopcua log:\n%s", got, want,
				e.logsOf("modbus-line3"), e.logsOf("opcua-boiler"))
		}
	}
	for _, name := range []string{"modbus-line3", "opcua-boiler"} {
		if c := e.Collector(name); c.Restarts != 0 {
			t.Errorf("%s restarted %d times:\n%s", name, c.Restarts, e.logsOf(name))
		}
	}
}

func (e *e2e) logsOf(name string) string {
	var out, errOut strings.Builder
	run(context.Background(), []string{"logs", name, "--config", e.Config, "-n", "40"}, &out, &errOut)
	return out.String() + errOut.String()
}
