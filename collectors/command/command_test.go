package command

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/collectors/reading"
)

func f64(v float64) *float64 { return &v }

func TestConvert(t *testing.T) {
	tests := []struct {
		name string
		tag  reading.Tag
		in   any
		want any
		err  error
	}{
		{"bool", reading.Tag{Type: reading.TypeBool}, true, true, nil},
		{"bool from number", reading.Tag{Type: reading.TypeBool}, json.Number("1"), nil, ErrTypeMismatch},
		{"int16", reading.Tag{Type: reading.TypeInt16}, json.Number("-300"), int64(-300), nil},
		{"int16 overflow", reading.Tag{Type: reading.TypeInt16}, json.Number("40000"), nil, ErrOutOfRange},
		{"int16 fraction", reading.Tag{Type: reading.TypeInt16}, json.Number("1.5"), nil, ErrTypeMismatch},
		{"int16 whole float", reading.Tag{Type: reading.TypeInt16}, json.Number("2.0"), int64(2), nil},
		{"uint16 negative", reading.Tag{Type: reading.TypeUint16}, json.Number("-1"), nil, ErrOutOfRange},
		{"uint16", reading.Tag{Type: reading.TypeUint16}, json.Number("65535"), uint64(65535), nil},
		{"uint64 big", reading.Tag{Type: reading.TypeUint64}, json.Number("18446744073709551615"), uint64(18446744073709551615), nil},
		{"int64 from uint too big", reading.Tag{Type: reading.TypeInt64}, json.Number("18446744073709551615"), nil, ErrOutOfRange},
		{"float32", reading.Tag{Type: reading.TypeFloat32}, json.Number("42.5"), 42.5, nil},
		{"float32 overflow", reading.Tag{Type: reading.TypeFloat32}, json.Number("1e40"), nil, ErrOutOfRange},
		{"float64 from int", reading.Tag{Type: reading.TypeFloat64}, json.Number("3"), 3.0, nil},
		{"number from string", reading.Tag{Type: reading.TypeFloat64}, "3", nil, ErrTypeMismatch},
		{"string", reading.Tag{Type: reading.TypeString}, "abc", "abc", nil},
		{"string from number", reading.Tag{Type: reading.TypeString}, json.Number("1"), nil, ErrTypeMismatch},
		{"above max", reading.Tag{Type: reading.TypeFloat64, Max: f64(100)}, json.Number("100.5"), nil, ErrOutOfRange},
		{"below min", reading.Tag{Type: reading.TypeInt32, Min: f64(-5)}, json.Number("-6"), nil, ErrOutOfRange},
		{"at max", reading.Tag{Type: reading.TypeFloat64, Max: f64(100)}, json.Number("100"), 100.0, nil},
		{"sparkplug typed value", reading.Tag{Type: reading.TypeInt16}, int32(7), int64(7), nil},
		{"sparkplug float into float64", reading.Tag{Type: reading.TypeFloat64}, float32(1.5), 1.5, nil},
		{"unknown type keeps ints", reading.Tag{}, json.Number("12"), int64(12), nil},
		{"unknown type keeps floats", reading.Tag{}, json.Number("1.25"), 1.25, nil},
		{"unknown type keeps bools", reading.Tag{}, false, false, nil},
		{"null", reading.Tag{Type: reading.TypeFloat64}, nil, nil, ErrTypeMismatch},
		{"object", reading.Tag{Type: reading.TypeFloat64}, map[string]any{}, nil, ErrTypeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Convert(tt.tag, tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Convert(%v) error %v, want %v", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Convert(%v) = %#v, %v; want %#v", tt.in, got, err, tt.want)
			}
		})
	}
}

// fakeWriter records what reaches "the wire" and answers with the value.
type fakeWriter struct {
	mu     sync.Mutex
	writes []Write
	fail   error
	block  chan struct{}
}

func (f *fakeWriter) Write(ctx context.Context, device string, ws []Write) []Result {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Result, len(ws))
	for i, w := range ws {
		f.writes = append(f.writes, w)
		out[i] = Result{Tag: w.Tag.Name, ReadBack: w.Value, Err: f.fail}
	}
	return out
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var schema = []reading.Device{{Name: "plc1", Tags: []reading.Tag{
	{Name: "setpoint", Type: reading.TypeFloat64, Writable: true, Min: f64(0), Max: f64(100)},
	{Name: "run", Type: reading.TypeBool, Writable: true},
	{Name: "temp", Type: reading.TypeFloat32},
}}}

