package devsim

import (
	"encoding/binary"
	"time"
)

// Modbus exception codes devsim answers with.
const (
	ExcIllegalFunction    = 0x01
	ExcIllegalAddress     = 0x02
	ExcIllegalValue       = 0x03
	ExcGatewayNoResponse  = 0x0B // TCP: unit id not served here
	maxReadBits           = 2000
	maxReadRegisters      = 125
	maxWriteBits          = 0x7B0
	maxWriteRegisters     = 0x7B
	fcReadCoils           = 1
	fcReadDiscreteInputs  = 2
	fcReadHolding         = 3
	fcReadInput           = 4
	fcWriteSingleCoil     = 5
	fcWriteSingleRegister = 6
	fcWriteMultipleCoils  = 15
	fcWriteMultipleRegs   = 16
)

func exception(fc byte, code byte) []byte { return []byte{fc | 0x80, code} }

// handle executes one request PDU on unit u at time at and returns the
// response PDU (possibly an exception). Checks follow the order of the Modbus
// application protocol spec: function code (1), quantity and framing (3),
// address range (2).
func (u *unit) handle(pdu []byte, at time.Time) []byte {
	if len(pdu) == 0 {
		return nil
	}
	fc := pdu[0]
	switch fc {
	case fcReadCoils, fcReadDiscreteInputs, fcReadHolding, fcReadInput:
		if len(pdu) != 5 {
			return exception(fc, ExcIllegalValue)
		}
		addr := int(binary.BigEndian.Uint16(pdu[1:]))
		qty := int(binary.BigEndian.Uint16(pdu[3:]))
		limit := u.maxRegs
		if fc <= fcReadDiscreteInputs {
			limit = maxReadBits
		}
		if qty < 1 || qty > limit {
			return exception(fc, ExcIllegalValue)
		}
		ti := int(fc) - 1 // fc 1..4 are tCoil..tInput
		if addr+qty > 65536 || !u.mapped(ti, addr, qty) {
			return exception(fc, ExcIllegalAddress)
		}
		if fc <= fcReadDiscreteInputs {
			bits := make([]bool, qty)
			u.bits(bits, ti, addr, at)
			resp := make([]byte, 2+(qty+7)/8)
			resp[0], resp[1] = fc, byte((qty+7)/8)
			for i, b := range bits {
				if b {
					resp[2+i/8] |= 1 << (i % 8)
				}
			}
			return resp
		}
		regs := make([]uint16, qty)
		u.registers(regs, ti, addr, at)
		resp := make([]byte, 2+2*qty)
		resp[0], resp[1] = fc, byte(2*qty)
		for i, r := range regs {
			binary.BigEndian.PutUint16(resp[2+2*i:], r)
		}
		return resp

	case fcWriteSingleCoil, fcWriteSingleRegister:
		if len(pdu) != 5 {
			return exception(fc, ExcIllegalValue)
		}
		addr := int(binary.BigEndian.Uint16(pdu[1:]))
		val := binary.BigEndian.Uint16(pdu[3:])
		ti := tHolding
		if fc == fcWriteSingleCoil {
			ti = tCoil
			if val != 0xFF00 && val != 0x0000 {
				return exception(fc, ExcIllegalValue)
			}
			if val == 0xFF00 {
				val = 1
			}
		}
		if !u.mapped(ti, addr, 1) {
			return exception(fc, ExcIllegalAddress)
		}
		u.write(ti, addr, []uint16{val})
		return append([]byte(nil), pdu...) // the echo of the request

	case fcWriteMultipleCoils, fcWriteMultipleRegs:
		if len(pdu) < 6 {
			return exception(fc, ExcIllegalValue)
		}
		addr := int(binary.BigEndian.Uint16(pdu[1:]))
		qty := int(binary.BigEndian.Uint16(pdu[3:]))
		count := int(pdu[5])
		ti, limit, want := tHolding, maxWriteRegisters, 2*qty
		if fc == fcWriteMultipleCoils {
			ti, limit, want = tCoil, maxWriteBits, (qty+7)/8
		}
		if qty < 1 || qty > limit || count != want || len(pdu) != 6+count {
			return exception(fc, ExcIllegalValue)
		}
		if addr+qty > 65536 || !u.mapped(ti, addr, qty) {
			return exception(fc, ExcIllegalAddress)
		}
		vals := make([]uint16, qty)
		data := pdu[6:]
		for i := range vals {
			if fc == fcWriteMultipleCoils {
				if data[i/8]&(1<<(i%8)) != 0 {
					vals[i] = 1
				}
			} else {
				vals[i] = binary.BigEndian.Uint16(data[2*i:])
			}
		}
		u.write(ti, addr, vals)
		return append([]byte(nil), pdu[:5]...)
	}
	return exception(fc, ExcIllegalFunction)
}

// rtuRequestLen is the full length (address, PDU, CRC) of an RTU request
// frame that starts with b, 0 if more bytes are needed to know it, or -1 if
// the function code does not determine it (the frame then ends at a silence).
func rtuRequestLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case 1, 2, 3, 4, 5, 6, 8:
		return 8
	case 7, 11, 12, 17:
		return 4
	case 15, 16:
		if len(b) < 7 {
			return 0
		}
		return 9 + int(b[6])
	case 20, 21:
		if len(b) < 3 {
			return 0
		}
		return 5 + int(b[2])
	case 22:
		return 10
	case 23:
		if len(b) < 11 {
			return 0
		}
		return 13 + int(b[10])
	case 24:
		return 6
	}
	return -1
}
