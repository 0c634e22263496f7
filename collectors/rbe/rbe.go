// Package rbe is report by exception, shared by every collector: which tags a
// reading batch lists. With `publish: always` (the Modbus default) a batch
// lists every tag; with `publish: on_change` only the tags whose value moved
// past their deadband, whose quality or error changed, or whose heartbeat is
// due. A device with nothing due publishes nothing that cycle.
//
// The YAML keys, per tag or per device (a tag's own keys win):
//
//	publish: on_change          # always | on_change
//	deadband: {absolute: 0.5}   # or {percent: 1}: of max - min, which it needs
//	heartbeat: 60s              # republish an unchanged value this often
//
// The heartbeat lets a subscriber tell "steady" from "lost": an unchanged
// value comes again at most a heartbeat after it was last published.
package rbe

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
)

// Publish modes.
const (
	PublishAlways   = "always"
	PublishOnChange = "on_change"
)

// PublishModes lists the valid values of `publish`.
var PublishModes = []string{PublishAlways, PublishOnChange}

// Policy is the report-by-exception setting of a tag or a device, as
// written in a collector file. The zero value is "not set": a tag without a
// policy of its own takes its device's, and a device without one publishes
// always.
type Policy struct {
	// Publish is always or on_change.
	Publish string `yaml:"publish"`
	// Deadband is the change an on_change value must exceed to be
	// published (numbers only; any change of other values counts).
	Deadband *Deadband `yaml:"deadband"`
	// Heartbeat republishes an unchanged value when it was last published
	// this long ago; 0 never does.
	Heartbeat configfile.Duration `yaml:"heartbeat"`
}

// Deadband is `{absolute: x}` (in the value's unit) or `{percent: p}` (of
// the tag's max - min range).
type Deadband struct {
	Absolute *float64       `yaml:"absolute"`
	Percent  *float64       `yaml:"percent"`
	Pos      configfile.Pos `yaml:"-"`
}

// Problem is a configuration problem of a policy: the key it concerns
// ("publish", "deadband", "heartbeat") and the message. Range marks a
// problem of the tag's range (a percent deadband without min and max),
// which is the tag's even when the deadband is its device's.
type Problem struct {
	Key   string
	Msg   string
	Range bool
}

// Merge returns p with every key it leaves unset taken from def (the
// device's policy). A tag that publishes always takes no deadband or
// heartbeat from its device.
func (p Policy) Merge(def Policy) Policy {
	if p.Publish == PublishAlways {
		return p
	}
	if p.Publish == "" {
		p.Publish = def.Publish
	}
	if p.Deadband == nil {
		p.Deadband = def.Deadband
	}
	if p.Heartbeat == 0 {
		p.Heartbeat = def.Heartbeat
	}
	return p
}

// IsZero reports whether nothing is set.
func (p Policy) IsZero() bool { return p.Publish == "" && p.Deadband == nil && p.Heartbeat == 0 }

// Problems checks p; min and max are the tag's range, which a percent
// deadband needs (nil when not set). A device-level policy is checked with
// nil bounds only for what does not depend on the tag (pass device=true).
func (p Policy) Problems(min, max *float64, device bool) []Problem {
	var out []Problem
	switch p.Publish {
	case "", PublishAlways, PublishOnChange:
	default:
		out = append(out, Problem{Key: "publish", Msg: fmt.Sprintf("unknown publish %q (valid: %s, %s)", p.Publish, PublishAlways, PublishOnChange)})
	}
	if p.Heartbeat < 0 {
		out = append(out, Problem{Key: "heartbeat", Msg: fmt.Sprintf("heartbeat must be positive, got %s", p.Heartbeat)})
	}
	if d := p.Deadband; d != nil {
		switch {
		case d.Absolute == nil && d.Percent == nil:
			out = append(out, Problem{Key: "deadband", Msg: "deadband needs absolute or percent, e.g. {absolute: 0.5} or {percent: 1}"})
		case d.Absolute != nil && d.Percent != nil:
			out = append(out, Problem{Key: "deadband", Msg: "deadband takes absolute or percent, not both"})
		case d.Absolute != nil && !(*d.Absolute >= 0 && !math.IsInf(*d.Absolute, 0)):
			out = append(out, Problem{Key: "deadband", Msg: fmt.Sprintf("deadband.absolute must be a number ≥ 0, got %v", *d.Absolute)})
		case d.Percent != nil && !(*d.Percent >= 0 && *d.Percent <= 100):
			out = append(out, Problem{Key: "deadband", Msg: fmt.Sprintf("deadband.percent must be within 0..100, got %v", *d.Percent)})
		case d.Percent != nil && !device && (min == nil || max == nil):
			out = append(out, Problem{Key: "deadband", Msg: "deadband.percent needs the tag's min and max (the range it is a percent of)", Range: true})
		case d.Percent != nil && !device && *max <= *min:
			out = append(out, Problem{Key: "deadband", Msg: fmt.Sprintf("deadband.percent needs max > min, got min %v, max %v", *min, *max), Range: true})
		}
		if p.Publish != PublishOnChange {
			out = append(out, Problem{Key: "deadband", Msg: "deadband applies only with publish: on_change"})
		}
	}
	if p.Heartbeat > 0 && p.Publish != PublishOnChange {
		out = append(out, Problem{Key: "heartbeat", Msg: "heartbeat applies only with publish: on_change (always publishes every value)"})
	}
	return out
}