func TestHandleJSON(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		reply   string
		wire    int // writes that reached the writer
	}{
		{"one tag", `{"id":"a1","tag":"setpoint","value":42.5}`,
			`{"id":"a1","results":[{"tag":"setpoint","ok":true,"read_back":42.5}]}`, 1},
		{"several", `{"id":7,"writes":[{"tag":"setpoint","value":1},{"tag":"run","value":true}]}`,
			`{"id":7,"results":[{"tag":"setpoint","ok":true,"read_back":1},{"tag":"run","ok":true,"read_back":true}]}`, 2},
		{"not writable", `{"id":"x","tag":"temp","value":1}`,
			`{"id":"x","results":[{"tag":"temp","ok":false,"error":"not writable"}]}`, 0},
		{"out of range", `{"id":"x","tag":"setpoint","value":101}`,
			`{"id":"x","results":[{"tag":"setpoint","ok":false,"error":"out of range: 101 is above max 100"}]}`, 0},
		{"type mismatch", `{"id":"x","tag":"run","value":"yes"}`,
			`{"id":"x","results":[{"tag":"run","ok":false,"error":"type mismatch: want true or false, got \"yes\""}]}`, 0},
		{"unknown tag", `{"id":"x","tag":"nope","value":1}`,
			`{"id":"x","results":[{"tag":"nope","ok":false,"error":"unknown tag \"nope\""}]}`, 0},
		{"one bad, one good", `{"writes":[{"tag":"temp","value":1},{"tag":"run","value":false}]}`,
			`{"results":[{"tag":"temp","ok":false,"error":"not writable"},{"tag":"run","ok":true,"read_back":false}]}`, 1},
		{"broken json", `{"id":"q","tag":`, `{"error":"invalid request: unexpected EOF`, 0},
		{"unknown key", `{"id":"q","tag":"run","value":true,"force":1}`, `{"id":"q","error":"invalid request: json: unknown field \"force\"`, 0},
		{"no value", `{"id":"q","tag":"run"}`, `{"id":"q","error":"invalid request: tag \"run\" has no \"value\""}`, 0},
		{"nothing", `{"id":"q"}`, `{"id":"q","error":"invalid request: no \"tag\" and no \"writes\""}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeWriter{}
			h, err := NewHandler(schema, w, quiet())
			if err != nil {
				t.Fatal(err)
			}
			got := string(h.HandleJSON(context.Background(), "plc1", []byte(tt.payload)))
			if !strings.HasPrefix(got, tt.reply) {
				t.Fatalf("reply\n got %s\nwant %s", got, tt.reply)
			}
			if len(w.writes) != tt.wire {
				t.Fatalf("%d writes reached the writer, want %d", len(w.writes), tt.wire)
			}
		})
	}
}

func TestDoUnknownDeviceAndFailure(t *testing.T) {
	w := &fakeWriter{fail: errors.New("timeout")}
	h, _ := NewHandler(schema, w, quiet())
	if !h.Writable() {
		t.Fatal("schema has writable tags")
	}
	r := h.Do(context.Background(), "nope", []Request{{Tag: "run", Value: true}})
	if !errors.Is(r[0].Err, ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", r[0].Err)
	}
	r = h.Do(context.Background(), "plc1", []Request{{Tag: "run", Value: true}})
	if r[0].Err == nil || r[0].Err.Error() != "timeout" {
		t.Fatalf("writer failure must be reported: %v", r[0].Err)
	}
}

func TestDoTimeoutAndBusy(t *testing.T) {
	w := &fakeWriter{block: make(chan struct{})}
	h, _ := NewHandler(schema, w, quiet(), WithTimeout(50*time.Millisecond))
	start := time.Now()
	h.Do(context.Background(), "plc1", []Request{{Tag: "run", Value: true}})
	if time.Since(start) > 5*time.Second {
		t.Fatal("Do must return within its timeout")
	}
	// Fill every slot with blocked requests; the next is refused as busy.
	h2, _ := NewHandler(schema, w, quiet(), WithTimeout(time.Minute))
	var wg sync.WaitGroup
	for range DefaultMaxInFlight {
		wg.Add(1)
		go func() { defer wg.Done(); h2.Do(context.Background(), "plc1", []Request{{Tag: "run", Value: true}}) }()
	}
	for len(h2.slots) < DefaultMaxInFlight {
		time.Sleep(time.Millisecond)
	}
	r := h2.Do(context.Background(), "plc1", []Request{{Tag: "run", Value: true}})
	if !errors.Is(r[0].Err, ErrBusy) {
		t.Fatalf("request beyond the in-flight bound: %v, want busy", r[0].Err)
	}
	close(w.block)
	wg.Wait()
}

func TestLimitsProblems(t *testing.T) {
	if p := (Limits{Min: f64(5), Max: f64(1)}).Problems(reading.TypeFloat64); len(p) != 1 || p[0].Key != "min" {
		t.Fatalf("min > max: %v", p)
	}
	if p := (Limits{Max: f64(1)}).Problems(reading.TypeString); len(p) != 1 || p[0].Key != "max" {
		t.Fatalf("max on a string: %v", p)
	}
	if p := (Limits{Writable: true, Min: f64(0), Max: f64(1)}).Problems(reading.TypeUnknown); len(p) != 0 {
		t.Fatalf("unexpected: %v", p)
	}
}
