// Package command is the write path of every collector: tags marked
// `writable: true` accept values from MQTT, as a JSON command (this file and
// json.go) or a Sparkplug DCMD. A request is checked against the tag before
// anything goes on the wire — the tag exists, is writable, the value has the
// tag's type and lies within its `min`/`max` — then the collector's Writer
// writes it, reads it back and reports the value it read.
//
// Nothing is writable by default. Only the broker decides who may publish a
// command (see the README's broker ACL); retained command messages are never
// executed, so a stale command cannot run again at every reconnect.
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"fieldgate/collectors/reading"
)

// Limits is the write setting of a tag as written in a collector file.
type Limits struct {
	// Writable tags accept write commands; default false.
	Writable bool `yaml:"writable"`
	// Min and Max bound the values a command may write (numbers only). A
	// percent deadband takes its range from them too.
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
}

// Problem is a configuration problem of Limits: the key it concerns and the
// message.
type Problem struct {
	Key string
	Msg string
}

// Problems checks the limits of a tag of type t (TypeUnknown: not known
// until the server says).
func (l Limits) Problems(t reading.DataType) []Problem {
	var out []Problem
	for _, b := range []struct {
		key string
		v   *float64
	}{{"min", l.Min}, {"max", l.Max}} {
		if b.v != nil && (math.IsNaN(*b.v) || math.IsInf(*b.v, 0)) {
			out = append(out, Problem{b.key, fmt.Sprintf("%s must be a finite number, got %v", b.key, *b.v)})
		}
	}
	if l.Min != nil && l.Max != nil && *l.Min > *l.Max {
		out = append(out, Problem{"min", fmt.Sprintf("min %v is greater than max %v", *l.Min, *l.Max)})
	}
	if (l.Min != nil || l.Max != nil) && t != reading.TypeUnknown && !t.IsNumeric() {
		key := "min"
		if l.Min == nil {
			key = "max"
		}
		out = append(out, Problem{key, fmt.Sprintf("min and max apply only to numbers, not to type %s", t)})
	}
	return out
}

// The reasons a write is refused or fails; results wrap them with details.
var (
	ErrUnknownDevice = errors.New("unknown device")
	ErrUnknownTag    = errors.New("unknown tag")
	ErrNotWritable   = errors.New("not writable")
	ErrOutOfRange    = errors.New("out of range")
	ErrTypeMismatch  = errors.New("type mismatch")
	ErrTimeout       = errors.New("timeout")
	ErrBusy          = errors.New("busy: too many commands in progress")
)

// Request is one write asked for: the tag and its value as the request
// carried it (JSON: json.Number, bool, string; Sparkplug: a typed Go value).
type Request struct {
	Tag   string
	Value any
}

// Write is a checked write handed to a Writer: the tag and the value
// converted for the tag's type (bool, int64, uint64, float64 or string).
type Write struct {
	Tag   reading.Tag
	Value any
}

// Result is the outcome of one write: the value read back after it, or the
// reason it was refused or failed.
type Result struct {
	Tag      string
	ReadBack any
	Err      error
}

// Writer writes tags of one device and reads each back. The collectors
// implement it; Write returns one Result per Write, in order, and never
// interleaves a write with another request on the same bus.
type Writer interface {
	Write(ctx context.Context, device string, writes []Write) []Result
}

// Defaults of a Handler.
const (
	DefaultTimeout = 10 * time.Second
	// DefaultMaxWrites bounds the writes of one request.
	DefaultMaxWrites = 64
	// DefaultMaxInFlight bounds the requests executed at once.
	DefaultMaxInFlight = 16
)

// Handler checks requests against the collector's tags and executes them
// with its Writer. Create it with NewHandler.
type Handler struct {
	devices map[string]map[string]reading.Tag
	w       Writer
	log     *slog.Logger
	timeout time.Duration
	slots   chan struct{}
}

// Option configures a Handler.
type Option func(*Handler)

// WithTimeout bounds one request, writes and read-backs together; default
// DefaultTimeout. A write still waiting for its bus then fails with
// "timeout" (it may have happened: the read-back tells next time).
func WithTimeout(d time.Duration) Option {
	return func(h *Handler) {
		if d > 0 {
			h.timeout = d
		}
	}
}

