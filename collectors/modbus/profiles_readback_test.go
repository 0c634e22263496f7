package modbus

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/reading"
	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
	"fieldgate/internal/testpeer"
)

// TestEveryProfileReadBack serves every embedded profile from devsim over
// Modbus TCP, one unit id each, polls them all as devices with `profile:`,
// and checks each reading against what devsim says a correct master decodes
// at the (frozen) time: every tag of every profile good, with the right
// value. It proves each profile's types, byte orders, scales, bits and
// strings round-trip through an independent slave implementation.
func TestEveryProfileReadBack(t *testing.T) {
	names := profiles.Names()
	frozen := time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	units := map[uint8]string{}
	for i, n := range names {
		units[uint8(i+1)] = n
	}
	sim := startDevsim(t, devsim.Config{TCP: "127.0.0.1:0"}, units, devsim.WithClock(func() time.Time { return frozen }))

	var y strings.Builder
	fmt.Fprintf(&y, "transport: tcp\ntcp: {address: %q}\ntimeout: 2s\ndevices:\n", sim.Addr())
	for i, n := range names {
		fmt.Fprintf(&y, "  - {name: %s, unit_id: %d, profile: %s}\n", n, i+1, n)
	}
	sink := newChanSink()
	startPoller(t, loadTestConfig(t, y.String()), 200*time.Millisecond, sink)
	testpeer.WaitFor(t, 60*time.Second, "a batch of every profile with every reading good", func() bool {
		for _, n := range names {
			b, ok := sink.last(n)
			if !ok || !allGood(b) {
				return false
			}
		}
		return true
	})

	for i, n := range names {
		want, err := sim.Expected(uint8(i+1), frozen)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := sink.last(n)
		if len(b.Readings) != len(want) {
			t.Errorf("%s: %d readings, profile has %d tags", n, len(b.Readings), len(want))
		}
		p, _ := profiles.Lookup(n)
		for _, r := range b.Readings {
			tag := p.Tags[indexOfTag(p, r.Tag)]
			if !decodedAs(r.Value, want[r.Tag], tag.ScaleOr1()) {
				t.Errorf("%s/%s = %#v, devsim serves %#v", n, r.Tag, r.Value, want[r.Tag])
			}
		}
	}
}

func allGood(b reading.Batch) bool {
	for _, r := range b.Readings {
		if r.Quality != reading.Good {
			return false
		}
	}
	return len(b.Readings) > 0
}

func indexOfTag(p *profiles.Profile, name string) int {
	for i := range p.Tags {
		if p.Tags[i].Name == name {
			return i
		}
	}
	panic("no tag " + name)
}

// decodedAs compares a published value with devsim's expectation: numbers
// within float32 precision (a float32 register holds ~7 digits) or half a
// scale step, bools and strings exactly.
func decodedAs(got, want any, scale float64) bool {
	w, isNum := want.(float64)
	if !isNum {
		return got == want
	}
	var g float64
	switch v := got.(type) {
	case float64:
		g = v
	case int64:
		g = float64(v)
	case uint64:
		g = float64(v)
	default:
		return false
	}
	return math.Abs(g-w) <= math.Max(1e-6*math.Abs(w), math.Abs(scale)/2+1e-9)
}
