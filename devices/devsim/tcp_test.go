package devsim

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"fieldgate/devices/profiles"
)

// frozen is the instant the tests freeze the simulated values at.
var frozen = time.Date(2026, 11, 28, 12, 0, 7, 250_000_000, time.UTC)

func lookup(t testing.TB, name string) *profiles.Profile {
	t.Helper()
	p, err := profiles.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func findTag(t testing.TB, p *profiles.Profile, name string) *profiles.Tag {
	t.Helper()
	for i := range p.Tags {
		if p.Tags[i].Name == name {
			return &p.Tags[i]
		}
	}
	t.Fatalf("profile %s has no tag %q", p.Name, name)
	return nil
}

// startSim runs a simulator for the test's lifetime and waits until it is ready.
func startSim(t testing.TB, cfg Config, opts ...Option) *Modbus {
	t.Helper()
	m, err := NewModbus(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := m.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	return m
}

func tcpClient(t testing.TB, addr string, unit byte) modbus.Client {
	t.Helper()
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId = unit
	h.Timeout = 2 * time.Second
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return modbus.NewClient(h)
}

func f32(b []byte) float32 { return math.Float32frombits(binary.BigEndian.Uint32(b)) }

// TestTCPEastronValues reads the SDM630 map through goburrow's client and
// decodes it by hand: every float32 equals the profile's sim value at the
// frozen time.
func TestTCPEastronValues(t *testing.T) {
	p630, p120 := lookup(t, "eastron-sdm630"), lookup(t, "eastron-sdm120")
	// ReadGaps: one read across the unlisted registers of the map.
	m := startSim(t, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: p630}, {ID: 2, Profile: p120}}, ReadGaps: true},
		WithClock(func() time.Time { return frozen }))
	c := tcpClient(t, m.Addr(), 1)
	b, err := c.ReadInputRegisters(0x0000, 0x0058)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, tag := range p630.Tags {
		if tag.Table != "input_register" || tag.Address >= 0x58 {
			continue
		}
		got := f32(b[2*tag.Address:])
		want := float32(tag.SimValue(frozen).(float64))
		if got != want {
			t.Errorf("%s at %#04x = %v, want %v", tag.Name, tag.Address, got, want)
		}
		checked++
	}
	if checked < 30 {
		t.Errorf("checked only %d tags", checked)
	}
	// Unit 2 on the same server serves the SDM120 map.
	c2 := tcpClient(t, m.Addr(), 2)
	b, err = c2.ReadInputRegisters(0x000C, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f32(b), float32(findTag(t, p120, "active_power").SimValue(frozen).(float64)); got != want {
		t.Errorf("sdm120 active_power = %v, want %v", got, want)
	}
	if s := m.Stats().Units[1]; s.Requests != 1 || s.Responses != 1 || s.Exceptions != 0 {
		t.Errorf("unit 1 stats = %+v, want one request answered", s)
	}
}

