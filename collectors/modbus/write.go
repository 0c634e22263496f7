package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"fieldgate/collectors/command"
)

// Writes. A tag marked `writable: true` (coil or holding_register) is
// written with the tag's type, byte order and scale applied in reverse:
// function 5 for a coil, 6 for one register, 16 for more (15 and 16 only
// with the device's write_multiple). A bit of a holding register is read
// (function 3), changed and written back. After every write the tag is read
// back with the function that polls it, and that value is the result.
//
// Writes go through the link's goroutine, the one that polls: they run
// between two requests (before a device's poll, or while the bus waits for
// its next cycle), never inside one, so an RS-485 line carries one
// exchange at a time. A bit's read-modify-write is not atomic towards other
// masters on the device.

// writeJob is one command's writes to one device, run by the device's bus.
type writeJob struct {
	ctx    context.Context
	dev    *device
	writes []command.Write
	done   chan []command.Result // buffered: the bus never waits for the caller
}

// devRef finds a device's bus by name.
type devRef struct {
	b *bus
	d *device
}

// Write implements command.Writer: it queues the writes on the device's
// bus and waits for their results or for ctx to end (then every write not
// done is reported as a timeout).
func (p *Poller) Write(ctx context.Context, device string, writes []command.Write) []command.Result {
	ref, ok := p.byName[device]
	if !ok {
		return failAll(writes, fmt.Errorf("%w %q", command.ErrUnknownDevice, device))
	}
	j := &writeJob{ctx: ctx, dev: ref.d, writes: writes, done: make(chan []command.Result, 1)}
	ref.b.submit(j)
	select {
	case r := <-j.done:
		return r
	case <-ctx.Done():
		return failAll(writes, command.ErrTimeout)
	}
}

func failAll(writes []command.Write, err error) []command.Result {
	out := make([]command.Result, len(writes))
	for i, w := range writes {
		out[i] = command.Result{Tag: w.Tag.Name, Err: err}
	}
	return out
}

// submit queues a job and wakes the bus if it is waiting for its next
// cycle.
func (b *bus) submit(j *writeJob) {
	b.jobMu.Lock()
	defer b.jobMu.Unlock()
	b.jobs = append(b.jobs, j)
	if b.wakeup != nil {
		b.wakeup()
	}
}

// wait waits until the next cycle is due, running the writes that arrive
// meanwhile. It returns only ctx errors.
func (b *bus) wait(ctx context.Context, until time.Time) error {
	for {
		b.runJobs(ctx)
		wctx, cancel := context.WithCancel(ctx)
		b.jobMu.Lock()
		pending := len(b.jobs) > 0
		b.wakeup = cancel
		b.jobMu.Unlock()
		var err error
		if !pending {
			err = b.p.clock.WaitUntil(wctx, until)
		}
		b.jobMu.Lock()
		b.wakeup = nil
		b.jobMu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && !pending {
			b.runJobs(ctx)
			return nil
		}
	}
}

// runJobs runs every queued write job, in order.
func (b *bus) runJobs(ctx context.Context) {
	for ctx.Err() == nil {
		b.jobMu.Lock()
		if len(b.jobs) == 0 {
			b.jobMu.Unlock()
			return
		}
		j := b.jobs[0]
		b.jobs[0] = nil
		b.jobs = b.jobs[1:]
		b.jobMu.Unlock()
		j.done <- b.execute(ctx, j)
	}
}

// execute runs one job's writes in order. The exchanges use the bus's
// context, so a command that times out never cuts a request in half; the
// writes it did not start are reported as timeouts.
func (b *bus) execute(ctx context.Context, j *writeJob) []command.Result {
	out := make([]command.Result, len(j.writes))
	for i, w := range j.writes {
		out[i].Tag = w.Tag.Name
		if j.ctx.Err() != nil {
			out[i].Err = command.ErrTimeout
			continue
		}
		t := j.dev.tag(w.Tag.Name)
		if t == nil {
			out[i].Err = fmt.Errorf("%w %q", command.ErrUnknownTag, w.Tag.Name)
			continue
		}
		out[i].ReadBack, out[i].Err = b.writeTag(ctx, j.dev, t, w.Value)
	}
	return out
}

func (d *device) tag(name string) *Tag {
	for i := range d.dev.Tags {
		if d.dev.Tags[i].Name == name {
			return &d.dev.Tags[i]
		}
	}
	return nil
}

