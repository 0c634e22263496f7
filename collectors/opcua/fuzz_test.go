package opcua

import (
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
// a negative length); those are skipped here, since they happen before the
// collector sees the value, and are the library's to fix.
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
	dv = new(ua.DataValue)
	if _, err := dv.Decode(data); err != nil {
		return nil, false
	}
	return dv, true
}
