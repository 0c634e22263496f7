#!/usr/bin/env bash
# fuzz.sh DURATION pkg:Target... runs each fuzz target for DURATION, one after
# the other (go test -fuzz takes one target per run). Minimising a new input
# is capped at 100 runs: with a short DURATION an uncapped minimisation could
# use up the whole run.
#
# Go 1.26's fuzz coordinator can end a run that found nothing with a bare
# "context deadline exceeded" when -fuzztime expires while a worker is busy
# (golang/go#75804, fixed in Go 1.27; it shows on a loaded machine). Such a
# run is not a failure when it wrote no new input under testdata/fuzz: a
# crashing or hanging input is always written there, and still fails.
set -euo pipefail
duration=$1
shift
for spec in "$@"; do
  pkg=${spec%%:*}
  target=${spec##*:}
  corpus="$pkg/testdata/fuzz/$target"
  before=$(ls "$corpus" 2>/dev/null | sort || true)
  echo "fuzz: $target in $pkg for $duration"
  log=$(mktemp)
  if go test -run='^$' -fuzzminimizetime=100x -fuzz="^${target}\$" -fuzztime="$duration" "$pkg" 2>&1 | tee "$log"; then
    rm -f "$log"
    continue
  fi
  after=$(ls "$corpus" 2>/dev/null | sort || true)
  if [[ $before == "$after" ]] && grep -qx '    context deadline exceeded' "$log" &&
    ! grep -q -e 'Failing input written' -e '^panic' -e 'hung or terminated' "$log"; then
    echo "fuzz: $target: the run ended with Go's fuzztime deadline race (golang/go#75804), no input found: not a failure"
    rm -f "$log"
    continue
  fi
  rm -f "$log"
  exit 1
done
