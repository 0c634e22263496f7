package opcua

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
)

// FuzzParse feeds arbitrary files to the config parser: it must never
// panic, and every rejection must be a *configfile.Errors with lines.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("opcua:\n  auth: anonymous\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yml", data)
		if err == nil {
			// Accepted configs are complete enough to build an engine's
			// tag list from.
			if c.Endpoint == "" || len(c.Nodes) == 0 {
				t.Fatalf("accepted config without endpoint or nodes: %q", data)
			}
			return
		}
		var errs *configfile.Errors
		if !errors.As(err, &errs) || len(errs.List) == 0 {
			t.Fatalf("Parse error %T %v, want *configfile.Errors", err, err)
		}
	})
}

// FuzzValue decodes arbitrary bytes as an OPC UA DataValue, as a Read or
// Publish response carries it, and turns it into a reading under small
// limits: the conversion must not panic, a value it keeps must respect the
// limits, and the reading must encode to valid JSON.
//
// gopcua v0.8.0's own decoder panics on some inputs (a Variant array with
// a negative length) and allocates from counts it has not checked against
// the data (see boundedDataValue); those inputs are skipped here, since
// they happen before the collector sees the value, and are the library's
// to fix (SECURITY.md).
func FuzzValue(f *testing.F) {
	lim := Limits{MaxStringBytes: 64, MaxByteStringBytes: 16, MaxArrayLength: 8, MaxMessageBytes: 1 << 20}
	for _, v := range []any{12.5, "boiler-1", []byte{1, 2, 3}, []float64{1, 2, 3}, strings.Repeat("x", 100),
		[]string{"a", "b"}, ua.NewLocalizedText("text"), ua.NewNumericNodeID(2, 1042), int64(-42), true} {
		dv := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(v),
			SourceTimestamp: time.Unix(1764345600, 0)}
		b, err := dv.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dv, ok := decodeDataValue(data)
		if !ok {
			return
		}
		r := makeReading(&tag{name: "t"}, dv, time.Unix(0, 0), lim)
		if r.Quality != reading.Bad {
			switch v := r.Value.(type) {
			case string:
				if int64(len(v)) > int64(lim.MaxStringBytes) {
					t.Fatalf("kept a %d-byte text over the %d-byte limit", len(v), lim.MaxStringBytes)
				}
			case nil, bool, int64, uint64, float64:
			default:
				t.Fatalf("value of type %T, not one of the reading model's", v)
			}
		}
		b := reading.Batch{Device: "d", TS: time.Unix(0, 0), Readings: []reading.Reading{r}}
		if out := b.AppendJSON(nil); !json.Valid(out) {
			t.Fatalf("invalid JSON %q for %+v", out, r)
		}
	})
}

// decodeDataValue runs gopcua's decoder, reporting its panics as a failed
// decode.
func decodeDataValue(data []byte) (dv *ua.DataValue, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	if !boundedDataValue(data) {
		return nil, false
	}
	dv = new(ua.DataValue)
	if _, err := dv.Decode(data); err != nil {
		return nil, false
	}
	return dv, true
}

// boundedDataValue reports whether gopcua v0.8.0 decodes data as a
// DataValue without allocating from a count the data does not hold. Its
// decoder allocates a Variant's array dimensions from their declared count
// (up to 8 GiB) before reading them, builds a multi-dimensional array from
// dimensions whose int32 product may overflow (then loops for their true
// product), and decodes an ExtensionObject body of a known type with
// arrays allocated the same way. A fuzzing worker that meets one runs out
// of memory or hangs. The walk follows gopcua's decoder field by field and
// stops where it stops (the end of the data, an invalid type).
func boundedDataValue(data []byte) bool {
	w := uaWalk{data: data}
	w.dataValue()
	return !w.unbounded
}

// uaWalk reads OPC UA binary as gopcua's decoder does, without keeping
// anything.
type uaWalk struct {
	data      []byte
	stopped   bool // gopcua stops here: nothing after it is decoded
	unbounded bool
}

