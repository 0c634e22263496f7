package opcua

import (
	"strings"
	"testing"

	"fieldgate/collectors/reading"
	"fieldgate/internal/testpeer"
)

// TestOversize serves, from node-opcua, a String, a ByteString and an
// array larger than the collector's limits next to ordinary variables: each
// oversized value is one bad reading naming its limit, the others stay
// good, in both modes.
func TestOversize(t *testing.T) {
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{Oversize: 20_000})
	lim := Limits{MaxStringBytes: 16 << 10, MaxByteStringBytes: 16 << 10, MaxArrayLength: 10_000}
	nodes := []Node{
		{Device: "boiler1", Name: "temperature", NodeID: "ns=1;s=Boiler1.Temperature"},
		{Device: "big", Name: "string", NodeID: "ns=1;s=Big.String"},
		{Device: "big", Name: "bytes", NodeID: "ns=1;s=Big.Bytes"},
		{Device: "big", Name: "array", NodeID: "ns=1;s=Big.Array"},
	}
	want := map[string]string{
		"string": "string of 20000 bytes is larger than limits.max_string_bytes (16384)",
		"bytes":  "ByteString of 20000 bytes is larger than limits.max_bytestring_bytes (16384)",
		"array":  "array of 20000 elements is larger than limits.max_array_length (10000)",
	}
	for _, mode := range []string{ModeSubscribe, ModePoll} {
		t.Run(mode, func(t *testing.T) {
			sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Mode: mode, Security: insecure, Nodes: nodes, Limits: lim})
			testpeer.WaitFor(t, waitLong, "a reading of every oversized tag and a good temperature", func() bool {
				_, ok := sink.lastGood(0, "boiler1", "temperature")
				for tag := range want {
					ok = ok && len(sink.readings(0, "big", tag)) > 0
				}
				return ok
			})
			for tag, msg := range want {
				for _, r := range sink.readings(0, "big", tag) {
					if r.Quality != reading.Bad || r.Value != nil || r.Error != msg {
						t.Errorf("%s: reading %s/%v %q, want bad with %q", tag, r.Quality, r.Value, r.Error, msg)
					}
				}
			}
		})
	}

	// A message limit below the values' size: a conforming server refuses
	// the response instead of sending it; the collector reports the reason
	// and goes on.
	t.Run("message limit", func(t *testing.T) {
		small := Limits{MaxStringBytes: 16 << 10, MaxByteStringBytes: 16 << 10, MaxMessageBytes: 64 << 10}
		sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Mode: ModePoll, Security: insecure,
			Nodes: nodes[3:], Limits: small})
		testpeer.WaitFor(t, waitLong, "the array reported", func() bool {
			return len(sink.readings(0, "big", "array")) > 0
		})
		r := sink.readings(0, "big", "array")[0]
		t.Logf("array over a 64 KiB message: %s %q", r.Quality, r.Error)
		if r.Quality != reading.Bad || !strings.Contains(r.Error, "TooLarge") && !strings.Contains(r.Error, "Limits") {
			t.Errorf("reading %+v, want bad naming the size problem", r)
		}
	})
}
