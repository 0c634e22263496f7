// Package reading is the data model every collector produces and the encoder
// of the MQTT data payload, the product's public API (DESIGN.md, "MQTT
// contract"). The encoder is hand-written because it runs once per reading on
// the hot path; FuzzAppendJSON checks it always yields valid JSON that
// encoding/json reads back to the same values.
package reading

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Quality says how far a value can be trusted.
type Quality string

// The qualities of the contract.
const (
	Good      Quality = "good"
	Uncertain Quality = "uncertain"
	Bad       Quality = "bad"
)

// Reading is one tag's value at one time. Value is nil, bool, int64, uint64,
// float32, float64 or string; a float32 (a Modbus float32 register pair with no
// scale) is written with the shortest digits that read back as that float32.
// A Bad reading carries Error and a nil Value.
type Reading struct {
	Tag     string
	Value   any
	Unit    string
	Quality Quality
	Error   string
	TS      time.Time
}

// Batch is one device's readings from one poll: one MQTT data message.
// Seq, Gateway and Collector are set by the publisher.
type Batch struct {
	Gateway   string
	Collector string
	Device    string
	Seq       uint64
	TS        time.Time
	Readings  []Reading
	// Replayed marks a batch published later than its poll plus one interval
	// (a backlog drained after an outage).
	Replayed bool
}

// Millis is t as Unix milliseconds (UTC), the contract's `ts`.
func Millis(t time.Time) int64 { return t.UnixMilli() }

// AppendJSON appends the batch's contract payload to dst:
//
//	{"gateway":…,"collector":…,"device":…,"seq":…,"ts":…,"readings":[{"tag":…,"value":…,"unit":…,"quality":…,"error":…,"ts":…}]}
//
// `unit` and `error` are left out when empty, `replayed` when false. A value
// that JSON cannot carry (NaN, ±Inf, an unknown Go type) is written as null.
func (b *Batch) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"gateway":`...)
	dst = appendString(dst, b.Gateway)
	dst = append(dst, `,"collector":`...)
	dst = appendString(dst, b.Collector)
	dst = append(dst, `,"device":`...)
	dst = appendString(dst, b.Device)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, b.Seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, Millis(b.TS), 10)
	if b.Replayed {
		dst = append(dst, `,"replayed":true`...)
	}
	dst = append(dst, `,"readings":[`...)
	var ts tsDigits
	for i := range b.Readings {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = b.Readings[i].appendJSON(dst, &ts)
	}
	return append(dst, "]}"...)
}

// tsDigits remembers the digits of the last reading's ts: the readings of
// one Modbus request, or one OPC UA notification, share their time.
type tsDigits struct {
	ms     int64
	digits [20]byte
	n      int
}

func (t *tsDigits) append(dst []byte, ms int64) []byte {
	if t.n == 0 || ms != t.ms {
		t.ms, t.n = ms, len(strconv.AppendInt(t.digits[:0], ms, 10))
	}
	return append(dst, t.digits[:t.n]...)
}

func (r *Reading) appendJSON(dst []byte, ts *tsDigits) []byte {
	dst = append(dst, `{"tag":`...)
	dst = appendString(dst, r.Tag)
	dst = append(dst, `,"value":`...)
	dst = appendValue(dst, r.Value)
	if r.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = appendString(dst, r.Unit)
	}
	dst = append(dst, `,"quality":`...)
	q := r.Quality
	if q == "" {
		q = Good
	}
	dst = appendString(dst, string(q))
	if r.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = appendString(dst, r.Error)
	}
	dst = append(dst, `,"ts":`...)
	dst = ts.append(dst, Millis(r.TS))
	return append(dst, '}')
}

func appendValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, x)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case uint64:
		return strconv.AppendUint(dst, x, 10)
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	case float64:
		return appendFloat(dst, x, 64)
	case float32:
		return appendFloat(dst, float64(x), 32)
	case string:
		return appendString(dst, x)
	}
	return append(dst, "null"...)
}

// appendFloat writes the shortest representation that reads back to the same
// float of the given size, so a float32 230.1 is sent as 230.1, not
// 230.10000610351562.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, f, format, -1, bits)
}

const hex = "0123456789abcdef"

// appendString writes s as a JSON string; invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
