package modbus

import (
	"encoding/hex"
	"math"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestByteOrderGolden pins the wire layout of each byte order with literal
// bytes: the 32-bit value 0x11223344 and the 64-bit value 0x0102030405060708.
func TestByteOrderGolden(t *testing.T) {
	tests := []struct {
		order string
		typ   DataType
		wire  string
		want  any
	}{
		{"ABCD", TypeUint32, "1122 3344", uint64(0x11223344)},
		{"DCBA", TypeUint32, "4433 2211", uint64(0x11223344)},
		{"BADC", TypeUint32, "2211 4433", uint64(0x11223344)},
		{"CDAB", TypeUint32, "3344 1122", uint64(0x11223344)},
		{"", TypeUint32, "1122 3344", uint64(0x11223344)},
		{"ABCD", TypeUint64, "0102 0304 0506 0708", uint64(0x0102030405060708)},
		{"DCBA", TypeUint64, "0807 0605 0403 0201", uint64(0x0102030405060708)},
		{"BADC", TypeUint64, "0201 0403 0605 0807", uint64(0x0102030405060708)},
		{"CDAB", TypeUint64, "0708 0506 0304 0102", uint64(0x0102030405060708)},
		{"ABCD", TypeUint16, "1122", uint64(0x1122)},
		{"BADC", TypeUint16, "2211", uint64(0x1122)},
		{"DCBA", TypeUint16, "2211", uint64(0x1122)},
	}
	for _, tc := range tests {
		t.Run(string(tc.typ)+"/"+tc.order, func(t *testing.T) {
			tag := &Tag{Name: "v", Table: TableHolding, Address: 0, Type: tc.typ, ByteOrder: tc.order}
			wire := unhex(t, tc.wire)
			r := Request{Table: TableHolding, Quantity: uint16(len(wire) / 2)}
			got, err := Decode(tag, r, wire)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Decode = %#x (%T), want %#x", got, got, tc.want)
			}
		})
	}
}

// toWire lays out value bytes (big-endian, A first) as a device using order
// sends them; checked against the literal table of TestByteOrderGolden.
func toWire(order string, abcd []byte) []byte {
	words := len(abcd) / 2
	out := make([]byte, len(abcd))
	for w := 0; w < words; w++ {
		src := w
		if order == "DCBA" || order == "CDAB" {
			src = words - 1 - w
		}
		hi, lo := abcd[2*src], abcd[2*src+1]
		if order == "DCBA" || order == "BADC" {
			hi, lo = lo, hi
		}
		out[2*w], out[2*w+1] = hi, lo
	}
	return out
}

func TestToWireMatchesGolden(t *testing.T) {
	for order, want := range map[string]string{
		"ABCD": "0102030405060708", "DCBA": "0807060504030201",
		"BADC": "0201040306050807", "CDAB": "0708050603040102",
	} {
		if got := hex.EncodeToString(toWire(order, unhex(t, "0102030405060708"))); got != want {
			t.Errorf("toWire(%s) = %s, want %s", order, got, want)
		}
	}
}

