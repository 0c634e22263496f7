package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Target is a figure's aim: the value must be at most (Max) or at least
// (Min) Value.
type Target struct {
	Min   bool
	Value float64
}

// AtMost and AtLeast build targets.
func AtMost(v float64) *Target  { return &Target{Value: v} }
func AtLeast(v float64) *Target { return &Target{Min: true, Value: v} }

func (t *Target) String() string {
	if t == nil {
		return "—"
	}
	if t.Min {
		return "≥ " + formatValue(t.Value)
	}
	return "≤ " + formatValue(t.Value)
}

// Met reports whether v meets the target.
func (t *Target) Met(v float64) bool {
	if t.Min {
		return v >= t.Value
	}
	return v <= t.Value
}

// Figure is one line of the report: a metric of one benchmark.
type Figure struct {
	// ID names the figure in the report; the next run finds its previous
	// value by it, so it never changes.
	ID string
	// What says in words what was measured.
	What string
	// Bench is the benchmark's name as `go test` prints it, without the
	// -GOMAXPROCS suffix ("BenchmarkModbusTCP50x100", "BenchmarkAppendJSON/uint16").
	Bench string
	// Metric is the unit the benchmark reports the value in ("cpu-s/Mreadings").
	Metric string
	// Unit is how the report writes the unit.
	Unit   string
	Target *Target
}

