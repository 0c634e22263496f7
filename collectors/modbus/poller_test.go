package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
)

// simClock is simulated time for one bus: waiting jumps to the wake-up time,
// and the fake transport advances it by what each exchange would cost. A
// whole schedule of minutes runs in microseconds, deterministically.
type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func newSimClock() *simClock { return &simClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) WaitUntil(ctx context.Context, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.advanceTo(t)
	return nil
}

func (c *simClock) advanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeUnit is one simulated slave: sparse tables (a read touching a missing
// address gets exception 2, as pymodbus and most devices do).
type fakeUnit struct {
	regs   map[byte]map[uint16]uint16 // fn -> address -> value (bits: 0/1)
	silent bool
	// timeoutsLeft makes the unit drop that many requests, then answer.
	timeoutsLeft int
	exception    byte // answer every request with this exception
}

type fakeCall struct {
	at   time.Time
	unit byte
	fn   byte
	addr uint16
	qty  uint16
}

// fakeTransport implements Transport over fakeUnits on simulated time.
type fakeTransport struct {
	clk     *simClock
	cost    time.Duration // one answered exchange
	timeout time.Duration
	units   map[byte]*fakeUnit
	linkErr func(now time.Time, unit byte) error // non-nil result: the link is down
	onRead  func(now time.Time, u *fakeUnit)     // changes values before a read is served
	calls   []fakeCall
	buf     []byte
}

func (f *fakeTransport) Read(ctx context.Context, unit, fn byte, addr, qty uint16) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := f.clk.Now()
	f.calls = append(f.calls, fakeCall{now, unit, fn, addr, qty})
	if f.linkErr != nil {
		if err := f.linkErr(now, unit); err != nil {
			return nil, &LinkError{Link: "fake", Err: err}
		}
	}
	u := f.units[unit]
	if u == nil || u.silent || u.timeoutsLeft > 0 {
		if u != nil && u.timeoutsLeft > 0 {
			u.timeoutsLeft--
		}
		f.clk.advance(f.timeout)
		return nil, ErrTimeout
	}
	if f.onRead != nil {
		f.onRead(now, u)
	}
	f.clk.advance(f.cost)
	if u.exception != 0 {
		return nil, &ExceptionError{Function: fn, Code: u.exception}
	}
	f.buf = f.buf[:0]
	table := u.regs[fn]
	if fn == fnReadCoils || fn == fnReadDiscreteInputs {
		f.buf = append(f.buf, make([]byte, (qty+7)/8)...)
	}
	for i := uint16(0); i < qty; i++ {
		v, ok := table[addr+i]
		if !ok {
			return nil, &ExceptionError{Function: fn, Code: 2}
		}
		if fn == fnReadCoils || fn == fnReadDiscreteInputs {
			if v != 0 {
				f.buf[i/8] |= 1 << (i % 8)
			}
			continue
		}
		f.buf = binary.BigEndian.AppendUint16(f.buf, v)
	}
	return f.buf, nil
}

func (f *fakeTransport) Close() error { return nil }

func (f *fakeTransport) callsTo(unit byte) []fakeCall {
	var out []fakeCall
	for _, c := range f.calls {
		if c.unit == unit {
			out = append(out, c)
		}
	}
	return out
}

// recordSink records batches and statuses; it cancels the run once stop
// says so.
type recordSink struct {
	mu       sync.Mutex
	batches  []reading.Batch
	statuses map[string][]string
	stop     func(b reading.Batch) bool
	cancel   context.CancelFunc
}

func (s *recordSink) Publish(ctx context.Context, b reading.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b.Readings = slices.Clone(b.Readings) // the poller reuses them
	s.batches = append(s.batches, b)
	if s.stop != nil && s.stop(b) {
		s.cancel()
	}
	return nil
}

func (s *recordSink) SetDeviceStatus(device, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.statuses == nil {
		s.statuses = map[string][]string{}
	}
	s.statuses[device] = append(s.statuses[device], status)
}