// TestDecodeTypes decodes every type in every byte order, with and without
// scale/offset, at a non-zero offset inside a larger request whose other
// registers hold 0xFFFF.
func TestDecodeTypes(t *testing.T) {
	// Expected scaled values are computed at run time (not as exact Go
	// constants) so they round like the decoder's float64 arithmetic.
	half, ten := 0.5, 10.0
	tests := []struct {
		name   string
		typ    DataType
		value  string // big-endian value bytes (ABCD order)
		want   any    // unscaled
		scaled any    // with scale 0.5, offset 10
	}{
		{"int16 positive", TypeInt16, "7fff", int64(32767), 32767*half + ten},
		{"int16 negative", TypeInt16, "fffe", int64(-2), 9.0},
		{"int16 min", TypeInt16, "8000", int64(-32768), -32768*half + ten},
		{"uint16", TypeUint16, "fffe", uint64(65534), 32777.0},
		{"int32 negative", TypeInt32, "fffffffe", int64(-2), 9.0},
		{"int32 positive", TypeInt32, "00bc614e", int64(12345678), 12345678*half + ten},
		{"uint32", TypeUint32, "fffffffe", uint64(4294967294), 4294967294*half + ten},
		{"int64 negative", TypeInt64, "fffffffffffffffe", int64(-2), 9.0},
		{"int64 positive", TypeInt64, "0102030405060708", int64(72623859790382856), 72623859790382856*half + ten},
		{"uint64 max", TypeUint64, "ffffffffffffffff", uint64(math.MaxUint64), float64(math.MaxUint64)*half + ten},
		{"float32", TypeFloat32, "42f6e979", 123.456, 123.456*half + ten},
		{"float32 negative", TypeFloat32, "c0200000", -2.5, 8.75},
		{"float32 one", TypeFloat32, "3f800000", 1.0, 10.5},
		{"float64", TypeFloat64, "405edd2f1a9fbe77", 123.456, 123.456*half + ten},
		{"float64 negative", TypeFloat64, "c004000000000000", -2.5, 8.75},
	}
	for _, tc := range tests {
		for _, order := range validByteOrders {
			value := unhex(t, tc.value)
			if len(value) == 2 && order == ByteOrderCDAB {
				continue // rejected by ParseConfig
			}
			for _, scaled := range []bool{false, true} {
				name := tc.name + "/" + order
				if scaled {
					name += "/scaled"
				}
				t.Run(name, func(t *testing.T) {
					tag := &Tag{Name: "v", Table: TableInput, Address: 102, Type: tc.typ, ByteOrder: order}
					want := tc.want
					if scaled {
						tag.Scale, tag.Offset = ptr(0.5), 10
						want = tc.scaled
					}
					payload := append(append(unhex(t, "ffff ffff"), toWire(order, value)...), 0xff, 0xff)
					r := Request{Table: TableInput, Address: 100, Quantity: uint16(len(payload) / 2)}
					got, err := Decode(tag, r, payload)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("Decode = %v (%T), want %v (%T)", got, got, want, want)
					}
				})
			}
		}
	}
}

func TestDecodeScaleOffset(t *testing.T) {
	tests := []struct {
		name   string
		typ    DataType
		scale  *float64
		offset float64
		wire   string
		want   float64
	}{
		{"scale only", TypeUint32, ptr(0.01), 0, "0000 3039", 123.45},
		{"offset only", TypeInt16, nil, -40, "0041", 25},
		{"scale and offset", TypeInt16, ptr(0.1), -40, "0dac", 310},
		{"negative scale", TypeInt16, ptr(-2.0), 0, "0003", -6},
		{"float with scale", TypeFloat32, ptr(1000.0), 0, "3f800000", 1000},
		{"scale 1 still float", TypeUint16, ptr(1.0), 0, "0007", 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag := &Tag{Name: "v", Table: TableHolding, Type: tc.typ, Scale: tc.scale, Offset: tc.offset}
			wire := unhex(t, tc.wire)
			got, err := Decode(tag, Request{Table: TableHolding, Quantity: uint16(len(wire) / 2)}, wire)
			if err != nil {
				t.Fatal(err)
			}
			f, ok := got.(float64)
			if !ok {
				t.Fatalf("Decode = %v (%T), want a float64", got, got)
			}
			if math.Abs(f-tc.want) > 1e-9*math.Max(1, math.Abs(tc.want)) {
				t.Errorf("Decode = %v, want %v", f, tc.want)
			}
		})
	}
}

func TestDecodeBits(t *testing.T) {
	tests := []struct {
		name  string
		typ   DataType
		order string
		wire  string
		bit   int
		want  any
	}{
		{"bool bit 0", TypeBool, "", "8005", 0, true},
		{"bool bit 1", TypeBool, "", "8005", 1, false},
		{"bool bit 2", TypeBool, "", "8005", 2, true},
		{"bool bit 15", TypeBool, "", "8005", 15, true},
		{"bool bit 14", TypeBool, "", "8005", 14, false},
		{"bool bit 8 low byte first", TypeBool, "BADC", "0001", 8, true},
		{"bool bit 0 low byte first", TypeBool, "BADC", "0001", 0, false},
		{"uint16 bit 15", TypeUint16, "", "8005", 15, uint64(1)},
		{"uint16 bit 3", TypeUint16, "", "8005", 3, uint64(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag := &Tag{Name: "v", Table: TableHolding, Address: 7, Type: tc.typ, ByteOrder: tc.order, Bit: ptr(tc.bit)}
			got, err := Decode(tag, Request{Table: TableHolding, Address: 7, Quantity: 1}, unhex(t, tc.wire))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Decode = %v (%T), want %v (%T)", got, got, tc.want, tc.want)
			}
		})
	}
}