// TestTCPValuesChangeWithTime checks the values follow the clock.
func TestTCPValuesChangeWithTime(t *testing.T) {
	p := lookup(t, "eastron-sdm120")
	var now atomic.Int64 // the server reads it from its goroutine
	now.Store(frozen.UnixNano())
	m := startSim(t, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: p}}}, WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
	c := tcpClient(t, m.Addr(), 1)
	a, err := c.ReadInputRegisters(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	now.Store(frozen.Add(10 * time.Second).UnixNano())
	b, err := c.ReadInputRegisters(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if f32(a) == f32(b) {
		t.Errorf("voltage did not change in 10s: %v", f32(a))
	}
	if want := float32(p.Tags[0].SimValue(time.Unix(0, now.Load())).(float64)); f32(b) != want {
		t.Errorf("voltage = %v, want %v", f32(b), want)
	}
}

// TestTCPDemoDrive reads every table of the synthetic drive and checks
// hand-computed registers, then compares every tag with Expected.
func TestTCPDemoDrive(t *testing.T) {
	p := lookup(t, "fieldgate-demo-drive")
	m := startSim(t, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 7, Profile: p}}, ReadGaps: true}, WithClock(func() time.Time { return frozen }))
	c := tcpClient(t, m.Addr(), 7)
	hold, err := c.ReadHoldingRegisters(0, 43)
	if err != nil {
		t.Fatal(err)
	}
	reg := func(a int) uint16 { return binary.BigEndian.Uint16(hold[2*a:]) }
	if reg(0) != 0x047F {
		t.Errorf("control_word = %#04x, want 0x047f", reg(0))
	}
	if reg(2) != 50 { // accel_time 5 s at scale 0.1
		t.Errorf("accel_time raw = %d, want 50", reg(2))
	}
	if got := string(hold[2*32 : 2*32+12]); got != "FGD7-00042-A" {
		t.Errorf("serial_number = %q", got)
	}
	if got := hold[2*32+12 : 2*40]; strings.Trim(string(got), "\x00") != "" {
		t.Errorf("serial_number padding = % x, want NULs", got)
	}
	status := reg(3)
	running := findTag(t, p, "status_running").SimValue(frozen).(bool)
	if status&1 == 0 || status&(1<<15) == 0 || status&(1<<3) != 0 || (status&2 != 0) != running {
		t.Errorf("status_word = %016b (running %v)", status, running)
	}
	in, err := c.ReadInputRegisters(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(in) != 17 {
		t.Errorf("fault_count = % x, want 17 ABCD", in)
	}
	coils, err := c.ReadCoils(0, 6)
	if err != nil {
		t.Fatal(err)
	}
	wantCoils := byte(0)
	for _, n := range []struct {
		name string
		bit  int
	}{{"cmd_run", 0}, {"cmd_reverse", 1}, {"cmd_jog", 5}} {
		if findTag(t, p, n.name).SimValue(frozen).(bool) {
			wantCoils |= 1 << n.bit
		}
	}
	if len(coils) != 1 || coils[0] != wantCoils {
		t.Errorf("coils = %08b, want %08b", coils, wantCoils)
	}
	di, err := c.ReadDiscreteInputs(0, 9)
	if err != nil {
		t.Fatal(err)
	}
	if len(di) != 2 || di[0]&1 == 0 || di[0]&4 != 0 || di[1]&1 == 0 {
		t.Errorf("discrete inputs = %08b, want ready, not fault, estop ok", di)
	}

	// Every tag, decoded from what the wire carried, equals Expected.
	exp, err := m.Expected(7, frozen)
	if err != nil {
		t.Fatal(err)
	}
	inAll, err := c.ReadInputRegisters(0, 22)
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.Tags {
		tag := &p.Tags[i]
		var got any
		switch tag.Table {
		case "coil":
			got = coils[tag.Address/8]&(1<<(tag.Address%8)) != 0
		case "discrete_input":
			got = di[tag.Address/8]&(1<<(tag.Address%8)) != 0
		default:
			src := hold
			if tag.Table == "input_register" {
				src = inAll
			}
			w := make([]uint16, tag.Width())
			for k := range w {
				w[k] = binary.BigEndian.Uint16(src[2*(tag.Address+k):])
			}
			got = decodeWords(tag, w)
		}
		if got != exp[tag.Name] {
			t.Errorf("%s = %v, Expected says %v", tag.Name, got, exp[tag.Name])
		}
	}
}

