package devsim

import (
	"math"
	"slices"
	"testing"
	"time"

	"fieldgate/devices/profiles"
)

func ptr[T any](v T) *T { return &v }

// TestEncodeKnownVectors pins the wire layout of every byte order against
// hand-computed registers (230.0 as float32 is 0x43660000; the uint64 is
// 0x0102030405060780, exact in a float64).
func TestEncodeKnownVectors(t *testing.T) {
	tests := []struct {
		name string
		tag  profiles.Tag
		v    any
		want []uint16
	}{
		{"float32 ABCD", profiles.Tag{Type: "float32"}, 230.0, []uint16{0x4366, 0x0000}},
		{"float32 CDAB", profiles.Tag{Type: "float32", ByteOrder: "CDAB"}, 230.0, []uint16{0x0000, 0x4366}},
		{"float32 DCBA", profiles.Tag{Type: "float32", ByteOrder: "DCBA"}, 230.0, []uint16{0x0000, 0x6643}},
		{"float32 BADC", profiles.Tag{Type: "float32", ByteOrder: "BADC"}, 230.0, []uint16{0x6643, 0x0000}},
		{"uint32 ABCD", profiles.Tag{Type: "uint32"}, float64(0x01020304), []uint16{0x0102, 0x0304}},
		{"uint32 CDAB", profiles.Tag{Type: "uint32", ByteOrder: "CDAB"}, float64(0x01020304), []uint16{0x0304, 0x0102}},
		{"uint32 DCBA", profiles.Tag{Type: "uint32", ByteOrder: "DCBA"}, float64(0x01020304), []uint16{0x0403, 0x0201}},
		{"uint32 BADC", profiles.Tag{Type: "uint32", ByteOrder: "BADC"}, float64(0x01020304), []uint16{0x0201, 0x0403}},
		{"uint64 ABCD", profiles.Tag{Type: "uint64"}, float64(0x0102030405060780), []uint16{0x0102, 0x0304, 0x0506, 0x0780}},
		{"uint64 CDAB", profiles.Tag{Type: "uint64", ByteOrder: "CDAB"}, float64(0x0102030405060780), []uint16{0x0780, 0x0506, 0x0304, 0x0102}},
		{"uint64 DCBA", profiles.Tag{Type: "uint64", ByteOrder: "DCBA"}, float64(0x0102030405060780), []uint16{0x8007, 0x0605, 0x0403, 0x0201}},
		{"uint64 BADC", profiles.Tag{Type: "uint64", ByteOrder: "BADC"}, float64(0x0102030405060780), []uint16{0x0201, 0x0403, 0x0605, 0x8007}},
		{"int16 negative", profiles.Tag{Type: "int16"}, -2.0, []uint16{0xFFFE}},
		{"int16 scaled", profiles.Tag{Type: "int16", Scale: ptr(0.01)}, -12.34, []uint16{uint16(0x10000 - 1234)}},
		{"uint16 offset", profiles.Tag{Type: "uint16", Scale: ptr(0.5), Offset: -40}, 31.0, []uint16{142}},
		{"uint16 DCBA swaps", profiles.Tag{Type: "uint16", ByteOrder: "DCBA"}, float64(0x0102), []uint16{0x0201}},
		{"uint16 clamps", profiles.Tag{Type: "uint16"}, 70000.0, []uint16{0xFFFF}},
		{"int32 negative", profiles.Tag{Type: "int32"}, -1.0, []uint16{0xFFFF, 0xFFFF}},
		{"int64 CDAB", profiles.Tag{Type: "int64", ByteOrder: "CDAB"}, -2.0, []uint16{0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF}},
		{"float64 ABCD", profiles.Tag{Type: "float64"}, 1.0, []uint16{0x3FF0, 0, 0, 0}},
		{"float64 DCBA", profiles.Tag{Type: "float64", ByteOrder: "DCBA"}, 1.0, []uint16{0, 0, 0, 0xF03F}},
		{"bool register", profiles.Tag{Type: "bool"}, true, []uint16{1}},
		{"string padded", profiles.Tag{Type: "string", Length: 3}, "ABC", []uint16{0x4142, 0x4300, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]uint16, tc.tag.Width())
			encodeWords(got, &tc.tag, tc.v)
			if !slices.Equal(got, tc.want) {
				t.Errorf("encode %v = %04x, want %04x", tc.v, got, tc.want)
			}
		})
	}
}

