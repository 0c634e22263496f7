#!/usr/bin/env bash
# fuzz.sh DURATION pkg:Target... runs each fuzz target for DURATION, one after
# the other (go test -fuzz takes one target per run). Minimising a new input
# is capped at 100 runs: with a short DURATION an uncapped minimisation could
# use up the whole run, and one cut off by the deadline fails it with
# "context deadline exceeded".
set -euo pipefail
duration=$1
shift
for spec in "$@"; do
  pkg=${spec%%:*}
  target=${spec##*:}
  echo "fuzz: $target in $pkg for $duration"
  go test -run='^$' -fuzzminimizetime=100x -fuzz="^${target}\$" -fuzztime="$duration" "$pkg"
done