// writeTag writes v to t and reads it back.
func (b *bus) writeTag(ctx context.Context, d *device, t *Tag, v any) (any, error) {
	if !t.Limits.Writable {
		return nil, command.ErrNotWritable
	}
	var cur uint16
	if t.Bit != nil {
		data, err := b.read(ctx, d, Request{Table: TableHolding, Address: uint16(t.Address), Quantity: 1}, 1+b.retries)
		if err != nil {
			return nil, writeError("read before writing a bit", err)
		}
		cur = binary.BigEndian.Uint16(data)
	}
	fn, data, err := encodeWrite(t, v, d.dev.WriteMultiple, cur)
	if err != nil {
		return nil, err
	}
	if err := b.write(ctx, d, fn, data); err != nil {
		return nil, writeError("", err)
	}
	r := Request{Table: t.Table, Address: uint16(t.Address), Quantity: uint16(t.Registers())}
	got, err := b.read(ctx, d, r, 1+b.retries)
	if err != nil {
		return nil, writeError("written, but reading it back failed", err)
	}
	val, err := Decode(t, r, got)
	if err != nil {
		return nil, fmt.Errorf("written, but the value read back is unusable: %w", err)
	}
	return val, nil
}

// write sends one write request with up to attempts tries (timeouts only)
// and counts what happened, like read.
func (b *bus) write(ctx context.Context, d *device, fn byte, data []byte) error {
	attempts := 1 + b.retries
	for a := 1; ; a++ {
		d.stats.requests.Add(1)
		err := b.tr.Write(ctx, d.unit, fn, data)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		d.count(err)
		if !isRetryable(err) || a >= attempts {
			return err
		}
	}
}

// writeError words a failed exchange for a command's result: "timeout",
// "device exception N: text", or the link's or frame's error.
func writeError(doing string, err error) error {
	var ex *ExceptionError
	switch {
	case errors.Is(err, ErrTimeout):
		err = command.ErrTimeout
	case errors.As(err, &ex):
		err = command.DeviceException(int(ex.Code), exceptionText(ex.Code))
	}
	if doing == "" {
		return err
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// encodeWrite returns the function and request data that write v (as
// command.Convert returns it for the tag's ValueType) to tag t. cur is the
// register's current content when t is a bit of a register.
func encodeWrite(t *Tag, v any, multiple bool, cur uint16) (byte, []byte, error) {
	addr := uint16(t.Address)
	if t.Table == TableCoil {
		on, ok := v.(bool)
		if !ok {
			return 0, nil, fmt.Errorf("%w: want true or false for a coil", command.ErrTypeMismatch)
		}
		if multiple {
			data := []byte{byte(addr >> 8), byte(addr), 0, 1, 1, 0}
			if on {
				data[5] = 1
			}
			return fnWriteMultipleCoils, data, nil
		}
		data := []byte{byte(addr >> 8), byte(addr), 0, 0}
		if on {
			data[2] = 0xFF
		}
		return fnWriteSingleCoil, data, nil
	}
	if t.Table != TableHolding {
		return 0, nil, fmt.Errorf("%w: table %s is read-only", command.ErrNotWritable, t.Table)
	}
	regs, err := registerBytes(t, v, cur)
	if err != nil {
		return 0, nil, err
	}
	n := len(regs) / 2
	if n == 1 && !multiple {
		return fnWriteSingleRegister, append([]byte{byte(addr >> 8), byte(addr)}, regs...), nil
	}
	data := append([]byte{byte(addr >> 8), byte(addr), byte(n >> 8), byte(n), byte(2 * n)}, regs...)
	return fnWriteMultipleRegisters, data, nil
}

// registerBytes encodes v for t's registers as they go on the wire, the
// exact reverse of Decode: unscaled, converted to the tag's type, bytes put
// in its byte order.
func registerBytes(t *Tag, v any, cur uint16) ([]byte, error) {
	swapBytes, swapWords := byteOrderFlags(t.ByteOrder)
	if t.Type == TypeString {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: want a string", command.ErrTypeMismatch)
		}
		if len(s) > 2*t.Length {
			return nil, fmt.Errorf("%w: %d bytes do not fit %d registers", command.ErrOutOfRange, len(s), t.Length)
		}
		b := make([]byte, 2*t.Length)
		copy(b, s)
		if swapBytes {
			for i := 0; i+1 < len(b); i += 2 {
				b[i], b[i+1] = b[i+1], b[i]
			}
		}
		return b, nil
	}
	if t.Bit != nil {
		var on bool
		switch x := v.(type) {
		case bool:
			on = x
		case uint64:
			on = x != 0
			if x > 1 {
				return nil, fmt.Errorf("%w: a bit is 0 or 1, got %d", command.ErrOutOfRange, x)
			}
		default:
			return nil, fmt.Errorf("%w: want true or false for a bit", command.ErrTypeMismatch)
		}
		mask := uint16(1) << (uint(*t.Bit) & 15)
		if on {
			cur |= mask
		} else {
			cur &^= mask
		}
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], cur)
		if swapBytes {
			b[0], b[1] = b[1], b[0]
		}
		return b[:], nil
	}
	n := t.Registers()
	if n < 1 || n > 4 {
		return nil, fmt.Errorf("tag %q: type %s cannot be written", t.Name, t.Type)
	}
	var value [8]byte
	be := value[:2*n]
	if err := rawBytes(t, v, be); err != nil {
		return nil, err
	}
	wire := make([]byte, len(be))
	ordered(wire, be, swapBytes, swapWords) // its own inverse
	return wire, nil
}

