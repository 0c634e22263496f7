package modbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
	"fieldgate/internal/testpeer"
)

// fakeLine is a serial line as the scanner sees it at one setting: units
// that answer, units whose answer arrives garbled, a gateway's "absent"
// exception, or silence.
type fakeLine struct {
	answers map[byte]error // nil: a normal answer
	reads   *int
}

func (f fakeLine) Read(_ context.Context, unit, fn byte, addr, qty uint16) ([]byte, error) {
	*f.reads++
	err, ok := f.answers[unit]
	if !ok {
		return nil, ErrTimeout
	}
	if err != nil {
		return nil, err
	}
	return make([]byte, expectedDataLen(fn, qty)), nil
}

func (fakeLine) Close() error { return nil }

// TestScanFindsUnitsAndSettings: the scanner tries every baud with every
// parity, reports units where they answer (an exception is an answer),
// notes garbled answers, and ignores a TCP gateway's "target absent".
func TestScanFindsUnitsAndSettings(t *testing.T) {
	reads := 0
	lines := map[string]fakeLine{
		"19200 8E1": {answers: map[byte]error{5: nil, 7: &ExceptionError{Function: 3, Code: 2}}, reads: &reads},
		"19200 8N1": {answers: map[byte]error{5: &FrameError{Unit: 5, Reason: "bad crc"}}, reads: &reads},
		"9600 8E1":  {answers: map[byte]error{3: &ExceptionError{Function: 3, Code: 11}}, reads: &reads},
	}
	var opened []string
	open := func(l LineSettings) (scanLine, error) {
		opened = append(opened, l.String())
		if f, ok := lines[l.String()]; ok {
			return f, nil
		}
		return fakeLine{reads: &reads}, nil
	}
	s, err := NewScanner(ScanConfig{Port: "/dev/ttyX", Units: []int{3, 5, 7}, Bauds: []int{9600, 19200}, Parities: []string{"N", "e"}}, withScanLine(open))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	res, err := s.Run(context.Background(), func(h ScanHit) { found = append(found, fmt.Sprintf("%d@%s", h.Unit, h.Line)) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"9600 8N1", "9600 8E1", "19200 8N1", "19200 8E1"}; !slices.Equal(opened, want) {
		t.Errorf("settings tried %v, want %v", opened, want)
	}
	if want := []string{"5@19200 8E1", "7@19200 8E1"}; !slices.Equal(found, want) {
		t.Errorf("found %v, want %v", found, want)
	}
	if len(res.Hits) != 2 || res.Hits[0].Answer != "ok" || res.Hits[1].Answer != "modbus exception 2: illegal data address" {
		t.Errorf("hits %+v", res.Hits)
	}
	if !slices.Equal(res.Garbage, []string{"19200 8N1"}) {
		t.Errorf("garbage at %v, want [19200 8N1]", res.Garbage)
	}
	if res.Probes != 12 || reads != 12 || res.AllAnswer || res.Stopped != "" {
		t.Errorf("probes %d, reads %d, all %v, stopped %q; want 12, 12, false, \"\"", res.Probes, reads, res.AllAnswer, res.Stopped)
	}
}

func TestScanStopsAtMaxTime(t *testing.T) {
	slow := func(LineSettings) (scanLine, error) { return slowLine{}, nil }
	s, err := NewScanner(ScanConfig{Port: "/dev/ttyX", Units: []int{1, 2, 3, 4, 5}, Bauds: []int{9600}, Parities: []string{"N"},
		MaxTime: 50 * time.Millisecond}, withScanLine(slow))
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Stopped, "time limit of 50ms") || res.Probes >= 5 {
		t.Errorf("stopped %q after %d probes, want the time limit before 5 probes", res.Stopped, res.Probes)
	}
}

// slowLine times out after 30 ms, or when the context ends.
type slowLine struct{}

