package devsim

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"
	"go.bug.st/serial"

	"fieldgate/internal/testpeer"
)

func rtuClient(t testing.TB, path string, timeout time.Duration) (*modbus.RTUClientHandler, modbus.Client) {
	t.Helper()
	h := modbus.NewRTUClientHandler(path)
	h.BaudRate, h.DataBits, h.Parity, h.StopBits = 19200, 8, "N", 1
	h.Timeout = timeout
	h.SlaveId = 1
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, modbus.NewClient(h)
}

// TestRTUSeveralUnitsOnOneBus serves three units on one pty line, one of
// them silent: the others answer correctly, the silent one and an unknown
// unit id time out, and the bus keeps working afterwards.
func TestRTUSeveralUnitsOnOneBus(t *testing.T) {
	simEnd, clientEnd := testpeer.PtyPair(t)
	p630, p120 := lookup(t, "eastron-sdm630"), lookup(t, "eastron-sdm120")
	m := startSim(t, Config{
		RTU:    simEnd,
		Units:  []Unit{{ID: 1, Profile: p630}, {ID: 2, Profile: p120}, {ID: 3, Profile: lookup(t, "fieldgate-demo-drive")}},
		Faults: map[uint8]Fault{3: {Kind: FaultSilent}},
	}, WithClock(func() time.Time { return frozen }))
	h, c := rtuClient(t, clientEnd, 300*time.Millisecond)

	read := func(unit byte, addr, n uint16) ([]byte, error) {
		h.SlaveId = unit
		return c.ReadInputRegisters(addr, n)
	}
	b, err := read(1, 0, 6)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"voltage_l1", "voltage_l2", "voltage_l3"} {
		if got, want := f32(b[4*i:]), float32(findTag(t, p630, name).SimValue(frozen).(float64)); got != want {
			t.Errorf("unit 1 %s = %v, want %v", name, got, want)
		}
	}
	b, err = read(2, 0x0046, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f32(b), float32(findTag(t, p120, "frequency").SimValue(frozen).(float64)); got != want {
		t.Errorf("unit 2 frequency = %v, want %v", got, want)
	}
	if got, want := f32(b[4:]), float32(findTag(t, p120, "import_energy").SimValue(frozen).(float64)); got != want {
		t.Errorf("unit 2 import_energy = %v, want %v", got, want)
	}
	if _, err := read(3, 0, 2); err == nil {
		t.Error("silent unit 3 answered")
	}
	if _, err := read(9, 0, 2); err == nil {
		t.Error("unit 9, not on the bus, answered")
	}
	if _, err := read(1, 0x0058, 2); !isException(err, ExcIllegalAddress) {
		t.Errorf("unmapped register: err = %v, want exception 2", err)
	}
	if _, err := read(2, 0x000C, 2); err != nil {
		t.Errorf("bus after timeouts: %v", err)
	}
	s := m.Stats()
	if s.Units[3].Dropped != 1 || s.Units[3].Responses != 0 || s.OtherUnit != 1 || s.Units[1].Exceptions != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func isException(err error, code byte) bool {
	var me *modbus.ModbusError
	return errors.As(err, &me) && me.ExceptionCode == code
}

// TestRTUFaults checks every injected fault makes a real RTU master fail the
// request, and that the line recovers once the fault is cleared.
func TestRTUFaults(t *testing.T) {
	simEnd, clientEnd := testpeer.PtyPair(t)
	m := startSim(t, Config{RTU: simEnd, Units: []Unit{{ID: 1, Profile: lookup(t, "eastron-sdm120")}, {ID: 2, Profile: lookup(t, "eastron-sdm120")}}})
	h, c := rtuClient(t, clientEnd, 300*time.Millisecond)
	for _, kind := range FaultKinds {
		t.Run(string(kind), func(t *testing.T) {
			if err := m.SetFault(1, Fault{Kind: kind}); err != nil {
				t.Fatal(err)
			}
			h.SlaveId = 1
			if _, err := c.ReadInputRegisters(0, 2); err == nil {
				t.Errorf("fault %s: read succeeded", kind)
			}
			if err := m.SetFault(1, Fault{}); err != nil {
				t.Fatal(err)
			}
			// The master may still hold stray bytes of the bad answer: a
			// real master flushes and retries, so allow one retry.
			var err error
			for range 2 {
				if _, err = c.ReadInputRegisters(0, 2); err == nil {
					break
				}
				h.Close()
			}
			if err != nil {
				t.Errorf("after clearing %s: %v", kind, err)
			}
		})
	}
}

// TestRTUResync feeds the slave garbage: a frame with a bad CRC and a frame
// cut short. It must not answer either, and must answer the next good frame.
func TestRTUResync(t *testing.T) {
	simEnd, clientEnd := testpeer.PtyPair(t)
	m := startSim(t, Config{RTU: simEnd, Units: []Unit{{ID: 1, Profile: lookup(t, "eastron-sdm120")}}})
	port, err := serial.Open(clientEnd, &serial.Mode{BaudRate: 19200})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	good := appendCRC([]byte{1, 4, 0, 0, 0, 2})
	badCRC := append([]byte(nil), good...)
	badCRC[7] ^= 0xFF
	for _, garbage := range [][]byte{badCRC, good[:5], {0xFF, 0x00, 0x13}} {
		if _, err := port.Write(garbage); err != nil {
			t.Fatal(err)
		}
		if got := readFrame(t, port, 9, 250*time.Millisecond); len(got) != 0 {
			t.Fatalf("answer % x to garbage % x", got, garbage)
		}
		if _, err := port.Write(good); err != nil {
			t.Fatal(err)
		}
		got := readFrame(t, port, 9, 2*time.Second)
		if len(got) != 9 || !crcOK(got) || got[0] != 1 || got[1] != 4 || got[2] != 4 {
			t.Fatalf("after garbage % x: answer % x, want a 9-byte read response", garbage, got)
		}
	}
	if bad := m.Stats().BadFrames; bad != 3 {
		t.Errorf("bad frames = %d, want 3", bad)
	}
}

// readFrame reads up to n bytes, stopping at n or when timeout passes.
func readFrame(t *testing.T, p serial.Port, n int, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var out []byte
	buf := make([]byte, 256)
	for len(out) < n {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if err := p.SetReadTimeout(left); err != nil {
			t.Fatal(err)
		}
		k, err := p.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:k]...)
	}
	return out
}