// Figures are the report's lines, the targets first.
var Figures = []Figure{
	{ID: "tcp-cpu", What: "Modbus TCP, 50 PLCs × 100 registers at 100 ms, whole path to mosquitto QoS 1: CPU", Bench: "BenchmarkModbusTCP50x100", Metric: "cpu-s/Mreadings", Unit: "CPU-s per million readings", Target: AtMost(1.0)},
	{ID: "tcp-rss", What: "… RSS in the measurement window", Bench: "BenchmarkModbusTCP50x100", Metric: "rss-MiB", Unit: "MiB", Target: AtMost(24)},
	{ID: "tcp-peak-rss", What: "… RSS at its peak, start-up included", Bench: "BenchmarkModbusTCP50x100", Metric: "peak-rss-MiB", Unit: "MiB"},
	{ID: "latency-p50", What: "… latency from the batch's ts to a subscriber's receipt, p50", Bench: "BenchmarkModbusTCP50x100", Metric: "p50-ms", Unit: "ms"},
	{ID: "latency-p99", What: "… the same, p99", Bench: "BenchmarkModbusTCP50x100", Metric: "p99-ms", Unit: "ms", Target: AtMost(10)},
	{ID: "rtu-overrun", What: "Modbus RTU at 19200 baud, one 125-register read every 100 ms (shorter than the read): share of the wire limit", Bench: "BenchmarkRTUWireOverrun", Metric: "wire-%", Unit: "%", Target: AtLeast(95)},
	{ID: "rtu-fair", What: "… three devices on the line, one read each every 100 ms", Bench: "BenchmarkRTUWireFair", Metric: "wire-%", Unit: "%", Target: AtLeast(95)},
	{ID: "rtu-fair-share", What: "… the least-polled device's readings over the most-polled one's", Bench: "BenchmarkRTUWireFair", Metric: "fair-%", Unit: "%"},
	{ID: "rtu-long", What: "… one device, four reads a cycle, as fast as the line allows", Bench: "BenchmarkRTUWire", Metric: "wire-%", Unit: "%", Target: AtLeast(95)},
	{ID: "plc1000-cpu", What: "1,000 PLCs on their own loopback addresses × 100 registers at 1 s: CPU", Bench: "BenchmarkModbusTCP1000x100", Metric: "core-%", Unit: "% of a core", Target: AtMost(10)},
	{ID: "plc1000-rss", What: "… RSS at its peak, start-up (8 MB config) included", Bench: "BenchmarkModbusTCP1000x100", Metric: "peak-rss-MiB", Unit: "MiB", Target: AtMost(96)},
	{ID: "plc1000-late", What: "… lateness of poll starts against their schedule, p99", Bench: "BenchmarkModbusTCP1000x100", Metric: "late-p99-ms", Unit: "ms"},
	{ID: "plc1000-share", What: "… the least-served device's batches over those due", Bench: "BenchmarkModbusTCP1000x100", Metric: "min-share-%", Unit: "%", Target: AtLeast(95)},
	{ID: "plc5000-rate", What: "5,000 PLCs × 100 registers at 1 s: readings delivered", Bench: "BenchmarkModbusTCP5000x100", Metric: "readings/s", Unit: "readings/s", Target: AtLeast(495000)},
	{ID: "plc5000-cpu", What: "… CPU", Bench: "BenchmarkModbusTCP5000x100", Metric: "core-%", Unit: "% of a core"},
	{ID: "plc5000-rss", What: "… RSS at its peak", Bench: "BenchmarkModbusTCP5000x100", Metric: "peak-rss-MiB", Unit: "MiB"},
	{ID: "opcua50k-cpu", What: "OPC UA, 50,000 monitored items at 1 s, the built collector publishing to mosquitto: CPU", Bench: "BenchmarkOPCUA50k", Metric: "core-%", Unit: "% of a core", Target: AtMost(10)},
	{ID: "opcua50k-rss", What: "… RSS at its peak", Bench: "BenchmarkOPCUA50k", Metric: "peak-rss-MiB", Unit: "MiB", Target: AtMost(128)},
	{ID: "gateway-rss", What: "The gateway in all: supervisor + Modbus collector (50 PLCs × 100 registers at 100 ms) + OPC UA collector (50 devices × 100 items at 1 s), both in containers: RSS summed", Bench: "BenchmarkGateway", Metric: "rss-MiB", Unit: "MiB", Target: AtMost(80)},
	{ID: "gateway-peak-rss", What: "… the three processes' peaks summed, start-up (config parse, image import) included", Bench: "BenchmarkGateway", Metric: "peak-rss-MiB", Unit: "MiB"},

	{ID: "plant-inproc", What: "The reference load in one process (the profile below): CPU", Bench: "BenchmarkTCPToMQTTPlant", Metric: "cpu-s/Mreadings", Unit: "CPU-s per million readings"},
	{ID: "tcp-poll-max", What: "Modbus TCP polling as fast as devsim answers, collector on one core, counting sink", Bench: "BenchmarkTCPPoll", Metric: "cpu-s/Mreadings", Unit: "CPU-s per million readings"},
	{ID: "tcp-mqtt-max", What: "… through the real publisher to mosquitto", Bench: "BenchmarkTCPToMQTT", Metric: "cpu-s/Mreadings", Unit: "CPU-s per million readings"},
	{ID: "encode-uint16", What: "Payload encoder, 100 uint16 readings a batch", Bench: "BenchmarkAppendJSON/uint16", Metric: "readings/s", Unit: "readings/s"},
	{ID: "encode-float", What: "… 100 float readings a batch", Bench: "BenchmarkAppendJSON/float", Metric: "readings/s", Unit: "readings/s"},
	{ID: "queue-append", What: "Durable queue append, 2 kB batches, QUEUE_SYNC=1s", Bench: "BenchmarkAppend/sync=1s", Metric: "batches/s", Unit: "batches/s"},
	{ID: "opcua10k-engine", What: "OPC UA engine, 10,000 items at 1 s against devsim opcua: CPU", Bench: "BenchmarkSubscribe10k", Metric: "cpu%", Unit: "% of a core"},
	{ID: "opcua10k-binary", What: "… the built opcua-collector including MQTT publishing", Bench: "BenchmarkBinary10k/devices=100", Metric: "cpu%", Unit: "% of a core"},
	{ID: "create-start", What: "Container create + start, p95", Bench: "BenchmarkCreateStart", Metric: "p95-ms", Unit: "ms", Target: AtMost(300)},
	{ID: "supervisor-rss", What: "Supervisor RSS with two collectors", Bench: "BenchmarkSupervisor", Metric: "rss-KiB", Unit: "KiB"},
}

// benchLine is a `go test -bench` result line: name-N, iterations, then
// value-unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// ParseResults reads `go test -bench` output and returns every benchmark's
// metrics by name (without the -GOMAXPROCS suffix); a benchmark run twice
// keeps its last values.
func ParseResults(r io.Reader) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		metrics := out[m[1]]
		if metrics == nil {
			metrics = map[string]float64{}
			out[m[1]] = metrics
		}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				metrics[f[i+1]] = v
			}
		}
	}
	return out, sc.Err()
}

// Machine describes where and when the figures were measured.
type Machine struct {
	CPUs      int
	Model     string
	LoadStart string // /proc/loadavg's 1, 5 and 15 minute averages
	LoadEnd   string
	Date      string
	Commit    string
	// Priority says how the scenario processes were run (e.g. "nice -15").
	Priority string
}