func (s *recordSink) of(device string) []reading.Batch {
	var out []reading.Batch
	for _, b := range s.batches {
		if b.Device == device {
			out = append(out, b)
		}
	}
	return out
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func hr(addrs ...uint16) map[uint16]uint16 {
	m := map[uint16]uint16{}
	for _, a := range addrs {
		m[a] = a + 1000
	}
	return m
}

func u16Tag(name string, addr int) Tag {
	return Tag{Name: name, Table: TableHolding, Address: addr, Type: TypeUint16}
}

// runSim runs a poller on simulated time until stop says so (or a minute
// of simulated time per cycle budget runs out, which fails the test).
func runSim(t *testing.T, cfg *Config, interval time.Duration, ft *fakeTransport, stop func(b reading.Batch) bool) (*recordSink, *Poller) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sink := &recordSink{stop: stop, cancel: cancel}
	p, err := NewPoller(cfg, interval, sink, quietLog(),
		withClock(ft.clk), withTransport(func(string) (Transport, error) { return ft, nil }))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("simulation did not reach its stop condition")
	}
	return sink, p
}

func simConfig(devs ...Device) *Config {
	return &Config{Transport: "rtu", Serial: SerialConfig{Port: "/dev/fake", Baud: 19200},
		Timeout: configfile.Duration(500 * time.Millisecond), Retries: 1,
		Backoff: BackoffConfig{Initial: configfile.Duration(time.Second), Max: configfile.Duration(4 * time.Second)},
		Devices: devs}
}

func TestPollerSplitsRejectedRequestAndKeepsPlan(t *testing.T) {
	clk := newSimClock()
	clk0 := clk.Now()
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0, 1, 3, 4, 5)}}}}
	dev := Device{Name: "meter", UnitID: 1, MaxGap: 10, Tags: []Tag{
		u16Tag("a", 0), u16Tag("b", 1), u16Tag("missing", 2), u16Tag("c", 3), u16Tag("d", 5)}}
	sink, p := runSim(t, simConfig(dev), time.Second, ft, func(b reading.Batch) bool { return b.TS.Sub(clk0) >= 2*time.Second })

	batches := sink.of("meter")
	if len(batches) != 3 {
		t.Fatalf("got %d batches, want 3", len(batches))
	}
	for n, b := range batches {
		for _, r := range b.Readings {
			if r.Tag == "missing" {
				if r.Quality != reading.Bad || r.Error != "modbus exception 2: illegal data address" || r.Value != nil {
					t.Errorf("batch %d: missing = %+v, want bad with exception 2", n, r)
				}
				continue
			}
			if r.Quality != reading.Good || r.Error != "" {
				t.Errorf("batch %d: %s = %+v, want good", n, r.Tag, r)
			}
		}
		if v := b.Readings[4].Value; v != uint64(1005) {
			t.Errorf("batch %d: d = %#v, want uint64(1005)", n, v)
		}
	}
	// After the first cycle the plan has learnt: the later cycles send the
	// same requests, only the single invalid tag is refused.
	perCycle := map[time.Time][]fakeCall{}
	for _, c := range ft.calls {
		perCycle[c.at.Truncate(time.Second)] = append(perCycle[c.at.Truncate(time.Second)], c)
	}
	var second, third []fakeCall
	for at, cs := range perCycle {
		switch at.Sub(clk0) {
		case time.Second:
			second = cs
		case 2 * time.Second:
			third = cs
		}
	}
	if len(second) == 0 || len(second) != len(third) {
		t.Errorf("cycle 2 sent %d requests, cycle 3 %d; want the same non-zero count", len(second), len(third))
	}
	for _, c := range second {
		if c.addr <= 2 && c.addr+c.qty > 2 && c.qty > 1 {
			t.Errorf("cycle 2 still reads the invalid register in a coalesced request %+v", c)
		}
	}
	st := p.Stats()[0]
	if st.Exceptions < 3 || st.Polls != 3 || st.Timeouts != 0 {
		t.Errorf("stats %+v", st)
	}
	if got := sink.statuses["meter"]; len(got) != 1 || got[0] != "ok" {
		t.Errorf("statuses %q, want [ok]", got)
	}
}

