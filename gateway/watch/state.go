// Package watch is the live view of a gateway (`fieldgate watch`): it reads
// the MQTT contract's topics — reading batches on
// {prefix}/{gateway}/data/{collector}/{device}, the retained collector status
// on {prefix}/{gateway}/status/{collector} and the retained gateway status on
// {prefix}/{gateway}/status — and shows one row per device tag under a table
// of the collectors, updated in place.
//
// The package is split so that everything but the terminal and the broker is
// pure: State folds messages into rows (state.go), Model is the Bubble Tea
// model around it whose Update takes MQTT messages, ticks and key events
// (model.go), and Subscriber feeds a program from a broker (subscribe.go).
package watch

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"fieldgate/gateway/supervisor"
)

// StaleFactor is how many batch intervals a tag may go without an update
// before it is marked stale.
const StaleFactor = 3

// Message is one MQTT message as the view sees it: At is when it arrived.
type Message struct {
	Topic   string
	Payload []byte
	At      time.Time
}

// Tag is one row of the view: the latest reading of one device tag.
type Tag struct {
	Gateway, Collector, Device, Name string
	// Value is the JSON value as published (numbers keep their digits),
	// strings unquoted; empty for null.
	Value   string
	Unit    string
	Quality string
	Error   string
	// TS is the reading's own time stamp; Received when it arrived here;
	// Changed when Value last changed.
	TS, Received, Changed time.Time
	Replayed              bool
}

// Collector is what the view knows of one collector, merged from its own
// retained status, the gateway status and (optionally) the supervisor's
// /status.
type Collector struct {
	Gateway, Name string
	// Status is the collector's own MQTT status: "online", "offline" or ""
	// when none was seen.
	Status  string
	Version string
	// Devices maps a device to "ok" or "error: …".
	Devices map[string]string
	Queue   *Queue
	// State and Restarts come from the supervisor (gateway status or
	// /status); State is "" when unknown.
	State    string
	Restarts int
	HasSup   bool
	// MQTT is the collector's broker connection from /status: "ok",
	// "error: …", "connecting" or "" when unknown.
	MQTT string
}

// Queue is a collector's outbound queue as reported in its status.
type Queue struct {
	Pending  int    `json:"pending"`
	Bytes    int64  `json:"bytes"`
	Dropped  uint64 `json:"dropped"`
	Rejected uint64 `json:"rejected"`
}

// Gateway is a gateway's retained status.
type Gateway struct {
	ID      string
	State   string
	Version string
}

type tagKey struct{ gateway, collector, device, tag string }
type deviceKey struct{ gateway, collector, device string }
type collectorKey struct{ gateway, collector string }

type deviceClock struct {
	last     time.Time     // ts of the newest live batch
	interval time.Duration // observed time between live batches (smoothed)
}

// State folds MQTT messages into the view's rows. The zero value is not
// usable; create it with NewState.
type State struct {
	prefix string
	// gateway is the gateway id subscribed to, or "" for every gateway.
	gateway string
	// Intervals are known poll intervals by collector (from gateway.yaml);
	// an observed interval is used for the others.
	intervals map[string]time.Duration
	// staleAfter, when set, replaces StaleFactor × interval.
	staleAfter time.Duration

	tags map[tagKey]*Tag
	// order lists the tag keys sorted (by gateway, collector, device, tag)
	// when sorted is set: new tags are rare, views are many.
	order      []tagKey
	sorted     bool
	devices    map[deviceKey]*deviceClock
	collectors map[collectorKey]*Collector
	gateways   map[string]*Gateway
	// Ignored counts messages that were not understood (bad JSON, unknown
	// topic); LastIgnored says why the last one was.
	Ignored     int
	LastIgnored string
}

