package modbus

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"fieldgate/collectors/reading"
)

// bus is one link (a serial port or a TCP address) and the devices behind
// it. Its goroutine owns the transport and every device's state.
type bus struct {
	p       *Poller
	link    string
	tr      Transport
	retries int
	backoff backoff
	log     *slog.Logger
	devices []*device

	linkDown    bool
	linkWait    time.Duration
	linkRetryAt time.Time
	overrun     bool
	cycleN      uint64 // counts cycles, to tell devices published in this one

	// Write jobs queued by Poller.Write; wakeup interrupts the wait for
	// the next cycle (nil when the bus is not waiting).
	jobMu  sync.Mutex
	jobs   []*writeJob
	wakeup context.CancelFunc
}

// device is one device's polling state.
type device struct {
	dev  *Device
	unit byte
	plan *Plan

	failing bool // stopped answering: polled once per back-off period
	wait    time.Duration
	retryAt time.Time
	status  string
	stats   deviceCounters
	cycleN  uint64 // the bus cycle of the last batch
	garbled bool   // a garbage answer was logged since the last good one
}

// run polls at a fixed rate on the schedule start + k*interval. A cycle that
// is still running when its successor is due makes the successor skipped
// (counted per device), never queued.
func (b *bus) run(ctx context.Context, start time.Time) error {
	clk, interval := b.p.clock, b.p.interval
	next := start
	for {
		if err := b.wait(ctx, next); err != nil {
			return err
		}
		if err := b.cycle(ctx); err != nil {
			return err
		}
		next = next.Add(interval)
		if late := clk.Now().Sub(next); late > 0 {
			missed := uint64(late/interval) + 1
			next = next.Add(time.Duration(missed) * interval)
			for _, d := range b.devices {
				d.stats.skipped.Add(missed)
			}
			if !b.overrun {
				b.log.Warn("poll cycle overran the interval; skipping cycles", "interval", interval, "skipped", missed)
			}
			b.overrun = true
		} else {
			b.overrun = false
		}
	}
}

// cycle polls every device once: the answering devices first, in config
// order, then the backed-off devices whose retry time has come, so a silent
// device delays the others as little as possible. It returns only ctx errors.
func (b *bus) cycle(ctx context.Context) error {
	now := b.p.clock.Now()
	if b.linkDown && now.Before(b.linkRetryAt) {
		return nil
	}
	b.cycleN++
	polled := false
	for _, d := range b.devices {
		if d.failing {
			continue
		}
		b.runJobs(ctx)
		if err := b.pollOne(ctx, d); err != nil {
			return b.linkFailed(ctx, err)
		}
		polled = true
	}
	for _, d := range b.devices {
		if !d.failing || d.retryAt.After(now) {
			if d.failing {
				d.stats.backedOff.Add(1)
			}
			continue
		}
		b.runJobs(ctx)
		if err := b.pollOne(ctx, d); err != nil {
			return b.linkFailed(ctx, err)
		}
		polled = true
	}
	if b.linkDown && polled {
		b.log.Info("link restored")
		b.linkDown, b.linkWait = false, 0
	}
	return nil
}

// linkFailed handles a link error from pollOne: every device on the link
// that has no batch in this cycle yet gets a bad batch with the reason, and
// the link is retried after a back-off.
func (b *bus) linkFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	now := b.p.clock.Now()
	if !b.linkDown {
		b.log.Error("link failed; every device on it is bad until it is back", "err", err)
	}
	b.linkDown = true
	b.linkWait = b.backoff.next(b.linkWait)
	b.linkRetryAt = now.Add(b.linkWait)
	msg := err.Error()
	for _, d := range b.devices {
		b.setStatus(d, "error: "+msg)
		if d.cycleN == b.cycleN {
			continue // answered before the link broke: one batch per poll
		}
		rs := make([]reading.Reading, len(d.dev.Tags))
		for i := range rs {
			t := &d.dev.Tags[i]
			rs[i] = reading.Reading{Tag: t.Name, Unit: t.Unit, Quality: reading.Bad, Error: msg, TS: now}
		}
		d.stats.polls.Add(1)
		if err := b.publish(ctx, d, now, rs); err != nil {
			return err
		}
	}
	return nil
}

