package modbus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
)

// startDevsimTCP runs a devsim Modbus TCP slave with the fieldgate-bench
// profile on units 1..n until the test ends.
func startDevsimTCP(t *testing.T, cfg devsim.Config, n int) *devsim.Modbus {
	t.Helper()
	prof, err := profiles.Lookup("fieldgate-bench")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TCP = "127.0.0.1:0"
	for id := 1; id <= n; id++ {
		cfg.Units = append(cfg.Units, devsim.Unit{ID: uint8(id), Profile: prof})
	}
	sim, err := devsim.NewModbus(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := sim.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return sim
}

// TestTCPGarbageAnswers: a wrong transaction id, a wrong unit id and a
// truncated PDU are each reported as garbage naming the unit, and the
// connection goes on serving the next request.
func TestTCPGarbageAnswers(t *testing.T) {
	sim := startDevsimTCP(t, devsim.Config{Faults: map[uint8]devsim.Fault{
		1: {Kind: devsim.FaultBadCRC, Every: 2},
		2: {Kind: devsim.FaultWrongUnit, Every: 2},
		3: {Kind: devsim.FaultShortFrame, Every: 2},
	}}, 3)
	c, err := newTCPConn(sim.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	reasons := map[byte]string{1: "transaction id", 2: "answer from unit", 3: "byte count"}
	for unit := byte(1); unit <= 3; unit++ {
		for i := 0; i < 4; i++ {
			data, err := c.Read(ctx, unit, fnReadHoldingRegisters, 0, 10)
			if i%2 == 0 {
				if err != nil || len(data) != 20 {
					t.Errorf("unit %d request %d: %d bytes, %v; want 20 bytes", unit, i, len(data), err)
				}
				continue
			}
			var fe *FrameError
			if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), fmt.Sprintf("garbage response from unit %d: ", unit)) ||
				!strings.Contains(err.Error(), reasons[unit]) {
				t.Errorf("unit %d request %d: %v, want garbage with %q", unit, i, err, reasons[unit])
			}
		}
	}
}

// TestTCPSkipsLateAnswer: an answer that arrives after its request timed
// out is skipped by transaction id; the next request gets its own answer.
func TestTCPSkipsLateAnswer(t *testing.T) {
	// At 9600 baud a 125-register exchange takes ~310 ms on the emulated line.
	sim := startDevsimTCP(t, devsim.Config{EmulateWire: true, Serial: devsim.Serial{Baud: 9600}}, 1)
	c, err := newTCPConn(sim.Addr(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Read(ctx, 1, fnReadHoldingRegisters, 0, 125); !errors.Is(err, ErrTimeout) {
		t.Fatalf("first read: %v, want timeout", err)
	}
	c.timeout = 5 * time.Second
	// Paired with the stale 125-register answer this would be a byte count
	// error; 4 bytes and no error mean the stale answer was skipped.
	data, err := c.Read(ctx, 1, fnReadHoldingRegisters, 100, 2)
	if err != nil || len(data) != 4 {
		t.Fatalf("second read: %d bytes, %v; want 4 bytes", len(data), err)
	}
}

// TestTCPReconnects: a refused connection is a link error naming the
// address; once the peer is there the same transport works.
func TestTCPReconnects(t *testing.T) {
	sim := startDevsimTCP(t, devsim.Config{}, 1)
	c, err := newTCPConn("127.0.0.1:1", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Read(context.Background(), 1, fnReadHoldingRegisters, 0, 1)
	var le *LinkError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), `tcp "127.0.0.1:1"`) {
		t.Fatalf("read from a closed port: %v, want a link error naming it", err)
	}
	c.addr = sim.Addr()
	if _, err := c.Read(context.Background(), 1, fnReadHoldingRegisters, 0, 1); err != nil {
		t.Fatalf("after the peer appeared: %v", err)
	}
}

// FuzzTCPAnswer: whatever a peer sends back, Read returns (never panics,
// never hangs past its timeout), and a success carries exactly the data a
// request of that size must.
func FuzzTCPAnswer(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 1, 0, 2}, uint16(2))
	f.Add([]byte{0, 1, 0, 0, 0, 3, 1, 0x83, 2}, uint16(2))
	f.Add([]byte{0, 2, 0, 0, 0, 7, 1, 3, 4, 0, 1, 0, 2}, uint16(2))
	f.Add([]byte{0, 1, 0, 0, 0xff, 0xff, 1, 3}, uint16(1))
	f.Fuzz(func(t *testing.T, answer []byte, qty uint16) {
		qty = qty%125 + 1
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			defer server.Close()
			req := make([]byte, 12)
			if _, err := io.ReadFull(server, req); err != nil {
				return
			}
			_, _ = server.Write(answer)
		}()
		c := &tcpConn{addr: "pipe", timeout: 200 * time.Millisecond, conn: client, rd: bufio.NewReader(client)}
		data, err := c.Read(context.Background(), 1, fnReadHoldingRegisters, 0, qty)
		if err == nil && len(data) != 2*int(qty) {
			t.Fatalf("success with %d bytes for %d registers", len(data), qty)
		}
	})
}

// TestTCPDropsConnectionAfterTimeouts: a connection on which three requests
// in a row got no answer is presumed half-open and dialled again.
func TestTCPDropsConnectionAfterTimeouts(t *testing.T) {
	sim := startDevsimTCP(t, devsim.Config{Faults: map[uint8]devsim.Fault{1: {Kind: devsim.FaultSilent}}}, 2)
	c, err := newTCPConn(sim.Addr(), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Read(ctx, 2, fnReadHoldingRegisters, 0, 1); err != nil {
		t.Fatal(err)
	}
	first := c.conn
	for i := 1; i <= maxTimeouts; i++ {
		if _, err := c.Read(ctx, 1, fnReadHoldingRegisters, 0, 1); !errors.Is(err, ErrTimeout) {
			t.Fatalf("read %d from the silent unit: %v", i, err)
		}
		if i < maxTimeouts && c.conn != first {
			t.Fatalf("connection replaced after %d timeouts", i)
		}
	}
	if c.conn != nil {
		t.Fatalf("connection kept after %d timeouts in a row", maxTimeouts)
	}
	if _, err := c.Read(ctx, 2, fnReadHoldingRegisters, 0, 1); err != nil || c.conn == nil {
		t.Fatalf("read on a new connection: %v", err)
	}
}
