package profiles

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Sim says how a simulator varies a tag's value. The value is a pure function
// of wall-clock time (no state), so a test that knows the time knows the value
// and several simulators agree with each other.
//
// Kinds:
//   - sine (numbers' default): Min..Max, one cycle per Period, starting at
//     Phase (a fraction of the period, 0..1) at Unix time 0.
//   - ramp: sawtooth from Min up to Max over Period.
//   - square (bools' default): Min for the first half of Period, Max for the second.
//   - counter: Min + Rate per second since 2024-01-01T00:00:00Z, wrapping to
//     Min when it reaches Max (an energy register that rolls over).
//   - constant: Value.
//
// Bools are true when the numeric value is above (Min+Max)/2 (constant: Value
// != 0); their defaults are Min 0, Max 1, Period 10s. Numbers default to Min 0,
// Max 100, Period 60s. Strings take Text (default: the tag's name).
// Values are engineering units (after scale and offset).
type Sim struct {
	Kind   string   `yaml:"kind"`
	Min    float64  `yaml:"min"`
	Max    float64  `yaml:"max"`
	Period Duration `yaml:"period"`
	Phase  float64  `yaml:"phase"`
	Rate   float64  `yaml:"rate"`
	Value  float64  `yaml:"value"`
	Text   string   `yaml:"text"`
}

// SimKinds are the valid Sim.Kind values; "" picks the type's default.
var SimKinds = []string{"sine", "ramp", "square", "counter", "constant"}

// CounterEpoch is the time a counter sim starts counting from Min.
var CounterEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// effectiveSim returns the tag's sim with defaults filled in.
func (t *Tag) effectiveSim() Sim {
	var s Sim
	if t.Sim != nil {
		s = *t.Sim
	}
	switch t.Type {
	case "bool":
		if s.Kind == "" {
			s.Kind = "square"
		}
		if s.Min == 0 && s.Max == 0 {
			s.Max = 1
		}
		if s.Period == 0 {
			s.Period = Duration(10 * time.Second)
		}
	case "string":
		if s.Text == "" {
			s.Text = t.Name
		}
	default:
		if s.Kind == "" {
			s.Kind = "sine"
		}
		if s.Min == 0 && s.Max == 0 && s.Kind != "constant" {
			s.Max = 100
		}
		if s.Period == 0 {
			s.Period = Duration(time.Minute)
		}
	}
	return s
}

func (t *Tag) validateSim() error {
	if t.Sim == nil {
		return t.checkRange(t.effectiveSim())
	}
	s := *t.Sim
	if t.Type == "string" {
		if s.Kind != "" || s.Min != 0 || s.Max != 0 || s.Period != 0 || s.Phase != 0 || s.Rate != 0 || s.Value != 0 {
			return fmt.Errorf("a string tag takes only text")
		}
		if len(s.Text) > 2*t.Length {
			return fmt.Errorf("text %q longer than %d characters (length %d registers)", s.Text, 2*t.Length, t.Length)
		}
		return nil
	}
	if s.Text != "" {
		return fmt.Errorf("text is only for string tags")
	}
	if s.Kind != "" && !slices.Contains(SimKinds, s.Kind) {
		return fmt.Errorf("unknown kind %q (valid: %s)", s.Kind, strings.Join(SimKinds, ", "))
	}
	if s.Min > s.Max {
		return fmt.Errorf("min %v > max %v", s.Min, s.Max)
	}
	if s.Period < 0 {
		return fmt.Errorf("negative period %v", time.Duration(s.Period))
	}
	if s.Phase < 0 || s.Phase >= 1 {
		return fmt.Errorf("phase %v out of range [0, 1)", s.Phase)
	}
	e := t.effectiveSim()
	if e.Kind == "counter" {
		if e.Rate <= 0 {
			return fmt.Errorf("counter needs rate > 0 (units per second)")
		}
		if e.Max <= e.Min {
			return fmt.Errorf("counter needs max > min (where it rolls over)")
		}
	}
	return t.checkRange(e)
}

// checkRange verifies that the sim's extremes are representable in the tag's
// type after scale and offset.
func (t *Tag) checkRange(s Sim) error {
	lo, hi, ok := rawRange(t.Type)
	if !ok {
		return nil
	}
	vals := []float64{s.Min, s.Max}
	if s.Kind == "constant" {
		vals = []float64{s.Value}
	}
	for _, v := range vals {
		raw := (v - t.Offset) / t.ScaleOr1()
		if raw < lo-0.5 || raw > hi+0.5 {
			return fmt.Errorf("value %v (raw %v) does not fit type %s", v, raw, t.Type)
		}
	}
	return nil
}

// rawRange is the range of an integer type's raw value; ok false for other types.
func rawRange(typ string) (lo, hi float64, ok bool) {
	switch typ {
	case "int16":
		return math.MinInt16, math.MaxInt16, true
	case "uint16":
		return 0, math.MaxUint16, true
	case "int32":
		return math.MinInt32, math.MaxInt32, true
	case "uint32":
		return 0, math.MaxUint32, true
	case "int64":
		return math.MinInt64, math.MaxInt64, true
	case "uint64":
		return 0, math.MaxUint64, true
	}
	return 0, 0, false
}

// SimValue is the tag's simulated engineering value at time at: a bool for
// type bool, a string for type string, a float64 otherwise (before any
// quantisation to the register type).
func (t *Tag) SimValue(at time.Time) any {
	s := t.effectiveSim()
	switch t.Type {
	case "string":
		return s.Text
	case "bool":
		if s.Kind == "constant" {
			return s.Value != 0
		}
		return s.number(at) > (s.Min+s.Max)/2
	}
	return s.number(at)
}

// fraction is the position of at within the period, in [0, 1).
func (s *Sim) fraction(at time.Time) float64 {
	p := time.Duration(s.Period).Nanoseconds()
	if p <= 0 {
		return 0
	}
	// Integer modulo keeps full precision however large UnixNano is.
	ns := at.UnixNano() % p
	if ns < 0 {
		ns += p
	}
	f := float64(ns)/float64(p) + s.Phase
	if f >= 1 {
		f--
	}
	return f
}

func (s *Sim) number(at time.Time) float64 {
	switch s.Kind {
	case "constant":
		return s.Value
	case "ramp":
		return s.Min + (s.Max-s.Min)*s.fraction(at)
	case "square":
		if s.fraction(at) < 0.5 {
			return s.Min
		}
		return s.Max
	case "counter":
		v := s.Rate * at.Sub(CounterEpoch).Seconds()
		span := s.Max - s.Min
		v = math.Mod(v, span)
		if v < 0 {
			v += span
		}
		return s.Min + v
	default: // sine
		return s.Min + (s.Max-s.Min)*(1+math.Sin(2*math.Pi*s.fraction(at)))/2
	}
}