func TestPollerBacksOffSilentDeviceAndKeepsOthersOnSchedule(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{
			1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0, 1)}},
			3: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0, 1)}},
		}}
	mk := func(name string, unit int) Device {
		return Device{Name: name, UnitID: unit, Tags: []Tag{u16Tag("x", 0), u16Tag("y", 1)}}
	}
	const span = 60 * time.Second
	interval := 100 * time.Millisecond
	sink, p := runSim(t, simConfig(mk("m1", 1), mk("silent", 2), mk("m3", 3)), interval, ft,
		func(b reading.Batch) bool { return b.TS.Sub(start) >= span })

	// Every attempt on the silent unit published a batch with every tag bad.
	silent := sink.of("silent")
	calls := ft.callsTo(2)
	if len(silent) == 0 {
		t.Fatal("no batch for the silent device")
	}
	for _, b := range silent {
		for _, r := range b.Readings {
			if r.Quality != reading.Bad || r.Error != "timeout" || r.Value != nil {
				t.Fatalf("silent device reading %+v, want bad timeout", r)
			}
		}
	}
	// First attempt: 1 + retries requests; each later attempt: one request.
	if want := 2 + (len(silent) - 1); len(calls) != want {
		t.Errorf("silent unit got %d requests in %d attempts, want %d", len(calls), len(silent), want)
	}
	// Attempts are spaced by the back-off: 1 s, 2 s, then capped at 4 s.
	for i := 1; i < len(silent); i++ {
		gap := silent[i].TS.Sub(silent[i-1].TS)
		want := min(time.Second<<(i-1), 4*time.Second)
		if gap < want || gap > want+2*interval+time.Second {
			t.Errorf("attempt %d came %v after the previous one, want about %v", i, gap, want)
		}
	}
	if n := len(silent); n > 20 {
		t.Errorf("%d attempts on the silent device in %v, back-off not effective", n, span)
	}
	// The others are good in every batch and polled every cycle the bus had
	// time for: cycles = published + skipped.
	for _, name := range []string{"m1", "m3"} {
		bs := sink.of(name)
		for _, b := range bs {
			for _, r := range b.Readings {
				if r.Quality != reading.Good {
					t.Fatalf("%s: %+v, want good", name, r)
				}
			}
		}
		var st DeviceStats
		for _, s := range p.Stats() {
			if s.Device == name {
				st = s
			}
		}
		// Ticks up to the last batch; the skip count may include an overrun
		// after it (at most the first attempt's 2 timeouts: 10 ticks).
		cycles := int(bs[len(bs)-1].TS.Sub(start)/interval) + 1
		if got := len(bs) + int(st.Skipped); got < cycles || got > cycles+10 {
			t.Errorf("%s: %d batches + %d skipped = %d, want %d cycles", name, len(bs), st.Skipped, got, cycles)
		}
		if float64(len(bs)) < 0.8*float64(cycles) {
			t.Errorf("%s: only %d batches of %d cycles: the silent device stalls the bus", name, len(bs), cycles)
		}
	}
	if got := sink.statuses["silent"]; len(got) != 1 || got[0] != "error: timeout" {
		t.Errorf("silent statuses %q, want [error: timeout]", got)
	}
}

func TestPollerRecoversDeviceAfterBackoff(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	u := &fakeUnit{regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}, timeoutsLeft: 3}
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{1: u}}
	sink, p := runSim(t, simConfig(Device{Name: "m", UnitID: 1, Tags: []Tag{u16Tag("x", 0)}}), time.Second, ft,
		func(b reading.Batch) bool { return b.TS.Sub(start) >= 10*time.Second })
	bs := sink.of("m")
	// Attempt 1 (2 timeouts), attempt 2 (1 timeout), then good from attempt 3 on.
	if bs[0].Readings[0].Quality != reading.Bad || bs[1].Readings[0].Quality != reading.Bad {
		t.Errorf("first two attempts should be bad: %+v %+v", bs[0].Readings, bs[1].Readings)
	}
	for _, b := range bs[2:] {
		if b.Readings[0].Quality != reading.Good {
			t.Errorf("after recovery: %+v", b.Readings[0])
		}
	}
	if got, want := strings.Join(sink.statuses["m"], ","), "error: timeout,ok"; got != want {
		t.Errorf("statuses %q, want %q", got, want)
	}
	if st := p.Stats()[0]; st.Timeouts != 3 {
		t.Errorf("timeouts %d, want 3", st.Timeouts)
	}
}