// pollOne polls one device and publishes its batch. It returns a
// *LinkError (nothing published: the caller reports the whole link) or a
// ctx error; every other failure ends up in the batch.
func (b *bus) pollOne(ctx context.Context, d *device) error {
	clk := b.p.clock
	now := clk.Now()
	tags := d.dev.Tags
	rs := make([]reading.Reading, len(tags))
	for i := range rs {
		rs[i] = reading.Reading{Tag: tags[i].Name, Unit: tags[i].Unit, TS: now}
	}
	for _, i := range d.plan.Skipped() {
		rs[i].Quality, rs[i].Error = reading.Bad, "tag cannot be addressed"
	}
	probe := d.failing // a backed-off device gets one attempt of its first request
	var devErr error
	reqs := d.plan.Requests()
	for i := 0; i < len(reqs); i++ {
		r := reqs[i]
		attempts := 1 + b.retries
		if probe {
			attempts = 1
		}
		data, err := b.read(ctx, d, r, attempts)
		ts := clk.Now()
		if err == nil {
			probe = false
			d.plan.Accept(i)
			for _, ti := range r.Tags {
				v, derr := Decode(&tags[ti], r, data)
				if derr != nil {
					rs[ti].Quality, rs[ti].Error, rs[ti].TS = reading.Bad, derr.Error(), ts
					continue
				}
				rs[ti].Value, rs[ti].Quality, rs[ti].TS = v, reading.Good, ts
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var le *LinkError
		if errors.As(err, &le) {
			return err
		}
		var ex *ExceptionError
		isEx := errors.As(err, &ex)
		switch {
		case isEx && (ex.Code == 2 || ex.Code == 3):
			// Some tag of a coalesced read does not exist: split and retry
			// now; a single tag that is refused is really invalid.
			_, invalid := d.plan.Reject(i)
			reqs = d.plan.Requests()
			if invalid {
				b.markBad(rs, r.Tags, err, ts)
			} else {
				i--
			}
		case errors.Is(err, ErrTimeout), isEx && (ex.Code == 10 || ex.Code == 11):
			// The device (or the device behind a gateway) does not answer.
			devErr = err
		default:
			// Another exception or a garbage answer: this request's tags
			// are bad, the device is alive.
			b.markBad(rs, r.Tags, err, ts)
		}
		if devErr != nil {
			break
		}
	}
	if devErr != nil {
		msg := devErr.Error()
		for i := range rs {
			if rs[i].Quality == "" {
				rs[i].Quality, rs[i].Error = reading.Bad, msg
			}
		}
		if !d.failing {
			b.log.Warn("device stopped answering; backing off", "device", d.dev.Name, "err", devErr)
		}
		d.failing = true
		d.wait = b.backoff.next(d.wait)
		d.retryAt = clk.Now().Add(d.wait)
		b.setStatus(d, "error: "+msg)
	} else {
		if d.failing {
			b.log.Info("device answers again", "device", d.dev.Name)
		}
		d.failing, d.wait = false, 0
		b.setStatus(d, "ok")
	}
	d.stats.polls.Add(1)
	return b.publish(ctx, d, now, rs)
}

func (b *bus) markBad(rs []reading.Reading, idx []int, err error, ts time.Time) {
	msg := err.Error()
	for _, ti := range idx {
		rs[ti].Value, rs[ti].Quality, rs[ti].Error, rs[ti].TS = nil, reading.Bad, msg, ts
	}
}

// read runs one request with up to attempts tries (timeouts only are
// retried) and counts what happened.
func (b *bus) read(ctx context.Context, d *device, r Request, attempts int) ([]byte, error) {
	fn := r.Table.FunctionCode()
	for a := 1; ; a++ {
		d.stats.requests.Add(1)
		data, err := b.tr.Read(ctx, d.unit, fn, r.Address, r.Quantity)
		if err == nil {
			d.garbled = false
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if d.count(err) {
			// Warn once per run of bad answers, not on every one.
			level := slog.LevelDebug
			if !d.garbled {
				level, d.garbled = slog.LevelWarn, true
			}
			b.log.Log(ctx, level, "garbage response; line resynchronised", "device", d.dev.Name, "request", r.String(), "err", err)
		}
		if !isRetryable(err) || a >= attempts {
			return nil, err
		}
	}
}

// count adds a failed request to the device's counters and reports
// whether it was a garbage answer.
func (d *device) count(err error) (garbage bool) {
	d.stats.errors.Add(1)
	var ex *ExceptionError
	var fe *FrameError
	switch {
	case errors.Is(err, ErrTimeout):
		d.stats.timeouts.Add(1)
	case errors.As(err, &ex):
		d.stats.exceptions.Add(1)
	case errors.As(err, &fe):
		d.stats.garbage.Add(1)
		return true
	}
	return false
}

func (b *bus) setStatus(d *device, status string) {
	if d.status == status {
		return
	}
	d.status = status
	b.p.sink.SetDeviceStatus(d.dev.Name, status)
}

func (b *bus) publish(ctx context.Context, d *device, ts time.Time, rs []reading.Reading) error {
	d.cycleN = b.cycleN
	batch := reading.Batch{Device: d.dev.Name, TS: ts, Readings: rs}
	if b.p.filter != nil && !b.p.filter.Apply(&batch) {
		return nil // report by exception: nothing due
	}
	err := b.p.sink.Publish(ctx, batch)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Warn("publish failed", "device", d.dev.Name, "err", err)
	}
	return nil
}