// NewHandler returns a handler for the devices of schema, writing with w.
func NewHandler(schema []reading.Device, w Writer, log *slog.Logger, opts ...Option) (*Handler, error) {
	if w == nil {
		return nil, errors.New("command: nil writer")
	}
	if log == nil {
		return nil, errors.New("command: nil logger")
	}
	h := &Handler{devices: map[string]map[string]reading.Tag{}, w: w, log: log, timeout: DefaultTimeout,
		slots: make(chan struct{}, DefaultMaxInFlight)}
	for _, d := range schema {
		tags := map[string]reading.Tag{}
		for _, t := range d.Tags {
			tags[t.Name] = t
		}
		h.devices[d.Name] = tags
	}
	for _, o := range opts {
		o(h)
	}
	return h, nil
}

// Writable reports whether any tag of any device is writable: only then do
// collectors subscribe to commands.
func (h *Handler) Writable() bool {
	for _, tags := range h.devices {
		for _, t := range tags {
			if t.Writable {
				return true
			}
		}
	}
	return false
}

// Tag returns a device's tag and whether it exists.
func (h *Handler) Tag(device, tag string) (reading.Tag, bool) {
	t, ok := h.devices[device][tag]
	return t, ok
}

// Do checks every request and hands those that pass to the Writer, at most
// one request's worth at a time per call, bounded by the handler's timeout.
// It returns one Result per request, in order; a refused request never
// reaches the Writer.
func (h *Handler) Do(ctx context.Context, device string, reqs []Request) []Result {
	results := make([]Result, len(reqs))
	tags, ok := h.devices[device]
	var writes []Write
	var at []int // results index of each write
	for i, r := range reqs {
		results[i].Tag = r.Tag
		if !ok {
			results[i].Err = fmt.Errorf("%w %q", ErrUnknownDevice, device)
			continue
		}
		t, found := tags[r.Tag]
		switch {
		case !found:
			results[i].Err = fmt.Errorf("%w %q", ErrUnknownTag, r.Tag)
			continue
		case !t.Writable:
			results[i].Err = ErrNotWritable
			continue
		}
		v, err := Convert(t, r.Value)
		if err != nil {
			results[i].Err = err
			continue
		}
		writes = append(writes, Write{Tag: t, Value: v})
		at = append(at, i)
	}
	if len(writes) > 0 {
		select {
		case h.slots <- struct{}{}:
			ctx, cancel := context.WithTimeout(ctx, h.timeout)
			out := h.w.Write(ctx, device, writes)
			cancel()
			<-h.slots
			for k, i := range at {
				if k < len(out) {
					results[i] = out[k]
					results[i].Tag = reqs[i].Tag
				} else {
					results[i].Err = errors.New("no result from the collector")
				}
			}
		default:
			for _, i := range at {
				results[i].Err = ErrBusy
			}
		}
	}
	for i, r := range results {
		if r.Err != nil {
			h.log.Warn("write refused or failed", "device", device, "tag", r.Tag, "value", fmt.Sprint(reqs[i].Value), "err", r.Err)
		} else {
			h.log.Info("write done", "device", device, "tag", r.Tag, "value", fmt.Sprint(reqs[i].Value), "read_back", fmt.Sprint(r.ReadBack))
		}
	}
	return results
}

