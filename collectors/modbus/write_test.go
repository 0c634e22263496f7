package modbus

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/command"
)

// Write makes the fake units writable: function 5/15 set coils, 6/16 set
// holding registers; a missing address gets exception 2.
func (f *fakeTransport) Write(ctx context.Context, unit, fn byte, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkWrite(fn, data); err != nil {
		return err
	}
	addr := binary.BigEndian.Uint16(data)
	qty := uint16(1)
	if fn == fnWriteMultipleCoils || fn == fnWriteMultipleRegisters {
		qty = binary.BigEndian.Uint16(data[2:])
	}
	f.calls = append(f.calls, fakeCall{f.clk.Now(), unit, fn, addr, qty})
	u := f.units[unit]
	if u == nil || u.silent {
		f.clk.advance(f.timeout)
		return ErrTimeout
	}
	f.clk.advance(f.cost)
	if u.exception != 0 {
		return &ExceptionError{Function: fn, Code: u.exception}
	}
	table := fnReadHoldingRegisters
	if fn == fnWriteSingleCoil || fn == fnWriteMultipleCoils {
		table = fnReadCoils
	}
	for i := uint16(0); i < qty; i++ {
		if _, ok := u.regs[table][addr+i]; !ok {
			return &ExceptionError{Function: fn, Code: 2}
		}
	}
	for i := uint16(0); i < qty; i++ {
		var v uint16
		switch fn {
		case fnWriteSingleCoil:
			if data[2] == 0xFF {
				v = 1
			}
		case fnWriteSingleRegister:
			v = binary.BigEndian.Uint16(data[2:])
		case fnWriteMultipleCoils:
			v = uint16(data[5+i/8] >> (i % 8) & 1)
		case fnWriteMultipleRegisters:
			v = binary.BigEndian.Uint16(data[5+2*i:])
		}
		u.regs[table][addr+i] = v
	}
	return nil
}

func sc(v float64) *float64 { return &v }
func bit(n int) *int        { return &n }

func TestEncodeWrite(t *testing.T) {
	tests := []struct {
		name     string
		tag      Tag
		value    any
		multiple bool
		cur      uint16
		fn       byte
		data     string // hex
		err      error
	}{
		{"coil on", Tag{Table: TableCoil, Address: 10, Type: TypeBool}, true, false, 0, 5, "000aff00", nil},
		{"coil off", Tag{Table: TableCoil, Address: 10, Type: TypeBool}, false, false, 0, 5, "000a0000", nil},
		{"coil multiple", Tag{Table: TableCoil, Address: 10, Type: TypeBool}, true, true, 0, 15, "000a00010101", nil},
		{"int16 negative", Tag{Table: TableHolding, Address: 1, Type: TypeInt16, ByteOrder: "ABCD"}, int64(-2), false, 0, 6, "0001fffe", nil},
		{"uint16 multiple", Tag{Table: TableHolding, Address: 1, Type: TypeUint16, ByteOrder: "ABCD"}, uint64(513), true, 0, 16, "00010001020201", nil},
		{"int16 low byte first", Tag{Table: TableHolding, Address: 1, Type: TypeInt16, ByteOrder: "BADC"}, int64(0x0102), false, 0, 6, "00010201", nil},
		// 42.5 / 0.1 = 425 as float32 0x43D48000; CDAB puts the low register first.
		{"float32 CDAB scaled", Tag{Table: TableHolding, Address: 100, Type: TypeFloat32, ByteOrder: "CDAB", Scale: sc(0.1)}, 42.5, false, 0, 16, "0064000204800043d4", nil},
		{"uint32 DCBA", Tag{Table: TableHolding, Address: 0, Type: TypeUint32, ByteOrder: "DCBA"}, uint64(0x01020304), false, 0, 16, "000000020404030201", nil},
		{"int32 scaled and offset", Tag{Table: TableHolding, Address: 0, Type: TypeInt32, ByteOrder: "ABCD", Scale: sc(0.01), Offset: -10}, 12.34, false, 0, 16, "0000000204000008ba", nil},
		{"float64", Tag{Table: TableHolding, Address: 0, Type: TypeFloat64, ByteOrder: "ABCD"}, 1.5, false, 0, 16, "00000004083ff8000000000000", nil},
		{"string padded", Tag{Table: TableHolding, Address: 200, Type: TypeString, Length: 3, ByteOrder: "ABCD"}, "abc", false, 0, 16, "00c8000306616263000000", nil},
		{"string too long", Tag{Table: TableHolding, Address: 200, Type: TypeString, Length: 1, ByteOrder: "ABCD"}, "abc", false, 0, 0, "", command.ErrOutOfRange},
		{"bit set", Tag{Table: TableHolding, Address: 7, Type: TypeBool, Bit: bit(3), ByteOrder: "ABCD"}, true, false, 0x0101, 6, "00070109", nil},
		{"bit clear", Tag{Table: TableHolding, Address: 7, Type: TypeBool, Bit: bit(0), ByteOrder: "ABCD"}, false, false, 0x0101, 6, "00070100", nil},
		{"uint16 raw out of range", Tag{Table: TableHolding, Address: 1, Type: TypeUint16, ByteOrder: "ABCD", Scale: sc(0.1)}, 7000.0, false, 0, 0, "", command.ErrOutOfRange},
		{"int16 raw rounds", Tag{Table: TableHolding, Address: 1, Type: TypeInt16, ByteOrder: "ABCD", Scale: sc(0.1)}, 230.1, false, 0, 6, "000108fd", nil},
		{"input register is read-only", Tag{Table: TableInput, Address: 1, Type: TypeInt16}, int64(1), false, 0, 0, "", command.ErrNotWritable},
		{"coil takes bool only", Tag{Table: TableCoil, Address: 1, Type: TypeBool}, 1.0, false, 0, 0, "", command.ErrTypeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, data, err := encodeWrite(&tt.tag, tt.value, tt.multiple, tt.cur)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fn != tt.fn || hex.EncodeToString(data) != tt.data {
				t.Fatalf("got fn %d data %x, want fn %d data %s", fn, data, tt.fn, tt.data)
			}
			if err := checkWrite(fn, data); err != nil {
				t.Fatalf("request would be refused by the transport: %v", err)
			}
		})
	}
}

