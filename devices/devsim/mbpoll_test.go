package devsim

import (
	"fmt"
	"math"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// mbpoll (libmodbus) is an independent Modbus master: if it reads what the
// profile says, the slave speaks standard Modbus, not just goburrow's dialect.

var mbpollValue = regexp.MustCompile(`(?m)^\[(\d+)\]:\s+(\S+)`)

// mbpoll runs mbpoll once and returns its values by reference.
func mbpoll(t *testing.T, args ...string) map[int]string {
	t.Helper()
	out, err := exec.Command("mbpoll", append([]string{"-1", "-0", "-o", "2"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mbpoll %v: %v\n%s", args, err, out)
	}
	vals := map[int]string{}
	for _, m := range mbpollValue.FindAllStringSubmatch(string(out), -1) {
		ref, _ := strconv.Atoi(m[1])
		vals[ref] = m[2]
	}
	if len(vals) == 0 {
		t.Fatalf("mbpoll %v printed no values:\n%s", args, out)
	}
	return vals
}

func TestMbpollInterop(t *testing.T) {
	testpeer.Require(t, "mbpoll", "socat")
	p630 := lookup(t, "eastron-sdm630")
	drive := lookup(t, "fieldgate-demo-drive")
	simEnd, clientEnd := testpeer.PtyPair(t)
	m := startSim(t, Config{TCP: "127.0.0.1:0", RTU: simEnd, Units: []Unit{{ID: 1, Profile: p630}, {ID: 5, Profile: drive}}},
		WithClock(func() time.Time { return frozen }))
	_, port, _ := net.SplitHostPort(m.Addr())
	exp1, _ := m.Expected(1, frozen)
	exp5, _ := m.Expected(5, frozen)

	transports := map[string][]string{
		"tcp": {"-m", "tcp", "-p", port, "127.0.0.1"},
		"rtu": {"-m", "rtu", "-b", "19200", "-P", "none", clientEnd},
	}
	for name, tr := range transports {
		t.Run(name, func(t *testing.T) {
			// SDM630 float32 ABCD input registers ("-B": big-endian word order).
			vals := mbpoll(t, append([]string{"-a", "1", "-t", "3:float", "-B", "-r", "0", "-c", "4"}, tr...)...)
			for ref, tag := range map[int]string{0: "voltage_l1", 2: "voltage_l2", 4: "voltage_l3", 6: "current_l1"} {
				got, err := strconv.ParseFloat(vals[ref], 64)
				want := exp1[tag].(float64)
				if err != nil || math.Abs(got-want) > 0.001 {
					t.Errorf("%s [%d] = %q, want %.3f", tag, ref, vals[ref], want)
				}
			}
			// Drive holding registers as plain 16-bit values.
			vals = mbpoll(t, append([]string{"-a", "5", "-t", "4", "-r", "0", "-c", "3"}, tr...)...)
			if vals[0] != "1151" || vals[2] != "50" { // control_word 0x047F, accel_time 5.0 s at 0.1
				t.Errorf("drive holding 0..2 = %v, want [0]=1151 [2]=50", vals)
			}
			// Discrete inputs.
			vals = mbpoll(t, append([]string{"-a", "5", "-t", "1", "-r", "0", "-c", "3"}, tr...)...)
			for ref, tag := range map[int]string{0: "ready", 1: "running", 2: "fault"} {
				want := "0"
				if exp5[tag].(bool) {
					want = "1"
				}
				if vals[ref] != want {
					t.Errorf("discrete input %s [%d] = %q, want %s", tag, ref, vals[ref], want)
				}
			}
			// A write through mbpoll lands in the simulator (a distinct
			// value per transport, so each one is checked).
			raw := map[string]string{"tcp": "4000", "rtu": "3125"}[name]
			out, err := exec.Command("mbpoll", append(append([]string{"-1", "-0", "-o", "2", "-a", "5", "-t", "4", "-r", "1"}, tr...), raw)...).CombinedOutput()
			if err != nil {
				t.Fatalf("mbpoll write: %v\n%s", err, out)
			}
			exp, _ := m.Expected(5, frozen)
			if got, want := fmt.Sprint(exp["frequency_setpoint"]), map[string]string{"tcp": "40", "rtu": "31.25"}[name]; got != want {
				t.Errorf("frequency_setpoint after writing %s = %v, want %s", raw, got, want)
			}
		})
	}
}
