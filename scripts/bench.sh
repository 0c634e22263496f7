#!/usr/bin/env bash
# bench.sh runs fieldgate's benchmarks in one go and writes the report,
# bench/RESULTS.md: every figure with its target, the machine and its load,
# and the previous run's figures (read back from the old report). The raw
# `go test -bench` output goes to dist/bench.txt, the reference load's CPU
# profile to dist/plant.prof (quoted in the report as pprof -top).
#
# Real peers (mosquitto, devsim, node-opcua, containerd) are started by the
# benchmarks themselves. The scenario benchmarks (package bench: built
# collectors measured from outside) run at nice BENCH_NICE (default -15,
# as root) so that on a shared machine their latencies describe fieldgate,
# not the neighbours. BENCH_FILTER narrows the packages by regular
# expression (the report then shows the others as not measured).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
out=dist/bench.txt
: >"$out"
filter=${BENCH_FILTER:-.}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
niceness=${BENCH_NICE:--15}
priority=""
ran_scenarios=""
if [[ $(id -u) == 0 && $niceness != 0 ]]; then
  priority="nice $niceness"
fi

# run PKG PATTERN BENCHTIME [go test flags...]
run() {
  local pkg=$1 pattern=$2 benchtime=$3
  shift 3
  [[ $pkg =~ $filter ]] || return 0
  echo "== $pkg $pattern ($benchtime)" | tee -a "$out"
  go test -run '^$' -bench "$pattern" -benchtime "$benchtime" -benchmem "$@" "$pkg" 2>&1 |
    grep -E '^(Benchmark|ok|FAIL|--- FAIL|panic)' | tee -a "$out" || true
}

run ./collectors/reading   'AppendJSON'                  1s
run ./collectors/modbus    'Decode|NewPlan'              1s
run ./collectors/modbus    'TCPPoll|TCPToMQTT$'          3s
run ./collectors/modbus    'RTUWire$|RTUWireOverrun'     2000x
run ./collectors/modbus    'RTUWireFair'                 8000x
# The reference load (50 PLCs × 100 registers at 100 ms) in one process,
# with its CPU profile: what the report quotes to explain the CPU figures.
run ./collectors/modbus    'TCPToMQTTPlant'              1500000x -cpuprofile dist/plant.prof -o dist/modbus.test
run ./collectors/queue     'Append|Drain'                2000x
run ./devices/devsim       'TCPRead|RTUWire'             20x
run ./collectors/opcua     'Subscribe10k'                1x
run ./collectors/cmd/opcua-collector 'Binary10k'         1x
run ./runtime              'CreateStart'                 20x
run ./gateway/cmd/fieldgate 'Supervisor'                 1x

# The scenarios, each one run of a minute or two.
if [[ ./bench =~ $filter ]]; then
  echo "== ./bench scenarios (${priority:-default priority})" | tee -a "$out"
  go test -c -o dist/bench.test ./bench
  ran_scenarios=1
  (cd bench && ${priority:+nice -n "$niceness"} ../dist/bench.test -test.run '^$' -test.bench . \
    -test.benchtime 1x -test.timeout 60m 2>&1) |
    grep -E '^(Benchmark|ok|FAIL|---|panic)|(modbus|opcua|gateway)_test\.go:[0-9]+:' | tee -a "$out" || true
fi

profile=""
if [[ -s dist/plant.prof ]]; then
  profile=dist/plant-profile.txt
  go tool pprof -top -cum -nodecount 40 dist/modbus.test dist/plant.prof 2>/dev/null |
    grep -v 'configfile\|yaml\|ParseConfig\|loadBenchConfig' >"$profile" || true
fi
go run ./bench/cmd/benchreport -in "$out" -out bench/RESULTS.md -load-start "$load_start" \
  ${profile:+-profile "$profile"} ${ran_scenarios:+${priority:+-priority "$priority"}}
echo "figures written to $out and bench/RESULTS.md"
