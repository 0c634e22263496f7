package queue

import (
	"bytes"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	tests := []Record{
		{Seq: 1, TS: time.UnixMilli(1764345600123), Topic: "fieldgate/gw/data/c/d", Payload: []byte(`{"seq":1}`)},
		{Seq: 1<<64 - 1, TS: time.UnixMilli(0), Topic: "", Payload: nil},
		{Seq: 7, TS: time.UnixMilli(-5), Topic: "t", Payload: bytes.Repeat([]byte{0xF9, 0x51, 0x9A, 0xC3}, 100)}, // magic inside
	}
	for _, r := range tests {
		b := appendFrame([]byte("prefix"), r)[len("prefix"):]
		if len(b) != frameSize(r) {
			t.Fatalf("frame of %d bytes, frameSize says %d", len(b), frameSize(r))
		}
		f, err := parseFrame(b)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		got := f.record()
		if got.Seq != r.Seq || !got.TS.Equal(r.TS) || got.Topic != r.Topic || !bytes.Equal(got.Payload, r.Payload) || f.size != len(b) {
			t.Fatalf("round trip: %+v, want %+v", got, r)
		}
	}
}

// FuzzScan: no input makes the segment reader panic, read out of bounds or
// return a record that is not a valid frame in order; valid frames placed
// after arbitrary garbage are found.
func FuzzScan(f *testing.F) {
	f.Add([]byte{}, uint64(0))
	f.Add(appendFrame(nil, rec(1, time.Now())), uint64(0))
	f.Add(append(appendFrame(nil, rec(5, time.Now())), 0xF9, 0x51, 0x9A, 0xC3, 0, 0, 0, 9), uint64(3))
	f.Fuzz(func(t *testing.T, b []byte, after uint64) {
		res := scan(b, 0, after)
		last := after
		for _, r := range res.records {
			fr, err := parseFrame(b[r.off : r.off+int64(r.size)])
			if err != nil || fr.seq != r.seq || r.seq <= last {
				t.Fatalf("scan returned a bad record %+v (%v)", r, err)
			}
			last = r.seq
		}
		// A valid frame after the input is always found.
		want := last + 1
		if want == 0 {
			return
		}
		tail := appendFrame(append([]byte(nil), b...), Record{Seq: want, TS: time.UnixMilli(1), Topic: "t", Payload: []byte("p")})
		res = scan(tail, 0, after)
		if n := len(res.records); n == 0 || res.records[n-1].seq != want {
			t.Fatalf("frame after %d garbage bytes not found: %+v", len(b), res)
		}
	})
}
