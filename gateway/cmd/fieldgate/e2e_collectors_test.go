package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
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
// node-opcua. The readings the peers hold must arrive on the broker. Neither
// is privileged: both run as their own user, not root, under seccomp and
// without capabilities; the RTU collector reaches its line through the pty's
// group (dialout, mode 0660, as udev makes a USB adapter).
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
    privileged: false
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
		c := e.Collector(name)
		if c.Restarts != 0 {
			t.Errorf("%s restarted %d times:\n%s", name, c.Restarts, e.logsOf(name))
		}
		ids := procStatusLines(t, c.Pid, "Uid", "Groups", "Seccomp", "CapEff")
		if uid := strings.Fields(ids["Uid"]); len(uid) == 0 || uid[0] == "0" || ids["Seccomp"] != "2" || ids["CapEff"] != "0000000000000000" {
			t.Errorf("%s runs with %v: want a user other than root, seccomp filtering (2), no capabilities", name, ids)
		}
		if name == "modbus-line3" && !slices.Contains(strings.Fields(ids["Groups"]), testpeer.SerialGroup()) {
			t.Errorf("%s groups %q lack the serial line's group %s", name, ids["Groups"], testpeer.SerialGroup())
		}
	}
}

// procStatusLines returns the named lines of /proc/PID/status.
func procStatusLines(t *testing.T, pid uint32, keys ...string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && slices.Contains(keys, k) {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func (e *e2e) logsOf(name string) string {
	var out, errOut strings.Builder
	run(context.Background(), []string{"logs", name, "--config", e.Config, "-n", "40"}, &out, &errOut)
	return out.String() + errOut.String()
}