// TestRTUBroadcast: a write to unit 0 reaches every unit and gets no answer.
func TestRTUBroadcast(t *testing.T) {
	simEnd, clientEnd := testpeer.PtyPair(t)
	drive := lookup(t, "fieldgate-demo-drive")
	m := startSim(t, Config{RTU: simEnd, Units: []Unit{{ID: 1, Profile: drive}, {ID: 2, Profile: drive}}})
	port, err := serial.Open(clientEnd, &serial.Mode{BaudRate: 19200})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	if _, err := port.Write(appendCRC([]byte{0, 6, 0, 2, 0x01, 0x23})); err != nil {
		t.Fatal(err)
	}
	if got := readFrame(t, port, 8, 250*time.Millisecond); len(got) != 0 {
		t.Fatalf("answer % x to a broadcast", got)
	}
	for _, id := range []uint8{1, 2} {
		exp, _ := m.Expected(id, time.Now())
		if got := exp["accel_time"].(float64); math.Abs(got-0x123*0.1) > 1e-9 {
			t.Errorf("unit %d accel_time = %v after broadcast of raw 0x123", id, got)
		}
	}
	if m.Stats().Broadcasts != 1 {
		t.Errorf("broadcasts = %d, want 1", m.Stats().Broadcasts)
	}
}

