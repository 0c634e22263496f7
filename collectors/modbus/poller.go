package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"fieldgate/collectors/rbe"
	"fieldgate/collectors/reading"
)

// Sink receives the poller's output. fieldgate/collectors/publish.Publisher
// implements it. Its methods are called from every link's goroutine
// concurrently; Publish should not block for long, it holds up its link.
type Sink interface {
	// Publish takes one batch: one device, one poll. The batch and its
	// readings are not touched by the poller afterwards.
	Publish(ctx context.Context, b reading.Batch) error
	// SetDeviceStatus sets a device's status: "ok" or "error: <reason>".
	SetDeviceStatus(device, status string)
}

// Poller polls every device of a Config at a fixed rate and hands one batch
// per device per poll to a Sink. One goroutine owns each link: the serial
// port (RTU: every device shares it, served in turn) or each TCP address
// (devices behind one address share it in turn; different addresses are
// polled concurrently).
type Poller struct {
	interval time.Duration
	sink     Sink
	log      *slog.Logger
	buses    []*bus
	clock    clock
	byName   map[string]devRef
	// filter applies the tags' report by exception; nil when every tag
	// publishes always.
	filter *rbe.Filter
}

// Option configures a Poller.
type Option func(*pollerOptions)

type pollerOptions struct {
	transport func(link string) (Transport, error)
	clock     clock
}

// withTransport replaces the real transports (tests): the factory gets the
// link name and returns the transport that serves it.
func withTransport(f func(link string) (Transport, error)) Option {
	return func(o *pollerOptions) { o.transport = f }
}

// withClock replaces the wall clock (tests).
func withClock(c clock) Option {
	return func(o *pollerOptions) { o.clock = c }
}

// NewPoller validates cfg and builds the poller: the links are opened by Run
// (lazily, and reopened with back-off after they fail). interval is the poll
// period (POLL_INTERVAL). cfg is expected to come from ParseConfig (defaults
// filled); zero timeout and back-off fall back to DefaultTimeout and
// DefaultBackoffInitial/DefaultBackoffMax.
func NewPoller(cfg *Config, interval time.Duration, sink Sink, log *slog.Logger, opts ...Option) (*Poller, error) {
	if cfg == nil {
		return nil, errors.New("modbus config is nil")
	}
	if interval <= 0 {
		return nil, fmt.Errorf("poll interval %s must be positive", interval)
	}
	if sink == nil {
		return nil, errors.New("sink is nil")
	}
	if log == nil {
		return nil, errors.New("logger is nil")
	}
	if len(cfg.Devices) == 0 {
		return nil, errors.New("modbus config has no devices")
	}
	var o pollerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.clock == nil {
		o.clock = wallClock{}
	}
	timeout := time.Duration(cfg.Timeout)
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	bo := backoff{initial: time.Duration(cfg.Backoff.Initial), max: time.Duration(cfg.Backoff.Max)}
	if bo.initial <= 0 {
		bo.initial = DefaultBackoffInitial
	}
	if bo.max <= 0 {
		bo.max = DefaultBackoffMax
	}
	if bo.max < bo.initial {
		bo.max = bo.initial
	}
	if cfg.Retries < 0 {
		return nil, fmt.Errorf("retries %d must not be negative", cfg.Retries)
	}

	p := &Poller{interval: interval, sink: sink, log: log, clock: o.clock, byName: map[string]devRef{}}
	if f := rbe.New(cfg.Rules(), rbe.WithTolerance(interval/2)); f.Active() {
		p.filter = f
	}
	// Group devices by link, keeping config order within and across links.
	byLink := map[string]*bus{}
	seen := map[string]bool{}
	for i := range cfg.Devices {
		d := &cfg.Devices[i]
		if d.Name == "" {
			return nil, fmt.Errorf("device %d has no name", i+1)
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("device %q defined twice", d.Name)
		}
		seen[d.Name] = true
		if d.UnitID < 0 || d.UnitID > 255 {
			return nil, fmt.Errorf("device %q: unit id %d out of range 0..255", d.Name, d.UnitID)
		}
		var link string
		var mk func() (Transport, error)
		switch cfg.Transport {
		case "rtu":
			s := cfg.Serial
			link = fmt.Sprintf("serial port %q", s.Port)
			mk = func() (Transport, error) {
				return newRTULine(rtuOptions{Port: s.Port, Baud: s.Baud, DataBits: s.DataBits,
					Parity: s.Parity, StopBits: s.StopBits, Timeout: timeout})
			}
		case "tcp":
			addr := d.Address
			if addr == "" {
				addr = cfg.TCP.Address
			}
			if addr == "" {
				return nil, fmt.Errorf("device %q: no tcp address (set tcp.address or the device's address)", d.Name)
			}
			link = fmt.Sprintf("tcp %q", addr)
			mk = func() (Transport, error) { return newTCPConn(addr, timeout) }
		default:
			return nil, fmt.Errorf("unknown transport %q (valid: rtu, tcp)", cfg.Transport)
		}
		b := byLink[link]
		if b == nil {
			var tr Transport
			var err error
			if o.transport != nil {
				tr, err = o.transport(link)
			} else {
				tr, err = mk()
			}
			if err != nil {
				return nil, fmt.Errorf("device %q: %w", d.Name, err)
			}
			b = &bus{p: p, link: link, tr: tr, retries: cfg.Retries, backoff: bo,
				log: log.With("link", link)}
			byLink[link] = b
			p.buses = append(p.buses, b)
		}
		ds := &device{dev: d, unit: byte(d.UnitID), plan: NewPlan(d)}
		ds.stats.name = d.Name
		b.devices = append(b.devices, ds)
		p.byName[d.Name] = devRef{b: b, d: ds}
	}
	return p, nil
}