func TestDecodeString(t *testing.T) {
	tests := []struct {
		name   string
		order  string
		length int
		wire   string
		want   string
	}{
		{"high byte first", "", 4, hex.EncodeToString([]byte("ABCDE\x00\x00\x00")), "ABCDE"},
		{"full, no NUL", "ABCD", 2, hex.EncodeToString([]byte("SDM6")), "SDM6"},
		{"all NUL", "", 2, "0000 0000", ""},
		{"inner NUL kept", "", 2, hex.EncodeToString([]byte("A\x00B\x00")), "A\x00B"},
		{"low byte first", "BADC", 3, hex.EncodeToString([]byte("BADC\x00E")), "ABCDE"},
		{"low byte first DCBA", "DCBA", 2, hex.EncodeToString([]byte("BADC")), "ABCD"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag := &Tag{Name: "s", Table: TableHolding, Address: 200, Type: TypeString, Length: tc.length, ByteOrder: tc.order}
			payload := unhex(t, tc.wire)
			got, err := Decode(tag, Request{Table: TableHolding, Address: 200, Quantity: uint16(tc.length)}, payload)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Decode = %q, want %q", got, tc.want)
			}
		})
	}
	// Decode must not alias the payload: the caller reuses its buffer.
	payload := []byte("ABCD")
	tag := &Tag{Name: "s", Table: TableHolding, Type: TypeString, Length: 2}
	v, _ := Decode(tag, Request{Table: TableHolding, Quantity: 2}, payload)
	copy(payload, "xxxx")
	if v != "ABCD" {
		t.Errorf("string changed with the payload buffer: %q", v)
	}
}

func TestDecodeCoilsAndDiscreteInputs(t *testing.T) {
	// 11 bits from address 10, LSB first: byte 0 = 1010 0101, byte 1 = 0000 0101.
	payload := []byte{0xA5, 0x05}
	want := []bool{true, false, true, false, false, true, false, true, true, false, true}
	for _, table := range []Table{TableCoil, TableDiscreteInput} {
		r := Request{Table: table, Address: 10, Quantity: 11}
		for i, w := range want {
			tag := &Tag{Name: "b", Table: table, Address: 10 + i, Type: TypeBool}
			got, err := Decode(tag, r, payload)
			if err != nil {
				t.Fatalf("%s %d: %v", table, 10+i, err)
			}
			if got != w {
				t.Errorf("%s %d = %v, want %v", table, 10+i, got, w)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		tag     Tag
		r       Request
		payload []byte
		wantErr string
	}{
		{"short registers", Tag{Name: "v", Table: TableHolding, Address: 1, Type: TypeUint32},
			Request{Table: TableHolding, Address: 0, Quantity: 3}, []byte{0, 1, 2, 3}, `tag "v": short response: 4 bytes, need 6`},
		{"empty payload", Tag{Name: "v", Table: TableInput, Type: TypeFloat64},
			Request{Table: TableInput, Quantity: 4}, nil, "short response"},
		{"short bits", Tag{Name: "c", Table: TableCoil, Address: 9, Type: TypeBool},
			Request{Table: TableCoil, Quantity: 16}, []byte{0xff}, "short response"},
		{"before request", Tag{Name: "v", Table: TableHolding, Address: 4, Type: TypeUint16},
			Request{Table: TableHolding, Address: 5, Quantity: 2}, []byte{0, 0, 0, 0}, "outside request"},
		{"past request", Tag{Name: "v", Table: TableHolding, Address: 5, Type: TypeUint32},
			Request{Table: TableHolding, Address: 5, Quantity: 1}, []byte{0, 0, 0, 0}, "outside request"},
		{"table mismatch", Tag{Name: "v", Table: TableInput, Type: TypeUint16},
			Request{Table: TableHolding, Quantity: 1}, []byte{0, 0}, "table input_register"},
		{"unknown type", Tag{Name: "v", Table: TableHolding, Type: "int8"},
			Request{Table: TableHolding, Quantity: 1}, []byte{0, 0}, `unknown type "int8"`},
		{"bool without bit", Tag{Name: "v", Table: TableHolding, Type: TypeBool},
			Request{Table: TableHolding, Quantity: 1}, []byte{0, 0}, "needs bit"},
		{"float32 NaN", Tag{Name: "v", Table: TableInput, Type: TypeFloat32},
			Request{Table: TableInput, Quantity: 2}, []byte{0x7f, 0xc0, 0, 0}, `tag "v": value is NaN`},
		{"float64 -Inf", Tag{Name: "v", Table: TableInput, Type: TypeFloat64},
			Request{Table: TableInput, Quantity: 4}, []byte{0xff, 0xf0, 0, 0, 0, 0, 0, 0}, `tag "v": value is -Inf`},
		{"scaled to +Inf", Tag{Name: "v", Table: TableInput, Type: TypeFloat32, Scale: ptr(math.MaxFloat64)},
			Request{Table: TableInput, Quantity: 2}, []byte{0x42, 0xf6, 0xe9, 0x79}, `tag "v": value is +Inf`},
		{"string without length", Tag{Name: "v", Table: TableHolding, Type: TypeString},
			Request{Table: TableHolding, Quantity: 1}, []byte{0, 0}, "unknown type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Decode(&tc.tag, tc.r, tc.payload)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Decode = %v, %v; want error containing %q", v, err, tc.wantErr)
			}
			if v != nil {
				t.Errorf("value %v returned with error", v)
			}
		})
	}
}

