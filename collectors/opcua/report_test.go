package opcua

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/collectors/command"
	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
	"fieldgate/internal/testpeer"
)

// typeSink is a recSink that also learns tag types (a TypeSink).
type typeSink struct {
	recSink
	tmu   sync.Mutex
	types map[string]reading.DataType
}

func (s *typeSink) SetTagType(device, tag string, t reading.DataType) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.types == nil {
		s.types = map[string]reading.DataType{}
	}
	s.types[device+"/"+tag] = t
}

func (s *typeSink) typeOf(key string) reading.DataType {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return s.types[key]
}

func startEngine(t *testing.T, cfg Config, sink Sink) *Engine {
	t.Helper()
	e, err := New(cfg, sink, WithDataDir(t.TempDir()), WithPollInterval(200*time.Millisecond),
		WithBackoff(200*time.Millisecond, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s")
		}
	})
	return e
}

// TestSubscribeHeartbeat: a subscription reports the changing counter at
// every change and the constant temperature only at its start and then on
// each heartbeat.
func TestSubscribeHeartbeat(t *testing.T) {
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{})
	cfg := Config{Endpoint: srv.Endpoint, Security: insecure, Nodes: []Node{
		{Device: "boiler1", Name: "temperature", NodeID: "ns=1;s=Boiler1.Temperature", Heartbeat: configfile.Duration(2 * time.Second)},
		{Device: "boiler1", Name: "counter", NodeID: "ns=1;s=Boiler1.Counter"},
	}}
	sink := &typeSink{}
	startEngine(t, cfg, sink)
	testpeer.WaitFor(t, waitLong, "three temperature readings", func() bool {
		return len(sink.readings(0, "boiler1", "temperature")) >= 3
	})
	temps := sink.readings(0, "boiler1", "temperature")
	var stamps []time.Time
	sink.mu.Lock()
	for _, b := range sink.batches {
		for _, r := range b.Readings {
			if r.Tag == "temperature" {
				stamps = append(stamps, b.TS)
			}
		}
	}
	sink.mu.Unlock()
	for i := 1; i < len(stamps); i++ {
		if gap := stamps[i].Sub(stamps[i-1]); gap < 1900*time.Millisecond {
			t.Errorf("temperature published %v after the previous one: before its heartbeat", gap)
		}
	}
	if temps[2].Value != 21.5 {
		t.Errorf("heartbeat value %v, want the unchanged 21.5", temps[2].Value)
	}
	if n := len(sink.readings(0, "boiler1", "counter")); n < 5 {
		t.Errorf("%d counter readings: every change must be published", n)
	}
	if got := sink.typeOf("boiler1/counter"); got != reading.TypeInt32 {
		t.Errorf("counter type %q, want int32 (from the server's DataType)", got)
	}
}

// TestEngineWrite writes with each node's datatype and reads back; the
// server's own client confirms.
func TestEngineWrite(t *testing.T) {
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{})
	w := command.Limits{Writable: true}
	cfg := Config{Endpoint: srv.Endpoint, Security: insecure, Mode: ModePoll, Nodes: []Node{
		{Device: "boiler1", Name: "setpoint", NodeID: "ns=1;s=Boiler1.Setpoint", Limits: w},
		{Device: "boiler1", Name: "mode", NodeID: "ns=1;s=Boiler1.Mode", Limits: w},
		{Device: "boiler1", Name: "locked", NodeID: "ns=1;s=Boiler1.Locked", Limits: w},
		{Device: "boiler1", Name: "temperature", NodeID: "ns=1;s=Boiler1.Temperature"},
	}}
	sink := &typeSink{}
	e := startEngine(t, cfg, sink)
	testpeer.WaitFor(t, waitLong, "a good setpoint reading", func() bool {
		_, ok := sink.lastGood(0, "boiler1", "setpoint")
		return ok
	})
	tag := func(name string) reading.Tag { return reading.Tag{Name: name, Writable: true} }
	res := e.Write(context.Background(), "boiler1", []command.Write{
		{Tag: tag("setpoint"), Value: 75.5},
		{Tag: tag("mode"), Value: int64(-3)},
		{Tag: tag("mode"), Value: int64(40000)},
		{Tag: tag("locked"), Value: 1.0},
		{Tag: tag("temperature"), Value: 1.0},
		{Tag: tag("setpoint"), Value: "high"},
	})
	want := []struct {
		readBack any
		err      string
	}{{75.5, ""}, {int64(-3), ""}, {nil, "out of range"}, {nil, "device refused the write: BadNotWritable"},
		{nil, "not writable"}, {nil, "type mismatch"}}
	for i, r := range res {
		got := ""
		if r.Err != nil {
			got = r.Err.Error()
		}
		if r.ReadBack != want[i].readBack || !strings.HasPrefix(got, want[i].err) || (want[i].err == "" && got != "") {
			t.Errorf("write %d (%s): read back %#v, err %q; want %#v, %q", i, r.Tag, r.ReadBack, got, want[i].readBack, want[i].err)
		}
	}
	if v, typ := srv.Read("ns=1;s=Boiler1.Setpoint"); v != 75.5 || typ != "Double" {
		t.Errorf("node-opcua reads setpoint %v (%s), want 75.5 Double", v, typ)
	}
	if v, typ := srv.Read("ns=1;s=Boiler1.Mode"); v != -3.0 || typ != "Int16" {
		t.Errorf("node-opcua reads mode %v (%s), want -3 Int16", v, typ)
	}
	if !errors.Is(res[4].Err, command.ErrNotWritable) {
		t.Errorf("temperature: %v", res[4].Err)
	}
}
