package modbus

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecode decodes arbitrary payloads for arbitrary tags and requests:
// Decode never panics, returns a value xor an error, and a payload of the
// full length for a tag inside its request never fails for a valid type.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(2), uint8(7), uint16(100), uint16(102), uint16(4), uint8(0), uint8(0), []byte{0x42, 0xf6, 0xe9, 0x79, 0, 0, 0, 0})
	f.Add(uint8(0), uint8(0), uint16(10), uint16(17), uint16(11), uint8(0), uint8(0), []byte{0xa5, 0x05})
	f.Add(uint8(3), uint8(9), uint16(200), uint16(200), uint16(4), uint8(3), uint8(4), []byte("ABCDE\x00\x00\x00"))
	f.Add(uint8(2), uint8(0), uint16(7), uint16(7), uint16(1), uint8(1), uint8(0x83), []byte{0x80, 0x05})
	f.Add(uint8(3), uint8(6), uint16(0), uint16(65535), uint16(65535), uint8(2), uint8(0x90), []byte{})
	f.Fuzz(func(t *testing.T, table, typ uint8, reqAddr, tagAddr, qty uint16, order, extra uint8, payload []byte) {
		tag := Tag{
			Name:      "f",
			Table:     planTables[table%4],
			Address:   int(tagAddr),
			Type:      validTypes[int(typ)%len(validTypes)],
			ByteOrder: validByteOrders[order%4],
			Length:    int(extra & 0x7f),
		}
		if extra&0x80 != 0 {
			tag.Bit = ptr(int(extra&0x1f) - 8) // includes bits out of range
			tag.Scale, tag.Offset = ptr(float64(extra)), -1
		}
		r := Request{Table: tag.Table, Address: reqAddr, Quantity: qty}
		if table&0x80 != 0 {
			r.Table = planTables[(table+1)%4]
		}
		v, err := Decode(&tag, r, payload)
		if (v == nil) == (err == nil) {
			t.Fatalf("Decode = %v, %v: want exactly one of value and error", v, err)
		}
		n := tag.Registers()
		inside := r.Table == tag.Table && n > 0 && tag.Address >= int(r.Address) &&
			tag.Address+n <= int(r.Address)+int(r.Quantity)
		need := 2 * (tag.Address - int(r.Address) + n)
		if tag.Table.IsBit() {
			need = (tag.Address-int(r.Address))/8 + 1
		}
		validBit := tag.Type != TypeBool || tag.Table.IsBit() || tag.Bit != nil
		if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			t.Fatalf("Decode = %v: JSON cannot carry it", f)
		}
		nonFinite := err != nil && strings.Contains(err.Error(), "value is")
		if inside && validBit && len(payload) >= need && err != nil && !nonFinite {
			t.Fatalf("Decode(%+v, %v, %d bytes) failed: %v", tag, r, len(payload), err)
		}
	})
}

// FuzzParseConfig feeds arbitrary YAML to ParseConfig: it never panics, a
// config it accepts plans every tag of every device, and the one-device-at-
// a-time parse agrees with the whole-tree one.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("transport: tcp\ntcp: {address: h}\ndevices: [{name: a, tags: [{name: x, table: coil, address: 65535}]}]\n"))
	f.Add([]byte("modbus: {transport: rtu, serial: {port: p}, devices: &d [{name: a, profile: eastron-sdm120}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// One device at a time (parseSplit) accepts only what the whole
		// tree accepts, and decodes it the same.
		if split, ok := parseSplit("fuzz.yml", data); ok {
			whole, err := parseWhole("fuzz.yml", data)
			if err != nil {
				t.Fatalf("accepted one device at a time, refused whole:\n%v", err)
			}
			if !reflect.DeepEqual(split, whole) {
				t.Fatal("one device at a time decodes another config than the whole tree")
			}
		}
		cfg, err := ParseConfig("fuzz.yml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		for i := range cfg.Devices {
			d := &cfg.Devices[i]
			p := NewPlan(d)
			if len(p.Skipped()) != 0 {
				t.Fatalf("accepted device %q has unplannable tags %v", d.Name, p.Skipped())
			}
			checkPlan(t, d, p)
		}
	})
}