// rawBytes writes the raw (unscaled) value of v for t big-endian into dst.
func rawBytes(t *Tag, v any, dst []byte) error {
	var i int64
	var u uint64
	var f float64
	exactInt, exactUint := false, false
	switch x := v.(type) {
	case int64:
		i, f, exactInt = x, float64(x), true
	case uint64:
		u, f, exactUint = x, float64(x), true
	case float64:
		f = x
	case bool:
		return fmt.Errorf("%w: want a number, got %v", command.ErrTypeMismatch, x)
	default:
		return fmt.Errorf("%w: want a number, got %T", command.ErrTypeMismatch, v)
	}
	if t.Scaled() {
		f = unscale(t, f)
		exactInt, exactUint = false, false
	}
	switch t.Type {
	case TypeFloat32:
		if math.Abs(f) > math.MaxFloat32 {
			return fmt.Errorf("%w: raw value %v does not fit float32", command.ErrOutOfRange, f)
		}
		binary.BigEndian.PutUint32(dst, math.Float32bits(float32(f)))
		return nil
	case TypeFloat64:
		binary.BigEndian.PutUint64(dst, math.Float64bits(f))
		return nil
	}
	lo, hi := intBounds(t.Type)
	signed := lo < 0
	switch {
	case exactInt && signed:
		if i < int64(lo) || (i > 0 && uint64(i) > hi) {
			return outOfRange(t, f)
		}
		u = uint64(i)
	case exactInt:
		if i < 0 || uint64(i) > hi {
			return outOfRange(t, f)
		}
		u = uint64(i)
	case exactUint:
		if u > hi {
			return outOfRange(t, f)
		}
	default:
		r := math.Round(f)
		if math.IsNaN(r) || r < float64(lo) || r > float64(hi) {
			return outOfRange(t, f)
		}
		if signed {
			u = uint64(int64(r))
		} else {
			u = uint64(r)
		}
	}
	switch len(dst) {
	case 2:
		binary.BigEndian.PutUint16(dst, uint16(u))
	case 4:
		binary.BigEndian.PutUint32(dst, uint32(u))
	default:
		binary.BigEndian.PutUint64(dst, u)
	}
	return nil
}

func outOfRange(t *Tag, raw float64) error {
	return fmt.Errorf("%w: raw value %v does not fit %s", command.ErrOutOfRange, raw, t.Type)
}

// intBounds is the raw range of an integer tag type.
func intBounds(t DataType) (lo int64, hi uint64) {
	switch t {
	case TypeInt16:
		return math.MinInt16, math.MaxInt16
	case TypeUint16:
		return 0, math.MaxUint16
	case TypeInt32:
		return math.MinInt32, math.MaxInt32
	case TypeUint32:
		return 0, math.MaxUint32
	case TypeInt64:
		return math.MinInt64, math.MaxInt64
	}
	return 0, math.MaxUint64
}

// unscale inverts scaleFloat: raw = (value - offset) / scale, with a
// decimal scale such as 0.1 applied as a multiplication by its exact
// inverse (230.1 / 0.1 = 2300.9999999999995, 230.1 * 10 = 2301).
func unscale(t *Tag, v float64) float64 {
	v -= t.Offset
	if t.Scale == nil {
		return v
	}
	s := *t.Scale
	if inv := 1 / s; s < 1 && inv == math.Trunc(inv) && !math.IsInf(inv, 0) {
		return v * inv
	}
	return v / s
}
