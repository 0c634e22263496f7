// Command benchreport writes bench/RESULTS.md from the output of the
// benchmarks `make bench` ran (scripts/bench.sh): every figure with its
// target, the machine, and the previous report's figures and analysis.
//
//	benchreport -in dist/bench.txt -out bench/RESULTS.md -load-start "3.1 4.0 5.2" [-profile dist/profile.txt] [-priority "nice -15"]
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"fieldgate/bench"
)

func main() {
	in := flag.String("in", "dist/bench.txt", "`FILE` holding the go test -bench output")
	out := flag.String("out", "bench/RESULTS.md", "the report `FILE` to write (its figures become the previous ones)")
	profile := flag.String("profile", "", "`FILE` with pprof -top text of the reference load, quoted in the report")
	loadStart := flag.String("load-start", "", "/proc/loadavg's first three fields when the run started")
	priority := flag.String("priority", "", "how the scenario processes ran, e.g. \"nice -15\"")
	flag.Parse()
	if err := run(*in, *out, *profile, *loadStart, *priority); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(in, out, profilePath, loadStart, priority string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	results, err := bench.ParseResults(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	old, err := os.ReadFile(out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	previous, analysis := bench.ReadPrevious(string(old))
	var profile []byte
	if profilePath != "" {
		if profile, err = os.ReadFile(profilePath); err != nil {
			return err
		}
	}
	m := bench.Machine{CPUs: runtime.NumCPU(), Model: cpuModel(), LoadStart: loadStart, LoadEnd: loadAvg(),
		Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Commit: commit(), Priority: priority}
	var buf bytes.Buffer
	if err := bench.WriteReport(&buf, bench.Figures, results, previous, m, string(profile), analysis); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func commit() string {
	b, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