// Run polls until ctx is cancelled, then closes the links and returns nil.
// A failing device, link or Publish never ends Run (failures are published,
// logged and counted).
func (p *Poller) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	start := p.clock.Now()
	for _, b := range p.buses {
		g.Go(func() error {
			defer b.tr.Close()
			return b.run(ctx, start)
		})
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// DeviceStats are one device's counters since start.
type DeviceStats struct {
	Device string
	// Polls counts attempts to poll the device (each published a batch).
	Polls uint64
	// Requests counts read requests sent, retries included.
	Requests uint64
	// Errors counts failed requests of any kind (timeouts, exceptions,
	// garbage, link failures).
	Errors uint64
	// Timeouts counts requests that got no answer in time.
	Timeouts uint64
	// Exceptions counts Modbus exception responses.
	Exceptions uint64
	// Garbage counts unusable responses (CRC, unit, length, framing).
	Garbage uint64
	// Skipped counts poll cycles lost to an overrun of the bus.
	Skipped uint64
	// BackedOff counts cycles in which the device was left out because it
	// is backed off after it stopped answering.
	BackedOff uint64
}

type deviceCounters struct {
	name                                                                       string
	polls, requests, errors, timeouts, exceptions, garbage, skipped, backedOff atomic.Uint64
}

func (c *deviceCounters) snapshot() DeviceStats {
	return DeviceStats{Device: c.name, Polls: c.polls.Load(), Requests: c.requests.Load(),
		Errors: c.errors.Load(), Timeouts: c.timeouts.Load(), Exceptions: c.exceptions.Load(),
		Garbage: c.garbage.Load(), Skipped: c.skipped.Load(), BackedOff: c.backedOff.Load()}
}

// Stats returns every device's counters, sorted by device name. It is safe
// to call while Run is running.
func (p *Poller) Stats() []DeviceStats {
	var out []DeviceStats
	for _, b := range p.buses {
		for _, d := range b.devices {
			out = append(out, d.stats.snapshot())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// clock is the poller's time source; tests replace it with simulated time.
type clock interface {
	Now() time.Time
	// WaitUntil blocks until t or until ctx is done (then it returns ctx.Err()).
	WaitUntil(ctx context.Context, t time.Time) error
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) WaitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff is an exponential back-off: initial, doubling, capped at max.
type backoff struct{ initial, max time.Duration }

func (b backoff) next(cur time.Duration) time.Duration {
	if cur <= 0 {
		return b.initial
	}
	return min(2*cur, b.max)
}