// Convert checks v, a requested value, against tag t and returns it as the
// Go type for t: bool, int64 (signed integers), uint64 (unsigned), float64
// (floats, and every scaled value) or string. Integers must be whole and
// within the type's range; numbers within the tag's min and max. A tag of
// unknown type takes a number, bool or string as it is.
func Convert(t reading.Tag, v any) (any, error) {
	if n, ok := v.(json.Number); ok {
		v = parseNumber(n)
	}
	switch t.Type {
	case reading.TypeBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, mismatch("true or false", v)
	case reading.TypeString, reading.TypeDateTime, reading.TypeBytes:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, mismatch("a string", v)
	case reading.TypeUnknown:
		switch v.(type) {
		case bool, string:
			return v, nil
		}
	}
	f, isNum := reading.AsFloat(v)
	if !isNum {
		if t.Type == reading.TypeUnknown {
			return nil, mismatch("a number, true, false or a string", v)
		}
		return nil, mismatch("a number", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%w: %v is not a finite number", ErrOutOfRange, f)
	}
	if t.Min != nil && f < *t.Min {
		return nil, fmt.Errorf("%w: %v is below min %v", ErrOutOfRange, f, *t.Min)
	}
	if t.Max != nil && f > *t.Max {
		return nil, fmt.Errorf("%w: %v is above max %v", ErrOutOfRange, f, *t.Max)
	}
	switch t.Type {
	case reading.TypeFloat32:
		if math.Abs(f) > math.MaxFloat32 {
			return nil, fmt.Errorf("%w: %v does not fit a float32", ErrOutOfRange, f)
		}
		return f, nil
	case reading.TypeFloat64:
		return f, nil
	case reading.TypeUnknown:
		if i, ok := v.(int64); ok {
			return i, nil
		}
		if u, ok := v.(uint64); ok {
			return u, nil
		}
		return f, nil
	}
	return integer(t.Type, v, f)
}

// integer converts a number to the integer type t, exactly.
func integer(t reading.DataType, v any, f float64) (any, error) {
	lo, hi := intRange(t)
	switch x := v.(type) {
	case int64:
		if t.IsInteger() && isUnsigned(t) {
			if x < 0 {
				return nil, fmt.Errorf("%w: %d does not fit %s", ErrOutOfRange, x, t)
			}
			return integer(t, uint64(x), f)
		}
		if float64(x) < lo || float64(x) > hi {
			return nil, fmt.Errorf("%w: %d does not fit %s", ErrOutOfRange, x, t)
		}
		return x, nil
	case uint64:
		if !isUnsigned(t) {
			if x > math.MaxInt64 || float64(x) > hi {
				return nil, fmt.Errorf("%w: %d does not fit %s", ErrOutOfRange, x, t)
			}
			return int64(x), nil
		}
		if float64(x) > hi {
			return nil, fmt.Errorf("%w: %d does not fit %s", ErrOutOfRange, x, t)
		}
		return x, nil
	}
	if f != math.Trunc(f) {
		return nil, fmt.Errorf("%w: want a whole number for %s, got %v", ErrTypeMismatch, t, f)
	}
	if f < lo || f > hi {
		return nil, fmt.Errorf("%w: %v does not fit %s", ErrOutOfRange, f, t)
	}
	if isUnsigned(t) {
		return uint64(f), nil
	}
	return int64(f), nil
}

func isUnsigned(t reading.DataType) bool {
	switch t {
	case reading.TypeUint8, reading.TypeUint16, reading.TypeUint32, reading.TypeUint64:
		return true
	}
	return false
}

// intRange is the range of integer type t as float64 (exact up to 2^53,
// which is where JSON numbers stop being exact anyway).
func intRange(t reading.DataType) (float64, float64) {
	switch t {
	case reading.TypeInt8:
		return math.MinInt8, math.MaxInt8
	case reading.TypeInt16:
		return math.MinInt16, math.MaxInt16
	case reading.TypeInt32:
		return math.MinInt32, math.MaxInt32
	case reading.TypeInt64:
		return math.MinInt64, math.MaxInt64
	case reading.TypeUint8:
		return 0, math.MaxUint8
	case reading.TypeUint16:
		return 0, math.MaxUint16
	case reading.TypeUint32:
		return 0, math.MaxUint32
	}
	return 0, math.MaxUint64
}

// parseNumber reads a JSON number exactly: an integer as int64 or uint64
// when it fits, else a float64.
func parseNumber(n json.Number) any {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	return s
}

func mismatch(want string, v any) error {
	got := "null"
	switch x := v.(type) {
	case nil:
	case string:
		got = strconv.Quote(x)
	case bool:
		got = strconv.FormatBool(x)
	default:
		if f, ok := reading.AsFloat(v); ok {
			got = strconv.FormatFloat(f, 'g', -1, 64)
		} else {
			got = fmt.Sprintf("a %T", v)
		}
	}
	return fmt.Errorf("%w: want %s, got %s", ErrTypeMismatch, want, got)
}

// DeviceException is the error text of a device's refusal, e.g. Modbus
// exception 2: "device exception 2: illegal data address".
func DeviceException(code int, text string) error {
	return fmt.Errorf("device exception %d: %s", code, text)
}
