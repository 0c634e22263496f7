package reading

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestAppendJSONContract(t *testing.T) {
	ts := time.UnixMilli(1764345600123)
	rts := time.UnixMilli(1764345600120)
	b := Batch{
		Gateway: "line3-gw01", Collector: "modbus-line3", Device: "meter1", Seq: 1042, TS: ts,
		Readings: []Reading{
			{Tag: "voltage_l1", Value: float64(float32(230.1)), Unit: "V", Quality: Good, TS: rts},
			{Tag: "energy", Value: nil, Quality: Bad, Error: "modbus exception 2: illegal data address", TS: rts},
		},
	}
	// float64(float32(230.1)) is 230.10000610351562: the decoder hands us
	// float64, so a float32 source must be rounded there; here we check the
	// float32 path of the encoder separately below.
	b.Readings[0].Value = float32(230.1)
	got := string(b.AppendJSON(nil))
	want := `{"gateway":"line3-gw01","collector":"modbus-line3","device":"meter1","seq":1042,"ts":1764345600123,` +
		`"readings":[{"tag":"voltage_l1","value":230.1,"unit":"V","quality":"good","ts":1764345600120},` +
		`{"tag":"energy","value":null,"quality":"bad","error":"modbus exception 2: illegal data address","ts":1764345600120}]}`
	if got != want {
		t.Errorf("payload\n got %s\nwant %s", got, want)
	}
}

func TestAppendValue(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{nil, "null"},
		{true, "true"},
		{int64(-32768), "-32768"},
		{uint64(math.MaxUint64), "18446744073709551615"},
		{float64(0.1), "0.1"},
		{float64(1e21), "1e+21"},
		{float64(1e-7), "1e-07"},
		{float64(123456789), "123456789"},
		{math.NaN(), "null"},
		{math.Inf(-1), "null"},
		{"a\"b\\c\n\x01\xff", `"a\"b\\c\n\u0001\ufffd"`},
		{struct{}{}, "null"},
	}
	for _, tc := range tests {
		if got := string(appendValue(nil, tc.in)); got != tc.want {
			t.Errorf("appendValue(%#v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("gw", "dev", "tag", "V", 1.5, int64(3), "err\x00")
	f.Add("\xff\xfe", "\u2028", "", "", math.Inf(1), int64(-1), "")
	f.Fuzz(func(t *testing.T, gw, dev, tag, unit string, fv float64, iv int64, sv string) {
		b := Batch{Gateway: gw, Device: dev, Seq: 1, TS: time.UnixMilli(iv), Readings: []Reading{
			{Tag: tag, Value: fv, Unit: unit},
			{Tag: tag, Value: iv, Quality: Uncertain},
			{Tag: tag, Value: sv, Error: sv, Quality: Bad},
		}}
		out := b.AppendJSON(nil)
		var v struct {
			Device   string `json:"device"`
			Readings []struct {
				Tag   string `json:"tag"`
				Value any    `json:"value"`
			} `json:"readings"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("invalid JSON %q: %v", out, err)
		}
		if len(v.Readings) != 3 {
			t.Fatalf("readings = %d", len(v.Readings))
		}
		if !math.IsNaN(fv) && !math.IsInf(fv, 0) {
			if got, ok := v.Readings[0].Value.(float64); !ok || got != fv {
				t.Fatalf("float %v read back as %v", fv, v.Readings[0].Value)
			}
		}
	})
}

// BenchmarkAppendJSON encodes a batch of 100 readings sharing one time:
// floats (a meter's float32 registers scaled) and uint16 registers (a
// PLC's words, the scale benchmarks' load).
func BenchmarkAppendJSON(b *testing.B) {
	for _, tc := range []struct {
		name  string
		value func(i int) any
	}{
		{"float", func(i int) any { return 230.1 + float64(i) }},
		{"uint16", func(i int) any { return uint64(1000 + 7*i) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			batch := Batch{Gateway: "line3-gw01", Collector: "modbus-line3", Device: "meter1", Seq: 1, TS: time.Now()}
			for i := 0; i < 100; i++ {
				batch.Readings = append(batch.Readings, Reading{Tag: "voltage_l1", Value: tc.value(i), Unit: "V", Quality: Good, TS: batch.TS})
			}
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf = batch.AppendJSON(buf[:0])
			}
			b.ReportMetric(float64(b.N*len(batch.Readings))/b.Elapsed().Seconds(), "readings/s")
		})
	}
}
