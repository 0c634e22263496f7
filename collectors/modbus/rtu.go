package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	gbmodbus "github.com/goburrow/modbus"
	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// rtuOptions are the line settings of one serial port.
type rtuOptions struct {
	Port     string
	Baud     int
	DataBits int    // 5..8, default 8
	Parity   string // "N", "E" or "O"
	StopBits int    // 1 or 2
	Timeout  time.Duration
}

// rtuLine is a Modbus RTU master on one serial line. Frames are built and
// CRC-checked by goburrow/modbus's RTU packager; the port is opened with
// go.bug.st/serial (exclusive: TIOCEXCL plus an flock, since TIOCEXCL does
// not stop root). The port is opened lazily and reopened after it failed.
type rtuLine struct {
	opts     rtuOptions
	mode     serial.Mode
	charTime time.Duration // one character on the wire (start+data+parity+stop bits)
	silence  time.Duration // inter-frame gap: 3.5 characters, 1.75 ms above 19200 baud

	port   serial.Port
	lock   *os.File // holds the flock while the port is open
	pkg    *gbmodbus.RTUClientHandler
	lastIO time.Time
	buf    [256]byte
	req    [4]byte
}

// pollSlice bounds one blocking read so a cancelled context is noticed soon.
const pollSlice = 50 * time.Millisecond

// frameSlack is added to a frame's wire time once it has started: USB
// serial adapters deliver bytes in bursts (FTDI latency timer 16 ms).
const frameSlack = 50 * time.Millisecond

func newRTULine(o rtuOptions) (*rtuLine, error) {
	if o.Port == "" {
		return nil, errors.New("serial port path is empty")
	}
	if o.Baud <= 0 {
		return nil, fmt.Errorf("serial port %q: baud %d must be positive", o.Port, o.Baud)
	}
	if o.DataBits == 0 {
		o.DataBits = 8
	}
	if o.StopBits == 0 {
		o.StopBits = 1
	}
	if o.Parity == "" {
		o.Parity = "N"
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	mode := serial.Mode{BaudRate: o.Baud, DataBits: o.DataBits}
	parityBits := 0
	switch o.Parity {
	case "N", "n", "none":
		mode.Parity = serial.NoParity
	case "E", "e", "even":
		mode.Parity, parityBits = serial.EvenParity, 1
	case "O", "o", "odd":
		mode.Parity, parityBits = serial.OddParity, 1
	default:
		return nil, fmt.Errorf("serial port %q: unknown parity %q (valid: N, E, O)", o.Port, o.Parity)
	}
	if o.DataBits < 5 || o.DataBits > 8 {
		return nil, fmt.Errorf("serial port %q: data bits %d (valid: 5, 6, 7, 8)", o.Port, o.DataBits)
	}
	switch o.StopBits {
	case 1:
		mode.StopBits = serial.OneStopBit
	case 2:
		mode.StopBits = serial.TwoStopBits
	default:
		return nil, fmt.Errorf("serial port %q: stop bits %d (valid: 1, 2)", o.Port, o.StopBits)
	}
	bits := 1 + o.DataBits + parityBits + o.StopBits
	l := &rtuLine{
		opts:     o,
		mode:     mode,
		charTime: time.Duration(bits) * time.Second / time.Duration(o.Baud),
		pkg:      gbmodbus.NewRTUClientHandler(""),
	}
	l.silence = l.charTime * 7 / 2
	if o.Baud > 19200 {
		l.silence = 1750 * time.Microsecond
	}
	return l, nil
}

func (l *rtuLine) linkErr(err error) error {
	return &LinkError{Link: fmt.Sprintf("serial port %q", l.opts.Port), Err: err}
}

// open opens the port if it is not open. An error is a *LinkError.
func (l *rtuLine) open() error {
	if l.port != nil {
		return nil
	}
	lock, err := os.OpenFile(l.opts.Port, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return l.linkErr(errors.Unwrap(err))
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return l.linkErr(errors.New("port busy: locked by another process"))
		}
		return l.linkErr(fmt.Errorf("lock: %w", err))
	}
	mode := l.mode
	p, err := serial.Open(l.opts.Port, &mode)
	if err != nil {
		lock.Close()
		return l.linkErr(err)
	}
	// serial.Open sets TIOCEXCL; the flock above is what keeps the port
	// ours, and the kernel releases it when the process dies. TIOCEXCL is
	// not released by a kill -9 when the tty outlives the process (a pty
	// slave lives while its master is open), and every later open without
	// CAP_SYS_ADMIN, such as the restarted collector's in its container,
	// would then fail with EBUSY until the line is recreated. Best effort:
	// a driver refusing TIOCNXCL keeps the old behaviour.
	_ = unix.IoctlSetInt(int(lock.Fd()), unix.TIOCNXCL, 0)
	l.port, l.lock = p, lock
	l.lastIO = time.Now()
	return nil
}