func (w *uaWalk) take(n int) []byte {
	if w.stopped || n < 0 || n > len(w.data) {
		w.stopped = true
		return nil
	}
	b := w.data[:n]
	w.data = w.data[n:]
	return b
}

func (w *uaWalk) byte() byte {
	if b := w.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (w *uaWalk) int32() int32 {
	if b := w.take(4); b != nil {
		return int32(binary.LittleEndian.Uint32(b))
	}
	return 0
}

// bytes skips a String, ByteString or XmlElement.
func (w *uaWalk) bytes() {
	if n := uint32(w.int32()); !w.stopped && n != 0 && n != 0xffffffff {
		w.take(int(n))
	}
}

func (w *uaWalk) dataValue() {
	mask := w.byte()
	if mask&ua.DataValueValue != 0 {
		w.variant()
	}
	for _, f := range []struct {
		bit  byte
		size int
	}{{ua.DataValueStatusCode, 4}, {ua.DataValueSourceTimestamp, 8}, {ua.DataValueSourcePicoseconds, 2},
		{ua.DataValueServerTimestamp, 8}, {ua.DataValueServerPicoseconds, 2}} {
		if mask&f.bit != 0 {
			w.take(f.size)
		}
	}
}

func (w *uaWalk) variant() {
	mask := w.byte()
	typ := mask & 0x3f
	if w.stopped || typ == 0 {
		return
	}
	if typ > byte(ua.TypeIDDiagnosticInfo) {
		w.stopped = true
		return
	}
	if mask&ua.VariantArrayValues == 0 {
		w.value(typ)
		return
	}
	n := w.int32()
	if int(n) > ua.MaxVariantArrayLength {
		w.stopped = true
		return
	}
	for i := int32(0); i < n && !w.stopped; i++ {
		w.value(typ)
	}
	if mask&ua.VariantArrayDimensions == 0 {
		return
	}
	count := w.int32()
	if w.stopped || count < 0 {
		w.stopped = true
		return
	}
	if int64(count)*4 > int64(len(w.data)) {
		w.unbounded = true // allocated before gopcua finds the data short
		w.stopped = true
		return
	}
	product := int64(1)
	for range count {
		d := w.int32()
		if w.stopped || d < 1 {
			w.stopped = true
			return
		}
		if product *= int64(d); product > int64(ua.MaxVariantArrayLength) {
			// Either refused as unbalanced or, where the int32
			// product overflows to the array's length, built.
			w.unbounded = true
			w.stopped = true
			return
		}
	}
}

func (w *uaWalk) value(typ byte) {
	switch ua.TypeID(typ) {
	case ua.TypeIDBoolean, ua.TypeIDSByte, ua.TypeIDByte:
		w.take(1)
	case ua.TypeIDInt16, ua.TypeIDUint16:
		w.take(2)
	case ua.TypeIDInt32, ua.TypeIDUint32, ua.TypeIDFloat, ua.TypeIDStatusCode:
		w.take(4)
	case ua.TypeIDInt64, ua.TypeIDUint64, ua.TypeIDDouble, ua.TypeIDDateTime:
		w.take(8)
	case ua.TypeIDGUID:
		w.take(16)
	case ua.TypeIDString, ua.TypeIDByteString, ua.TypeIDXMLElement:
		w.bytes()
	case ua.TypeIDNodeID:
		w.nodeID()
	case ua.TypeIDExpandedNodeID:
		w.expandedNodeID()
	case ua.TypeIDQualifiedName:
		w.take(2)
		w.bytes()
	case ua.TypeIDLocalizedText:
		mask := w.byte()
		if mask&ua.LocalizedTextLocale != 0 {
			w.bytes()
		}
		if mask&ua.LocalizedTextText != 0 {
			w.bytes()
		}
	case ua.TypeIDExtensionObject:
		w.expandedNodeID()
		enc := w.byte()
		if n := uint32(w.int32()); !w.stopped && enc != ua.ExtensionObjectEmpty && n != 0 && n != 0xffffffff {
			if w.take(int(n)) != nil && enc != ua.ExtensionObjectXML {
				w.unbounded = true // a known type's body: arrays by declared count
				w.stopped = true
			}
		}
	case ua.TypeIDDataValue:
		w.dataValue()
	case ua.TypeIDVariant:
		w.variant()
	case ua.TypeIDDiagnosticInfo:
		w.diagnosticInfo()
	}
}

func (w *uaWalk) nodeID() byte {
	mask := w.byte()
	switch mask & 0xf {
	case 0: // two-byte
		w.take(1)
	case 1: // four-byte
		w.take(3)
	case 2: // numeric
		w.take(6)
	case 4: // GUID
		w.take(18)
	case 3, 5: // string, byte string
		w.take(2)
		w.bytes()
	default:
		w.stopped = true
	}
	return mask
}

func (w *uaWalk) expandedNodeID() {
	mask := w.nodeID()
	if mask&0x80 != 0 { // namespace URI
		w.bytes()
	}
	if mask&0x40 != 0 { // server index
		w.take(4)
	}
}

func (w *uaWalk) diagnosticInfo() {
	mask := w.byte()
	for _, bit := range []byte{ua.DiagnosticInfoSymbolicID, ua.DiagnosticInfoNamespaceURI, ua.DiagnosticInfoLocale, ua.DiagnosticInfoLocalizedText} {
		if mask&bit != 0 {
			w.take(4)
		}
	}
	if mask&ua.DiagnosticInfoAdditionalInfo != 0 {
		w.bytes()
	}
	if mask&ua.DiagnosticInfoInnerStatusCode != 0 {
		w.take(4)
	}
	if mask&ua.DiagnosticInfoInnerDiagnosticInfo != 0 {
		w.diagnosticInfo()
	}
}

func TestBoundedDataValue(t *testing.T) {
	encode := func(v any) []byte {
		dv := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
			Value: ua.MustVariant(v), SourceTimestamp: time.Unix(1764345600, 0)}
		b, err := dv.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	le := func(vs ...uint32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
		return b
	}
	// A Variant array of Int32 with dimensions (mask 0xc6), inside a
	// DataValue with only a value (mask 0x01).
	dims := func(n uint32, d ...uint32) []byte {
		return append(append([]byte{0x01, 0xc6}, le(n)...), append(le(uint32(len(d))), le(d...)...)...)
	}
	tests := []struct {
		name    string
		data    []byte
		want    bool
		decodes bool // gopcua decodes it
	}{
		{"double", encode(12.5), true, true},
		{"text", encode("boiler-1"), true, true},
		{"localized text", encode(ua.NewLocalizedText("text")), true, true},
		{"array", encode([]float64{1, 2, 3}), true, true},
		{"matrix", encode([][]int32{{1, 2}, {3, 4}}), true, true},
		{"variant of matrix", encode(ua.MustVariant([][]int32{{1, 2}, {3, 4}})), true, true},
		{"short", []byte{0x01, 0xc6, 0x02}, true, false},
		{"unbalanced", dims(0, 1), true, false},
		// Found by FuzzValue: 808 M dimensions declared in 12 bytes.
		{"dimension count past the data", []byte("1\xc4\x00\x00\x00\x00000R000000[]"), false, false},
		{"product overflowing to the length", dims(0, 65536, 65536), false, false},
		{"nested in a variant array", append([]byte{0x01, 0x98, 1, 0, 0, 0}, dims(0, 65536, 65536)[1:]...), false, false},
		{"known extension object", encode(ua.NewExtensionObject(&ua.Argument{Name: "a", DataType: ua.NewNumericNodeID(0, 1), Description: ua.NewLocalizedText("d")})), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := boundedDataValue(tt.data); got != tt.want {
				t.Errorf("boundedDataValue(% x) = %v, want %v", tt.data, got, tt.want)
			}
			if tt.want {
				if _, ok := decodeDataValue(tt.data); ok != tt.decodes {
					t.Errorf("gopcua decodes % x: %v, want %v", tt.data, ok, tt.decodes)
				}
			}
		})
	}
}
