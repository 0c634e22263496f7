package runtime_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkCreateStart measures Create+Start of the probe container (image
// already imported and unpacked) and reports p50/p95 in milliseconds; Stop
// is outside the timer. Run with -benchtime=20x for the figures in the
// closing note.
func BenchmarkCreateStart(b *testing.B) {
	_, rt := setup(b)
	ctx := context.Background()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		spec, _ := probeSpec(b, fmt.Sprintf("bench-%d", i))
		b.StartTimer()
		t0 := time.Now()
		if _, err := rt.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
		if _, err := rt.Start(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		// SIGTERM before the probe's handler is installed is ignored (PID 1):
		// wait for it to run, so Stop does not wait for its SIGKILL deadline.
		waitLog(b, rt, spec.ID, "probe started")
		if err := rt.Stop(ctx, spec.ID, 5*time.Second); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.Logf("create+start latencies: %v", lat)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1)+0.5)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(0, "ns/op")
}
