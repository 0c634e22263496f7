// Package devsim simulates field devices for benches, demos and tests. This
// file and its siblings implement a Modbus slave (server) written from the
// protocol specification — independent of the collector's client library —
// that serves device profiles (fieldgate/devices/profiles) whose values
// change with time, over Modbus TCP (MBAP) and Modbus RTU (a serial device or
// a pty), with several unit ids on one bus.
//
// For tests and benchmarks it can emulate the wire time of an RTU line
// (EmulateWire), keep one unit silent, or corrupt its answers (Fault), and
// tells what a correct master must decode at a given time (Expected).
//
//	sim, err := devsim.NewModbus(devsim.Config{TCP: "127.0.0.1:0",
//		Units: []devsim.Unit{{ID: 1, Profile: p}}})
//	go sim.Run(ctx)
//	if err := sim.WaitReady(ctx); err != nil { ... }
//	addr := sim.Addr()
package devsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"fieldgate/devices/profiles"
)

// Config configures a Modbus simulator. At least one of TCP and RTU is set.
type Config struct {
	// TCP is the listen address of Modbus TCP, e.g. "127.0.0.1:5020" or
	// "127.0.0.1:0" (see Addr). Empty: no TCP.
	TCP string
	// TCPHosts serves Modbus TCP on this many consecutive IPv4 addresses
	// starting at TCP's host, leaving out host parts .0 and .255 (127.0.1.1,
	// …, 127.0.1.254, 127.0.2.1, …), all on one port: a plant of PLCs on
	// one machine, since Linux routes all of 127.0.0.0/8 to the loopback
	// interface. With port 0 the first address picks a free port and the
	// others take the same. Every address serves the same units. 0 or 1:
	// the one address TCP.
	TCPHosts int
	// RTU is the serial device (/dev/ttyUSB0) or pty (/dev/pts/N) to serve
	// Modbus RTU on. Empty: no RTU.
	RTU string
	// Serial holds the RTU line settings; zero fields take the defaults
	// 19200 baud, 8 data bits, parity N, 1 stop bit.
	Serial Serial
	// EmulateWire delays every response until the request and response
	// bytes would have crossed a line at Serial.Baud (WireBitsPerChar bits a
	// character) with a 3.5-character silence before and after the response;
	// a request that arrives while that line is still busy waits its turn.
	// Applies to TCP too (a TCP-to-RTU gateway in front of one line).
	EmulateWire bool
	// WireBitsPerChar is the character length used by EmulateWire; default
	// 11 (start, 8 data, parity or second stop, stop), as the Modbus spec
	// counts an RTU character.
	WireBitsPerChar int
	// Units are the simulated slaves; each unit id 1..247 at most once.
	Units []Unit
	// Faults are initial faults by unit id (see SetFault to change them).
	Faults map[uint8]Fault
	// ReadGaps lets reads span addresses between a table's tags (they read
	// 0 / false) as long as the range stays within the table's first and
	// last tag. Default false: any unmapped address is exception 2, as
	// Eastron meters do.
	ReadGaps bool
}

// Serial is an RTU line's settings.
type Serial struct {
	Baud     int    // default 19200
	DataBits int    // 7 or 8; default 8
	Parity   string // N, E or O; default N
	StopBits int    // 1 or 2; default 1
}

// Unit is one simulated slave.
type Unit struct {
	ID      uint8
	Profile *profiles.Profile
	// MaxRegisters limits the registers one read may ask for, as many real
	// devices do (a longer read gets exception 3); 0 means the protocol's 125.
	MaxRegisters int
}

// FaultKind is a way a unit misbehaves.
type FaultKind string

// Fault kinds. Over TCP, FaultBadCRC answers with a wrong transaction id
// (TCP frames carry no CRC) and FaultShortFrame with a consistent MBAP header
// around a truncated PDU.
const (
	FaultNone       FaultKind = ""
	FaultSilent     FaultKind = "silent"      // never answer
	FaultBadCRC     FaultKind = "bad-crc"     // answer with a corrupted CRC
	FaultWrongUnit  FaultKind = "wrong-unit"  // answer as another unit id
	FaultShortFrame FaultKind = "short-frame" // send only the first half of the answer
)

// FaultKinds lists the valid fault kinds.
var FaultKinds = []FaultKind{FaultSilent, FaultBadCRC, FaultWrongUnit, FaultShortFrame}

// Fault makes a unit misbehave on every Every-th request (0 or 1: every one).
type Fault struct {
	Kind  FaultKind
	Every int
}

// Option configures a simulator beyond Config.
type Option func(*Modbus)

// WithLogger sets the logger; default: discard.
func WithLogger(l *slog.Logger) Option { return func(m *Modbus) { m.log = l } }