// TestWriteDecodeRoundTrip checks that what encodeWrite puts in the
// registers decodes back to the value written, for every type and order.
func TestWriteDecodeRoundTrip(t *testing.T) {
	orders := []string{"ABCD", "DCBA", "BADC", "CDAB"}
	values := map[DataType][]any{
		TypeInt16:   {int64(-32768), int64(-1), int64(0), int64(32767)},
		TypeUint16:  {uint64(0), uint64(65535)},
		TypeInt32:   {int64(math.MinInt32), int64(-123456), int64(math.MaxInt32)},
		TypeUint32:  {uint64(0), uint64(math.MaxUint32)},
		TypeInt64:   {int64(math.MinInt64), int64(-9), int64(math.MaxInt64)},
		TypeUint64:  {uint64(math.MaxUint64), uint64(1)},
		TypeFloat32: {230.1, -0.5, 3.4e38},
		TypeFloat64: {math.Pi, -1e-300},
	}
	for typ, vs := range values {
		for _, order := range orders {
			tag := Tag{Name: "x", Table: TableHolding, Type: typ, ByteOrder: order}
			if tag.Registers() == 1 && order == ByteOrderCDAB {
				continue
			}
			for _, v := range vs {
				_, data, err := encodeWrite(&tag, v, true, 0)
				if err != nil {
					t.Fatalf("%s %s %v: %v", typ, order, v, err)
				}
				n := tag.Registers()
				got, err := Decode(&tag, Request{Table: TableHolding, Quantity: uint16(n)}, data[5:])
				if err != nil || got != v {
					t.Errorf("%s %s: wrote %#v, decodes to %#v (%v)", typ, order, v, got, err)
				}
			}
		}
	}
	scaled := Tag{Name: "e", Table: TableHolding, Type: TypeUint32, ByteOrder: "CDAB", Scale: sc(0.01)}
	for _, v := range []float64{0, 123.45, 42949672.95} {
		_, data, err := encodeWrite(&scaled, v, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := Decode(&scaled, Request{Table: TableHolding, Quantity: 2}, data[5:]); got != v {
			t.Errorf("scaled uint32: wrote %v, decodes to %v", v, got)
		}
	}
}

func TestPollerWrite(t *testing.T) {
	clk := newSimClock()
	regs := map[uint16]uint16{100: 0, 101: 0, 7: 0x0100, 20: 5}
	ft := &fakeTransport{clk: clk, cost: 10 * time.Millisecond, timeout: 500 * time.Millisecond,
		units: map[byte]*fakeUnit{
			1: {regs: map[byte]map[uint16]uint16{fnReadHoldingRegisters: regs, fnReadCoils: {10: 0}}},
			2: {silent: true},
		}}
	w := command.Limits{Writable: true}
	dev := Device{Name: "plc", UnitID: 1, Tags: []Tag{
		{Name: "setpoint", Table: TableHolding, Address: 100, Type: TypeFloat32, ByteOrder: "CDAB", Scale: sc(0.1), Limits: w},
		{Name: "run", Table: TableCoil, Address: 10, Type: TypeBool, Limits: w},
		{Name: "flag", Table: TableHolding, Address: 7, Type: TypeBool, Bit: bit(1), ByteOrder: "ABCD", Limits: w},
		{Name: "fixed", Table: TableHolding, Address: 20, Type: TypeUint16, ByteOrder: "ABCD"},
		{Name: "ghost", Table: TableHolding, Address: 30, Type: TypeUint16, ByteOrder: "ABCD", Limits: w},
	}}
	silent := Device{Name: "gone", UnitID: 2, Tags: []Tag{{Name: "v", Table: TableHolding, Address: 0, Type: TypeUint16, ByteOrder: "ABCD", Limits: w}}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sink := &recordSink{cancel: func() {}}
	cfg := simConfig(dev, silent)
	p, err := NewPoller(cfg, time.Second, sink, quietLog(),
		withClock(clk), withTransport(func(string) (Transport, error) { return ft, nil }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	h, err := command.NewHandler(cfg.Schema(), p, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	res := h.Do(ctx, "plc", []command.Request{
		{Tag: "setpoint", Value: 42.5},
		{Tag: "run", Value: true},
		{Tag: "flag", Value: true},
		{Tag: "fixed", Value: int64(1)},
		{Tag: "ghost", Value: int64(1)},
	})
	want := []struct {
		readBack any
		err      string
	}{{42.5, ""}, {true, ""}, {true, ""}, {nil, "not writable"}, {nil, "device exception 2: illegal data address"}}
	for i, r := range res {
		got := ""
		if r.Err != nil {
			got = r.Err.Error()
		}
		if r.ReadBack != want[i].readBack || !strings.HasPrefix(got, want[i].err) || (want[i].err == "" && got != "") {
			t.Errorf("write %s: read back %#v err %q, want %#v %q", r.Tag, r.ReadBack, got, want[i].readBack, want[i].err)
		}
	}
	// 425 as float32 is 0x43D48000: CDAB sends 0x8000 then 0x43D4.
	if regs[100] != 0x8000 || regs[101] != 0x43D4 {
		t.Errorf("setpoint registers %04x %04x, want 8000 43d4", regs[100], regs[101])
	}
	if regs[7] != 0x0102 {
		t.Errorf("flag register %04x, want 0102 (bit 1 set, the rest kept)", regs[7])
	}
	res = h.Do(ctx, "gone", []command.Request{{Tag: "v", Value: int64(3)}})
	if res[0].Err == nil || res[0].Err.Error() != "timeout" {
		t.Errorf("write to a silent device: %v, want timeout", res[0].Err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Every write was followed by its read-back, on the bus's goroutine:
	// nothing else between them.
	for i, c := range ft.calls {
		if c.fn == fnWriteSingleCoil || c.fn == fnWriteSingleRegister || c.fn == fnWriteMultipleRegisters {
			if c.unit == 2 || c.addr == 30 { // refused: nothing to read back
				continue
			}
			if i+1 >= len(ft.calls) || ft.calls[i+1].addr != c.addr || ft.calls[i+1].fn > 4 {
				t.Errorf("write %+v not followed by its read-back", c)
			}
		}
	}
}