// drop closes a failed port; the next Read reopens it.
func (l *rtuLine) drop() {
	if l.port != nil {
		l.port.Close()
		l.port = nil
	}
	if l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
}

// Close closes the port.
func (l *rtuLine) Close() error {
	l.drop()
	return nil
}

// Read implements Transport.
func (l *rtuLine) Read(ctx context.Context, unit, fn byte, addr, qty uint16) ([]byte, error) {
	if err := checkQuantity(fn, qty); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(l.req[0:], addr)
	binary.BigEndian.PutUint16(l.req[2:], qty)
	frame, err := l.transact(ctx, unit, fn, l.req[:], 3+expectedDataLen(fn, qty)+2, true)
	if err != nil {
		return nil, err
	}
	return frame[3 : len(frame)-2], nil
}

// Write implements Transport: the answer to a write (functions 5, 6, 15,
// 16) echoes the first four bytes of its request data.
func (l *rtuLine) Write(ctx context.Context, unit, fn byte, data []byte) error {
	if err := checkWrite(fn, data); err != nil {
		return err
	}
	frame, err := l.transact(ctx, unit, fn, data, 8, false)
	if err != nil {
		return err
	}
	if !bytes.Equal(frame[2:6], data[:4]) {
		return &FrameError{Unit: unit, Reason: fmt.Sprintf("write answer % x does not echo the request % x", frame[2:6], data[:4])}
	}
	return nil
}

// transact sends one request (unit, function, data) and returns the whole
// checked answer frame (want bytes), valid until the next call. With
// counted, the answer carries a byte count (reads).
func (l *rtuLine) transact(ctx context.Context, unit, fn byte, data []byte, want int, counted bool) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	// Keep the inter-frame silence after whatever was last on the line.
	if wait := time.Until(l.lastIO.Add(l.silence)); wait > 0 {
		time.Sleep(wait)
	}
	// Anything waiting now is a late answer to an earlier request.
	if err := l.port.ResetInputBuffer(); err != nil {
		l.drop()
		return nil, l.linkErr(err)
	}
	l.pkg.SlaveId = unit
	adu, err := l.pkg.Encode(&gbmodbus.ProtocolDataUnit{FunctionCode: fn, Data: data})
	if err != nil {
		return nil, err
	}
	if _, err := l.port.Write(adu); err != nil {
		l.drop()
		return nil, l.linkErr(err)
	}
	// The answer cannot start before the request has left the wire.
	deadline := time.Now().Add(time.Duration(len(adu))*l.charTime + l.opts.Timeout)
	n, err := l.readFrame(ctx, fn, want, deadline)
	l.lastIO = time.Now()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ErrTimeout
	}
	frame := l.buf[:n]
	if err := l.checkFrame(adu, frame, unit, fn, want, counted); err != nil {
		var ex *ExceptionError
		if !errors.As(err, &ex) {
			if rerr := l.resync(ctx); rerr != nil {
				return nil, rerr
			}
		}
		return nil, err
	}
	return frame, nil
}