// TagProblems checks a tag whose own policy is p and whose device's is
// def: the problems of the keys the tag sets itself, and those of its range
// (a percent deadband, even the device's, needs the tag's min and max).
// numeric says whether the tag's value is a number: a device's deadband
// does not concern the others.
func (p Policy) TagProblems(def Policy, min, max *float64, numeric bool) []Problem {
	m := p.Merge(def)
	if p.Deadband == nil && !numeric {
		m.Deadband = nil
	}
	var out []Problem
	for _, pr := range m.Problems(min, max, false) {
		switch {
		case pr.Range,
			pr.Key == "publish" && p.Publish != "",
			pr.Key == "heartbeat" && p.Heartbeat != 0,
			pr.Key == "deadband" && p.Deadband != nil:
			out = append(out, pr)
		}
	}
	return out
}

// Rule is a tag's resolved policy, what Filter applies.
type Rule struct {
	// OnChange publishes only changes (and heartbeats); false: always.
	OnChange bool
	// Deadband is the absolute change a number must exceed; 0: any change.
	Deadband float64
	// Heartbeat republishes unchanged values; 0: never.
	Heartbeat time.Duration
}

// Rule resolves p for a tag of range [min, max] (a percent deadband becomes
// absolute). p should have passed Problems.
func (p Policy) Rule(min, max *float64) Rule {
	r := Rule{OnChange: p.Publish == PublishOnChange, Heartbeat: p.Heartbeat.D()}
	if d := p.Deadband; d != nil && r.OnChange {
		switch {
		case d.Absolute != nil:
			r.Deadband = *d.Absolute
		case d.Percent != nil && min != nil && max != nil:
			r.Deadband = *d.Percent / 100 * (*max - *min)
		}
	}
	return r
}

// Filter decides, tag by tag, what a batch lists. It keeps the last
// published reading of every on_change tag. It is safe for concurrent use
// (devices on different links are polled concurrently).
type Filter struct {
	mu        sync.Mutex
	rules     map[string]map[string]Rule // device → tag → rule
	last      map[string]map[string]*state
	tolerance time.Duration
}

type state struct {
	r         reading.Reading
	published time.Time // batch time of the last publication
}

// Option configures a Filter.
type Option func(*Filter)

// WithTolerance makes a heartbeat due that much early, so that a poll a
// little before the heartbeat's time publishes rather than the next one a
// whole interval later. Collectors pass half their poll interval.
func WithTolerance(d time.Duration) Option { return func(f *Filter) { f.tolerance = max(d, 0) } }

// New returns a filter for rules: device → tag → rule. A tag without a rule
// is published always.
func New(rules map[string]map[string]Rule, opts ...Option) *Filter {
	f := &Filter{rules: rules, last: map[string]map[string]*state{}}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Active reports whether any tag is published on change (if not, Apply
// never removes anything).
func (f *Filter) Active() bool {
	for _, tags := range f.rules {
		for _, r := range tags {
			if r.OnChange {
				return true
			}
		}
	}
	return false
}

// Apply removes from b the readings that are not due and records the ones
// that stay as published at b.TS. It reports whether anything is left to
// publish. A reading is due when its tag publishes always, when it is the
// tag's first, when its quality or error differs from the last published,
// when its value moved more than the deadband from the last published (any
// change, for a non-number), or when the tag's heartbeat is due.
func (f *Filter) Apply(b *reading.Batch) bool {
	rules := f.rules[b.Device]
	if len(rules) == 0 {
		return len(b.Readings) > 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.last[b.Device]
	if last == nil {
		last = map[string]*state{}
		f.last[b.Device] = last
	}
	keep := b.Readings[:0]
	for _, r := range b.Readings {
		rule, ok := rules[r.Tag]
		if !ok || !rule.OnChange {
			keep = append(keep, r)
			continue
		}
		st := last[r.Tag]
		if st != nil && !due(rule, st, r, b.TS, f.tolerance) {
			continue
		}
		if st == nil {
			st = &state{}
			last[r.Tag] = st
		}
		st.r, st.published = r, b.TS
		keep = append(keep, r)
	}
	clear(b.Readings[len(keep):]) // drop references the batch no longer lists
	b.Readings = keep
	return len(keep) > 0
}

func due(rule Rule, st *state, r reading.Reading, now time.Time, tolerance time.Duration) bool {
	if rule.Heartbeat > 0 && now.Sub(st.published) >= rule.Heartbeat-tolerance {
		return true
	}
	if quality(st.r.Quality) != quality(r.Quality) || st.r.Error != r.Error {
		return true
	}
	return changed(st.r.Value, r.Value, rule.Deadband)
}

func quality(q reading.Quality) reading.Quality {
	if q == "" {
		return reading.Good
	}
	return q
}

// changed compares two values of one tag: numbers by the deadband, others
// by equality.
func changed(old, cur any, deadband float64) bool {
	a, aNum := reading.AsFloat(old)
	b, bNum := reading.AsFloat(cur)
	if aNum && bNum {
		if math.IsNaN(a) || math.IsNaN(b) {
			return math.IsNaN(a) != math.IsNaN(b)
		}
		if deadband == 0 {
			return a != b
		}
		return math.Abs(b-a) > deadband
	}
	if aNum != bNum {
		return true
	}
	return old != cur
}

// Heartbeats returns the last published readings of device's on_change
// tags whose heartbeat is due at now, and records them as published at
// now. Collectors that receive changes only (OPC UA subscriptions) call it
// periodically; polling collectors get heartbeats from Apply.
func (f *Filter) Heartbeats(device string, now time.Time) []reading.Reading {
	rules := f.rules[device]
	if len(rules) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []reading.Reading
	for tag, st := range f.last[device] {
		rule := rules[tag]
		if !rule.OnChange || rule.Heartbeat <= 0 || now.Sub(st.published) < rule.Heartbeat-f.tolerance {
			continue
		}
		st.published = now
		out = append(out, st.r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tag < out[j].Tag })
	return out
}
