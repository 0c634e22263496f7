package modbus

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	gbmodbus "github.com/goburrow/modbus"

	"fieldgate/collectors/reading"
	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
	"fieldgate/internal/testpeer"
)

// TestRTUGarbageFramesResync: units on one pty line answer with a bad CRC,
// as the wrong unit, or with half a frame, every other request. Each bad
// frame costs only the request it answered (its tags bad, naming the unit),
// is counted as garbage, and the line stays usable: the clean unit is good
// in every batch and the faulty ones are good whenever their answer is.
func TestRTUGarbageFramesResync(t *testing.T) {
	testpeer.Require(t, "socat")
	master, slave := testpeer.PtyPair(t)
	prof, err := profiles.Lookup("fieldgate-bench")
	if err != nil {
		t.Fatal(err)
	}
	frozen := time.Date(2026, 1, 1, 12, 0, 7, 0, time.UTC)
	sim, err := devsim.NewModbus(devsim.Config{RTU: slave, Serial: devsim.Serial{Baud: 19200},
		Units: []devsim.Unit{{ID: 1, Profile: prof}, {ID: 2, Profile: prof}, {ID: 3, Profile: prof}, {ID: 4, Profile: prof}},
		Faults: map[uint8]devsim.Fault{
			1: {Kind: devsim.FaultBadCRC, Every: 2},
			2: {Kind: devsim.FaultWrongUnit, Every: 2},
			3: {Kind: devsim.FaultShortFrame, Every: 2},
		}}, devsim.WithClock(func() time.Time { return frozen }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-simDone })
	if err := sim.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	var yaml strings.Builder
	fmt.Fprintf(&yaml, "transport: rtu\nserial: {port: %s, baud: 19200}\ntimeout: 150ms\nretries: 0\ndevices:\n", master)
	for id := 1; id <= 4; id++ {
		fmt.Fprintf(&yaml, "  - name: u%d\n    unit_id: %d\n    tags:\n", id, id)
		for _, a := range []int{0, 1, 2, 130} { // two requests: 0..2 and 130
			fmt.Fprintf(&yaml, "      - {name: h%03d, table: holding_register, address: %d, type: uint16}\n", a, a)
		}
	}
	cfg := loadTestConfig(t, yaml.String())
	sink := newChanSink()
	p := startPoller(t, cfg, 50*time.Millisecond, sink)
	testpeer.WaitFor(t, 30*time.Second, "8 batches of every unit", func() bool {
		for id := 1; id <= 4; id++ {
			if sink.count(fmt.Sprintf("u%d", id)) < 8 {
				return false
			}
		}
		return true
	})

	reasons := map[int]string{1: "bad crc", 2: "answer from unit", 3: "short frame"}
	for id := 1; id <= 4; id++ {
		want, err := sim.Expected(uint8(id), frozen)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("u%d", id)
		good, bad := 0, 0
		for _, b := range sink.all(name) {
			for _, r := range b.Readings {
				switch r.Quality {
				case reading.Good:
					good++
					if v, ok := r.Value.(uint64); !ok || float64(v) != want[r.Tag] {
						t.Errorf("%s/%s = %#v, want %v", name, r.Tag, r.Value, want[r.Tag])
					}
				default:
					bad++
					prefix := fmt.Sprintf("garbage response from unit %d: ", id)
					if id == 4 || !strings.HasPrefix(r.Error, prefix) || !strings.Contains(r.Error, reasons[id]) {
						t.Errorf("%s/%s: %q, want %q...%q", name, r.Tag, r.Error, prefix, reasons[id])
					}
				}
			}
		}
		if id != 4 && (good == 0 || bad == 0) {
			t.Errorf("%s: %d good and %d bad readings, want both", name, good, bad)
		}
	}
	for _, st := range p.Stats() {
		t.Logf("%+v", st)
		if st.Device == "u4" && st.Errors != 0 {
			t.Errorf("clean unit u4 had errors: %+v", st)
		}
		if st.Device != "u4" && st.Garbage == 0 {
			t.Errorf("%s: no garbage counted: %+v", st.Device, st)
		}
	}
}

// TestRTULineOptions: invalid line settings are refused by name.
func TestRTULineOptions(t *testing.T) {
	for _, tc := range []struct {
		o    rtuOptions
		want string
	}{
		{rtuOptions{Port: "", Baud: 9600}, "serial port path is empty"},
		{rtuOptions{Port: "/dev/ttyUSB0", Baud: 0}, `serial port "/dev/ttyUSB0": baud 0 must be positive`},
		{rtuOptions{Port: "/dev/ttyUSB0", Baud: 9600, Parity: "M"}, `unknown parity "M" (valid: N, E, O)`},
		{rtuOptions{Port: "/dev/ttyUSB0", Baud: 9600, DataBits: 9}, "data bits 9 (valid: 5, 6, 7, 8)"},
		{rtuOptions{Port: "/dev/ttyUSB0", Baud: 9600, StopBits: 3}, "stop bits 3 (valid: 1, 2)"},
	} {
		if _, err := newRTULine(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.o, err, tc.want)
		}
	}
	// The silence is 3.5 characters up to 19200 baud, 1.75 ms above.
	for _, tc := range []struct {
		baud, parityBits int
		parity           string
		want             time.Duration
	}{
		{9600, 0, "N", 3645833 * time.Nanosecond},  // 10 bits: 1.0417 ms a char
		{19200, 1, "E", 2005208 * time.Nanosecond}, // 11 bits
		{115200, 0, "N", 1750 * time.Microsecond},
	} {
		l, err := newRTULine(rtuOptions{Port: "/dev/null", Baud: tc.baud, Parity: tc.parity})
		if err != nil {
			t.Fatal(err)
		}
		if d := l.silence - tc.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("baud %d parity %s: silence %v, want %v", tc.baud, tc.parity, l.silence, tc.want)
		}
	}
}

