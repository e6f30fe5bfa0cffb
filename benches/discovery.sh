#!/usr/bin/env bash
# How long three iwant nodes take to find each other by mDNS in the network lab.
#
# Usage: benches/discovery.sh [RUNS]      (default 5; needs root, see tests/it/lab/mod.rs)
#
# Runs the lab test `three_nodes_discover_each_other_by_mdns` (release build) RUNS times. Each
# run starts three nodes in their own network namespaces and prints `discovery_ms=<n>`: the time
# from the last node's start until every node lists the two others in `iwant status`. The
# script prints one row per run, then min, median and max of the runs that passed; it exits 1
# if any run failed.
set -euo pipefail

runs=${1:-5}
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [RUNS]   (RUNS: a positive number, default 5)" >&2
    exit 2
fi
test_name=lab::discovery::three_nodes_discover_each_other_by_mdns
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo test --release --test it --no-run --quiet

times=()
failed=0
printf '%-5s %14s\n' run discovery_ms
for run in $(seq 1 "$runs"); do
    status=0
    out=$(cargo test --release --quiet --test it "$test_name" -- --exact --nocapture 2>&1) || status=$?
    if grep -q "skipping lab test" <<<"$out"; then
        grep "skipping lab test" <<<"$out" >&2
        exit 1
    fi
    ms=$(grep -o 'discovery_ms=[0-9]*' <<<"$out" | head -n 1 | cut -d= -f2 || true)
    if ((status != 0)) || [[ -z $ms ]]; then
        failed=$((failed + 1))
        reason=$(grep -m 1 -E 'timed out|panicked' <<<"$out" || echo "exit code $status")
        printf '%-5s %14s  %s\n' "$run" FAILED "$reason"
        continue
    fi
    times+=("$ms")
    printf '%-5s %14s\n' "$run" "$ms"
done

if ((${#times[@]})); then
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$sorted")
    printf '%-5s %14s\n' min "$(head -n 1 <<<"$sorted")" median "$median" max "$(tail -n 1 <<<"$sorted")"
fi
if ((failed)); then
    echo "$failed of $runs runs failed (their logs are kept under ${TMPDIR:-/tmp}/iwant-lab-*)" >&2
    exit 1
fi
