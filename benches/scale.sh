#!/usr/bin/env bash
# A LAN of many nodes in the network lab: formation, one leader, terms, failed handshakes, idle
# CPU / memory / connections / traffic per node, and failover after kill -9 of the leader.
#
# Usage: benches/scale.sh N [START] [RUNS]   (needs root, see tests/it/lab/mod.rs)
#   N      nodes (1 to 250)
#   START  `together` (default: every process at once, a room powering on) or the gap in ms
#          between two starts (one by one)
#   RUNS   runs, each a fresh lab (default 1)
#
# Runs the ignored lab test `lab::scale::scale_bench` (release build) RUNS times and prints
# one row per run:
#   formed_ms    last start -> every node lists every other as connected
#   leader_ms    last start -> every node follows one leader in one term
#   max_term     the highest term any node reported (after formation, the idle window and the
#                failover)
#   handshake    "failed in the handshake" lines in all logs (simultaneous dials and the like)
#   cpu_%/n      CPU per node over a 10 s idle window, percent of one core
#   rss_MB       resident memory per node
#   conn/n       connections per node
#   bytes/s/n    bytes sent + received per node over the idle window (its veth's counters)
#   calm         the leader and the highest term did not change during the idle window
#   failover_ms  kill -9 of the leader -> the others follow one new leader
# Times come from parallel rounds of `iwant status --json` (16 at once, a round every 500 ms),
# so they are late by up to a round. All the nodes share this machine's cores: on 2 cores the
# CPU per node is what 100 nodes leave each other, not what one node costs on its own machine.
set -euo pipefail

n=${1:-}
start=${2:-together}
runs=${3:-1}
if ! [[ $n =~ ^[1-9][0-9]*$ ]] || ! [[ $runs =~ ^[1-9][0-9]*$ ]] \
    || ! [[ $start == together || $start =~ ^[0-9]+$ ]]; then
    echo "usage: $0 N [together|GAP_MS] [RUNS]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo test --release --test it --no-run --quiet

failed=0
header_done=0
for run in $(seq 1 "$runs"); do
    status=0
    out=$(IWANT_SCALE_NODES=$n IWANT_SCALE_START=$start cargo test --release --quiet --test it \
        lab::scale::scale_bench -- --ignored --exact --nocapture 2>&1) || status=$?
    if grep -q "skipping lab test" <<<"$out"; then
        grep "skipping lab test" <<<"$out" >&2
        exit 1
    fi
    if ((status != 0)) || ! grep -q '^nodes ' <<<"$out"; then
        failed=$((failed + 1))
        reason=$(grep -m 1 -E 'timed out|panicked' <<<"$out" || echo "exit code $status")
        echo "run $run FAILED: $reason"
        grep -E '^  node [0-9]+:' <<<"$out" | head -n 10 || true
        continue
    fi
    if ((!header_done)); then
        printf 'run  start     %s\n' "$(grep -m 1 '^nodes ' <<<"$out")"
        header_done=1
    fi
    printf '%-4s %-9s %s\n' "$run" "$start" "$(grep -A 1 '^nodes ' <<<"$out" | tail -n 1)"
done
if ((failed)); then
    echo "$failed of $runs runs failed (their logs are kept under ${TMPDIR:-/tmp}/iwant-lab-*)" >&2
    exit 1
fi