func TestPollerRetriesATimeout(t *testing.T) {
	clk := newSimClock()
	u := &fakeUnit{regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}, timeoutsLeft: 1}
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{1: u}}
	sink, p := runSim(t, simConfig(Device{Name: "m", UnitID: 1, Tags: []Tag{u16Tag("x", 0)}}), time.Second, ft,
		func(reading.Batch) bool { return true })
	if r := sink.batches[0].Readings[0]; r.Quality != reading.Good || r.Value != uint64(1000) {
		t.Errorf("reading %+v, want good 1000 after one retry", r)
	}
	if st := p.Stats()[0]; st.Requests != 2 || st.Timeouts != 1 {
		t.Errorf("stats %+v, want 2 requests, 1 timeout", st)
	}
}

// TestPollerOverrunPollsBackToBack: a 250 ms read on a 100 ms interval
// runs back to back — the next cycle starts when the last ends, serving the
// latest slot that passed — with the time of the actual reads, and the
// overruns, skipped slots and lateness counted.
func TestPollerOverrunPollsBackToBack(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	cost, interval := 250*time.Millisecond, 100*time.Millisecond
	ft := &fakeTransport{clk: clk, cost: cost, timeout: time.Second,
		units: map[byte]*fakeUnit{1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}}}}
	sink, p := runSim(t, simConfig(Device{Name: "m", UnitID: 1, Tags: []Tag{u16Tag("x", 0)}}), interval, ft,
		func(b reading.Batch) bool { return b.TS.Sub(start) >= 3*time.Second })
	bs := sink.of("m")
	for i, b := range bs {
		if want := start.Add(time.Duration(i) * cost); !b.TS.Equal(want) {
			t.Errorf("batch %d at +%v, want +%v (back to back)", i, b.TS.Sub(start), want.Sub(start))
		}
		if r := b.Readings[0]; !r.TS.Equal(b.TS.Add(cost)) || r.Quality != reading.Good {
			t.Errorf("batch %d: reading %+v, want good at the answer, +%v", i, r, b.TS.Add(cost).Sub(start))
		}
	}
	n := uint64(len(bs))
	// After n cycles of 250 ms the schedule stands at slot ⌊2.5 n⌋: every
	// slot before it was either polled or skipped.
	wantSkipped := n*uint64(cost)/uint64(interval) - n
	ps := p.PollStats()
	if ps.Cycles != n || ps.Overruns != n || ps.Skipped != wantSkipped {
		t.Errorf("poll stats %+v, want %d cycles, %d overruns, %d skipped", ps, n, n, wantSkipped)
	}
	if st := p.Stats()[0]; st.Skipped != wantSkipped {
		t.Errorf("device skipped %d, want %d", st.Skipped, wantSkipped)
	}
	// Cycles start 0 or 50 ms after their slot.
	if ps.LateMax < 50*time.Millisecond || ps.LateMax > 57*time.Millisecond || ps.LateP50 > 57*time.Millisecond {
		t.Errorf("lateness p50 %v max %v, want at most 50 ms (+12.5 %% histogram)", ps.LateP50, ps.LateMax)
	}
}

// TestPollerOverrunKeepsDevicesInTurn: three devices whose reads take a
// whole interval each share one line; back to back, each is polled once
// per cycle, in turn.
func TestPollerOverrunKeepsDevicesInTurn(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	interval := 100 * time.Millisecond
	regs := map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}
	ft := &fakeTransport{clk: clk, cost: interval, timeout: time.Second,
		units: map[byte]*fakeUnit{1: {regs: regs}, 2: {regs: regs}, 3: {regs: regs}}}
	mk := func(name string, unit int) Device {
		return Device{Name: name, UnitID: unit, Tags: []Tag{u16Tag("x", 0)}}
	}
	sink, p := runSim(t, simConfig(mk("a", 1), mk("b", 2), mk("c", 3)), interval, ft,
		func(b reading.Batch) bool { return b.TS.Sub(start) >= 6*time.Second })
	var order strings.Builder
	for i, b := range sink.batches {
		order.WriteString(b.Device)
		if want := start.Add(time.Duration(i) * interval); !b.TS.Equal(want) {
			t.Errorf("batch %d (%s) at +%v, want +%v: the line idles", i, b.Device, b.TS.Sub(start), want.Sub(start))
		}
	}
	if got := order.String(); got != strings.Repeat("abc", len(got)/3)+"abc"[:len(got)%3] {
		t.Errorf("poll order %s, want abc repeated", got)
	}
	if ps := p.PollStats(); ps.Overruns == 0 || ps.Overruns != ps.Cycles {
		t.Errorf("poll stats %+v: every cycle overran", ps)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	if h.quantile(0.99) != 0 {
		t.Error("empty histogram has a quantile")
	}
	for us := 1; us <= 1000; us++ {
		h.add(time.Duration(us) * time.Microsecond)
	}
	h.add(-time.Second) // a clock step backwards counts as on time
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(tc.q)
		if got < tc.want || float64(got) > 1.125*float64(tc.want)+float64(time.Microsecond) {
			t.Errorf("quantile(%v) = %v, want %v..+12.5 %%", tc.q, got, tc.want)
		}
	}
	for us := uint64(0); us < 1<<20; us = us*9/8 + 1 {
		i := histBucket(us)
		if lo := histUpper(i - 1); i > 0 && (us < lo || us >= histUpper(i)) {
			t.Fatalf("%d µs in bucket %d = [%d, %d)", us, i, lo, histUpper(i))
		}
	}
	if histBucket(^uint64(0)) != histBuckets-1 {
		t.Errorf("largest value in bucket %d of %d", histBucket(^uint64(0)), histBuckets)
	}
}

