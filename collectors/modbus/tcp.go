package modbus

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// tcpConn is a Modbus TCP master on one connection to one address (MBAP
// framing). It dials lazily, checks transaction, protocol and unit ids, skips
// stale answers to requests that timed out earlier, and drops the connection
// when it breaks or desynchronises; the next Read dials again.
type tcpConn struct {
	addr    string
	timeout time.Duration
	dialer  net.Dialer

	conn net.Conn
	rd   *bufio.Reader // on conn: header and body of an answer in one read
	used bool          // conn has carried at least one good exchange
	tid  uint16
	// stale holds the transaction ids of requests on this connection that
	// got no proper answer (timeout, garbage): a late answer to one of them
	// is skipped; any other unexpected id is garbage.
	stale []uint16
	// timeouts counts timeouts in a row on conn: after maxTimeouts the
	// connection is presumed half-open (peer rebooted without a reset)
	// and the next request dials again.
	timeouts int
	req      [8 + 253]byte // MBAP header, function, request data
	buf      [7 + 253]byte
	hdr      [7]byte
}

// maxTimeouts is how many timeouts in a row drop a TCP connection.
const maxTimeouts = 3

func newTCPConn(addr string, timeout time.Duration) (*tcpConn, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("tcp address %q: %w", addr, err)
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	return &tcpConn{addr: addr, timeout: timeout, dialer: net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}}, nil
}

func (c *tcpConn) linkErr(err error) error {
	return &LinkError{Link: fmt.Sprintf("tcp %q", c.addr), Err: err}
}

func (c *tcpConn) drop() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	c.stale = c.stale[:0]
	c.timeouts = 0
}

// remember notes a transaction id whose answer may still arrive (the last 8).
func (c *tcpConn) remember(tid uint16) {
	if len(c.stale) == 8 {
		c.stale = append(c.stale[:0], c.stale[1:]...)
	}
	c.stale = append(c.stale, tid)
}

// forget reports whether tid was remembered, and forgets it.
func (c *tcpConn) forget(tid uint16) bool {
	for i, t := range c.stale {
		if t == tid {
			c.stale = append(c.stale[:i], c.stale[i+1:]...)
			return true
		}
	}
	return false
}

// Close closes the connection.
func (c *tcpConn) Close() error {
	c.drop()
	return nil
}

// Read implements Transport. A connection that was idle and turns out to be
// closed by the peer (common with PLCs) is redialled once in the same call.
func (c *tcpConn) Read(ctx context.Context, unit, fn byte, addr, qty uint16) ([]byte, error) {
	if err := checkQuantity(fn, qty); err != nil {
		return nil, err
	}
	var req [4]byte
	binary.BigEndian.PutUint16(req[0:], addr)
	binary.BigEndian.PutUint16(req[2:], qty)
	want := expectedDataLen(fn, qty)
	return c.retry(ctx, unit, fn, req[:], func(body []byte) error {
		if int(body[1]) != want || len(body) != 2+want {
			return &FrameError{Unit: unit, Reason: fmt.Sprintf("byte count %d (frame %d bytes), want %d", body[1], len(body), want)}
		}
		return nil
	}, 1)
}

// Write implements Transport; like Read, it redials a connection found
// closed once (the writes of the collector are idempotent).
func (c *tcpConn) Write(ctx context.Context, unit, fn byte, data []byte) error {
	if err := checkWrite(fn, data); err != nil {
		return err
	}
	_, err := c.retry(ctx, unit, fn, data, func(body []byte) error {
		if len(body) != 5 || !bytes.Equal(body[1:5], data[:4]) {
			return &FrameError{Unit: unit, Reason: fmt.Sprintf("write answer % x does not echo the request % x", body[1:], data[:4])}
		}
		return nil
	}, 1)
	return err
}

// retry runs exchange and, when a connection that had worked before turns
// out broken, once more on a new one. skip is how many bytes of the
// answer's PDU after the function precede the data returned.
func (c *tcpConn) retry(ctx context.Context, unit, fn byte, req []byte, check func(body []byte) error, skip int) ([]byte, error) {
	data, err, fresh := c.exchange(ctx, unit, fn, req, check, skip)
	var le *LinkError
	if err != nil && !fresh && errors.As(err, &le) && ctx.Err() == nil {
		data, err, _ = c.exchange(ctx, unit, fn, req, check, skip)
	}
	return data, err
}

