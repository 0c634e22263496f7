package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/rbe"
	"fieldgate/collectors/reading"
)

// TestPollerReportByException polls a changing and a constant register once
// a second: the constant one is published only on its heartbeat, the
// changing one at every poll that moved it past its deadband since it was
// last published.
func TestPollerReportByException(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	// raw values of the changing register (scale 0.1) poll after poll
	moving := []uint16{1000, 1003, 1006, 1016, 1018, 1020, 1022, 1030, 1030, 1026, 1020, 1020, 1020}
	regs := map[uint16]uint16{0: moving[0], 1: 42}
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: regs}}},
		onRead: func(now time.Time, u *fakeUnit) {
			n := int(now.Sub(start) / time.Second)
			u.regs[fnReadHoldingRegisters][0] = moving[min(n, len(moving)-1)]
		}}
	dev := Device{Name: "meter", UnitID: 1,
		Report: rbe.Policy{Publish: rbe.PublishOnChange, Heartbeat: configfile.Duration(5 * time.Second)},
		Tags: []Tag{
			{Name: "moving", Table: TableHolding, Address: 0, Type: TypeUint16, ByteOrder: "ABCD", Scale: sc(0.1),
				Report: rbe.Policy{Heartbeat: configfile.Duration(time.Hour), Deadband: &rbe.Deadband{Absolute: sc(0.5)}}},
			{Name: "constant", Table: TableHolding, Address: 1, Type: TypeUint16, ByteOrder: "ABCD"},
		}}
	sink, _ := runSim(t, simConfig(dev), time.Second, ft, func(b reading.Batch) bool { return b.TS.Sub(start) >= 15*time.Second })
	want := strings.Join([]string{
		"0s moving=100 constant=42",
		"2s moving=100.6",
		"3s moving=101.6",
		"5s constant=42",
		"6s moving=102.2",
		"7s moving=103",
		"10s moving=102 constant=42",
		"15s constant=42",
	}, "\n")
	if got := rbeTimeline(sink, start); got != want {
		t.Fatalf("published batches:\n%s\nwant:\n%s", got, want)
	}
}

func rbeTimeline(sink *recordSink, start time.Time) string {
	var lines []string
	for _, b := range sink.of("meter") {
		var tags []string
		for _, r := range b.Readings {
			tags = append(tags, fmt.Sprintf("%s=%v", r.Tag, r.Value))
		}
		lines = append(lines, fmt.Sprintf("%ds %s", int(b.TS.Sub(start).Round(time.Second)/time.Second), strings.Join(tags, " ")))
	}
	return strings.Join(lines, "\n")
}