func TestPollerReportsLinkDownForEveryDevice(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	gone := errors.New("no such file or directory")
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{
			1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}},
			2: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}},
		},
		linkErr: func(now time.Time, _ byte) error {
			if off := now.Sub(start); off >= 2*time.Second && off < 10*time.Second {
				return gone
			}
			return nil
		}}
	mk := func(name string, unit int) Device {
		return Device{Name: name, UnitID: unit, Tags: []Tag{u16Tag("x", 0)}}
	}
	interval := 200 * time.Millisecond
	sink, _ := runSim(t, simConfig(mk("a", 1), mk("b", 2)), interval, ft,
		func(b reading.Batch) bool { return b.TS.Sub(start) >= 20*time.Second })
	for _, name := range []string{"a", "b"} {
		var down []time.Time
		var goodAfter bool
		for _, b := range sink.of(name) {
			r := b.Readings[0]
			off := b.TS.Sub(start)
			switch {
			case r.Quality == reading.Bad:
				if r.Error != "fake: no such file or directory" {
					t.Errorf("%s: error %q", name, r.Error)
				}
				if off < 2*time.Second || off >= 10*time.Second {
					t.Errorf("%s: bad at +%v outside the outage", name, off)
				}
				down = append(down, b.TS)
			case off >= 10*time.Second:
				goodAfter = true
			}
		}
		// Reopen attempts back off: 1 s, 2 s, 4 s (cap) ... : a handful, not one per cycle.
		if len(down) < 3 || len(down) > 6 {
			t.Errorf("%s: %d bad batches during an 8 s outage, want one per reopen attempt (3..6)", name, len(down))
		}
		if !goodAfter {
			t.Errorf("%s: never good again after the link came back", name)
		}
		if got, want := strings.Join(sink.statuses[name], ","), "ok,error: fake: no such file or directory,ok"; got != want {
			t.Errorf("%s statuses %q, want %q", name, got, want)
		}
	}
}

func TestPollerGatewayExceptionBacksOff(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{1: {exception: 11}}}
	sink, _ := runSim(t, simConfig(Device{Name: "m", UnitID: 1, Tags: []Tag{u16Tag("x", 0), u16Tag("y", 200)}}),
		100*time.Millisecond, ft, func(b reading.Batch) bool { return b.TS.Sub(start) >= 10*time.Second })
	bs := sink.of("m")
	if len(bs) > 8 {
		t.Errorf("%d attempts in 10 s: exception 11 should back the device off", len(bs))
	}
	for _, r := range bs[0].Readings {
		if r.Error != "modbus exception 11: gateway target device failed to respond" {
			t.Errorf("reading %+v", r)
		}
	}
}

