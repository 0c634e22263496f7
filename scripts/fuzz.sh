#!/usr/bin/env bash
# fuzz.sh DURATION pkg:Target... runs each fuzz target for DURATION, one after
# the other (go test -fuzz takes one target per run).
set -euo pipefail
duration=$1
shift
for spec in "$@"; do
  pkg=${spec%%:*}
  target=${spec##*:}
  echo "fuzz: $target in $pkg for $duration"
  go test -run='^$' -fuzz="^${target}\$" -fuzztime="$duration" "$pkg"
done
