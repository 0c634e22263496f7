package modbus

import (
	"context"
	"errors"
	"fmt"
)

// Modbus function codes used by the collector.
const (
	fnReadCoils              byte = 0x01
	fnReadDiscreteInputs     byte = 0x02
	fnReadHoldingRegisters   byte = 0x03
	fnReadInputRegisters     byte = 0x04
	fnWriteSingleCoil        byte = 0x05
	fnWriteSingleRegister    byte = 0x06
	fnWriteMultipleCoils     byte = 0x0F
	fnWriteMultipleRegisters byte = 0x10
)

// Transport sends one read request to one unit and returns the response's data
// bytes as they are on the wire (registers big-endian, bits packed LSB first),
// without function code or byte count. The returned slice is only valid until
// the next call. Write sends one write request (function 5, 6, 15 or 16)
// whose data follows the function code on the wire (address first) and
// checks that the answer echoes the data's first four bytes. A Transport is
// owned by one goroutine (its bus) and is not safe for concurrent use.
type Transport interface {
	Read(ctx context.Context, unit, fn byte, addr, qty uint16) ([]byte, error)
	Write(ctx context.Context, unit, fn byte, data []byte) error
	Close() error
}

// ErrTimeout is returned when a unit does not answer within the request
// timeout. Its text "timeout" goes into the payload's error field as it is.
var ErrTimeout = errors.New("timeout")

// ExceptionError is a Modbus exception response. Its text has the form
// "modbus exception 2: illegal data address".
type ExceptionError struct {
	Function byte
	Code     byte
}

func (e *ExceptionError) Error() string {
	return fmt.Sprintf("modbus exception %d: %s", e.Code, exceptionText(e.Code))
}

func exceptionText(code byte) string {
	switch code {
	case 1:
		return "illegal function"
	case 2:
		return "illegal data address"
	case 3:
		return "illegal data value"
	case 4:
		return "server device failure"
	case 5:
		return "acknowledge"
	case 6:
		return "server device busy"
	case 8:
		return "memory parity error"
	case 10:
		return "gateway path unavailable"
	case 11:
		return "gateway target device failed to respond"
	default:
		return "unknown exception"
	}
}

// FrameError is a response that could not be used: bad CRC, wrong unit id,
// wrong function, wrong length, short frame, wrong transaction id. The line
// or connection was resynchronised before it was returned.
type FrameError struct {
	Unit   byte
	Reason string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("garbage response from unit %d: %s", e.Unit, e.Reason)
}

// LinkError means the serial port or TCP connection itself failed (port
// vanished, connection refused or reset). Every device on the link is
// affected; the link is reopened on a later attempt.
type LinkError struct {
	Link string // "serial port \"/dev/ttyUSB0\"" or "tcp \"10.0.0.7:502\""
	Err  error
}

func (e *LinkError) Error() string { return e.Link + ": " + e.Err.Error() }
func (e *LinkError) Unwrap() error { return e.Err }

// isRetryable reports whether another attempt of the same request may help
// (the config's retries apply to timeouts only).
func isRetryable(err error) bool { return errors.Is(err, ErrTimeout) }

// expectedDataLen is the byte count a read response must carry.
func expectedDataLen(fn byte, qty uint16) int {
	switch fn {
	case fnReadCoils, fnReadDiscreteInputs:
		return (int(qty) + 7) / 8
	default:
		return int(qty) * 2
	}
}

// checkWrite enforces the shape of a write request's data: 4 bytes for
// functions 5 and 6; address, quantity, byte count and the values for 15
// and 16, within the protocol limits (1968 coils, 123 registers).
func checkWrite(fn byte, data []byte) error {
	switch fn {
	case fnWriteSingleCoil, fnWriteSingleRegister:
		if len(data) != 4 {
			return fmt.Errorf("write function %d: %d data bytes, want 4", fn, len(data))
		}
		return nil
	case fnWriteMultipleCoils, fnWriteMultipleRegisters:
		if len(data) < 6 {
			return fmt.Errorf("write function %d: %d data bytes, too short", fn, len(data))
		}
		qty := int(data[2])<<8 | int(data[3])
		want, limit := 2*qty, 123
		if fn == fnWriteMultipleCoils {
			want, limit = (qty+7)/8, 1968
		}
		if qty < 1 || qty > limit || int(data[4]) != want || len(data) != 5+want {
			return fmt.Errorf("write function %d: quantity %d with %d value bytes is malformed", fn, qty, len(data)-5)
		}
		return nil
	}
	return fmt.Errorf("function %d is not a write function", fn)
}

// checkQuantity enforces the protocol limits of a read request.
func checkQuantity(fn byte, qty uint16) error {
	limit := uint16(125)
	if fn == fnReadCoils || fn == fnReadDiscreteInputs {
		limit = 2000
	}
	if qty < 1 || qty > limit {
		return fmt.Errorf("read quantity %d out of range 1..%d for function %d", qty, limit, fn)
	}
	return nil
}