// TestRTUExclusiveOpen: a second master on the same port is refused while
// the first holds it (flock; TIOCEXCL alone does not stop root).
func TestRTUExclusiveOpen(t *testing.T) {
	testpeer.Require(t, "socat")
	master, _ := testpeer.PtyPair(t)
	a, err := newRTULine(rtuOptions{Port: master, Baud: 19200})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.open(); err != nil {
		t.Fatalf("first open: %v", err)
	}
	b, _ := newRTULine(rtuOptions{Port: master, Baud: 19200})
	err = b.open()
	if err == nil {
		b.Close()
		t.Fatal("second open of a port in use succeeded")
	}
	if !strings.Contains(err.Error(), "busy") || !strings.Contains(err.Error(), master) {
		t.Errorf("second open: %v, want a busy error naming the port", err)
	}
	a.Close()
	if err := b.open(); err != nil {
		t.Errorf("open after the first closed: %v", err)
	}
	b.Close()
}

// FuzzRTUCheck: any bytes read off the line are either accepted as exactly
// the answer the request needs (right length, unit, function, CRC) or
// refused with an error; never a panic.
func FuzzRTUCheck(f *testing.F) {
	f.Add([]byte{1, 3, 2, 0, 7, 0xF9, 0x86}, uint16(1))
	f.Add([]byte{1, 0x83, 2, 0xC0, 0xF1}, uint16(1))
	f.Add([]byte{2, 3, 2, 0, 7, 0, 0}, uint16(1))
	f.Add([]byte{1}, uint16(3))
	f.Fuzz(func(t *testing.T, frame []byte, qty uint16) {
		qty = qty%125 + 1
		l, err := newRTULine(rtuOptions{Port: "/dev/null", Baud: 19200})
		if err != nil {
			t.Fatal(err)
		}
		l.pkg.SlaveId = 1
		adu, err := l.pkg.Encode(&gbmodbus.ProtocolDataUnit{FunctionCode: fnReadHoldingRegisters, Data: []byte{0, 0, byte(qty >> 8), byte(qty)}})
		if err != nil {
			t.Fatal(err)
		}
		want := 5 + 2*int(qty)
		err = l.check(adu, frame, 1, fnReadHoldingRegisters, want)
		if err == nil {
			if len(frame) != want || frame[0] != 1 || frame[1] != fnReadHoldingRegisters {
				t.Fatalf("accepted % x for %d registers", frame, qty)
			}
			if _, derr := l.pkg.Decode(frame); derr != nil {
				t.Fatalf("accepted a frame with a bad crc: % x", frame)
			}
		}
	})
}

// TestRTUOverrunKeepsSilence: cycles that overrun follow each other at
// once, yet every request still starts at least 3.5 characters after the
// last answer on the line (the Modbus RTU inter-frame silence). A
// hand-written slave on the pty notes when each answer started and when
// the next request arrived; load on the machine can only widen the gaps.
func TestRTUOverrunKeepsSilence(t *testing.T) {
	testpeer.Require(t, "socat")
	master, slave := testpeer.PtyPair(t)
	port, err := os.OpenFile(slave, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	const exchanges = 20
	gaps := make(chan time.Duration, exchanges)
	go func() {
		pkg := gbmodbus.NewRTUClientHandler("")
		pkg.SlaveId = 1
		answer, _ := pkg.Encode(&gbmodbus.ProtocolDataUnit{FunctionCode: 3, Data: []byte{2, 0x12, 0x34}})
		req := make([]byte, 8)
		var answered time.Time
		for {
			if _, err := io.ReadFull(port, req); err != nil {
				close(gaps)
				return
			}
			if !answered.IsZero() {
				select {
				case gaps <- time.Since(answered):
				default:
				}
			}
			answered = time.Now() // before the write: the master cannot see it earlier
			if _, err := port.Write(answer); err != nil {
				close(gaps)
				return
			}
		}
	}()
	cfg := loadTestConfig(t, fmt.Sprintf("transport: rtu\nserial: {port: %s, baud: 9600}\ntimeout: 1s\n"+
		"devices:\n  - {name: m, unit_id: 1, tags: [{name: x, table: holding_register, address: 0, type: uint16}]}\n", master))
	p := startPoller(t, cfg, time.Millisecond, newChanSink())
	silence := 35 * time.Second / 9600 // 3.5 characters of 10 bits (8N1)
	for i := 0; i < exchanges-1; i++ {
		select {
		case gap, ok := <-gaps:
			if !ok {
				t.Fatal("slave stopped")
			}
			if gap < silence {
				t.Errorf("request %d came %v after the last answer started, want at least %v", i+2, gap, silence)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d exchanges in 30 s", i+1)
		}
	}
	if ps := p.PollStats(); ps.Overruns == 0 {
		t.Errorf("poll stats %+v: a 1 ms interval must overrun", ps)
	}
}
