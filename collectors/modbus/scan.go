package modbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"fieldgate/devices/profiles"
)

// Scan defaults. Four baud rates and two parities cover most Modbus RTU
// installations (8N1 and the spec's 8E1); a full scan of 247 unit ids at
// each takes at most a few minutes, and --units or --baud narrows it.
var (
	DefaultScanBauds    = []int{9600, 19200, 38400, 115200}
	DefaultScanParities = []string{"N", "E"}
)

// More scan defaults: an answer must start within DefaultScanTimeout on a
// serial line (real meters answer within tens of milliseconds) and
// DefaultScanTCPTimeout over TCP; the whole scan stops after
// DefaultScanMaxTime.
const (
	DefaultScanTimeout    = 100 * time.Millisecond
	DefaultScanTCPTimeout = time.Second
	DefaultScanMaxTime    = 5 * time.Minute
)

// ScanConfig describes a bus scan (`modbus-collector scan`): which line,
// which unit ids, which serial settings, and the profiles to try on every
// unit that answers. Exactly one of Port and TCP is set.
type ScanConfig struct {
	// Port is the serial device of an RTU line, e.g. /dev/ttyUSB0.
	Port string
	// TCP is a Modbus TCP server or gateway, "host:port" (port 502 when
	// left out).
	TCP string
	// Units are the unit ids to probe; default 1..247.
	Units []int
	// Bauds and Parities are the serial settings to try, every baud with
	// every parity; defaults DefaultScanBauds and DefaultScanParities.
	Bauds    []int
	Parities []string
	// DataBits (default 8) and StopBits (default 1) are the same for every
	// setting tried.
	DataBits, StopBits int
	// Timeout is how long an answer may take to start; default
	// DefaultScanTimeout (serial) or DefaultScanTCPTimeout.
	Timeout time.Duration
	// Profiles are read from every unit found; none: no profile matching.
	Profiles []*profiles.Profile
	// MaxTime bounds the whole scan; default DefaultScanMaxTime. A scan that
	// reaches it returns what it found so far and says where it stopped.
	MaxTime time.Duration
}

// LineSettings is one serial setting tried ("9600 8N1"); zero for TCP.
type LineSettings struct {
	Baud     int
	DataBits int
	Parity   string
	StopBits int
}

// String is "9600 8N1", or "tcp" for the zero value.
func (l LineSettings) String() string {
	if l.Baud == 0 {
		return "tcp"
	}
	return fmt.Sprintf("%d %d%s%d", l.Baud, l.DataBits, l.Parity, l.StopBits)
}

// ScanHit is a unit that answered the probe, at which settings, and how
// each profile's registers read on it.
type ScanHit struct {
	Unit int
	Line LineSettings
	// Answer is the answer to the probe (read holding register 0): "ok"
	// or the exception, which proves the unit is there just as well.
	Answer   string
	Profiles []ProfileMatch
}

// ProfileMatch is how one profile's tags read on a unit: Readable tags
// were answered and decoded; Plausible ones also hold a value that makes
// sense for their unit (a voltage between 0 and 1 MV, a frequency of 0 to
// 1000 Hz, a power factor within ±2, no denormal floats, printable strings…).
type ProfileMatch struct {
	Profile   string
	Tags      int
	Readable  int
	Plausible int
	Values    []TagValue
}

// Score is the share of the profile's tags that read plausibly, 0..1: how
// well the unit matches the profile. Profiles are listed best first.
func (m ProfileMatch) Score() float64 {
	if m.Tags == 0 {
		return 0
	}
	return float64(m.Plausible) / float64(m.Tags)
}

// TagValue is one tag as read during a scan.
type TagValue struct {
	Tag       string
	Unit      string
	Value     any
	Error     string
	Plausible bool
}

// ScanResult is what a scan found.
type ScanResult struct {
	Hits []ScanHit
	// Garbage lists settings at which something answered with a frame
	// that did not check out (bad CRC, wrong length): a device is probably
	// there at other settings.
	Garbage []string
	// AllAnswer is set when every probed unit id answered (more than one
	// probed): typical of a Modbus TCP device that ignores the unit id.
	AllAnswer bool
	Probes    int
	Elapsed   time.Duration
	// Stopped says why the scan ended early ("" when it completed).
	Stopped string
}

// Scanner runs one bus scan. Create it with NewScanner, then Run it.
type Scanner struct {
	cfg      ScanConfig
	lines    []LineSettings
	openLine func(LineSettings) (scanLine, error)
	now      func() time.Time
}

