package devsim

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sync/errgroup"
)

func listenTCP(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// listen opens Config.TCP, or the TCPHosts addresses from it on one port.
// On a failure every listener opened is closed again.
func (m *Modbus) listen(ctx context.Context) ([]net.Listener, error) {
	first, err := listenTCP(ctx, m.cfg.TCP)
	if err != nil {
		return nil, fmt.Errorf("devsim modbus: listen tcp %q: %w", m.cfg.TCP, err)
	}
	lns := []net.Listener{first}
	if m.cfg.TCPHosts <= 1 {
		return lns, nil
	}
	hosts, err := hostRange(m.cfg.TCP, m.cfg.TCPHosts)
	if err != nil {
		first.Close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(first.Addr().String())
	for _, h := range hosts[1:] {
		addr := net.JoinHostPort(h, port)
		ln, err := listenTCP(ctx, addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("devsim modbus: listen tcp %q: %w", addr, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// HostRange lists the n IPv4 addresses a simulator with TCPHosts n serves
// from the host of hostport: consecutive addresses leaving out those whose
// last byte is 0 or 255.
func HostRange(hostport string, n int) ([]string, error) { return hostRange(hostport, n) }

func hostRange(hostport string, n int) ([]string, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("tcp address %q: %w", hostport, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() {
		return nil, fmt.Errorf("tcp address %q: several hosts need an IPv4 address such as 127.0.1.1", hostport)
	}
	out := make([]string, 0, n)
	for a := ip; len(out) < n; a = a.Next() {
		if !a.IsValid() || (a.As4()[0] != ip.As4()[0]) {
			return nil, fmt.Errorf("tcp address %q: %d hosts run past %d.255.255.255", hostport, n, ip.As4()[0])
		}
		if last := a.As4()[3]; (last == 0 || last == 255) && len(out) > 0 {
			continue
		}
		out = append(out, a.String())
	}
	return out, nil
}

// serveTCP accepts connections until ctx is done; each connection is served
// by its own goroutine, requests on one connection in order.
func (m *Modbus) serveTCP(ctx context.Context, ln net.Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			ln.Close()
			g.Wait()
			return err
		}
		g.Go(func() error {
			stopConn := context.AfterFunc(ctx, func() { c.Close() })
			defer stopConn()
			defer c.Close()
			m.serveConn(ctx, c)
			return nil
		})
	}
	return g.Wait()
}

// serveConn reads MBAP frames from c and answers them. A malformed header
// (protocol id not 0, length out of 2..254) closes the connection, as the
// stream cannot be resynchronised.
func (m *Modbus) serveConn(ctx context.Context, c net.Conn) {
	r := bufio.NewReader(c)
	var hdr [7]byte
	pdu := make([]byte, 254)
	out := make([]byte, 0, 7+254)
	log := m.log.With("remote", c.RemoteAddr().String())
	log.Debug("modbus tcp connection")
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Debug("modbus tcp read", "err", err)
			}
			return
		}
		recv := time.Now()
		tid := binary.BigEndian.Uint16(hdr[0:])
		proto := binary.BigEndian.Uint16(hdr[2:])
		length := int(binary.BigEndian.Uint16(hdr[4:]))
		id := hdr[6]
		if proto != 0 || length < 2 || length > 254 {
			m.counters.badFrames.Add(1)
			log.Warn("modbus tcp malformed header, closing", "protocol", proto, "length", length)
			return
		}
		req := pdu[:length-1]
		if _, err := io.ReadFull(r, req); err != nil {
			return
		}
		resp, fault, ok := m.respondTCP(id, req)
		if m.wire != nil {
			// RTU size of the same frames: unit id + PDU + CRC.
			respLen := 0
			if ok {
				respLen = len(resp) + 3
			}
			if sleepUntil(ctx, m.wire.transact(recv, len(req)+3, respLen)) != nil {
				return
			}
		}
		if !ok {
			continue
		}
		switch fault {
		case FaultBadCRC:
			tid++
		case FaultWrongUnit:
			id = wrongUnit(id)
		case FaultShortFrame:
			resp = resp[:len(resp)/2]
		}
		out = binary.BigEndian.AppendUint16(out[:0], tid)
		out = binary.BigEndian.AppendUint16(out, 0)
		out = binary.BigEndian.AppendUint16(out, uint16(len(resp)+1))
		out = append(out, id)
		out = append(out, resp...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// respondTCP is respond for Modbus TCP: an unknown unit id gets exception
// 0x0B (gateway target failed to respond), as a TCP-to-RTU gateway answers;
// with a single unit, ids 0 and 255 (the "this device" ids of Modbus TCP)
// address it.
func (m *Modbus) respondTCP(id uint8, pdu []byte) ([]byte, FaultKind, bool) {
	if (id == 0 || id == 255) && len(m.ids) == 1 {
		id = m.ids[0]
	}
	if m.units[id] == nil {
		m.counters.otherUnit.Add(1)
		if len(pdu) == 0 {
			return nil, FaultNone, false
		}
		return exception(pdu[0], ExcGatewayNoResponse), FaultNone, true
	}
	return m.respond(id, pdu)
}
