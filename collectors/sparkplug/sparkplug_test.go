package sparkplug

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"fieldgate/collectors/reading"
	pb "fieldgate/collectors/sparkplug/sparkplugpb"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestValueRoundTrip(t *testing.T) {
	tests := []struct {
		typ  reading.DataType
		in   any
		dt   pb.DataType
		back any // what a DCMD of the same metric decodes to
	}{
		{reading.TypeBool, true, pb.DataType_Boolean, true},
		{reading.TypeInt8, int64(-5), pb.DataType_Int8, int64(-5)},
		{reading.TypeInt16, int64(-32768), pb.DataType_Int16, int64(-32768)},
		{reading.TypeInt32, int64(math.MinInt32), pb.DataType_Int32, int64(math.MinInt32)},
		{reading.TypeInt64, int64(math.MinInt64), pb.DataType_Int64, int64(math.MinInt64)},
		{reading.TypeUint16, uint64(65535), pb.DataType_UInt16, uint64(65535)},
		{reading.TypeUint32, uint64(math.MaxUint32), pb.DataType_UInt32, uint64(math.MaxUint32)},
		{reading.TypeUint64, uint64(math.MaxUint64), pb.DataType_UInt64, uint64(math.MaxUint64)},
		{reading.TypeFloat32, 230.1, pb.DataType_Float, float64(float32(230.1))},
		{reading.TypeFloat64, 230.1, pb.DataType_Double, 230.1},
		{reading.TypeString, "abc", pb.DataType_String, "abc"},
		{reading.TypeUnknown, int64(7), pb.DataType_Int64, int64(7)},
		{reading.TypeUnknown, 1.5, pb.DataType_Double, 1.5},
	}
	for _, tt := range tests {
		dt := dataType(tt.typ, tt.in)
		if dt != tt.dt {
			t.Errorf("%s %v: datatype %v, want %v", tt.typ, tt.in, dt, tt.dt)
			continue
		}
		m := &pb.Payload_Metric{}
		if !setValue(m, dt, tt.in) {
			t.Errorf("%s %v: refused", tt.typ, tt.in)
			continue
		}
		b, _ := proto.Marshal(m)
		var got pb.Payload_Metric
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if v, err := metricValue(&got, dt); err != nil || v != tt.back {
			t.Errorf("%s %v: decodes to %#v (%v), want %#v", tt.typ, tt.in, v, err, tt.back)
		}
	}
	// A value that does not fit its metric's type goes as null.
	m := &pb.Payload_Metric{}
	if setValue(m, pb.DataType_Int16, int64(70000)) || !m.GetIsNull() || m.Value != nil {
		t.Errorf("70000 as Int16 must be null, got %+v", m)
	}
}

func TestBdSeq(t *testing.T) {
	dir := t.TempDir()
	f, err := openBdSeq(dir)
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(0); want < 3; want++ {
		if got, err := f.next(); err != nil || got != want {
			t.Fatalf("next = %d, %v; want %d", got, err, want)
		}
	}
	// Persisted: a restart continues; 255 wraps to 0; garbage restarts at 0.
	f, _ = openBdSeq(dir)
	if got, _ := f.next(); got != 3 {
		t.Fatalf("after reopen next = %d, want 3", got)
	}
	for content, want := range map[string]uint64{"255\n": 0, "41": 42, "x": 0, "300": 0} {
		if err := os.WriteFile(filepath.Join(dir, "bdseq"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		f, _ = openBdSeq(dir)
		if got, _ := f.next(); got != want {
			t.Errorf("file %q: next = %d, want %d", content, got, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "bdseq")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bdseq file mode %v (%v), want 0600", fi.Mode(), err)
	}
}

func newTestNode(t *testing.T) *Node {
	t.Helper()
	schema := []reading.Device{{Name: "m1", Tags: []reading.Tag{
		{Name: "v", Type: reading.TypeFloat64, Unit: "V"},
		{Name: "e", Type: reading.TypeUint32},
	}}}
	n, err := New(Config{Broker: "127.0.0.1:1", GatewayID: "gw", CollectorName: "col", DataDir: t.TempDir()}, schema, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.queue.Close() })
	return n
}

func TestPublishQueuesData(t *testing.T) {
	n := newTestNode(t)
	ts := time.UnixMilli(1764345600123)
	n.SetDeviceStatus("m1", "ok")
	b := reading.Batch{Device: "m1", TS: ts, Readings: []reading.Reading{
		{Tag: "v", Value: 230.1, Quality: reading.Good, TS: ts},
		{Tag: "e", Quality: reading.Bad, Error: "modbus exception 2: illegal data address", TS: ts},
	}}
	if err := n.Publish(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, ok := n.queue.Next(ctx)
	if !ok || r.Topic != "m1" || !r.TS.Equal(ts) {
		t.Fatalf("queued %+v", r)
	}
	var p pb.Payload
	if err := proto.Unmarshal(r.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p.Seq != nil || p.GetTimestamp() != 1764345600123 || len(p.Metrics) != 2 {
		t.Fatalf("queued payload %v: want no seq (assigned at send time), the poll time and 2 metrics", &p)
	}
	v, e := p.Metrics[0], p.Metrics[1]
	if v.GetDoubleValue() != 230.1 || v.Properties != nil || v.GetDatatype() != uint32(pb.DataType_Double) {
		t.Errorf("good metric %v", v)
	}
	if !e.GetIsNull() || e.Properties.Keys[0] != PropQuality || e.Properties.Values[0].GetIntValue() != QualityBad ||
		e.Properties.Values[1].GetStringValue() != "modbus exception 2: illegal data address" {
		t.Errorf("bad metric %v", e)
	}
	// The device's birth lists the last values, with unit and quality.
	n.mu.Lock()
	birth := n.deviceBirth(n.byName["m1"], ts)
	n.mu.Unlock()
	if birth.Metrics[0].GetDoubleValue() != 230.1 || birth.Metrics[0].Properties.Values[0].GetStringValue() != "V" {
		t.Errorf("birth metric %v", birth.Metrics[0])
	}
	// A dead device queues nothing (its DDEATH says it).
	n.SetDeviceStatus("m1", "error: timeout")
	if err := n.Publish(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if st := n.queue.Stats(); st.Pending != 1 {
		t.Errorf("pending %d after a dead device's batch, want 1", st.Pending)
	}
}

func TestNewRefusesBadIDs(t *testing.T) {
	_, err := New(Config{Broker: "b", GatewayID: "gw", CollectorName: "col", GroupID: "a/b", DataDir: t.TempDir()},
		[]reading.Device{{Name: "d+1"}, {Name: "ok", Tags: []reading.Tag{{Name: "bdSeq"}}}}, quiet())
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`group_id: "a/b"`, `device: "d+1"`, `tag name "bdSeq" is reserved`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestClientID(t *testing.T) {
	long := "a-very-long-collector-name-that-goes-on-and-on-and-on-and-on"
	a, b := clientID("gw", long+"1"), clientID("gw", long+"2")
	if a == b || len(a) > 64 {
		t.Fatalf("client ids %q %q: want distinct, at most 64 characters", a, b)
	}
	if clientID("gw", "plc") != "fg-gw-plc" {
		t.Fatal("short ids are readable as they are")
	}
}