// scanLine is what a scan needs of a transport: it only reads.
type scanLine interface {
	Read(ctx context.Context, unit, fn byte, addr, qty uint16) ([]byte, error)
	Close() error
}

// ScanOption configures a Scanner beyond ScanConfig.
type ScanOption func(*Scanner)

// withScanLine replaces the real serial/TCP transports (unit tests).
func withScanLine(open func(LineSettings) (scanLine, error)) ScanOption {
	return func(s *Scanner) { s.openLine = open }
}

// NewScanner validates cfg and fills its defaults.
func NewScanner(cfg ScanConfig, opts ...ScanOption) (*Scanner, error) {
	var errs []error
	switch {
	case cfg.Port == "" && cfg.TCP == "":
		errs = append(errs, errors.New("give a serial port (--port) or a Modbus TCP address (--tcp)"))
	case cfg.Port != "" && cfg.TCP != "":
		errs = append(errs, errors.New("give either a serial port or a TCP address, not both"))
	}
	if cfg.TCP != "" {
		addr, err := normalizeTCPAddress(cfg.TCP)
		if err != nil {
			errs = append(errs, fmt.Errorf("tcp address %q: %w", cfg.TCP, err))
		}
		cfg.TCP = addr
	}
	if len(cfg.Units) == 0 {
		for u := 1; u <= 247; u++ {
			cfg.Units = append(cfg.Units, u)
		}
	}
	for _, u := range cfg.Units {
		switch {
		case u < 0 || u > 255:
			errs = append(errs, fmt.Errorf("unit id %d out of range 0..255", u))
		case cfg.Port != "" && (u == 0 || u > 247):
			errs = append(errs, fmt.Errorf("unit id %d out of range 1..247 on a serial line (0 is broadcast, which never answers)", u))
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultScanTimeout
		if cfg.TCP != "" {
			cfg.Timeout = DefaultScanTCPTimeout
		}
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v must be positive", cfg.Timeout))
	}
	if cfg.MaxTime == 0 {
		cfg.MaxTime = DefaultScanMaxTime
	}
	s := &Scanner{cfg: cfg, now: time.Now}
	if cfg.Port != "" {
		if len(cfg.Bauds) == 0 {
			cfg.Bauds = DefaultScanBauds
		}
		if len(cfg.Parities) == 0 {
			cfg.Parities = DefaultScanParities
		}
		if cfg.DataBits == 0 {
			cfg.DataBits = DefaultDataBits
		}
		if cfg.StopBits == 0 {
			cfg.StopBits = DefaultStopBits
		}
		for _, b := range cfg.Bauds {
			for _, p := range cfg.Parities {
				l := LineSettings{Baud: b, DataBits: cfg.DataBits, Parity: strings.ToUpper(p), StopBits: cfg.StopBits}
				// newRTULine is the one place that knows valid line settings.
				if _, err := newRTULine(rtuOptions{Port: cfg.Port, Baud: b, DataBits: l.DataBits, Parity: l.Parity, StopBits: l.StopBits}); err != nil {
					errs = append(errs, err)
					continue
				}
				s.lines = append(s.lines, l)
			}
		}
	} else {
		s.lines = []LineSettings{{}}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.cfg = cfg
	s.openLine = s.open
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Config is the scan's configuration with defaults filled in.
func (s *Scanner) Config() ScanConfig { return s.cfg }

// Settings are the line settings the scan tries, in order.
func (s *Scanner) Settings() []LineSettings { return s.lines }

// WorstCase is how long the probes take if no unit answers: every unit at
// every setting waiting the full timeout plus the request's wire time.
func (s *Scanner) WorstCase() time.Duration {
	var d time.Duration
	for _, l := range s.lines {
		per := s.cfg.Timeout
		if l.Baud > 0 {
			per += 8 * 11 * time.Second / time.Duration(l.Baud)
		}
		d += per * time.Duration(len(s.cfg.Units))
	}
	return min(d, s.cfg.MaxTime)
}

func (s *Scanner) open(l LineSettings) (scanLine, error) {
	if s.cfg.TCP != "" {
		return newTCPConn(s.cfg.TCP, s.cfg.Timeout)
	}
	return newRTULine(rtuOptions{Port: s.cfg.Port, Baud: l.Baud, DataBits: l.DataBits, Parity: l.Parity, StopBits: l.StopBits, Timeout: s.cfg.Timeout})
}

// Run probes every unit at every setting, calling found (if not nil) for
// each unit as it answers, then reads the profiles from every unit found.
// It returns early, with what it found, when ctx ends or MaxTime passes; an
// error means the line itself failed (port missing or busy, connection
// refused).
func (s *Scanner) Run(ctx context.Context, found func(ScanHit)) (ScanResult, error) {
	start := s.now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(s.cfg.MaxTime))
	defer cancel()
	var res ScanResult
	defer func() { res.Elapsed = s.now().Sub(start) }()
	stopped := func() bool {
		if ctx.Err() == nil {
			return false
		}
		if res.Stopped == "" {
			res.Stopped = "cancelled"
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				res.Stopped = fmt.Sprintf("the scan's time limit of %v was reached", s.cfg.MaxTime)
			}
		}
		return true
	}
	for _, l := range s.lines {
		if stopped() {
			break
		}
		tr, err := s.openLine(l)
		if err != nil {
			return res, err
		}
		garbage, err := s.probeLine(ctx, tr, l, &res, found)
		tr.Close()
		if err != nil && !stopped() {
			return res, err
		}
		if garbage {
			res.Garbage = append(res.Garbage, l.String())
		}
	}
	if len(s.cfg.Units) > 1 && len(res.Hits) == len(s.cfg.Units)*len(s.lines) {
		res.AllAnswer = true
	}
	for i := range res.Hits {
		if len(s.cfg.Profiles) == 0 || stopped() || (res.AllAnswer && i > 0) {
			break
		}
		h := &res.Hits[i]
		tr, err := s.openLine(h.Line)
		if err != nil {
			return res, err
		}
		for _, p := range s.cfg.Profiles {
			m, err := s.matchProfile(ctx, tr, h.Unit, p)
			if err != nil {
				tr.Close()
				if stopped() {
					return res, nil
				}
				return res, err
			}
			h.Profiles = append(h.Profiles, m)
		}
		tr.Close()
		slices.SortStableFunc(h.Profiles, func(a, b ProfileMatch) int {
			if c := cmp.Compare(b.Score(), a.Score()); c != 0 {
				return c
			}
			return b.Plausible - a.Plausible
		})
	}
	stopped()
	return res, nil
}

// probeLine asks every unit for holding register 0 at one setting. Any
// answer, an exception included, means a unit is there — except the
// gateway exceptions 10 and 11, with which a TCP gateway says the unit
// behind it is absent. It reports whether any answer was garbage.
func (s *Scanner) probeLine(ctx context.Context, tr scanLine, l LineSettings, res *ScanResult, found func(ScanHit)) (garbage bool, err error) {
	for _, u := range s.cfg.Units {
		if ctx.Err() != nil {
			return garbage, ctx.Err()
		}
		res.Probes++
		_, err := tr.Read(ctx, byte(u), fnReadHoldingRegisters, 0, 1)
		var ex *ExceptionError
		var fe *FrameError
		var le *LinkError
		answer := "ok"
		switch {
		case err == nil:
		case errors.As(err, &ex) && (ex.Code == 10 || ex.Code == 11):
			continue
		case errors.As(err, &ex):
			answer = err.Error()
		case errors.As(err, &fe):
			garbage = true
			continue
		case errors.As(err, &le):
			return garbage, err
		case errors.Is(err, ErrTimeout):
			continue
		default:
			return garbage, err
		}
		h := ScanHit{Unit: u, Line: l, Answer: answer}
		res.Hits = append(res.Hits, h)
		if found != nil {
			found(h)
		}
	}
	return garbage, nil
}

// A profile's matching stops after scanGiveUpAfter requests that read
// nothing, and after scanMaxRequests requests in any case.
const (
	scanGiveUpAfter = 16
	scanMaxRequests = 256
)

// matchProfile reads every tag of p from unit, with the collector's own
// request plan: coalesced reads, split when the device refuses a span.
func (s *Scanner) matchProfile(ctx context.Context, tr scanLine, unit int, p *profiles.Profile) (ProfileMatch, error) {
	dev := Device{Name: p.Name, UnitID: unit}
	for i := range p.Tags {
		dev.Tags = append(dev.Tags, profileTag(&p.Tags[i], dev.Pos))
	}
	m := ProfileMatch{Profile: p.Name, Tags: len(dev.Tags), Values: make([]TagValue, len(dev.Tags))}
	for i, t := range dev.Tags {
		m.Values[i] = TagValue{Tag: t.Name, Unit: t.Unit, Error: "not read"}
	}
	plan := NewPlan(&dev)
	reqs := plan.Requests()
	timeouts, sent := 0, 0
	for i := 0; i < len(reqs); i++ {
		r := reqs[i]
		// Splitting refused spans tag by tag costs requests; a profile of
		// which nothing reads after a few, or a huge one, is not this
		// device: give up on it rather than on the scan's time.
		if sent++; (sent > scanGiveUpAfter && m.Readable == 0) || sent > scanMaxRequests {
			for _, rest := range reqs[i:] {
				for _, ti := range rest.Tags {
					m.Values[ti].Error = "not read: the profile does not fit this unit"
				}
			}
			return m, nil
		}
		data, err := tr.Read(ctx, byte(unit), r.Table.FunctionCode(), r.Address, r.Quantity)
		if err != nil {
			if ctx.Err() != nil {
				return m, ctx.Err()
			}
			var le *LinkError
			if errors.As(err, &le) {
				return m, err
			}
			// A unit that answered the probe but stays silent twice in a
			// row ignores this kind of request: stop spending timeouts.
			if errors.Is(err, ErrTimeout) {
				if timeouts++; timeouts == 2 {
					for _, rest := range reqs[i:] {
						for _, ti := range rest.Tags {
							m.Values[ti].Error = err.Error()
						}
					}
					return m, nil
				}
			}
			var ex *ExceptionError
			if errors.As(err, &ex) && (ex.Code == 2 || ex.Code == 3) {
				if _, invalid := plan.Reject(i); !invalid {
					reqs = plan.Requests()
					i--
					continue
				}
				reqs = plan.Requests()
			}
			for _, ti := range r.Tags {
				m.Values[ti].Error = err.Error()
			}
			continue
		}
		timeouts = 0
		for _, ti := range r.Tags {
			v, derr := Decode(&dev.Tags[ti], r, data)
			if derr != nil {
				m.Values[ti].Error = derr.Error()
				continue
			}
			ok := Plausible(&dev.Tags[ti], v)
			m.Values[ti] = TagValue{Tag: dev.Tags[ti].Name, Unit: dev.Tags[ti].Unit, Value: v, Plausible: ok}
			m.Readable++
			if ok {
				m.Plausible++
			}
		}
	}
	return m, nil
}

// Plausible reports whether v, decoded for tag t, is a value a real device
// could hold: numbers finite, not denormal-small (a float read with the
// wrong byte order often is), within a range for the tag's unit (volts
// 0..1e6, amperes ±1e5, watts/var/VA ±1e10, kW/kvar/kVA ±1e7, hertz
// 0..1000, a power factor or cos φ within ±2, percent ±1000, °C
// -273..3000, energies and times not negative);
// strings printable. Bools and unitless integers are always plausible.
func Plausible(t *Tag, v any) bool {
	switch x := v.(type) {
	case bool:
		return true
	case string:
		for _, r := range x {
			if !unicode.IsPrint(r) {
				return false
			}
		}
		return true
	}
	f, ok := asFloat(v)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return false
	}
	if (t.Type == TypeFloat32 || t.Type == TypeFloat64) && f != 0 && math.Abs(f) < 1e-9 {
		return false
	}
	lo, hi := -1e15, 1e15
	name := strings.ToLower(t.Name)
	switch unit := strings.ToLower(t.Unit); {
	case unit == "v":
		lo, hi = 0, 1e6
	case unit == "a":
		lo, hi = -1e5, 1e5
	case unit == "w" || unit == "var" || unit == "va":
		lo, hi = -1e10, 1e10
	case unit == "kw" || unit == "kvar" || unit == "kva":
		lo, hi = -1e7, 1e7
	case unit == "hz":
		lo, hi = 0, 1000
	case unit == "%":
		lo, hi = -1000, 1000
	case unit == "degc" || unit == "°c":
		lo, hi = -273.15, 3000
	case strings.HasSuffix(unit, "h") || unit == "s" || unit == "min":
		lo = 0 // energies (Wh, kvarh, VAh, Ah) and running times
	case unit == "" && (strings.Contains(name, "power_factor") || strings.Contains(name, "cos_phi")):
		lo, hi = -2, 2
	}
	return f >= lo && f <= hi
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}

// ParseUnits parses a list of unit ids and ranges, "1-10,20,30-32", into
// ascending unique ids (0..255).
func ParseUnits(s string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b > 255 || a > b {
			return nil, fmt.Errorf("unit ids %q: bad part %q (want ids 0..255 and ranges like 1-10, comma-separated)", s, part)
		}
		for u := a; u <= b; u++ {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
