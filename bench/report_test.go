package bench

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/RESULTS.golden.md")

// TestWriteReport: go test -bench output and a previous report make the
// report of testdata/RESULTS.golden.md — values, targets met or not,
// previous values by figure id, figures not measured, the profile and the
// hand-written analysis kept.
func TestWriteReport(t *testing.T) {
	raw, err := os.Open(filepath.Join("testdata", "bench.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	results, err := ParseResults(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := results["BenchmarkModbusTCP50x100"]["p99-ms"]; got != 19.96 {
		t.Errorf("p99-ms = %v, want 19.96", got)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "previous.md"))
	if err != nil {
		t.Fatal(err)
	}
	prev, analysis := ReadPrevious(string(old))
	if prev["tcp-cpu"] != 2.21 || prev["encode-uint16"] != 10129059 || prev["rtu-long"] != 99.2 {
		t.Errorf("previous values %v", prev)
	}
	m := Machine{CPUs: 2, Model: "AMD EPYC", LoadStart: "4.10 5.23 7.71", LoadEnd: "6.00 5.50 7.00",
		Date: "2026-11-30 12:00 UTC", Commit: "abc1234", Priority: "nice -15"}
	var out bytes.Buffer
	if err := WriteReport(&out, Figures, results, prev, m, "      flat  flat%   sum%        cum   cum%\n     0.53s 23.25% 23.25%      0.53s 23.25%  syscall", analysis); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "RESULTS.golden.md")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("report differs from %s (go test -run WriteReport ./bench -update to accept):\n%s", golden, out.String())
	}
	// A second run reads the first one's figures back.
	again, kept := ReadPrevious(out.String())
	if again["tcp-cpu"] != 1.968 && again["tcp-cpu"] != 1.97 {
		t.Errorf("tcp-cpu read back as %v", again["tcp-cpu"])
	}
	if _, ok := again["gone-figure"]; ok || kept != analysis {
		t.Errorf("read back %v, analysis %q", again, kept)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1.968: "1.97", 19.96: "20.0", 0.9445: "0.945", 99.05: "99.1",
		50170: "50,170", 12523271: "12,523,271", 24: "24", 496.5: "497", 1234.5: "1,235"} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
}