func TestTagRegisters(t *testing.T) {
	tests := []struct {
		tag  Tag
		want int
	}{
		{Tag{Table: TableCoil, Type: TypeBool}, 1},
		{Tag{Table: TableDiscreteInput, Type: TypeBool}, 1},
		{Tag{Table: TableHolding, Type: TypeBool, Bit: ptr(3)}, 1},
		{Tag{Table: TableHolding, Type: TypeInt16}, 1},
		{Tag{Table: TableHolding, Type: TypeUint16}, 1},
		{Tag{Table: TableInput, Type: TypeInt32}, 2},
		{Tag{Table: TableInput, Type: TypeUint32}, 2},
		{Tag{Table: TableInput, Type: TypeFloat32}, 2},
		{Tag{Table: TableInput, Type: TypeInt64}, 4},
		{Tag{Table: TableInput, Type: TypeUint64}, 4},
		{Tag{Table: TableInput, Type: TypeFloat64}, 4},
		{Tag{Table: TableInput, Type: TypeString, Length: 8}, 8},
		{Tag{Table: TableInput, Type: "nope"}, 0},
	}
	for _, tc := range tests {
		if got := tc.tag.Registers(); got != tc.want {
			t.Errorf("%s %s Registers() = %d, want %d", tc.tag.Table, tc.tag.Type, got, tc.want)
		}
	}
}

func TestTableFunctionCode(t *testing.T) {
	for table, fc := range map[Table]byte{TableCoil: 1, TableDiscreteInput: 2, TableHolding: 3, TableInput: 4, "x": 0} {
		if got := table.FunctionCode(); got != fc {
			t.Errorf("%s.FunctionCode() = %d, want %d", table, got, fc)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	tags := []Tag{
		{Name: "f", Table: TableInput, Address: 0, Type: TypeFloat32},
		{Name: "u", Table: TableInput, Address: 2, Type: TypeUint32, ByteOrder: "CDAB", Scale: ptr(0.01)},
		{Name: "i", Table: TableInput, Address: 4, Type: TypeInt16},
		{Name: "d", Table: TableInput, Address: 5, Type: TypeFloat64},
	}
	r := Request{Table: TableInput, Quantity: 9}
	payload := make([]byte, 18)
	b.ReportAllocs()
	for b.Loop() {
		for i := range tags {
			if _, err := Decode(&tags[i], r, payload); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestScaledValuesCarryNoBinaryNoise(t *testing.T) {
	tests := []struct {
		raw         float64
		scale, offs float64
		want        float64
	}{
		{2301, 0.1, 0, 230.1},
		{123456, 0.01, 0, 1234.56},
		{7, 0.001, 0, 0.007},
		{3, 0.1, 0.2, 0.5},
		{1, 1, 0.1, 1.1},
		{5, 2.5, 0, 12.5},
		{-2301, 0.1, -40, -270.1},
	}
	for _, tc := range tests {
		s := tc.scale
		tag := &Tag{Scale: &s, Offset: tc.offs}
		if got := scaleFloat(tag, tc.raw); got != tc.want {
			t.Errorf("%v * %v + %v = %v, want %v", tc.raw, tc.scale, tc.offs, got, tc.want)
		}
	}
}