// NewState returns an empty state for topics under prefix. gateway is the
// gateway id watched, or "" (or "+") for every gateway under prefix.
// intervals are the poll intervals known by collector name; staleAfter,
// when positive, is a fixed staleness limit instead of StaleFactor times the
// interval.
func NewState(prefix, gateway string, intervals map[string]time.Duration, staleAfter time.Duration) *State {
	if gateway == "+" {
		gateway = ""
	}
	return &State{
		prefix: strings.TrimSuffix(prefix, "/"), gateway: gateway,
		intervals: intervals, staleAfter: staleAfter,
		tags:       map[tagKey]*Tag{},
		devices:    map[deviceKey]*deviceClock{},
		collectors: map[collectorKey]*Collector{},
		gateways:   map[string]*Gateway{},
	}
}

// Topics are the subscriptions the state needs.
func (s *State) Topics() []string {
	gw := s.gateway
	if gw == "" {
		gw = "+"
	}
	base := s.prefix + "/" + gw
	return []string{base + "/data/+/+", base + "/status/+", base + "/status"}
}

// batchPayload is the contract's reading batch.
type batchPayload struct {
	Collector string `json:"collector"`
	Device    string `json:"device"`
	Seq       uint64 `json:"seq"`
	TS        int64  `json:"ts"`
	Replayed  bool   `json:"replayed"`
	Readings  []struct {
		Tag     string          `json:"tag"`
		Value   json.RawMessage `json:"value"`
		Unit    string          `json:"unit"`
		Quality string          `json:"quality"`
		Error   string          `json:"error"`
		TS      int64           `json:"ts"`
	} `json:"readings"`
}

// statusPayload is the union of the collector and gateway status messages.
type statusPayload struct {
	State      string            `json:"state"`
	Version    string            `json:"version"`
	Devices    map[string]string `json:"devices"`
	Queue      *Queue            `json:"queue"`
	Collectors map[string]struct {
		State    string `json:"state"`
		Restarts int    `json:"restarts"`
	} `json:"collectors"`
}

// Apply folds one message into the state. A message it cannot read is
// counted in Ignored and otherwise changes nothing.
func (s *State) Apply(m Message) {
	rest, ok := strings.CutPrefix(m.Topic, s.prefix+"/")
	if !ok {
		s.ignore(m.Topic, "outside the topic prefix")
		return
	}
	parts := strings.Split(rest, "/")
	if s.gateway != "" && parts[0] != s.gateway {
		s.ignore(m.Topic, "another gateway")
		return
	}
	var err error
	switch {
	case len(parts) == 4 && parts[1] == "data":
		err = s.applyBatch(parts[0], parts[2], parts[3], m)
	case len(parts) == 3 && parts[1] == "status":
		err = s.applyCollectorStatus(parts[0], parts[2], m.Payload)
	case len(parts) == 2 && parts[1] == "status":
		err = s.applyGatewayStatus(parts[0], m.Payload)
	default:
		s.ignore(m.Topic, "not a data or status topic")
		return
	}
	if err != nil {
		s.ignore(m.Topic, err.Error())
	}
}

func (s *State) ignore(topic, why string) {
	s.Ignored++
	s.LastIgnored = topic + ": " + why
}

func (s *State) applyBatch(gateway, collector, device string, m Message) error {
	var b batchPayload
	if err := json.Unmarshal(m.Payload, &b); err != nil {
		return err
	}
	dk := deviceKey{gateway, collector, device}
	clock := s.devices[dk]
	if clock == nil {
		clock = &deviceClock{}
		s.devices[dk] = clock
	}
	batchTS := time.UnixMilli(b.TS)
	if !b.Replayed && b.TS > 0 && batchTS.After(clock.last) {
		if !clock.last.IsZero() {
			d := batchTS.Sub(clock.last)
			if clock.interval == 0 {
				clock.interval = d
			} else {
				clock.interval = (3*clock.interval + d) / 4
			}
		}
		clock.last = batchTS
	}
	s.collector(gateway, collector)
	for _, r := range b.Readings {
		if r.Tag == "" {
			continue
		}
		k := tagKey{gateway, collector, device, r.Tag}
		t := s.tags[k]
		ts := time.UnixMilli(r.TS)
		if r.TS == 0 {
			ts = batchTS
		}
		if t == nil {
			t = &Tag{Gateway: gateway, Collector: collector, Device: device, Name: r.Tag}
			s.tags[k] = t
			s.order = append(s.order, k)
			s.sorted = false
		} else if ts.Before(t.TS) {
			// A backlog drained after an outage arrives after live data:
			// it must not replace a newer value.
			continue
		}
		v := formatValue(r.Value)
		if v != t.Value || t.Changed.IsZero() {
			t.Changed = m.At
		}
		t.Value, t.Unit, t.Quality, t.Error = v, r.Unit, r.Quality, r.Error
		t.TS, t.Received, t.Replayed = ts, m.At, b.Replayed
	}
	return nil
}

