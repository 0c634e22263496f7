package devsim

import (
	"context"
	"fmt"
	"time"

	"go.bug.st/serial"
)

// partialFrameTimeout is how long an incomplete request of known length may
// wait for its remaining bytes.
const partialFrameTimeout = 20 * time.Millisecond

// serialPort is what the RTU loop needs of a serial line.
type serialPort interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadTimeout(t time.Duration) error
	Close() error
}

func (m *Modbus) openSerial() (serialPort, error) {
	s := m.cfg.Serial
	mode := &serial.Mode{BaudRate: s.Baud, DataBits: s.DataBits, StopBits: serial.OneStopBit}
	if s.StopBits == 2 {
		mode.StopBits = serial.TwoStopBits
	}
	switch s.Parity {
	case "E":
		mode.Parity = serial.EvenParity
	case "O":
		mode.Parity = serial.OddParity
	default:
		mode.Parity = serial.NoParity
	}
	// go.bug.st/serial sets raw mode and takes TIOCEXCL; it works on real
	// UARTs, USB adapters and socat ptys alike.
	return serial.Open(m.cfg.RTU, mode)
}

// serveSerial runs the RTU loop on p; when the line fails (a USB adapter
// unplugged, the pty's socat gone) it reopens the device every second until
// ctx is done.
func (m *Modbus) serveSerial(ctx context.Context, p serialPort) error {
	for {
		stop := context.AfterFunc(ctx, func() { p.Close() })
		err := m.serveRTU(ctx, p)
		stop()
		p.Close()
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("modbus rtu line failed, reopening", "port", m.cfg.RTU, "err", err)
		for {
			if sleepUntil(ctx, time.Now().Add(time.Second)) != nil {
				return nil
			}
			if p, err = m.openSerial(); err == nil {
				m.log.Info("modbus rtu line reopened", "port", m.cfg.RTU)
				break
			}
		}
	}
}

// serveRTU reads RTU frames from p and answers those addressed to our units.
//
// Frame detection: a request ends when its function code's length is
// reached (the usual case, and the only reliable one on a pty, where timing
// means nothing) or at a silence of 3.5 characters (function codes whose
// length is unknown). A frame with a bad CRC is dropped together with
// everything up to the next silence, which is how a slave resynchronises on a
// bus; a known-length frame still incomplete after partialFrameTimeout is
// dropped too.
func (m *Modbus) serveRTU(ctx context.Context, p serialPort) error {
	buf := make([]byte, 0, 512)
	tmp := make([]byte, 512)
	discard := false
	for {
		timeout := m.silence
		switch {
		case discard:
		case len(buf) == 0:
			timeout = serial.NoTimeout // idle: block until the next byte
		case rtuRequestLen(buf) >= 0:
			// A known-length request is still incomplete: USB serial
			// adapters deliver bytes in bursts (FTDI: every 16 ms), so a
			// gap inside a frame is tolerated up to partialFrameTimeout.
			timeout = max(m.silence, partialFrameTimeout)
		}
		if err := p.SetReadTimeout(timeout); err != nil {
			return err
		}
		n, err := p.Read(tmp)
		if err != nil {
			return err
		}
		now := time.Now()
		if n == 0 { // silence: whatever is buffered is one complete frame
			if !discard && len(buf) > 0 {
				if len(buf) >= 4 && crcOK(buf) {
					if err := m.rtuFrame(ctx, p, buf, now); err != nil {
						return err
					}
				} else {
					m.counters.badFrames.Add(1)
				}
			}
			buf, discard = buf[:0], false
			continue
		}
		if discard {
			continue
		}
		buf = append(buf, tmp[:n]...)
		for len(buf) > 0 {
			need := rtuRequestLen(buf)
			if need <= 0 || len(buf) < need {
				break // more bytes, or the silence, will tell
			}
			if !crcOK(buf[:need]) {
				m.counters.badFrames.Add(1)
				buf, discard = buf[:0], true
				break
			}
			if err := m.rtuFrame(ctx, p, buf[:need], now); err != nil {
				return err
			}
			buf = append(buf[:0], buf[need:]...)
		}
		if len(buf) > 256 { // longer than any RTU frame
			m.counters.badFrames.Add(1)
			buf, discard = buf[:0], true
		}
	}
}

// rtuFrame answers one CRC-checked frame received at recv.
func (m *Modbus) rtuFrame(ctx context.Context, p serialPort, frame []byte, recv time.Time) error {
	id := frame[0]
	pdu := frame[1 : len(frame)-2]
	var resp []byte
	var fault FaultKind
	ok := false
	if id == 0 {
		// Broadcast: every unit executes it (writes), nobody answers.
		m.counters.broadcasts.Add(1)
		for _, uid := range m.ids {
			m.units[uid].handle(pdu, m.now())
		}
	} else {
		resp, fault, ok = m.respond(id, pdu)
	}
	var out []byte
	if ok {
		out = make([]byte, 0, len(resp)+3)
		rid := id
		if fault == FaultWrongUnit {
			rid = wrongUnit(id)
		}
		out = append(out, rid)
		out = append(out, resp...)
		out = appendCRC(out)
		switch fault {
		case FaultBadCRC:
			out[len(out)-1] ^= 0xA5
		case FaultShortFrame:
			out = out[:len(out)/2]
		}
	}
	if m.wire != nil {
		respLen := 0
		if ok {
			respLen = len(resp) + 3 // on the wire as it should have been
		}
		if err := sleepUntil(ctx, m.wire.transact(recv, len(frame), respLen)); err != nil {
			return err
		}
	}
	if !ok {
		return nil
	}
	if _, err := p.Write(out); err != nil {
		return fmt.Errorf("write response to unit %d: %w", id, err)
	}
	return nil
}

// crcOK checks the Modbus CRC-16 (poly 0xA001, init 0xFFFF, low byte first)
// at the end of frame.
func crcOK(frame []byte) bool {
	if len(frame) < 3 {
		return false
	}
	n := len(frame) - 2
	c := crc16(frame[:n])
	return frame[n] == byte(c) && frame[n+1] == byte(c>>8)
}

func appendCRC(b []byte) []byte {
	c := crc16(b)
	return append(b, byte(c), byte(c>>8))
}

func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, x := range b {
		crc ^= uint16(x)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}
