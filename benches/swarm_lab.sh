#!/usr/bin/env bash
# Swarming in the network lab (issue 18): one seeder and eight downloaders that start together,
# every link shaped with tbf to 200 Mbit/s.
#
# Usage: benches/swarm_lab.sh [RUNS] [MIB]   (default 3 runs of 512 MiB; needs root and tc, see
# tests/it/lab/mod.rs)
#
# Runs the lab test bench_eight_downloaders_of_one_seeder (release build, --features lab-bench)
# RUNS times, each a fresh lab of ten nodes: first one node downloads the file alone and leaves,
# then eight nodes `get` it at once.
#   solo_ms           the lone download's own elapsed time
#   all_eight_ms      from the eight `get`s until the last of them is done
#   time_ratio_x100   all_eight_ms / solo_ms x 100; goal <= 200 (~800 if the seeder sends all)
#   seeder_sent_x100  bytes the seeder served during the eight / the file's size x 100; goal <= 300
# Prints every run, then the medians and the goals; exits 1 if a run failed (a missed goal is
# reported, not an error).
set -euo pipefail

runs=${1:-3}
mib=${2:-512}
if ! [[ $runs =~ ^[0-9]+$ && $mib =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [RUNS] [MIB]   (numbers; default 3 runs of 512 MiB)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo test --release --features lab-bench --test it --no-run --quiet

metrics=(solo_ms all_eight_ms time_ratio_x100 seeder_sent_x100)
declare -A values=()
failed=0
printf '%-5s' run
for m in "${metrics[@]}"; do printf ' %17s' "$m"; done
echo
for run in $(seq 1 "$runs"); do
    printf '%-5s' "$run"
    status=0
    out=$(IWANT_SWARM_MIB=$mib cargo test --release --quiet --features lab-bench --test it \
        lab::download::bench_eight_downloaders_of_one_seeder -- --exact --nocapture 2>&1) || status=$?
    if grep -q "skipping lab test" <<<"$out"; then
        grep "skipping lab test" <<<"$out" >&2
        exit 1
    fi
    for m in "${metrics[@]}"; do
        v=$(grep -o "$m=[0-9]*" <<<"$out" | head -n 1 | cut -d= -f2 || true)
        if ((status == 0)) && [[ -n $v ]]; then
            values[$m]+="$v "
            printf ' %17s' "$v"
        else
            printf ' %17s' -
        fi
    done
    if ((status != 0)); then
        failed=$((failed + 1))
        printf '  FAILED: %s' "$(grep -m 1 -E 'timed out|panicked|assert' <<<"$out" || echo "exit code $status")"
    fi
    echo
done

median() {
    tr ' ' '\n' <<<"${values[$1]:-}" | grep . | sort -n |
        awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)) }'
}

echo
for m in "${metrics[@]}"; do
    printf '%-17s median %s\n' "$m" "$(median "$m")"
done
ratio=$(median time_ratio_x100)
sent=$(median seeder_sent_x100)
if [[ -n $ratio && -n $sent ]]; then
    goal() { (($1 <= $2)) && echo met || echo missed; }
    printf 'goal: time_ratio_x100 <= 200: %s, %s\n' "$ratio" "$(goal "$ratio" 200)"
    printf 'goal: seeder_sent_x100 <= 300: %s, %s\n' "$sent" "$(goal "$sent" 300)"
fi
if ((failed)); then
    echo "$failed runs failed (their logs are kept under ${TMPDIR:-/tmp}/iwant-lab-*)" >&2
    exit 1
fi