// WithClock sets the clock the simulated values follow (default time.Now),
// so a test can freeze time and compare with Expected. Wire emulation always
// uses the real clock.
func WithClock(now func() time.Time) Option { return func(m *Modbus) { m.now = now } }

// Modbus is a Modbus slave simulator. Create it with NewModbus, then Run it.
type Modbus struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	units   [256]*unit
	ids     []uint8
	wire    *wire
	silence time.Duration // RTU end-of-frame silence

	ready    chan struct{}
	done     chan struct{}
	runErr   error
	addr     atomic.Pointer[string]
	runOnce  atomic.Bool
	counters counters
}

// NewModbus validates cfg and returns a simulator ready to Run.
func NewModbus(cfg Config, opts ...Option) (*Modbus, error) {
	var errs []error
	if cfg.TCP == "" && cfg.RTU == "" {
		errs = append(errs, errors.New("no transport: set TCP (listen address) and/or RTU (serial device)"))
	}
	if cfg.TCPHosts > 1 {
		if _, err := hostRange(cfg.TCP, cfg.TCPHosts); err != nil {
			errs = append(errs, err)
		}
	} else if cfg.TCPHosts < 0 {
		errs = append(errs, fmt.Errorf("invalid tcp host count %d (want 1 or more)", cfg.TCPHosts))
	}
	s := &cfg.Serial
	if s.Baud == 0 {
		s.Baud = 19200
	}
	if s.DataBits == 0 {
		s.DataBits = 8
	}
	if s.Parity == "" {
		s.Parity = "N"
	}
	if s.StopBits == 0 {
		s.StopBits = 1
	}
	if cfg.WireBitsPerChar == 0 {
		cfg.WireBitsPerChar = 11
	}
	if s.Baud < 0 {
		errs = append(errs, fmt.Errorf("invalid baud %d", s.Baud))
	}
	if s.DataBits != 7 && s.DataBits != 8 {
		errs = append(errs, fmt.Errorf("invalid data bits %d (valid: 7, 8)", s.DataBits))
	}
	if !slices.Contains([]string{"N", "E", "O"}, s.Parity) {
		errs = append(errs, fmt.Errorf("invalid parity %q (valid: N, E, O)", s.Parity))
	}
	if s.StopBits != 1 && s.StopBits != 2 {
		errs = append(errs, fmt.Errorf("invalid stop bits %d (valid: 1, 2)", s.StopBits))
	}
	if cfg.WireBitsPerChar < 7 || cfg.WireBitsPerChar > 12 {
		errs = append(errs, fmt.Errorf("invalid wire bits per character %d (valid: 7..12)", cfg.WireBitsPerChar))
	}
	m := &Modbus{
		cfg:   cfg,
		log:   slog.New(slog.DiscardHandler),
		now:   time.Now,
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}
	if len(cfg.Units) == 0 {
		errs = append(errs, errors.New("no units: give at least one unit id with a profile"))
	}
	for _, uc := range cfg.Units {
		switch {
		case uc.ID < 1 || uc.ID > 247:
			errs = append(errs, fmt.Errorf("unit id %d out of range 1..247", uc.ID))
		case uc.Profile == nil:
			errs = append(errs, fmt.Errorf("unit %d: no profile", uc.ID))
		case uc.MaxRegisters < 0 || uc.MaxRegisters > maxReadRegisters:
			errs = append(errs, fmt.Errorf("unit %d: max registers %d out of range 1..125 (0: 125)", uc.ID, uc.MaxRegisters))
		case m.units[uc.ID] != nil:
			errs = append(errs, fmt.Errorf("unit id %d given twice", uc.ID))
		default:
			u, err := newUnit(uc.ID, uc.Profile, cfg.ReadGaps)
			if err == nil && uc.MaxRegisters > 0 {
				u.maxRegs = uc.MaxRegisters
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			m.units[uc.ID] = u
			m.ids = append(m.ids, uc.ID)
		}
	}
	for id, f := range cfg.Faults {
		if err := m.SetFault(id, f); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("devsim modbus: %w", err)
	}
	slices.Sort(m.ids)
	charTime := time.Duration(float64(time.Second) * float64(cfg.WireBitsPerChar) / float64(s.Baud))
	m.silence = interFrameSilence(s.Baud, cfg.WireBitsPerChar)
	if cfg.EmulateWire {
		m.wire = &wire{char: charTime, gap: m.silence}
	}
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// interFrameSilence is the Modbus RTU 3.5-character time, fixed at 1.75 ms
// above 19200 baud as the spec recommends.
func interFrameSilence(baud, bitsPerChar int) time.Duration {
	if baud > 19200 {
		return 1750 * time.Microsecond
	}
	return time.Duration(3.5 * float64(time.Second) * float64(bitsPerChar) / float64(baud))
}

// SetFault changes unit id's fault; Fault{} clears it. Safe while running.
func (m *Modbus) SetFault(id uint8, f Fault) error {
	u := m.units[id]
	if u == nil {
		return fmt.Errorf("fault for unit %d, which is not simulated (units: %s)", id, m.unitList())
	}
	if f.Kind != FaultNone && !slices.Contains(FaultKinds, f.Kind) {
		var names []string
		for _, k := range FaultKinds {
			names = append(names, string(k))
		}
		return fmt.Errorf("unit %d: unknown fault %q (valid: %s)", id, f.Kind, strings.Join(names, ", "))
	}
	if f.Every < 0 {
		return fmt.Errorf("unit %d: fault every %d requests, want >= 1", id, f.Every)
	}
	u.mu.Lock()
	u.fault, u.count = f, 0
	u.mu.Unlock()
	return nil
}

func (m *Modbus) unitList() string {
	var s []string
	for id, u := range m.units {
		if u != nil {
			s = append(s, fmt.Sprint(id))
		}
	}
	return strings.Join(s, ", ")
}

// nextFault counts a request to u and returns the fault to apply to it.
func (u *unit) nextFault() FaultKind {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.fault.Kind == FaultNone {
		return FaultNone
	}
	u.count++
	if every := uint64(max(u.fault.Every, 1)); u.count%every != 0 {
		return FaultNone
	}
	return u.fault.Kind
}

// Expected returns, for every tag of unit id's profile, the value a correct
// Modbus master decodes at time at (use the WithClock time): bool, string,
// or float64 (raw * scale + offset), including quantisation to the register
// type, bit tags merged into their word, and values written by masters.
func (m *Modbus) Expected(id uint8, at time.Time) (map[string]any, error) {
	u := m.units[id]
	if u == nil {
		return nil, fmt.Errorf("unit %d is not simulated (units: %s)", id, m.unitList())
	}
	return u.expected(at), nil
}

// Run serves the configured transports until ctx is cancelled, then closes
// them and returns nil; it returns an error if a transport cannot be opened
// or fails for good. Run may be called once.
func (m *Modbus) Run(ctx context.Context) error {
	if !m.runOnce.CompareAndSwap(false, true) {
		return errors.New("devsim modbus: Run called twice")
	}
	err := m.run(ctx)
	m.runErr = err
	close(m.done)
	return err
}

func (m *Modbus) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if m.cfg.TCP != "" {
		lns, err := m.listen(ctx)
		if err != nil {
			return err
		}
		a := lns[0].Addr().String()
		m.addr.Store(&a)
		m.log.Info("modbus tcp listening", "addr", a, "addresses", len(lns), "units", m.unitList())
		for _, ln := range lns {
			g.Go(func() error { return m.serveTCP(ctx, ln) })
		}
	}
	if m.cfg.RTU != "" {
		p, err := m.openSerial()
		if err != nil {
			return fmt.Errorf("devsim modbus: open %q: %w", m.cfg.RTU, err)
		}
		m.log.Info("modbus rtu serving", "port", m.cfg.RTU, "baud", m.cfg.Serial.Baud,
			"emulate_wire", m.cfg.EmulateWire, "units", m.unitList())
		g.Go(func() error { return m.serveSerial(ctx, p) })
	}
	close(m.ready)
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF)) {
		return nil
	}
	return err
}

