package rbe

import (
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
)

func f64(v float64) *float64 { return &v }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one poll of a device with two tags: what it read and which tags
// the filtered batch must list.
type step struct {
	at   time.Duration
	rs   []reading.Reading
	want []string
}

func good(tag string, v any) reading.Reading {
	return reading.Reading{Tag: tag, Value: v, Quality: reading.Good}
}
func bad(tag, err string) reading.Reading {
	return reading.Reading{Tag: tag, Quality: reading.Bad, Error: err}
}

func TestApply(t *testing.T) {
	onChange := Rule{OnChange: true}
	tests := []struct {
		name  string
		rules map[string]Rule
		steps []step
	}{
		{
			name:  "always publishes every tag",
			rules: map[string]Rule{"a": {}},
			steps: []step{
				{0, []reading.Reading{good("a", 1.0), good("b", 2.0)}, []string{"a", "b"}},
				{time.Second, []reading.Reading{good("a", 1.0), good("b", 2.0)}, []string{"a", "b"}},
			},
		},
		{
			name:  "on_change lists only changes; nothing due publishes nothing",
			rules: map[string]Rule{"a": onChange, "b": onChange},
			steps: []step{
				{0, []reading.Reading{good("a", 1.0), good("b", "x")}, []string{"a", "b"}},
				{time.Second, []reading.Reading{good("a", 1.0), good("b", "x")}, nil},
				{2 * time.Second, []reading.Reading{good("a", 1.5), good("b", "x")}, []string{"a"}},
				{3 * time.Second, []reading.Reading{good("a", 1.5), good("b", "y")}, []string{"b"}},
			},
		},
		{
			name:  "deadband compares with the last published value",
			rules: map[string]Rule{"a": {OnChange: true, Deadband: 0.5}},
			steps: []step{
				{0, []reading.Reading{good("a", 10.0)}, []string{"a"}},
				{time.Second, []reading.Reading{good("a", 10.4)}, nil},
				{2 * time.Second, []reading.Reading{good("a", 10.5)}, nil}, // not past it
				{3 * time.Second, []reading.Reading{good("a", 10.6)}, []string{"a"}},
				{4 * time.Second, []reading.Reading{good("a", 10.2)}, nil},
				{5 * time.Second, []reading.Reading{good("a", int64(11))}, nil},
				{6 * time.Second, []reading.Reading{good("a", int64(12))}, []string{"a"}},
			},
		},
		{
			name:  "quality and error changes are due whatever the deadband",
			rules: map[string]Rule{"a": {OnChange: true, Deadband: 100}},
			steps: []step{
				{0, []reading.Reading{good("a", 1.0)}, []string{"a"}},
				{time.Second, []reading.Reading{bad("a", "timeout")}, []string{"a"}},
				{2 * time.Second, []reading.Reading{bad("a", "timeout")}, nil},
				{3 * time.Second, []reading.Reading{bad("a", "modbus exception 2: illegal data address")}, []string{"a"}},
				{4 * time.Second, []reading.Reading{good("a", 1.0)}, []string{"a"}},
			},
		},
		{
			name:  "heartbeat republishes a constant tag, half an interval early at most",
			rules: map[string]Rule{"c": {OnChange: true, Heartbeat: 5 * time.Second}, "m": onChange},
			steps: []step{
				{0, []reading.Reading{good("c", 7.0), good("m", 1.0)}, []string{"c", "m"}},
				{time.Second, []reading.Reading{good("c", 7.0), good("m", 2.0)}, []string{"m"}},
				{4 * time.Second, []reading.Reading{good("c", 7.0), good("m", 2.0)}, nil},
				{4*time.Second + 600*time.Millisecond, []reading.Reading{good("c", 7.0), good("m", 2.0)}, []string{"c"}},
				{6 * time.Second, []reading.Reading{good("c", 7.0), good("m", 2.0)}, nil},
				{9*time.Second + 600*time.Millisecond, []reading.Reading{good("c", 7.0), good("m", 2.0)}, []string{"c"}},
			},
		},
		{
			name:  "a bool or string change is any change",
			rules: map[string]Rule{"a": {OnChange: true, Deadband: 5}},
			steps: []step{
				{0, []reading.Reading{good("a", false)}, []string{"a"}},
				{time.Second, []reading.Reading{good("a", false)}, nil},
				{2 * time.Second, []reading.Reading{good("a", true)}, []string{"a"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(map[string]map[string]Rule{"dev": tt.rules}, WithTolerance(500*time.Millisecond))
			for i, s := range tt.steps {
				b := reading.Batch{Device: "dev", TS: t0.Add(s.at), Readings: append([]reading.Reading(nil), s.rs...)}
				ok := f.Apply(&b)
				var got []string
				for _, r := range b.Readings {
					got = append(got, r.Tag)
				}
				if strings.Join(got, ",") != strings.Join(s.want, ",") || ok != (len(s.want) > 0) {
					t.Fatalf("step %d (t=%v): batch lists %v (publish=%v), want %v", i, s.at, got, ok, s.want)
				}
			}
		})
	}
}

func TestApplyOtherDevice(t *testing.T) {
	f := New(map[string]map[string]Rule{"dev": {"a": {OnChange: true}}})
	b := reading.Batch{Device: "other", TS: t0, Readings: []reading.Reading{good("a", 1.0)}}
	if !f.Apply(&b) || len(b.Readings) != 1 {
		t.Fatal("a device without rules must publish as it is")
	}
	if f.Active() != true || New(map[string]map[string]Rule{"d": {"a": {}}}).Active() {
		t.Fatal("Active must tell whether any tag is on_change")
	}
}

func TestHeartbeats(t *testing.T) {
	f := New(map[string]map[string]Rule{"dev": {
		"a": {OnChange: true, Heartbeat: 10 * time.Second},
		"b": {OnChange: true},
	}})
	b := reading.Batch{Device: "dev", TS: t0, Readings: []reading.Reading{good("a", 1.0), good("b", 2.0)}}
	f.Apply(&b)
	if hb := f.Heartbeats("dev", t0.Add(9*time.Second)); len(hb) != 0 {
		t.Fatalf("heartbeat before its time: %v", hb)
	}
	hb := f.Heartbeats("dev", t0.Add(10*time.Second))
	if len(hb) != 1 || hb[0].Tag != "a" || hb[0].Value != 1.0 {
		t.Fatalf("heartbeat at 10s = %v, want the last value of a", hb)
	}
	if hb := f.Heartbeats("dev", t0.Add(15*time.Second)); len(hb) != 0 {
		t.Fatalf("heartbeat counts from the last publication: got %v at 15s", hb)
	}
	if hb := f.Heartbeats("dev", t0.Add(20*time.Second)); len(hb) != 1 {
		t.Fatalf("second heartbeat at 20s: got %v", hb)
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name     string
		p        Policy
		min, max *float64
		device   bool
		want     string // substring of the only problem; "" for none
	}{
		{"empty", Policy{}, nil, nil, false, ""},
		{"on_change with absolute", Policy{Publish: PublishOnChange, Deadband: &Deadband{Absolute: f64(0.5)}, Heartbeat: configfile.Duration(time.Minute)}, nil, nil, false, ""},
		{"unknown publish", Policy{Publish: "sometimes"}, nil, nil, false, `unknown publish "sometimes" (valid: always, on_change)`},
		{"percent without range", Policy{Publish: PublishOnChange, Deadband: &Deadband{Percent: f64(1)}}, nil, nil, false, "needs the tag's min and max"},
		{"percent on a device is checked per tag", Policy{Publish: PublishOnChange, Deadband: &Deadband{Percent: f64(1)}}, nil, nil, true, ""},
		{"percent with range", Policy{Publish: PublishOnChange, Deadband: &Deadband{Percent: f64(1)}}, f64(0), f64(100), false, ""},
		{"percent over 100", Policy{Publish: PublishOnChange, Deadband: &Deadband{Percent: f64(150)}}, f64(0), f64(1), false, "within 0..100"},
		{"both", Policy{Publish: PublishOnChange, Deadband: &Deadband{Percent: f64(1), Absolute: f64(1)}}, nil, nil, false, "not both"},
		{"neither", Policy{Publish: PublishOnChange, Deadband: &Deadband{}}, nil, nil, false, "needs absolute or percent"},
		{"negative absolute", Policy{Publish: PublishOnChange, Deadband: &Deadband{Absolute: f64(-1)}}, nil, nil, false, "≥ 0"},
		{"deadband with always", Policy{Publish: PublishAlways, Deadband: &Deadband{Absolute: f64(1)}}, nil, nil, false, "only with publish: on_change"},
		{"heartbeat without publish", Policy{Heartbeat: configfile.Duration(time.Second)}, nil, nil, false, "heartbeat applies only"},
		{"heartbeat with always", Policy{Publish: PublishAlways, Heartbeat: configfile.Duration(time.Second)}, nil, nil, false, "heartbeat applies only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := tt.p.Problems(tt.min, tt.max, tt.device)
			switch {
			case tt.want == "" && len(ps) != 0:
				t.Fatalf("unexpected problems: %v", ps)
			case tt.want != "" && (len(ps) != 1 || !strings.Contains(ps[0].Msg, tt.want)):
				t.Fatalf("problems %v, want one containing %q", ps, tt.want)
			}
		})
	}
}

func TestRuleAndMerge(t *testing.T) {
	dev := Policy{Publish: PublishOnChange, Heartbeat: configfile.Duration(time.Minute)}
	tag := Policy{Deadband: &Deadband{Percent: f64(2)}}.Merge(dev)
	r := tag.Rule(f64(0), f64(50))
	if !r.OnChange || r.Deadband != 1 || r.Heartbeat != time.Minute {
		t.Fatalf("rule %+v, want on_change, deadband 1 (2%% of 50), heartbeat 1m", r)
	}
	own := Policy{Publish: PublishAlways}.Merge(dev)
	if own.Rule(nil, nil).OnChange {
		t.Fatal("a tag's own publish: always must win over its device's on_change")
	}
}
