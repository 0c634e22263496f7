package watch

import (
	"encoding/json"
	"testing"
	"time"

	"fieldgate/collectors/publish"
	"fieldgate/collectors/reading"
	"fieldgate/gateway/statuspub"
	"fieldgate/gateway/supervisor"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// batchMsg encodes a batch with the collectors' own encoder, so the view is
// tested against what collectors really publish.
func batchMsg(collector, device string, polled, at time.Time, replayed bool, rs ...reading.Reading) Message {
	for i := range rs {
		if rs[i].TS.IsZero() {
			rs[i].TS = polled
		}
	}
	b := reading.Batch{Gateway: "gw1", Collector: collector, Device: device, Seq: 1, TS: polled, Readings: rs, Replayed: replayed}
	return Message{Topic: "fieldgate/gw1/data/" + collector + "/" + device, Payload: b.AppendJSON(nil), At: at}
}

func good(tag string, v any, unit string) reading.Reading {
	return reading.Reading{Tag: tag, Value: v, Unit: unit, Quality: reading.Good}
}

func bad(tag, why string) reading.Reading {
	return reading.Reading{Tag: tag, Quality: reading.Bad, Error: why}
}

func collectorStatusMsg(name string, st publish.Status, at time.Time) Message {
	b, _ := json.Marshal(st)
	return Message{Topic: "fieldgate/gw1/status/" + name, Payload: b, At: at}
}

func gatewayStatusMsg(p statuspub.Payload, at time.Time) Message {
	b, _ := json.Marshal(p)
	return Message{Topic: "fieldgate/gw1/status", Payload: b, At: at}
}

func TestStateRows(t *testing.T) {
	type want struct {
		value, quality, err string
		stale, offline      bool
		age                 time.Duration
	}
	tests := []struct {
		name      string
		intervals map[string]time.Duration
		stale     time.Duration
		msgs      []Message
		now       time.Time
		want      map[string]want // collector/device/tag
	}{
		{
			name: "values as published",
			msgs: []Message{batchMsg("m", "meter1", t0, t0.Add(50*time.Millisecond), false,
				good("voltage", float32(230.1), "V"), good("running", true, ""), good("serial", "SN 42", ""),
				bad("energy", "modbus exception 2: illegal data address"))},
			now: t0.Add(time.Second),
			want: map[string]want{
				"m/meter1/voltage": {value: "230.1", quality: "good", age: time.Second},
				"m/meter1/running": {value: "true", quality: "good", age: time.Second},
				"m/meter1/serial":  {value: "SN 42", quality: "good", age: time.Second},
				"m/meter1/energy":  {quality: "bad", err: "modbus exception 2: illegal data address", age: time.Second},
			},
		},
		{
			name: "newer batch replaces, replayed older one does not",
			msgs: []Message{
				batchMsg("m", "d", t0, t0, false, good("v", 1, "")),
				batchMsg("m", "d", t0.Add(2*time.Second), t0.Add(2*time.Second), false, good("v", 3, "")),
				batchMsg("m", "d", t0.Add(time.Second), t0.Add(2100*time.Millisecond), true, good("v", 2, "")),
			},
			now:  t0.Add(2500 * time.Millisecond),
			want: map[string]want{"m/d/v": {value: "3", quality: "good", age: 500 * time.Millisecond}},
		},
		{
			name: "stale after three observed intervals",
			msgs: []Message{
				batchMsg("m", "d", t0, t0, false, good("v", 1, "")),
				batchMsg("m", "d", t0.Add(time.Second), t0.Add(time.Second), false, good("v", 1, "")),
			},
			now:  t0.Add(4100 * time.Millisecond),
			want: map[string]want{"m/d/v": {value: "1", quality: "good", stale: true, age: 3100 * time.Millisecond}},
		},
		{
			name: "not stale within three observed intervals",
			msgs: []Message{
				batchMsg("m", "d", t0, t0, false, good("v", 1, "")),
				batchMsg("m", "d", t0.Add(time.Second), t0.Add(time.Second), false, good("v", 1, "")),
			},
			now:  t0.Add(3900 * time.Millisecond),
			want: map[string]want{"m/d/v": {value: "1", quality: "good", age: 2900 * time.Millisecond}},
		},
		{
			name: "one batch: interval unknown, never stale",
			msgs: []Message{batchMsg("m", "d", t0, t0, false, good("v", 1, ""))},
			now:  t0.Add(time.Hour),
			want: map[string]want{"m/d/v": {value: "1", quality: "good", age: time.Hour}},
		},
		{
			name:      "poll interval from gateway.yaml",
			intervals: map[string]time.Duration{"m": 2 * time.Second},
			msgs:      []Message{batchMsg("m", "d", t0, t0, false, good("v", 1, ""))},
			now:       t0.Add(6100 * time.Millisecond),
			want:      map[string]want{"m/d/v": {value: "1", quality: "good", stale: true, age: 6100 * time.Millisecond}},
		},
		{
			name:      "fixed stale limit",
			stale:     10 * time.Second,
			intervals: map[string]time.Duration{"m": time.Second},
			msgs:      []Message{batchMsg("m", "d", t0, t0, false, good("v", 1, ""))},
			now:       t0.Add(9 * time.Second),
			want:      map[string]want{"m/d/v": {value: "1", quality: "good", age: 9 * time.Second}},
		},
		{
			name: "offline collector marks its tags",
			msgs: []Message{
				batchMsg("m", "d", t0, t0, false, good("v", 1, "")),
				collectorStatusMsg("m", publish.Status{State: "offline", Version: "1"}, t0),
			},
			now:  t0,
			want: map[string]want{"m/d/v": {value: "1", quality: "good", stale: true, offline: true}},
		},
		{
			name: "messages not understood change nothing",
			msgs: []Message{
				{Topic: "fieldgate/gw1/data/m/d", Payload: []byte("{not json"), At: t0},
				{Topic: "other/gw1/data/m/d", Payload: []byte("{}"), At: t0},
				{Topic: "fieldgate/gw2/data/m/d", Payload: batchMsg("m", "d", t0, t0, false, good("x", 1, "")).Payload, At: t0},
				{Topic: "fieldgate/gw1/cmd/m/d", Payload: []byte("{}"), At: t0},
			},
			now:  t0,
			want: map[string]want{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewState("fieldgate", "gw1", tc.intervals, tc.stale)
			for _, m := range tc.msgs {
				s.Apply(m)
			}
			rows := s.Rows(Filter{}, tc.now)
			if len(rows) != len(tc.want) {
				t.Fatalf("got %d rows, want %d: %+v", len(rows), len(tc.want), rows)
			}
			for _, r := range rows {
				k := r.Collector + "/" + r.Device + "/" + r.Name
				w, ok := tc.want[k]
				if !ok {
					t.Errorf("unexpected row %s", k)
					continue
				}
				got := want{value: r.Value, quality: r.Quality, err: r.Error, stale: r.Stale, offline: r.Offline, age: r.Age}
				if got != w {
					t.Errorf("%s: got %+v, want %+v", k, got, w)
				}
			}
		})
	}
}

func TestStateIgnoredCounted(t *testing.T) {
	s := NewState("fieldgate", "gw1", nil, 0)
	s.Apply(Message{Topic: "fieldgate/gw1/data/m/d", Payload: []byte("garbage")})
	s.Apply(Message{Topic: "fieldgate/gw1/status/m", Payload: []byte("[1]")})
	if s.Ignored != 2 || s.LastIgnored == "" {
		t.Fatalf("Ignored = %d (%q), want 2 with a reason", s.Ignored, s.LastIgnored)
	}
}

func TestStateCollectors(t *testing.T) {
	s := NewState("fieldgate", "", nil, 0)
	s.Apply(collectorStatusMsg("modbus-a", publish.Status{State: "online", Version: "1.2", TS: 1,
		Devices: map[string]string{"meter1": "ok", "meter2": "error: timeout"},
		Queue:   &publish.QueueStatus{Pending: 3, Dropped: 1}}, t0))
	s.Apply(gatewayStatusMsg(statuspub.Payload{State: "online", Version: "1.2", TS: 1,
		Collectors: map[string]statuspub.CollectorPayload{"modbus-a": {State: "running", Restarts: 2}, "opcua-b": {State: "backoff", Restarts: 5}}}, t0))
	report, _ := json.Marshal(publish.FileStatus{MQTT: publish.MQTTStatus{LastError: "not Authorized"}})
	s.ApplySupervisor("gw1", supervisor.Status{GatewayID: "gw1", Collectors: []supervisor.CollectorStatus{
		{Name: "opcua-b", State: "crashloop", Restarts: 6, Report: report},
	}})
	// The collector's will: offline, no devices; the last device states stay.
	s.Apply(collectorStatusMsg("modbus-a", publish.Status{State: "offline", Version: "1.2"}, t0))

	got := s.Collectors()
	if len(got) != 2 {
		t.Fatalf("collectors = %+v", got)
	}
	a, b := got[0], got[1]
	if a.Name != "modbus-a" || a.Status != "offline" || a.State != "running" || a.Restarts != 2 ||
		a.Queue == nil || a.Queue.Pending != 3 || a.Devices["meter2"] != "error: timeout" {
		t.Errorf("modbus-a = %+v", a)
	}
	if b.Name != "opcua-b" || b.State != "crashloop" || b.Restarts != 6 || b.MQTT != "error: not Authorized" {
		t.Errorf("opcua-b = %+v", b)
	}
	if gws := s.Gateways(); len(gws) != 1 || gws[0].State != "online" || gws[0].Version != "1.2" {
		t.Errorf("gateways = %+v", gws)
	}
}

func TestTopics(t *testing.T) {
	for _, tc := range []struct {
		prefix, gateway string
		want            []string
	}{
		{"fieldgate", "gw1", []string{"fieldgate/gw1/data/+/+", "fieldgate/gw1/status/+", "fieldgate/gw1/status"}},
		{"plant/a", "", []string{"plant/a/+/data/+/+", "plant/a/+/status/+", "plant/a/+/status"}},
		{"fieldgate", "+", []string{"fieldgate/+/data/+/+", "fieldgate/+/status/+", "fieldgate/+/status"}},
	} {
		got := NewState(tc.prefix, tc.gateway, nil, 0).Topics()
		if len(got) != 3 || got[0] != tc.want[0] || got[1] != tc.want[1] || got[2] != tc.want[2] {
			t.Errorf("Topics(%q, %q) = %q, want %q", tc.prefix, tc.gateway, got, tc.want)
		}
	}
}

func TestFilter(t *testing.T) {
	tag := &Tag{Collector: "modbus-line3", Device: "meter1", Name: "voltage_l1"}
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{"", true},
		{"meter", true},
		{"METER1", true},
		{"line3 volt", true},
		{"line3 current", false},
		{"c:line3", true},
		{"collector:meter", false},
		{"d:meter1", true},
		{"device:line", false},
		{"t:volt", true},
		{"tag:meter", false},
		{"x:volt", false}, // an unknown field is plain text, "x:volt" is in no name
	} {
		if got := ParseFilter(tc.filter).Match(tag); got != tc.want {
			t.Errorf("filter %q: got %v, want %v", tc.filter, got, tc.want)
		}
	}
}

func TestFormatAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0.0s", 400 * time.Millisecond: "0.4s", 12 * time.Second: "12s",
		184 * time.Second: "3m04s", 2*time.Hour + 3*time.Minute: "2h03m",
	} {
		if got := formatAge(d); got != want {
			t.Errorf("formatAge(%v) = %q, want %q", d, got, want)
		}
	}
}
