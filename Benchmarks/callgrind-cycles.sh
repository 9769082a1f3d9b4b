#!/usr/bin/env bash
# Instructions per tryAcquire + commitTokens + release (capped key, the same caps on input and
# output apart, no-op key, a three-level nested chain, a model of a model group, and a key of a
# tier named on the key; `CycleCount resolved` installs a resolver, an actor hop that valgrind
# 3.19 does not survive, so it is timed by the floors only), counted by
# callgrind: (instructions of 11 000 cycles - instructions of 1 000 cycles) / 10 000.
# Needs valgrind (Debian: apt-get install valgrind). Run from the repository's root.
set -euo pipefail
cd "$(dirname "$0")/.."
# SwiftPM does not always see files added to the root package from here: re-plan.
touch Benchmarks/Package.swift
swift build -c release --package-path Benchmarks --product CycleCount >&2
bin=$(swift build -c release --package-path Benchmarks --show-bin-path)/CycleCount
export SWIFT_DETERMINISTIC_HASHING=1
count() {
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >/dev/null 2>&1
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -f "$out"
}
for kind in ${KINDS:-capped split noop nested grouped tiered}; do
    small=$(count "$kind" 1000)
    large=$(count "$kind" 11000)
    echo "$kind: $(( (large - small) / 10000 )) instructions per cycle ($large - $small over 10 000 cycles)"
done