// exchange sends one request whose PDU is fn and req, and returns the
// answer's PDU after the function and skip bytes, once check accepted the
// whole PDU (function included). fresh reports a connection dialled for
// this exchange.
func (c *tcpConn) exchange(ctx context.Context, unit, fn byte, req []byte, check func(body []byte) error, skip int) (data []byte, err error, fresh bool) {
	if err := ctx.Err(); err != nil {
		return nil, err, true
	}
	if c.conn == nil {
		dctx, cancel := context.WithTimeout(ctx, c.timeout)
		conn, err := c.dialer.DialContext(dctx, "tcp", c.addr)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err(), true
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, c.linkErr(errors.New("connect timeout")), true
			}
			var oe *net.OpError
			if errors.As(err, &oe) {
				err = oe.Err
			}
			return nil, c.linkErr(err), true
		}
		c.conn, c.used = conn, false
		if c.rd == nil {
			c.rd = bufio.NewReaderSize(conn, 512)
		} else {
			c.rd.Reset(conn)
		}
	}
	fresh = !c.used
	// A cancelled context interrupts a blocked read through the deadline.
	conn := c.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.tid++
	tid := c.tid
	adu := c.req[:8+len(req)]
	binary.BigEndian.PutUint16(adu[0:], tid)
	binary.BigEndian.PutUint16(adu[2:], 0)
	binary.BigEndian.PutUint16(adu[4:], uint16(2+len(req)))
	adu[6] = unit
	adu[7] = fn
	copy(adu[8:], req)
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		c.drop()
		return nil, c.linkErr(err), fresh
	}
	if _, err := c.conn.Write(adu); err != nil {
		return nil, c.ioErr(ctx, err), fresh
	}
	for {
		if n, err := io.ReadFull(c.rd, c.hdr[:]); err != nil {
			if n > 0 {
				c.drop() // half a frame read: the stream is out of step
			}
			return nil, c.ioErr(ctx, err), fresh
		}
		rtid := binary.BigEndian.Uint16(c.hdr[0:])
		length := int(binary.BigEndian.Uint16(c.hdr[4:]))
		if binary.BigEndian.Uint16(c.hdr[2:]) != 0 || length < 2 || length > 254 {
			// Framing is lost on a stream: only a new connection resynchronises.
			c.drop()
			return nil, &FrameError{Unit: unit, Reason: fmt.Sprintf("bad MBAP header % x", c.hdr[:])}, fresh
		}
		body := c.buf[:length-1]
		if _, err := io.ReadFull(c.rd, body); err != nil {
			c.drop() // half a frame read: the stream is out of step
			return nil, c.ioErr(ctx, err), fresh
		}
		if rtid != tid {
			if c.forget(rtid) {
				continue // a late answer to an earlier request
			}
			c.remember(tid)
			return nil, &FrameError{Unit: unit, Reason: fmt.Sprintf("transaction id %d, want %d", rtid, tid)}, fresh
		}
		c.used, c.timeouts = true, 0
		if c.hdr[6] != unit {
			return nil, &FrameError{Unit: unit, Reason: fmt.Sprintf("answer from unit %d", c.hdr[6])}, fresh
		}
		if len(body) < 2 {
			return nil, &FrameError{Unit: unit, Reason: fmt.Sprintf("pdu of %d bytes", len(body))}, fresh
		}
		switch {
		case body[0] == fn|0x80 && len(body) == 2:
			return nil, &ExceptionError{Function: fn, Code: body[1]}, fresh
		case body[0] != fn:
			return nil, &FrameError{Unit: unit, Reason: fmt.Sprintf("function %d in answer to %d", body[0], fn)}, fresh
		}
		if err := check(body); err != nil {
			return nil, err, fresh
		}
		return body[1+skip:], nil, fresh
	}
}

// ioErr classifies a read/write failure: a deadline is a timeout (the
// connection stays, later stale answers are skipped by transaction id);
// anything else breaks the connection.
func (c *tcpConn) ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		c.drop()
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.remember(c.tid)
		if c.timeouts++; c.timeouts >= maxTimeouts {
			c.drop()
		}
		return ErrTimeout
	}
	c.drop()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return c.linkErr(errors.New("connection closed by peer"))
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return c.linkErr(err)
}