func TestTCPWrites(t *testing.T) {
	p := lookup(t, "fieldgate-demo-drive")
	m := startSim(t, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: p}}}, WithClock(func() time.Time { return frozen }))
	c := tcpClient(t, m.Addr(), 1)
	if _, err := c.WriteSingleRegister(1, 4321); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteMultipleRegisters(10, 2, []byte{0x00, 0x01, 0x00, 0x02}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteSingleCoil(2, 0xFF00); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteMultipleCoils(0, 2, []byte{0b01}); err != nil {
		t.Fatal(err)
	}
	b, err := c.ReadHoldingRegisters(0, 12)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(b[2:]); got != 4321 {
		t.Errorf("holding 1 = %d after writing 4321", got)
	}
	exp, _ := m.Expected(1, frozen)
	if got := exp["frequency_setpoint"].(float64); math.Abs(got-43.21) > 1e-9 {
		t.Errorf("Expected frequency_setpoint = %v, want 43.21", got)
	}
	if got := exp["run_hours"].(float64); math.Abs(got-0x00020001*0.01) > 1e-9 { // CDAB: low word first
		t.Errorf("Expected run_hours = %v, want %v", got, 0x00020001*0.01)
	}
	coils, err := c.ReadCoils(0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if coils[0] != 0b101 {
		t.Errorf("coils = %03b, want 101", coils[0])
	}
}

// TestTCPExceptions checks the exception codes for bad requests.
func TestTCPExceptions(t *testing.T) {
	m := startSim(t, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: lookup(t, "eastron-sdm630")}, {ID: 2, Profile: lookup(t, "fieldgate-demo-drive"), MaxRegisters: 40}}})
	c1, c2 := tcpClient(t, m.Addr(), 1), tcpClient(t, m.Addr(), 2)
	tests := []struct {
		name string
		call func() ([]byte, error)
		want byte
	}{
		{"gap in map", func() ([]byte, error) { return c1.ReadInputRegisters(0x0058, 2) }, ExcIllegalAddress},
		{"read runs into gap", func() ([]byte, error) { return c1.ReadInputRegisters(0x0054, 6) }, ExcIllegalAddress},
		{"past end", func() ([]byte, error) { return c1.ReadInputRegisters(0xFFFF, 2) }, ExcIllegalAddress},
		{"empty table", func() ([]byte, error) { return c1.ReadCoils(0, 1) }, ExcIllegalAddress},
		{"write to unmapped", func() ([]byte, error) { return c2.WriteSingleRegister(100, 1) }, ExcIllegalAddress},
		{"write coil unmapped", func() ([]byte, error) { return c2.WriteSingleCoil(3, 0xFF00) }, ExcIllegalAddress},
		{"unsupported function", func() ([]byte, error) { return c2.ReadFIFOQueue(0) }, ExcIllegalFunction},
		{"mask write unsupported", func() ([]byte, error) { return c2.MaskWriteRegister(0, 1, 2) }, ExcIllegalFunction},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.call()
			var me *modbus.ModbusError
			if !errors.As(err, &me) || me.ExceptionCode != tc.want {
				t.Errorf("err = %v, want exception %d", err, tc.want)
			}
		})
	}
	// goburrow refuses out-of-range quantities itself, so send those raw.
	raw := []struct {
		name string
		unit byte
		pdu  []byte
		want []byte
	}{
		{"126 registers", 1, []byte{4, 0, 0, 0, 126}, []byte{0x84, ExcIllegalValue}},
		{"0 registers", 1, []byte{4, 0, 0, 0, 0}, []byte{0x84, ExcIllegalValue}},
		{"over the unit's max registers", 2, []byte{3, 0, 0, 0, 41}, []byte{0x83, ExcIllegalValue}},
		{"2001 coils", 2, []byte{1, 0, 0, 0x07, 0xD1}, []byte{0x81, ExcIllegalValue}},
		{"byte count mismatch", 2, []byte{16, 0, 0, 0, 1, 4, 0, 1, 0, 2}, []byte{0x90, ExcIllegalValue}},
		{"bad coil value", 2, []byte{5, 0, 0, 0x12, 0x34}, []byte{0x85, ExcIllegalValue}},
		{"gap read as 0 only with ReadGaps", 1, []byte{4, 0, 0x2A, 0, 4}, []byte{0x84, ExcIllegalAddress}},
		{"short pdu", 2, []byte{3, 0}, []byte{0x83, ExcIllegalValue}},
		{"unknown unit", 9, []byte{3, 0, 0, 0, 1}, []byte{0x83, ExcGatewayNoResponse}},
		{"device identification", 2, []byte{0x2B, 0x0E, 1, 0}, []byte{0xAB, ExcIllegalFunction}},
	}
	conn, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, tc := range raw {
		t.Run(tc.name, func(t *testing.T) {
			got := rawTCP(t, conn, uint16(i+100), tc.unit, tc.pdu)
			if string(got) != string(tc.want) {
				t.Errorf("response % x, want % x", got, tc.want)
			}
		})
	}
}