// wireLowerBound is the least time n full-line transactions of reqLen and
// respLen bytes take at baud (11-bit characters): the first one from request
// to response, each further one also waits the silence after the previous.
func wireLowerBound(n, reqLen, respLen, baud int) time.Duration {
	char := time.Second * 11 / time.Duration(baud)
	gap := interFrameSilence(baud, 11)
	one := time.Duration(reqLen+respLen)*char + gap
	return time.Duration(n)*one + time.Duration(n-1)*gap
}

// TestRTUEmulateWire checks that with EmulateWire the slave is never faster
// than a real 19200 baud line (only the lower bound is asserted).
func TestRTUEmulateWire(t *testing.T) {
	simEnd, clientEnd := testpeer.PtyPair(t)
	m := startSim(t, Config{RTU: simEnd, EmulateWire: true, Serial: Serial{Baud: 19200},
		Units: []Unit{{ID: 1, Profile: lookup(t, "fieldgate-bench")}}})
	port, err := serial.Open(clientEnd, &serial.Mode{BaudRate: 19200})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	const n = 4
	req := appendCRC([]byte{1, 3, 0, 0, 0, 125})
	start := time.Now()
	for i := range n {
		if _, err := port.Write(req); err != nil {
			t.Fatal(err)
		}
		got := readFrame(t, port, 255, 3*time.Second)
		if len(got) != 255 || !crcOK(got) {
			t.Fatalf("read %d: %d bytes", i, len(got))
		}
	}
	elapsed := time.Since(start)
	if min := wireLowerBound(n, 8, 255, 19200); elapsed < min {
		t.Errorf("%d full reads took %v, faster than the wire (%v)", n, elapsed, min)
	}
	t.Logf("%d reads of 125 registers: %v (%.0f registers/s; wire limit 808)", n, elapsed, float64(n*125)/elapsed.Seconds())
	if s := m.Stats().Units[1]; s.Responses != n {
		t.Errorf("responses = %d, want %d", s.Responses, n)
	}
}

// TestTCPEmulateWire: the same line model behind a TCP front end.
func TestTCPEmulateWire(t *testing.T) {
	m := startSim(t, Config{TCP: "127.0.0.1:0", EmulateWire: true, Serial: Serial{Baud: 38400},
		Units: []Unit{{ID: 1, Profile: lookup(t, "fieldgate-bench")}}})
	c := tcpClient(t, m.Addr(), 1)
	const n = 4
	start := time.Now()
	for range n {
		b, err := c.ReadHoldingRegisters(125, 125)
		if err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint16(b) > 1000 {
			t.Fatalf("h125 = %d, beyond its sim range", binary.BigEndian.Uint16(b))
		}
	}
	if elapsed, min := time.Since(start), wireLowerBound(n, 8, 255, 38400); elapsed < min {
		t.Errorf("%d full reads took %v, faster than the wire (%v)", n, elapsed, min)
	}
}

// TestRTUReopensLine: when the line goes away (socat killed, a USB adapter
// unplugged) and comes back at the same path, the simulator reopens it.
func TestRTUReopensLine(t *testing.T) {
	dir := t.TempDir()
	proc, simEnd, clientEnd := testpeer.PtyLinks(t, dir)
	startSim(t, Config{RTU: simEnd, Units: []Unit{{ID: 1, Profile: lookup(t, "eastron-sdm120")}}})
	read := func() error {
		h := modbus.NewRTUClientHandler(clientEnd)
		h.BaudRate, h.SlaveId, h.Timeout = 19200, 1, 500*time.Millisecond
		defer h.Close()
		_, err := modbus.NewClient(h).ReadInputRegisters(0, 2)
		return err
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, 10*time.Second, "socat to remove its links", func() bool {
		_, err := os.Lstat(simEnd)
		return err != nil
	})
	testpeer.PtyLinks(t, dir)
	testpeer.WaitFor(t, 15*time.Second, "a read through the replugged line", func() bool { return read() == nil })
}