// formatValue shows a JSON value as published: numbers with their digits,
// strings without quotes, null as "".
func formatValue(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

func (s *State) collector(gateway, name string) *Collector {
	k := collectorKey{gateway, name}
	c := s.collectors[k]
	if c == nil {
		c = &Collector{Gateway: gateway, Name: name}
		s.collectors[k] = c
	}
	return c
}

func (s *State) applyCollectorStatus(gateway, name string, payload []byte) error {
	if len(payload) == 0 {
		// A retained status cleared by an empty message: the collector is gone.
		delete(s.collectors, collectorKey{gateway, name})
		return nil
	}
	var st statusPayload
	if err := json.Unmarshal(payload, &st); err != nil {
		return err
	}
	c := s.collector(gateway, name)
	c.Status, c.Version = st.State, st.Version
	if st.Devices != nil || st.State != "offline" {
		c.Devices = st.Devices
	}
	if st.Queue != nil {
		c.Queue = st.Queue
	}
	return nil
}

func (s *State) applyGatewayStatus(gateway string, payload []byte) error {
	if len(payload) == 0 {
		delete(s.gateways, gateway)
		return nil
	}
	var st statusPayload
	if err := json.Unmarshal(payload, &st); err != nil {
		return err
	}
	g := s.gateways[gateway]
	if g == nil {
		g = &Gateway{ID: gateway}
		s.gateways[gateway] = g
	}
	g.State, g.Version = st.State, st.Version
	for name, cs := range st.Collectors {
		c := s.collector(gateway, name)
		c.State, c.Restarts, c.HasSup = cs.State, cs.Restarts, true
	}
	return nil
}

// ApplySupervisor merges a supervisor's /status into the collectors of
// gateway: state, restarts and the collectors' MQTT connection, which a
// collector refused by its broker cannot report over MQTT.
func (s *State) ApplySupervisor(gateway string, st supervisor.Status) {
	if gateway == "" {
		gateway = st.GatewayID
	}
	for _, cs := range st.Collectors {
		c := s.collector(gateway, cs.Name)
		c.State, c.Restarts, c.HasSup = cs.State, cs.Restarts, true
		c.MQTT = ""
		var r struct {
			MQTT *struct {
				Connected bool   `json:"connected"`
				LastError string `json:"last_error"`
			} `json:"mqtt"`
			Queue *Queue `json:"queue"`
		}
		if len(cs.Report) == 0 || json.Unmarshal(cs.Report, &r) != nil {
			continue
		}
		if r.MQTT != nil {
			switch {
			case r.MQTT.Connected:
				c.MQTT = "ok"
			case r.MQTT.LastError != "":
				c.MQTT = "error: " + r.MQTT.LastError
			default:
				c.MQTT = "connecting"
			}
		}
		if r.Queue != nil {
			c.Queue = r.Queue
		}
	}
}

// Gateways returns the gateways seen, by id.
func (s *State) Gateways() []Gateway {
	out := make([]Gateway, 0, len(s.gateways))
	for _, g := range s.gateways {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Gateway) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Collectors returns the collectors seen, by gateway and name.
func (s *State) Collectors() []Collector {
	out := make([]Collector, 0, len(s.collectors))
	for _, c := range s.collectors {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Collector) int {
		return cmpStrings(a.Gateway, b.Gateway, a.Name, b.Name)
	})
	return out
}

// Row is a tag with what the view derives from it at a moment.
type Row struct {
	Tag
	Age   time.Duration
	Stale bool
	// Offline is set when the tag's collector reported itself offline.
	Offline bool
}

// Rows returns the tags that match filter (see Filter), sorted by gateway,
// collector, device and tag, as seen at now.
func (s *State) Rows(f Filter, now time.Time) []Row {
	if !s.sorted {
		slices.SortFunc(s.order, func(a, b tagKey) int {
			return cmpStrings(a.gateway, b.gateway, a.collector, b.collector, a.device, b.device, a.tag, b.tag)
		})
		s.sorted = true
	}
	out := make([]Row, 0, len(s.tags))
	for _, k := range s.order {
		t := s.tags[k]
		if !f.Match(t) {
			continue
		}
		r := Row{Tag: *t, Age: max(now.Sub(t.TS), 0)}
		if limit := s.staleLimit(k); limit > 0 && now.Sub(t.Received) > limit {
			r.Stale = true
		}
		if c := s.collectors[collectorKey{k.gateway, k.collector}]; c != nil && c.Status == "offline" {
			r.Offline, r.Stale = true, true
		}
		out = append(out, r)
	}
	return out
}

// Count is the number of tags that match f.
func (s *State) Count(f Filter) int {
	n := 0
	for _, t := range s.tags {
		if f.Match(t) {
			n++
		}
	}
	return n
}

// Len is the number of tags seen.
func (s *State) Len() int { return len(s.tags) }

// staleLimit is how long a tag may go without an update: the fixed limit,
// or StaleFactor times its collector's poll interval (from gateway.yaml) or
// else its device's observed batch interval; 0 while neither is known.
func (s *State) staleLimit(k tagKey) time.Duration {
	if s.staleAfter > 0 {
		return s.staleAfter
	}
	if d := s.intervals[k.collector]; d > 0 {
		return StaleFactor * d
	}
	if c := s.devices[deviceKey{k.gateway, k.collector, k.device}]; c != nil && c.interval > 0 {
		return StaleFactor * c.interval
	}
	return 0
}

// cmpStrings compares pairs (a1, b1), (a2, b2), … in order.
func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

// Filter selects rows: every term must match. A term "collector:X",
// "device:X" or "tag:X" (or "c:", "d:", "t:") matches that field, any other
// term any of the three; matching is by case-insensitive substring.
type Filter struct {
	terms []filterTerm
}

type filterTerm struct {
	field string // "", "collector", "device", "tag"
	text  string
}

// ParseFilter parses the text typed after "/".
func ParseFilter(s string) Filter {
	var f Filter
	for _, w := range strings.Fields(strings.ToLower(s)) {
		term := filterTerm{text: w}
		if k, v, ok := strings.Cut(w, ":"); ok {
			switch k {
			case "c", "collector":
				term = filterTerm{"collector", v}
			case "d", "device":
				term = filterTerm{"device", v}
			case "t", "tag":
				term = filterTerm{"tag", v}
			}
		}
		f.terms = append(f.terms, term)
	}
	return f
}

// Match reports whether t passes the filter.
func (f Filter) Match(t *Tag) bool {
	for _, term := range f.terms {
		c, d, n := strings.ToLower(t.Collector), strings.ToLower(t.Device), strings.ToLower(t.Name)
		var ok bool
		switch term.field {
		case "collector":
			ok = strings.Contains(c, term.text)
		case "device":
			ok = strings.Contains(d, term.text)
		case "tag":
			ok = strings.Contains(n, term.text)
		default:
			ok = strings.Contains(c, term.text) || strings.Contains(d, term.text) || strings.Contains(n, term.text)
		}
		if !ok {
			return false
		}
	}
	return true
}