// analysisHeading starts the hand-written part of the report, which every
// run keeps as it is.
const analysisHeading = "## Analysis"

// tableRow is a figure's row in a report: | `id` | what | value | unit |
// target | met | previous |
var tableRow = regexp.MustCompile("^\\| `([a-z0-9-]+)` \\| [^|]* \\| ([^|]*) \\|[^|]*\\|[^|]*\\|[^|]*\\| ([^|]*) \\|")

// ReadPrevious takes the figures and the hand-written analysis out of a
// report written before (empty when there was none).
func ReadPrevious(report string) (values map[string]float64, analysis string) {
	values = map[string]float64{}
	if i := strings.Index(report, "\n"+analysisHeading); i >= 0 {
		analysis = strings.TrimSpace(report[i+1:])
		report = report[:i]
	}
	for _, line := range strings.Split(report, "\n") {
		m := tableRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		// A figure that run did not measure passes its previous value on.
		for _, cell := range m[2:] {
			if v, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimSpace(cell), ",", ""), 64); err == nil {
				values[m[1]] = v
				break
			}
		}
	}
	return values, analysis
}

// WriteReport writes bench/RESULTS.md: the machine, every figure with its
// value, target and previous value, the profile text (pprof -top of the
// reference load, may be empty) and the analysis kept from the previous
// report. A figure whose benchmark did not run shows "not measured".
func WriteReport(w io.Writer, figs []Figure, results map[string]map[string]float64, previous map[string]float64, m Machine, profile, analysis string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# fieldgate benchmark results\n\n")
	fmt.Fprintf(bw, "Written by `make bench` (scripts/bench.sh) on %s", m.Date)
	if m.Commit != "" {
		fmt.Fprintf(bw, " at commit `%s`", m.Commit)
	}
	fmt.Fprintf(bw, ". The figures of the previous run are in the last column, so a regression shows in review.\n\n")
	fmt.Fprintf(bw, "**Machine:** %d CPUs (%s); load average %s at the start, %s at the end. ", m.CPUs, m.Model, m.LoadStart, m.LoadEnd)
	fmt.Fprintf(bw, "The machine is shared with other builds and tests, so absolute figures are pessimistic and vary from run to run; ratios within one run compare best.")
	if m.Priority != "" {
		fmt.Fprintf(bw, " The scenario processes (collectors, devsim, mosquitto, the subscriber) ran at %s, so that latencies describe the software rather than the neighbours' load.", m.Priority)
	}
	fmt.Fprintf(bw, "\n\n| figure | what | value | unit | target | met | previous |\n|---|---|---:|---|---|---|---:|\n")
	for _, f := range figs {
		value, met := "not measured", ""
		if v, ok := results[f.Bench][f.Metric]; ok {
			value = formatValue(v)
			if f.Target != nil {
				met = "no"
				if f.Target.Met(v) {
					met = "yes"
				}
			}
		}
		prev := "—"
		if v, ok := previous[f.ID]; ok {
			prev = formatValue(v)
		}
		fmt.Fprintf(bw, "| `%s` | %s | %s | %s | %s | %s | %s |\n", f.ID, f.What, value, f.Unit, f.Target, met, prev)
	}
	if profile = strings.Trim(profile, "\n"); strings.TrimSpace(profile) != "" {
		fmt.Fprintf(bw, "\n## Profile of the reference load\n\nCPU profile of `BenchmarkTCPToMQTTPlant` (the 50 × 100 at 100 ms load in one process: poller, publisher, queue, paho), `go tool pprof -top -cum`:\n\n```\n%s\n```\n", profile)
	}
	if analysis = strings.TrimSpace(analysis); analysis == "" {
		analysis = analysisHeading + "\n\n(Written by hand below this heading; `make bench` keeps it.)"
	}
	fmt.Fprintf(bw, "\n%s\n", analysis)
	return bw.Flush()
}

// formatValue writes a figure with three significant digits, thousands
// separated.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 || math.Abs(v) >= 1000 {
		return thousands(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
	}
	digits := 2 - int(math.Floor(math.Log10(math.Abs(v))))
	if v == 0 || digits < 0 {
		digits = 0
	}
	scale := math.Pow(10, float64(digits))
	return strconv.FormatFloat(math.Round(v*scale)/scale, 'f', digits, 64)
}

func thousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