// rawTCP sends one MBAP request and returns the response PDU.
func rawTCP(t *testing.T, c net.Conn, tid uint16, unit byte, pdu []byte) []byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	req := binary.BigEndian.AppendUint16(nil, tid)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, uint16(len(pdu)+1))
	req = append(req, unit)
	req = append(req, pdu...)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var hdr [7]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(hdr[:]); got != tid || hdr[6] != unit {
		t.Fatalf("response header % x for transaction %d unit %d", hdr, tid, unit)
	}
	resp := make([]byte, binary.BigEndian.Uint16(hdr[4:])-1)
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestTCPFaults checks each injected fault is seen by a real client as the
// error it stands for, and that clearing it restores good answers.
func TestTCPFaults(t *testing.T) {
	m := startSim(t, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: lookup(t, "eastron-sdm120")}}})
	for _, kind := range FaultKinds {
		t.Run(string(kind), func(t *testing.T) {
			if err := m.SetFault(1, Fault{Kind: kind}); err != nil {
				t.Fatal(err)
			}
			h := modbus.NewTCPClientHandler(m.Addr())
			h.SlaveId, h.Timeout = 1, 300*time.Millisecond
			defer h.Close()
			if _, err := modbus.NewClient(h).ReadInputRegisters(0, 2); err == nil {
				t.Errorf("fault %s: read succeeded", kind)
			}
			if err := m.SetFault(1, Fault{}); err != nil {
				t.Fatal(err)
			}
			h2 := modbus.NewTCPClientHandler(m.Addr())
			h2.SlaveId, h2.Timeout = 1, 2*time.Second
			defer h2.Close()
			if _, err := modbus.NewClient(h2).ReadInputRegisters(0, 2); err != nil {
				t.Errorf("after clearing %s: %v", kind, err)
			}
		})
	}
	// Every: only every 3rd request is dropped.
	if err := m.SetFault(1, Fault{Kind: FaultSilent, Every: 3}); err != nil {
		t.Fatal(err)
	}
	before := m.Stats().Units[1]
	h := modbus.NewTCPClientHandler(m.Addr())
	h.SlaveId, h.Timeout = 1, 300*time.Millisecond
	defer h.Close()
	c := modbus.NewClient(h)
	fails := 0
	for range 6 {
		if _, err := c.ReadInputRegisters(0, 2); err != nil {
			fails++
			h.Close() // a timed-out answer must not be read as the next one
		}
	}
	after := m.Stats().Units[1]
	if fails != 2 || after.Dropped-before.Dropped != 2 {
		t.Errorf("fault every 3rd: %d of 6 failed, %d dropped; want 2", fails, after.Dropped-before.Dropped)
	}
}

func TestNewModbusRejectsBadConfig(t *testing.T) {
	p := lookup(t, "eastron-sdm120")
	broken := *p
	broken.Tags = append([]profiles.Tag{{Name: "x", Table: "coils", Type: "bool"}}, p.Tags...)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no transport", Config{Units: []Unit{{ID: 1, Profile: p}}}, "no transport"},
		{"no units", Config{TCP: ":0"}, "no units"},
		{"unit 0", Config{TCP: ":0", Units: []Unit{{ID: 0, Profile: p}}}, "unit id 0 out of range 1..247"},
		{"max registers", Config{TCP: ":0", Units: []Unit{{ID: 1, Profile: p, MaxRegisters: 126}}}, "unit 1: max registers 126 out of range 1..125"},
		{"unit 248", Config{TCP: ":0", Units: []Unit{{ID: 248, Profile: p}}}, "unit id 248 out of range"},
		{"duplicate", Config{TCP: ":0", Units: []Unit{{ID: 1, Profile: p}, {ID: 1, Profile: p}}}, "unit id 1 given twice"},
		{"nil profile", Config{TCP: ":0", Units: []Unit{{ID: 1, Profile: nil}}}, "unit 1: no profile"},
		{"bad profile", Config{TCP: ":0", Units: []Unit{{ID: 1, Profile: &broken}}}, `unknown table "coils"`},
		{"parity", Config{RTU: "/dev/null", Serial: Serial{Parity: "X"}, Units: []Unit{{ID: 1, Profile: p}}}, `invalid parity "X" (valid: N, E, O)`},
		{"fault unit", Config{TCP: ":0", Units: []Unit{{ID: 1, Profile: p}}, Faults: map[uint8]Fault{2: {Kind: FaultSilent}}}, "unit 2, which is not simulated (units: 1)"},
		{"fault kind", Config{TCP: ":0", Units: []Unit{{ID: 1, Profile: p}}, Faults: map[uint8]Fault{1: {Kind: "mute"}}}, `unknown fault "mute" (valid: silent, bad-crc, wrong-unit, short-frame)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewModbus(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRunReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, err := NewModbus(Config{TCP: ln.Addr().String(), Units: []Unit{{ID: 1, Profile: lookup(t, "eastron-sdm120")}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go m.Run(ctx)
	if err := m.WaitReady(ctx); err == nil || !strings.Contains(err.Error(), "listen tcp") {
		t.Errorf("WaitReady = %v, want the listen error", err)
	}
}