// WaitReady waits until Run has opened every transport (nil), Run has
// failed (its error), or ctx is done.
func (m *Modbus) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-m.done:
		if m.runErr != nil {
			return m.runErr
		}
		return errors.New("devsim modbus: stopped before it was ready")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Addr is the TCP listen address once Run has opened it ("127.0.0.1:40123"
// for a ":0" port), "" before or without TCP. With TCPHosts it is the first
// address; the others follow as HostRange says, on the same port.
func (m *Modbus) Addr() string {
	if p := m.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// respond runs one request addressed to unit id and returns the response
// PDU and the fault to apply; ok false means no answer (unknown or silent unit).
func (m *Modbus) respond(id uint8, pdu []byte) (resp []byte, fault FaultKind, ok bool) {
	u := m.units[id]
	if u == nil {
		m.counters.otherUnit.Add(1)
		return nil, FaultNone, false
	}
	u.stats.requests.Add(1)
	fault = u.nextFault()
	if fault == FaultSilent {
		u.stats.dropped.Add(1)
		return nil, fault, false
	}
	resp = u.handle(pdu, m.now())
	if len(resp) == 0 {
		return nil, FaultNone, false
	}
	if resp[0]&0x80 != 0 {
		u.stats.exceptions.Add(1)
	}
	u.stats.responses.Add(1)
	return resp, fault, true
}

// wrongUnit is the id a FaultWrongUnit answer carries instead of id.
func wrongUnit(id uint8) uint8 {
	if id >= 247 {
		return 1
	}
	return id + 1
}
