package devsim

import (
	"encoding/binary"
	"fmt"
	"math"

	"fieldgate/devices/profiles"
)

// This file is devsim's own encoder (engineering value -> register words) and
// the matching decoder used by Expected. It is written independently of the
// collector's decoder so that a round trip through both is a real check.
//
// Byte orders: a value's big-endian bytes are A B C D (E F G H for 64 bits).
//   ABCD: registers AB CD (EF GH)        big endian
//   DCBA: registers DC BA (HG FE DC BA)  little endian
//   BADC: registers BA DC (FE HG)        bytes swapped within each register
//   CDAB: registers CD AB (GH EF CD AB)  register order reversed
// 16-bit values follow the same rule on one register: DCBA and BADC swap its
// bytes, ABCD and CDAB do not.

// encodeWords writes the register image of tag t holding engineering value v
// into dst, which has t.Width() elements. Numbers are converted to raw with
// raw = (v - offset) / scale, rounded to the nearest integer for integer types
// and clamped to the type's range. Bit tags are not handled here.
func encodeWords(dst []uint16, t *profiles.Tag, v any) {
	switch t.Type {
	case "bool":
		dst[0] = 0
		if b, _ := v.(bool); b {
			dst[0] = 1
		}
		return
	case "string":
		s, _ := v.(string)
		for i := range dst {
			var hi, lo byte
			if 2*i < len(s) {
				hi = s[2*i]
			}
			if 2*i+1 < len(s) {
				lo = s[2*i+1]
			}
			dst[i] = uint16(hi)<<8 | uint16(lo)
		}
		return
	}
	f, _ := v.(float64)
	raw := (f - t.Offset) / t.ScaleOr1()
	var b [8]byte
	n := 2
	switch t.Type {
	case "int16":
		binary.BigEndian.PutUint16(b[:], uint16(int16(clampRound(raw, math.MinInt16, math.MaxInt16))))
	case "uint16":
		binary.BigEndian.PutUint16(b[:], uint16(clampRound(raw, 0, math.MaxUint16)))
	case "int32":
		binary.BigEndian.PutUint32(b[:], uint32(int32(clampRound(raw, math.MinInt32, math.MaxInt32))))
		n = 4
	case "uint32":
		binary.BigEndian.PutUint32(b[:], uint32(clampRound(raw, 0, math.MaxUint32)))
		n = 4
	case "float32":
		binary.BigEndian.PutUint32(b[:], math.Float32bits(float32(raw)))
		n = 4
	case "int64":
		r := math.Round(raw)
		var i int64
		switch {
		case r >= math.MaxInt64:
			i = math.MaxInt64
		case r <= math.MinInt64:
			i = math.MinInt64
		default:
			i = int64(r)
		}
		binary.BigEndian.PutUint64(b[:], uint64(i))
		n = 8
	case "uint64":
		r := math.Round(raw)
		var u uint64
		switch {
		case r >= math.MaxUint64:
			u = math.MaxUint64
		case r <= 0:
			u = 0
		default:
			u = uint64(r)
		}
		binary.BigEndian.PutUint64(b[:], u)
		n = 8
	case "float64":
		binary.BigEndian.PutUint64(b[:], math.Float64bits(raw))
		n = 8
	}
	arrange(b[:n], t.Order())
	for i := 0; i < n/2; i++ {
		dst[i] = binary.BigEndian.Uint16(b[2*i:])
	}
}

func clampRound(x, lo, hi float64) int64 {
	r := math.Round(x)
	if r < lo {
		r = lo
	}
	if r > hi {
		r = hi
	}
	return int64(r)
}

// arrange reorders big-endian bytes b in place into wire order for the given
// byte order; it is its own inverse for every order.
func arrange(b []byte, order string) {
	n := len(b)
	switch order {
	case "DCBA":
		for i := 0; i < n/2; i++ {
			b[i], b[n-1-i] = b[n-1-i], b[i]
		}
	case "BADC":
		for i := 0; i+1 < n; i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case "CDAB":
		for i := 0; i < n/4; i++ { // swap register i with register n/2-1-i
			j := n - 2 - 2*i
			b[2*i], b[j] = b[j], b[2*i]
			b[2*i+1], b[j+1] = b[j+1], b[2*i+1]
		}
	}
}

// decodeWords is the inverse of encodeWords: what a correct Modbus master
// decodes from the tag's registers. Numbers come back as float64 (raw * scale
// + offset), bools as bool, strings without trailing NULs.
func decodeWords(t *profiles.Tag, words []uint16) any {
	switch t.Type {
	case "bool":
		if t.Bit != nil {
			return words[0]&(1<<*t.Bit) != 0
		}
		return words[0] != 0
	case "string":
		b := make([]byte, 0, 2*len(words))
		for _, w := range words {
			b = append(b, byte(w>>8), byte(w))
		}
		for len(b) > 0 && b[len(b)-1] == 0 {
			b = b[:len(b)-1]
		}
		return string(b)
	}
	var b [8]byte
	for i, w := range words {
		binary.BigEndian.PutUint16(b[2*i:], w)
	}
	n := 2 * len(words)
	arrange(b[:n], t.Order())
	var raw float64
	switch t.Type {
	case "int16":
		raw = float64(int16(binary.BigEndian.Uint16(b[:])))
	case "uint16":
		raw = float64(binary.BigEndian.Uint16(b[:]))
	case "int32":
		raw = float64(int32(binary.BigEndian.Uint32(b[:])))
	case "uint32":
		raw = float64(binary.BigEndian.Uint32(b[:]))
	case "float32":
		raw = float64(math.Float32frombits(binary.BigEndian.Uint32(b[:])))
	case "int64":
		raw = float64(int64(binary.BigEndian.Uint64(b[:])))
	case "uint64":
		raw = float64(binary.BigEndian.Uint64(b[:]))
	case "float64":
		raw = math.Float64frombits(binary.BigEndian.Uint64(b[:]))
	default:
		panic(fmt.Sprintf("devsim: decode of unknown type %q", t.Type))
	}
	if t.Scale == nil && t.Offset == 0 {
		return raw
	}
	return raw*t.ScaleOr1() + t.Offset
}
