#!/usr/bin/env bash
# bench.sh runs fieldgate's benchmarks in one go, so their figures can be
# compared as ratios from one run on one machine, and writes them to
# dist/bench.txt. Real peers (mosquitto, devsim, node-opcua, containerd) are
# started by the benchmarks themselves. BENCH_FILTER narrows the packages by
# regular expression.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
out=dist/bench.txt
: >"$out"
filter=${BENCH_FILTER:-.}

run() {
  local pkg=$1 pattern=$2 benchtime=$3
  [[ $pkg =~ $filter ]] || return 0
  echo "== $pkg $pattern ($benchtime)" | tee -a "$out"
  go test -run '^$' -bench "$pattern" -benchtime "$benchtime" -benchmem "$pkg" 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' | tee -a "$out"
}

run ./collectors/reading   'AppendJSON'                    1s
run ./collectors/modbus    'Decode|NewPlan'                1s
run ./collectors/modbus    'TCPPoll|TCPToMQTT'             3s
run ./collectors/modbus    'RTUWire'                       4000x
run ./collectors/queue     'Append|Drain'                  2000x
run ./collectors/queue     'QueueFormats'                  20000x
run ./devices/devsim       'TCPRead|RTUWire'               20x
run ./collectors/opcua     'Subscribe10k'                  1x
run ./collectors/cmd/opcua-collector 'Binary10k'           1x
run ./runtime              'CreateStart'                   20x
run ./gateway/cmd/fieldgate 'Supervisor'                   1x
echo "figures written to $out"