// readFrame reads one response into l.buf until it is complete (want bytes,
// or 5 for an exception) or the deadline passes. It returns the bytes read.
// The timeout runs until the answer starts; once it does, the deadline is
// extended to the frame's wire time (a 125-register answer takes 2.3 s at
// 1200 baud) plus slack for USB adapters' latency timers.
func (l *rtuLine) readFrame(ctx context.Context, fn byte, want int, deadline time.Time) (int, error) {
	n, end := 0, 5 // the first 5 bytes tell an exception from a normal answer
	if want < end {
		end = want
	}
	for n < end {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return n, nil
		}
		if err := l.port.SetReadTimeout(min(left, pollSlice)); err != nil {
			l.drop()
			return n, l.linkErr(err)
		}
		m, err := l.port.Read(l.buf[n:end])
		if err != nil {
			l.drop()
			return n, l.linkErr(err)
		}
		if n == 0 && m > 0 {
			if d := time.Now().Add(time.Duration(want)*l.charTime + frameSlack); d.After(deadline) {
				deadline = d
			}
		}
		n += m
		if n >= 2 && end == 5 && n <= 5 {
			if l.buf[1] == fn|0x80 {
				end = 5
			} else {
				end = want
			}
		}
	}
	return n, nil
}

// check verifies a complete or short answer to a read.
func (l *rtuLine) check(adu, frame []byte, unit, fn byte, want int) error {
	return l.checkFrame(adu, frame, unit, fn, want, true)
}

// checkFrame verifies a complete or short frame; counted: its third byte
// is a byte count (reads), else a write's echo follows the function.
func (l *rtuLine) checkFrame(adu, frame []byte, unit, fn byte, want int, counted bool) error {
	n := len(frame)
	if n >= 2 && frame[1] == fn|0x80 && n == 5 {
		if err := l.pkg.Verify(adu, frame); err != nil {
			return &FrameError{Unit: unit, Reason: err.Error()}
		}
		if _, err := l.pkg.Decode(frame); err != nil {
			return &FrameError{Unit: unit, Reason: "bad crc"}
		}
		return &ExceptionError{Function: fn, Code: frame[2]}
	}
	if n < want {
		return &FrameError{Unit: unit, Reason: fmt.Sprintf("short frame: %d of %d bytes", n, want)}
	}
	if n > want {
		return &FrameError{Unit: unit, Reason: fmt.Sprintf("frame of %d bytes, want %d", n, want)}
	}
	if err := l.pkg.Verify(adu, frame); err != nil {
		return &FrameError{Unit: unit, Reason: fmt.Sprintf("answer from unit %d", frame[0])}
	}
	pdu, err := l.pkg.Decode(frame)
	if err != nil {
		return &FrameError{Unit: unit, Reason: "bad crc"}
	}
	if pdu.FunctionCode != fn {
		return &FrameError{Unit: unit, Reason: fmt.Sprintf("function %d in answer to %d", pdu.FunctionCode, fn)}
	}
	if counted && int(frame[2]) != want-5 {
		return &FrameError{Unit: unit, Reason: fmt.Sprintf("byte count %d, want %d", frame[2], want-5)}
	}
	return nil
}

// resync discards the rest of a bad frame: it reads until the line has been
// quiet for an inter-frame silence (bounded, in case something babbles), then
// flushes the input so the next request starts clean.
func (l *rtuLine) resync(ctx context.Context) error {
	quiet := max(l.silence, 2*time.Millisecond)
	limit := time.Now().Add(300*l.charTime + l.opts.Timeout)
	var junk [256]byte
	for time.Now().Before(limit) && ctx.Err() == nil {
		if err := l.port.SetReadTimeout(quiet); err != nil {
			l.drop()
			return l.linkErr(err)
		}
		m, err := l.port.Read(junk[:])
		if err != nil {
			l.drop()
			return l.linkErr(err)
		}
		if m == 0 {
			break
		}
	}
	if err := l.port.ResetInputBuffer(); err != nil {
		l.drop()
		return l.linkErr(err)
	}
	l.lastIO = time.Now()
	return nil
}