func (slowLine) Read(ctx context.Context, _, _ byte, _, _ uint16) ([]byte, error) {
	select {
	case <-time.After(30 * time.Millisecond):
		return nil, ErrTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (slowLine) Close() error { return nil }

func TestScanConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  ScanConfig
		want string
	}{
		{ScanConfig{}, "give a serial port (--port) or a Modbus TCP address (--tcp)"},
		{ScanConfig{Port: "/dev/ttyUSB0", TCP: "10.0.0.1"}, "either a serial port or a TCP address, not both"},
		{ScanConfig{TCP: "a:b:c"}, `tcp address "a:b:c"`},
		{ScanConfig{Port: "/dev/ttyUSB0", Units: []int{0}}, "unit id 0 out of range 1..247 on a serial line"},
		{ScanConfig{TCP: "10.0.0.1", Units: []int{256}}, "unit id 256 out of range 0..255"},
		{ScanConfig{Port: "/dev/ttyUSB0", Parities: []string{"M"}}, `unknown parity "M" (valid: N, E, O)`},
		{ScanConfig{Port: "/dev/ttyUSB0", Bauds: []int{-1}}, "baud -1 must be positive"},
		{ScanConfig{Port: "/dev/ttyUSB0", StopBits: 3}, "stop bits 3 (valid: 1, 2)"},
		{ScanConfig{TCP: "10.0.0.1", Timeout: -time.Second}, "timeout -1s must be positive"},
	}
	for _, tc := range tests {
		_, err := NewScanner(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewScanner(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
	s, err := NewScanner(ScanConfig{TCP: "plc.local"})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(); c.TCP != "plc.local:502" || len(c.Units) != 247 || c.Timeout != DefaultScanTCPTimeout {
		t.Errorf("TCP defaults: %+v", c)
	}
}

func TestParseUnits(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		err  bool
	}{
		{"1", []int{1}, false},
		{"1-3,7, 5-5,2", []int{1, 2, 3, 5, 7}, false},
		{"0-0", []int{0}, false},
		{"3-1", nil, true},
		{"1-256", nil, true},
		{"x", nil, true},
		{"", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseUnits(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("ParseUnits(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestPlausible(t *testing.T) {
	tests := []struct {
		tag  Tag
		v    any
		want bool
	}{
		{Tag{Type: TypeFloat32, Unit: "V"}, 230.1, true},
		{Tag{Type: TypeFloat32, Unit: "V"}, -5.0, false},
		{Tag{Type: TypeFloat32, Unit: "V"}, 3.1e-38, false}, // wrong byte order
		{Tag{Type: TypeFloat32, Unit: "A"}, 614286.7, false},
		{Tag{Type: TypeFloat32, Unit: "Hz"}, 50.01, true},
		{Tag{Type: TypeFloat32, Unit: "Hz"}, 5000.0, false},
		{Tag{Type: TypeFloat32, Unit: "kWh"}, -1.0, false},
		{Tag{Type: TypeInt64, Unit: "Wh"}, int64(48210000), true},
		{Tag{Name: "power_factor_total", Type: TypeInt16}, 0.95, true},
		{Tag{Name: "cos_phi_l1", Type: TypeFloat32}, 7.0, false},
		{Tag{Type: TypeFloat32, Unit: "VA"}, 5.3e13, false},
		{Tag{Type: TypeUint16}, uint64(65535), true},
		{Tag{Type: TypeString}, "iEM3250", true},
		{Tag{Type: TypeString}, "\x01\x02", false},
		{Tag{Type: TypeBool}, true, true},
		{Tag{Type: TypeFloat32, Unit: "degC"}, -300.0, false},
	}
	for _, tc := range tests {
		if got := Plausible(&tc.tag, tc.v); got != tc.want {
			t.Errorf("Plausible(%+v, %v) = %v, want %v", tc.tag, tc.v, got, tc.want)
		}
	}
}

// startDevsim serves embedded profiles by unit id from devsim, over TCP or
// on an RTU serial device, until the test ends.
func startDevsim(t *testing.T, cfg devsim.Config, units map[uint8]string, opts ...devsim.Option) *devsim.Modbus {
	t.Helper()
	for id, name := range units {
		p, err := profiles.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Units = append(cfg.Units, devsim.Unit{ID: id, Profile: p})
	}
	sim, err := devsim.NewModbus(cfg, opts...)
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

func allProfiles(t *testing.T) []*profiles.Profile {
	t.Helper()
	all, err := profiles.All()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// checkBestMatches: each unit found is the one served, and its best
// profile is the one devsim serves it with, every tag plausible.
func checkBestMatches(t *testing.T, res ScanResult, served map[uint8]string) {
	t.Helper()
	var units []int
	for _, h := range res.Hits {
		units = append(units, h.Unit)
		want := served[uint8(h.Unit)]
		if len(h.Profiles) == 0 {
			t.Errorf("unit %d: no profiles read", h.Unit)
			continue
		}
		best := h.Profiles[0]
		if best.Profile != want || best.Plausible != best.Tags || best.Readable != best.Tags {
			t.Errorf("unit %d: best match %s %d/%d readable %d/%d plausible, want %s with every tag", h.Unit,
				best.Profile, best.Readable, best.Tags, best.Plausible, best.Tags, want)
		}
		if len(h.Profiles) > 1 && h.Profiles[1].Score() >= 1 {
			t.Errorf("unit %d: runner-up %s also scores 1", h.Unit, h.Profiles[1].Profile)
		}
	}
	var want []int
	for id := range served {
		want = append(want, int(id))
	}
	slices.Sort(want)
	if !slices.Equal(units, want) {
		t.Errorf("units found %v, want %v", units, want)
	}
}

// TestScanTCPDevsim: over Modbus TCP, the scan finds exactly the units
// devsim simulates among 1..20 and identifies each one's profile.
func TestScanTCPDevsim(t *testing.T) {
	served := map[uint8]string{2: "schneider-iem3250", 9: "eurotherm-3200", 17: "janitza-umg96rm"}
	sim := startDevsim(t, devsim.Config{TCP: "127.0.0.1:0"}, served)
	units, _ := ParseUnits("1-20")
	s, err := NewScanner(ScanConfig{TCP: sim.Addr(), Units: units, Timeout: 300 * time.Millisecond, Profiles: allProfiles(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBestMatches(t, res, served)
}

// TestScanRTUDevsim: on a socat pty line with devsim as the slaves, the
// scan finds the units at the first setting tried and identifies them.
// (A pty carries bytes whatever the baud rate, so each setting finds them
// again; settings are told apart by the fake-line test above.)
func TestScanRTUDevsim(t *testing.T) {
	testpeer.Require(t, "socat")
	master, slave := testpeer.PtyPair(t)
	served := map[uint8]string{1: "eastron-sdm120", 4: "abb-b23", 6: "eaton-mmx"}
	startDevsim(t, devsim.Config{RTU: slave, Serial: devsim.Serial{Baud: 9600}}, served)
	s, err := NewScanner(ScanConfig{Port: master, Units: []int{1, 2, 3, 4, 5, 6, 7, 8}, Bauds: []int{9600}, Parities: []string{"N"},
		Timeout: 200 * time.Millisecond, Profiles: allProfiles(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range res.Hits {
		if h.Line.String() != "9600 8N1" {
			t.Errorf("unit %d found at %s", h.Unit, h.Line)
		}
	}
	checkBestMatches(t, res, served)
}

// TestScanPymodbus: an independent slave (pymodbus) on RTU and on TCP: the
// units it has answer — with exception 2 where holding register 0 does not
// exist — and the others stay unlisted.
func TestScanPymodbus(t *testing.T) {
	testpeer.Require(t, "pymodbus", "socat")
	units := map[int]testpeer.PyModbusUnit{
		3:  {Holding: map[uint16]uint16{0: 42}},
		11: {Input: map[uint16]uint16{0: 7}},
	}
	for _, mode := range []string{"rtu", "tcp"} {
		t.Run(mode, func(t *testing.T) {
			cfg := ScanConfig{Units: []int{1, 2, 3, 4, 10, 11, 12}, Timeout: 300 * time.Millisecond}
			if mode == "rtu" {
				master, slave := testpeer.PtyPair(t)
				testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "rtu", Port: slave, Baud: 19200, Units: units})
				cfg.Port, cfg.Bauds, cfg.Parities = master, []int{19200}, []string{"N"}
			} else {
				srv := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: units})
				cfg.TCP = srv.Addr
			}
			s, err := NewScanner(cfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Run(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, h := range res.Hits {
				got = append(got, fmt.Sprintf("%d: %s", h.Unit, h.Answer))
			}
			want := []string{"3: ok", "11: modbus exception 2: illegal data address"}
			if !slices.Equal(got, want) {
				t.Errorf("hits %q, want %q", got, want)
			}
		})
	}
}

// TestScanLinkErrors: a missing port or a refused connection is an error
// naming the line, not an empty result.
func TestScanLinkErrors(t *testing.T) {
	for _, cfg := range []ScanConfig{
		{Port: "/dev/fieldgate-no-such-tty", Units: []int{1}, Bauds: []int{9600}, Parities: []string{"N"}},
		{TCP: fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t)), Units: []int{1}},
	} {
		s, err := NewScanner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Run(context.Background(), nil)
		var le *LinkError
		if !errors.As(err, &le) {
			t.Errorf("scan %+v: err = %v, want a link error", cfg, err)
		}
	}
}
