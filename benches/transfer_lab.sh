#!/usr/bin/env bash
# Downloads in the network lab: how much three seeders add over one, and what a resumed
# download fetches again.
#
# Usage: benches/transfer_lab.sh [RUNS]   (default 3; needs root and tc, see tests/it/lab/mod.rs)
#
# Runs these lab tests (release build, --features lab-bench), RUNS times each, each run a fresh
# lab:
#   - bench_three_seeders_against_one (P2, goal: aggregate_ratio_x100 >= 270):
#       one_seeder_mbps       128 MiB from one seeder whose link is shaped to 200 Mbit/s
#       three_seeders_mbps    the same from three such seeders
#       aggregate_ratio_x100  three_seeders_mbps / one_seeder_mbps, x 100
#     Rates are over each download's own `elapsed_ms` (its final `get --json` line): holder
#     lookup, piece list, transfer, final verification and placing.
#   - a_downloader_killed_at_60_percent_resumes_without_refetching_verified_pieces (P7, goal:
#     refetched_bytes <= 1 piece per peer; the test has one seeder):
#       refetched_bytes  bytes fetched beyond what was missing after the restart
#       piece_size       the file's piece size
#       resumed_bytes    verified bytes found on disk after the restart
# The script prints every run, then median and max per metric and the goals; it exits 1 if any
# run failed (a missed goal is reported, not an error).
set -euo pipefail

runs=${1:-3}
if ! [[ $runs =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [RUNS]   (a non-negative number, default 3)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

# One seeder in the resume test: its refetch goal is one piece.
resume_peers=1

echo "building (release)..." >&2
cargo test --release --features lab-bench --test it --no-run --quiet

declare -A values=()
failed=0

# run_test NAME METRIC... : runs the lab test NAME once and records its METRIC=<n> lines.
run_test() {
    local name=$1
    shift
    local status=0 out
    out=$(cargo test --release --quiet --features lab-bench --test it "lab::download::$name" -- --exact --nocapture 2>&1) || status=$?
    if grep -q "skipping lab test" <<<"$out"; then
        grep "skipping lab test" <<<"$out" >&2
        exit 1
    fi
    local row="" metric v
    for metric in "$@"; do
        v=$(grep -o "$metric=[0-9]*" <<<"$out" | head -n 1 | cut -d= -f2 || true)
        if ((status == 0)) && [[ -n $v ]]; then
            values[$metric]+="$v "
            row+=$(printf ' %21s' "$v")
        else
            row+=$(printf ' %21s' -)
        fi
    done
    if ((status != 0)); then
        failed=$((failed + 1))
        row+="  FAILED: $(grep -m 1 -E 'timed out|panicked|assert' <<<"$out" || echo "exit code $status")"
    fi
    echo "$row"
}

header() {
    printf '%-5s' run
    for metric in "$@"; do printf ' %21s' "$metric"; done
    echo
}

echo "P2: three seeders against one (128 MiB, each seeder shaped to 200 Mbit/s)"
header one_seeder_mbps three_seeders_mbps aggregate_ratio_x100
for run in $(seq 1 "$runs"); do
    printf '%-5s' "$run"
    run_test bench_three_seeders_against_one one_seeder_mbps three_seeders_mbps aggregate_ratio_x100
done
echo "P7: a downloader killed at 60% resumes (32 MiB, one seeder shaped to 40 Mbit/s)"
header refetched_bytes piece_size resumed_bytes
for run in $(seq 1 "$runs"); do
    printf '%-5s' "$run"
    run_test a_downloader_killed_at_60_percent_resumes_without_refetching_verified_pieces refetched_bytes piece_size resumed_bytes
done

# summary METRIC median|max : over the recorded runs, or empty when there are none.
summary() {
    [[ -n ${values[$1]:-} ]] || return 0
    local sorted
    sorted=$(tr ' ' '\n' <<<"${values[$1]}" | grep . | sort -n)
    case $2 in
    median) awk '{ v[NR] = $1 } END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            if (m == int(m)) printf "%d\n", m; else printf "%.1f\n", m
        }' <<<"$sorted" ;;
    max) tail -n 1 <<<"$sorted" ;;
    esac
}

echo
printf '%-21s %5s %10s %10s\n' metric runs median max
for metric in one_seeder_mbps three_seeders_mbps aggregate_ratio_x100 refetched_bytes piece_size resumed_bytes; do
    [[ -n ${values[$metric]:-} ]] || continue
    count=$(tr ' ' '\n' <<<"${values[$metric]}" | grep -c .)
    printf '%-21s %5s %10s %10s\n' "$metric" "$count" "$(summary "$metric" median)" "$(summary "$metric" max)"
done

echo
ratio=$(summary aggregate_ratio_x100 median)
if [[ -n $ratio ]]; then
    verdict=missed
    awk -v r="$ratio" 'BEGIN { exit !(r >= 270) }' && verdict=met
    printf 'P2 goal (median aggregate_ratio_x100 >= 270): %s, %s\n' "$ratio" "$verdict"
fi
refetched=$(summary refetched_bytes max)
piece=$(summary piece_size max)
if [[ -n $refetched && -n $piece ]]; then
    allowed=$((piece * resume_peers))
    verdict=missed
    ((refetched <= allowed)) && verdict=met
    printf 'P7 goal (max refetched_bytes <= %s piece(s) of %s = %s): %s, %s\n' \
        "$resume_peers" "$piece" "$allowed" "$refetched" "$verdict"
fi
if ((failed)); then
    echo "$failed runs failed (their logs are kept under ${TMPDIR:-/tmp}/iwant-lab-*)" >&2
    exit 1
fi
