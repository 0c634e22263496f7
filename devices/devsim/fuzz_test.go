package devsim

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// FuzzPDU feeds arbitrary request PDUs to a unit: it must never panic, and
// must answer either an exception with a known code or a normal response to
// the same function code.
func FuzzPDU(f *testing.F) {
	for _, seed := range [][]byte{
		{3, 0, 0, 0, 10}, {4, 0, 0, 0, 125}, {1, 0, 0, 7, 0xD0}, {2, 0, 0, 0, 9},
		{5, 0, 2, 0xFF, 0}, {6, 0, 1, 0, 7}, {15, 0, 0, 0, 3, 1, 5}, {16, 0, 10, 0, 2, 4, 0, 1, 0, 2},
		{0x2B, 0x0E, 1, 0}, {}, {16, 0, 0, 0, 0x7B, 0xF6},
	} {
		f.Add(seed)
	}
	u, err := newUnit(1, lookup(f, "fieldgate-demo-drive"), false)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pdu []byte) {
		resp := u.handle(pdu, frozen)
		if len(pdu) == 0 {
			if resp != nil {
				t.Fatalf("answer % x to an empty PDU", resp)
			}
			return
		}
		switch {
		case len(resp) == 2 && resp[0] == pdu[0]|0x80:
			if c := resp[1]; c != ExcIllegalFunction && c != ExcIllegalAddress && c != ExcIllegalValue {
				t.Fatalf("exception code %d to % x", c, pdu)
			}
		case len(resp) >= 2 && resp[0] == pdu[0] && resp[0] < 0x80:
			if pdu[0] <= 4 && int(resp[1]) != len(resp)-2 {
				t.Fatalf("byte count %d with %d data bytes to % x", resp[1], len(resp)-2, pdu)
			}
		default:
			t.Fatalf("response % x to request % x", resp, pdu)
		}
	})
}

// chunkPort is a serialPort fake for FuzzRTUStream: it returns its input in
// chunks, reports a silence, then ends the stream.
type chunkPort struct {
	in       []byte
	chunk    int
	silences int
	out      [][]byte
}

func (p *chunkPort) Read(b []byte) (int, error) {
	if len(p.in) == 0 {
		if p.silences > 0 {
			p.silences--
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(len(b), p.chunk, len(p.in))
	copy(b, p.in[:n])
	p.in = p.in[n:]
	return n, nil
}

func (p *chunkPort) Write(b []byte) (int, error) {
	p.out = append(p.out, append([]byte(nil), b...))
	return len(b), nil
}

func (p *chunkPort) SetReadTimeout(time.Duration) error { return nil }
func (p *chunkPort) Close() error                       { return nil }

// FuzzRTUStream feeds an arbitrary byte stream to the RTU loop: no panic,
// and every answer is a CRC-correct frame from a simulated unit.
func FuzzRTUStream(f *testing.F) {
	good := appendCRC([]byte{1, 3, 0, 0, 0, 2})
	f.Add(append(append([]byte{0xFF, 0x03}, good...), good...), 3)
	f.Add(appendCRC([]byte{2, 16, 0, 1, 0, 1, 2, 0, 9}), 64)
	f.Add(appendCRC([]byte{2, 0x2B, 0x0E, 1, 0}), 1)
	m, err := NewModbus(Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: lookup(f, "fieldgate-demo-drive")}, {ID: 2, Profile: lookup(f, "eastron-sdm120")}}},
		WithClock(func() time.Time { return frozen }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk int) {
		p := &chunkPort{in: stream, chunk: max(1, chunk%300), silences: 1}
		if err := m.serveRTU(context.Background(), p); !errors.Is(err, io.EOF) {
			t.Fatalf("serveRTU = %v, want io.EOF at the end of input", err)
		}
		for _, out := range p.out {
			if !crcOK(out) || (out[0] != 1 && out[0] != 2) {
				t.Fatalf("bad answer % x", out)
			}
		}
	})
}
