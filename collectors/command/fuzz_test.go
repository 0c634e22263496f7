package command

import (
	"context"
	"encoding/json"
	"testing"
)

// FuzzHandleJSON feeds arbitrary command payloads (they come from the
// network) to a handler: it must never panic, always reply with valid JSON,
// and hand the writer only writes it checked.
func FuzzHandleJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":"a1","tag":"setpoint","value":42.5}`,
		`{"id":7,"writes":[{"tag":"setpoint","value":1},{"tag":"run","value":true}]}`,
		`{"id":"x","tag":"temp","value":1}`,
		`{"tag":"setpoint","value":1e400}`,
		`{"id":{"a":[1,2]},"tag":"run","value":null}`,
		`{"writes":[{"tag":"","value":1}]}`,
		`[1,2,3]`, `{"id":"q","tag":`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		w := &fakeWriter{}
		h, err := NewHandler(schema, w, quiet())
		if err != nil {
			t.Fatal(err)
		}
		reply := h.HandleJSON(context.Background(), "plc1", payload)
		if !json.Valid(reply) {
			t.Fatalf("reply %q is not JSON", reply)
		}
		for _, wr := range w.writes {
			if !wr.Tag.Writable {
				t.Fatalf("write of a tag that is not writable reached the writer: %+v", wr)
			}
			if f, ok := wr.Value.(float64); ok && wr.Tag.Max != nil && f > *wr.Tag.Max {
				t.Fatalf("value %v above max reached the writer", f)
			}
		}
	})
}