// TestEncodeDecodeRoundTrip encodes every tag of every embedded profile at
// many instants and checks the decoder gives the value back within the
// type's resolution.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, name := range profiles.Names() {
		p, err := profiles.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.Tags {
			tag := &p.Tags[i]
			if tag.Bit != nil || profiles.IsBitTable(tag.Table) {
				continue
			}
			w := make([]uint16, tag.Width())
			for k := 0; k < 50; k++ {
				at := start.Add(time.Duration(k) * 3331 * time.Millisecond)
				v := tag.SimValue(at)
				encodeWords(w, tag, v)
				got := decodeWords(tag, w)
				f, isNum := v.(float64)
				if !isNum {
					if got != v {
						t.Fatalf("%s/%s: %v -> %04x -> %v", name, tag.Name, v, w, got)
					}
					continue
				}
				g := got.(float64)
				tol := math.Abs(tag.ScaleOr1()) / 2 // integer rounding
				switch tag.Type {
				case "float32":
					tol = math.Abs(f) * 1e-6
				case "float64":
					tol = math.Abs(f) * 1e-12
				}
				if math.Abs(g-f) > tol+1e-9 {
					t.Fatalf("%s/%s: %v -> %04x -> %v (tolerance %v)", name, tag.Name, f, w, g, tol)
				}
			}
		}
	}
}

func TestCRC(t *testing.T) {
	// Read holding registers, unit 1, address 0, count 10: a textbook frame.
	frame := appendCRC([]byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x0A})
	if want := []byte{0xC5, 0xCD}; !slices.Equal(frame[6:], want) {
		t.Errorf("crc = % x, want % x", frame[6:], want)
	}
	if !crcOK(frame) {
		t.Error("crcOK rejects a good frame")
	}
	frame[2] ^= 1
	if crcOK(frame) {
		t.Error("crcOK accepts a corrupted frame")
	}
}

func TestRTURequestLen(t *testing.T) {
	tests := []struct {
		b    []byte
		want int
	}{
		{[]byte{1}, 0},
		{[]byte{1, 3}, 8},
		{[]byte{1, 5}, 8},
		{[]byte{1, 16, 0, 0, 0, 2}, 0},
		{[]byte{1, 16, 0, 0, 0, 2, 4}, 13},
		{[]byte{1, 15, 0, 0, 0, 10, 2}, 11},
		{[]byte{1, 7}, 4},
		{[]byte{1, 0x2B}, -1},
	}
	for _, tc := range tests {
		if got := rtuRequestLen(tc.b); got != tc.want {
			t.Errorf("rtuRequestLen(% x) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

func TestWireModel(t *testing.T) {
	// 19200 baud, 11 bits: one character is 572.9 µs, 3.5 characters 2.005 ms.
	char := time.Second * 11 / 19200
	w := &wire{char: char, gap: interFrameSilence(19200, 11)}
	t0 := time.Unix(1000, 0)
	due := w.transact(t0, 8, 255)
	if want := t0.Add(263*char + w.gap); !due.Equal(want) {
		t.Errorf("first response due %v, want %v", due.Sub(t0), want.Sub(t0))
	}
	// A master that sends the next request at once waits for the silence.
	due2 := w.transact(due, 8, 255)
	if want := due.Add(w.gap + 263*char + w.gap); !due2.Equal(want) {
		t.Errorf("second response due %v after the first, want %v", due2.Sub(due), want.Sub(due))
	}
	perSecond := 125 / (due2.Sub(due).Seconds())
	if perSecond < 807 || perSecond > 809 {
		t.Errorf("full reads give %.1f registers/s, want 808 (the 19200 baud wire limit)", perSecond)
	}
	if got := interFrameSilence(115200, 11); got != 1750*time.Microsecond {
		t.Errorf("silence above 19200 baud = %v, want 1.75ms", got)
	}
}