func TestNewPollerRejects(t *testing.T) {
	sink := &recordSink{}
	good := func() *Config {
		return &Config{Transport: "tcp", TCP: TCPConfig{Address: "127.0.0.1:502"},
			Devices: []Device{{Name: "m", UnitID: 1, Tags: []Tag{u16Tag("x", 0)}}}}
	}
	for _, tc := range []struct {
		name     string
		mutate   func(*Config)
		interval time.Duration
		want     string
	}{
		{"transport", func(c *Config) { c.Transport = "udp" }, time.Second, `unknown transport "udp" (valid: rtu, tcp)`},
		{"interval", func(*Config) {}, 0, "poll interval 0s must be positive"},
		{"no devices", func(c *Config) { c.Devices = nil }, time.Second, "modbus config has no devices"},
		{"no address", func(c *Config) { c.TCP.Address = "" }, time.Second, `device "m": no tcp address`},
		{"bad address", func(c *Config) { c.TCP.Address = "plc" }, time.Second, `tcp address "plc"`},
		{"duplicate", func(c *Config) { c.Devices = append(c.Devices, c.Devices[0]) }, time.Second, `device "m" defined twice`},
		{"parity", func(c *Config) {
			c.Transport, c.Serial = "rtu", SerialConfig{Port: "/dev/ttyUSB0", Baud: 9600, Parity: "X"}
		}, time.Second, `unknown parity "X" (valid: N, E, O)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.mutate(cfg)
			_, err := NewPoller(cfg, tc.interval, sink, quietLog())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := NewPoller(good(), time.Second, sink, quietLog()); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

// TestPollerLinkBreaksMidCycle: a device that answered before the link broke
// in the same cycle keeps its one batch; the rest get the link error.
func TestPollerLinkBreaksMidCycle(t *testing.T) {
	clk := newSimClock()
	start := clk.Now()
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{
			1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}},
			2: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: hr(0)}},
		},
		linkErr: func(now time.Time, unit byte) error {
			if unit == 2 && now.Sub(start) >= time.Second {
				return errors.New("connection reset by peer")
			}
			return nil
		}}
	mk := func(name string, unit int) Device {
		return Device{Name: name, UnitID: unit, Tags: []Tag{u16Tag("x", 0)}}
	}
	sink, _ := runSim(t, simConfig(mk("a", 1), mk("b", 2)), time.Second, ft,
		func(b reading.Batch) bool { return b.TS.Sub(start) >= 5*time.Second })
	seen := map[time.Time]bool{}
	for _, b := range sink.of("a") {
		if seen[b.TS.Truncate(time.Second)] {
			t.Errorf("device a: two batches in the cycle at %v", b.TS)
		}
		seen[b.TS.Truncate(time.Second)] = true
		if b.Readings[0].Quality != reading.Good && b.TS.Sub(start) < time.Second {
			t.Errorf("device a bad before the link broke: %+v", b.Readings[0])
		}
	}
	var bad int
	for _, b := range sink.of("b") {
		if r := b.Readings[0]; r.Quality == reading.Bad {
			bad++
			if r.Error != "fake: connection reset by peer" {
				t.Errorf("device b error %q", r.Error)
			}
		}
	}
	if bad == 0 {
		t.Error("device b never reported the broken link")
	}
	if got := sink.statuses["a"]; len(got) < 2 || got[1] != "error: fake: connection reset by peer" {
		t.Errorf("device a statuses %q: the link failure should show", got)
	}
}

func TestPhaseOffset(t *testing.T) {
	for _, tc := range []struct {
		i, n     int
		interval time.Duration
		want     time.Duration
	}{
		{0, 1, time.Second, 0},
		{1, 2, 10 * time.Millisecond, 0}, // phases at least 20 ms apart: one
		{1, 2, 100 * time.Millisecond, 50 * time.Millisecond},
		// 50 links at 100 ms: 5 phases of 10.
		{9, 50, 100 * time.Millisecond, 0}, {10, 50, 100 * time.Millisecond, 20 * time.Millisecond},
		{49, 50, 100 * time.Millisecond, 80 * time.Millisecond},
		// 1,000 links at 1 s: 10 phases of 100 (not 50 of 20: at most
		// maxPhases an interval).
		{99, 1000, time.Second, 0}, {100, 1000, time.Second, 100 * time.Millisecond}, {999, 1000, time.Second, 900 * time.Millisecond},
		// 20 links at 1 s: 10 phases of 2.
		{1, 20, time.Second, 0}, {2, 20, time.Second, 100 * time.Millisecond},
		// Fewer links than phases: one link a phase.
		{2, 3, time.Second, 666666666},
	} {
		if got := phaseOffset(tc.i, tc.n, tc.interval); got != tc.want {
			t.Errorf("phaseOffset(%d, %d, %v) = %v, want %v", tc.i, tc.n, tc.interval, got, tc.want)
		}
	}
}
