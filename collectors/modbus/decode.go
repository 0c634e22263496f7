package modbus

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Decode extracts tag t's value from payload, the data of a response to request
// r: for register tables 2 bytes per register, big-endian as on the wire; for
// coils and discrete inputs the bits packed LSB first as on the wire. The tag
// must lie inside r. The value is a bool, int64 (signed types), uint64
// (unsigned types, and uint16 with bit: 0 or 1), float64 (float types, and every
// numeric type when scale or offset is set: raw*scale + offset) or string (high
// byte of the first register first, trailing NULs dropped). A float that is NaN
// or ±Inf (meters send NaN for "no value") is an error: JSON cannot carry it and
// the reading must be bad, not a good null. Decode never panics on a short or
// malformed payload; it returns an error naming the problem.
func Decode(t *Tag, r Request, payload []byte) (any, error) {
	if t.Table != r.Table {
		return nil, fmt.Errorf("tag %q is in table %s, request reads %s", t.Name, t.Table, r.Table)
	}
	n := t.Registers()
	if n <= 0 {
		return nil, fmt.Errorf("tag %q: unknown type %q", t.Name, t.Type)
	}
	off := t.Address - int(r.Address)
	if off < 0 || off+n > int(r.Quantity) {
		return nil, fmt.Errorf("tag %q at %d+%d lies outside request %d+%d", t.Name, t.Address, n, r.Address, r.Quantity)
	}
	if r.Table.IsBit() {
		i := off / 8
		if i >= len(payload) {
			return nil, fmt.Errorf("tag %q: short response: %d bytes, need %d", t.Name, len(payload), i+1)
		}
		return payload[i]>>(off%8)&1 == 1, nil
	}
	start, end := 2*off, 2*(off+n)
	if end > len(payload) {
		return nil, fmt.Errorf("tag %q: short response: %d bytes, need %d", t.Name, len(payload), end)
	}
	v, err := decodeRegisters(t, payload[start:end])
	if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
		return nil, fmt.Errorf("tag %q: value is %v", t.Name, f)
	}
	return v, err
}

// decodeRegisters decodes the tag's own registers b (len 2*t.Registers()).
func decodeRegisters(t *Tag, b []byte) (any, error) {
	var buf [8]byte
	swapBytes, swapWords := byteOrderFlags(t.ByteOrder)
	if len(b) <= 8 {
		ordered(buf[:len(b)], b, swapBytes, swapWords)
	}
	switch t.Type {
	case TypeBool:
		v := binary.BigEndian.Uint16(buf[:2])
		if t.Bit == nil {
			return nil, fmt.Errorf("tag %q: bool on a register needs bit", t.Name)
		}
		return v>>(uint(*t.Bit)&15)&1 == 1, nil
	case TypeUint16:
		v := uint64(binary.BigEndian.Uint16(buf[:2]))
		if t.Bit != nil {
			v = v >> (uint(*t.Bit) & 15) & 1
		}
		return scaleUint(t, v), nil
	case TypeInt16:
		return scaleInt(t, int64(int16(binary.BigEndian.Uint16(buf[:2])))), nil
	case TypeUint32:
		return scaleUint(t, uint64(binary.BigEndian.Uint32(buf[:4]))), nil
	case TypeInt32:
		return scaleInt(t, int64(int32(binary.BigEndian.Uint32(buf[:4])))), nil
	case TypeUint64:
		return scaleUint(t, binary.BigEndian.Uint64(buf[:8])), nil
	case TypeInt64:
		return scaleInt(t, int64(binary.BigEndian.Uint64(buf[:8]))), nil
	case TypeFloat32:
		return scaleFloat(t, decimalFloat32(math.Float32frombits(binary.BigEndian.Uint32(buf[:4])))), nil
	case TypeFloat64:
		return scaleFloat(t, math.Float64frombits(binary.BigEndian.Uint64(buf[:8]))), nil
	case TypeString:
		s := make([]byte, len(b))
		copy(s, b)
		if swapBytes {
			for i := 0; i+1 < len(s); i += 2 {
				s[i], s[i+1] = s[i+1], s[i]
			}
		}
		return strings.TrimRight(string(s), "\x00"), nil
	}
	return nil, fmt.Errorf("tag %q: unknown type %q", t.Name, t.Type)
}

// byteOrderFlags maps a byte order onto its two independent rules (see
// ByteOrderABCD); "" is ABCD.
func byteOrderFlags(order string) (swapBytes, swapWords bool) {
	switch order {
	case ByteOrderDCBA:
		return true, true
	case ByteOrderBADC:
		return true, false
	case ByteOrderCDAB:
		return false, true
	}
	return false, false
}

// ordered copies the wire bytes src into dst in big-endian value order, undoing
// the register reversal and byte swap of the byte order.
func ordered(dst, src []byte, swapBytes, swapWords bool) {
	words := len(src) / 2
	for w := 0; w < words; w++ {
		sw := w
		if swapWords {
			sw = words - 1 - w
		}
		hi, lo := src[2*sw], src[2*sw+1]
		if swapBytes {
			hi, lo = lo, hi
		}
		dst[2*w], dst[2*w+1] = hi, lo
	}
}

func scaleUint(t *Tag, v uint64) any {
	if !t.Scaled() {
		return v
	}
	return scaleFloat(t, float64(v))
}

func scaleInt(t *Tag, v int64) any {
	if !t.Scaled() {
		return v
	}
	return scaleFloat(t, float64(v))
}

// decimalFloat32 widens f to the float64 nearest its shortest decimal form, so
// a meter's 230.1 V is published as 230.1 and not as 230.10000610351562 (the
// exact binary value of the float32), and scaling starts from what the device
// meant.
func decimalFloat32(f float32) float64 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return float64(f)
	}
	var buf [32]byte
	v, err := strconv.ParseFloat(string(strconv.AppendFloat(buf[:0], float64(f), 'g', -1, 32)), 64)
	if err != nil {
		return float64(f)
	}
	return v
}

// scaleFloat applies value = raw * scale + offset without adding binary
// noise a subscriber would see: a decimal scale such as 0.1 is applied as a
// division by its exact inverse (2301 * 0.1 = 230.10000000000002, but 2301 / 10
// = 230.1), and a non-integer offset is followed by rounding to 15 significant
// digits, the precision a float64 holds for any decimal.
func scaleFloat(t *Tag, v float64) float64 {
	if t.Scale != nil {
		s := *t.Scale
		if inv := 1 / s; s < 1 && inv == math.Trunc(inv) && !math.IsInf(inv, 0) {
			v /= inv
		} else {
			v *= s
		}
	}
	if t.Offset == 0 {
		return v
	}
	v += t.Offset
	if t.Offset == math.Trunc(t.Offset) || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	var buf [32]byte
	r, err := strconv.ParseFloat(string(strconv.AppendFloat(buf[:0], v, 'g', 15, 64)), 64)
	if err != nil {
		return v
	}
	return r
}
