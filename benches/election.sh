#!/usr/bin/env bash
# Leader election in the network lab: how fast a leader is elected and replaced, and how
# stable it is under churn.
#
# Usage: benches/election.sh [RUNS] [SOAK_RUNS]   (defaults 10 and 10; needs root, see
#                                                  tests/it/lab/mod.rs)
#
# Runs these lab tests (release build), each run a fresh lab:
#   - leader_reelected_after_leader_is_killed_and_after_it_stops, RUNS times:
#       first_leader_ms   cold start of 5 nodes: first node spawned -> all 5 report one leader
#       failover_kill_ms  kill -9 of the leader -> the 4 others report one new leader
#       failover_stop_ms  SIGTERM of the new leader -> the 3 others report one new leader
#   - partition_elects_a_leader_per_side_and_heal_leaves_one, RUNS times:
#       failover_cut_ms   link of the leader (and one follower) cut -> the 3 others report one
#                         new leader
#       heal_ms           links of the 2 cut nodes back up -> all 5 report one leader
#   - soak_ten_nodes_with_a_follower_restarting_every_5_s (built only with --features lab-soak), SOAK_RUNS
#     times:
#       leader_changes    in 60 s with 10 nodes and a follower restarted every 5 s: how often
#                         a node that was not restarted saw its leader change (goal 0)
# Times are measured by polling `iwant status --json` of every node (every 50 ms, plus the
# time the polls take), from the event to the end of the first poll round that shows the
# condition. The script prints every run, then median and max per metric; it exits 1 if any
# run failed.
set -euo pipefail

runs=${1:-10}
soak_runs=${2:-10}
for n in "$runs" "$soak_runs"; do
    if ! [[ $n =~ ^[0-9]+$ ]]; then
        echo "usage: $0 [RUNS] [SOAK_RUNS]   (non-negative numbers, default 10 and 10)" >&2
        exit 2
    fi
done
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo test --release --features lab-soak --test it --no-run --quiet

declare -A values=()
failed=0

# run_test NAME METRIC... : runs the lab test NAME once and records its METRIC=<n> lines.
run_test() {
    local name=$1
    shift
    local status=0 out
    out=$(cargo test --release --quiet --features lab-soak --test it "lab::election::$name" -- --exact --nocapture 2>&1) || status=$?
    if grep -q "skipping lab test" <<<"$out"; then
        grep "skipping lab test" <<<"$out" >&2
        exit 1
    fi
    local row="" metric v
    for metric in "$@"; do
        v=$(grep -o "$metric=[0-9]*" <<<"$out" | head -n 1 | cut -d= -f2 || true)
        if ((status == 0)) && [[ -n $v ]]; then
            values[$metric]+="$v "
            row+=$(printf ' %17s' "$v")
        else
            row+=$(printf ' %17s' -)
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
    for metric in "$@"; do printf ' %17s' "$metric"; done
    echo
}

header first_leader_ms failover_kill_ms failover_stop_ms
for run in $(seq 1 "$runs"); do
    printf '%-5s' "$run"
    run_test leader_reelected_after_leader_is_killed_and_after_it_stops first_leader_ms failover_kill_ms failover_stop_ms
done
header failover_cut_ms heal_ms
for run in $(seq 1 "$runs"); do
    printf '%-5s' "$run"
    run_test partition_elects_a_leader_per_side_and_heal_leaves_one failover_cut_ms heal_ms
done
header leader_changes
for run in $(seq 1 "$soak_runs"); do
    printf '%-5s' "$run"
    run_test soak_ten_nodes_with_a_follower_restarting_every_5_s leader_changes
done

echo
printf '%-18s %5s %8s %8s\n' metric runs median max
for metric in first_leader_ms failover_kill_ms failover_stop_ms failover_cut_ms heal_ms leader_changes; do
    [[ -n ${values[$metric]:-} ]] || continue
    sorted=$(tr ' ' '\n' <<<"${values[$metric]}" | grep . | sort -n)
    count=$(wc -l <<<"$sorted")
    median=$(awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$sorted")
    printf '%-18s %5s %8s %8s\n' "$metric" "$count" "$median" "$(tail -n 1 <<<"$sorted")"
done
if ((failed)); then
    echo "$failed runs failed (their logs are kept under ${TMPDIR:-/tmp}/iwant-lab-*)" >&2
    exit 1
fi
