#!/usr/bin/env bash
# Search end to end in a network lab: real `iwant` nodes (release build), each in its own network
# namespace on one bridge, with real mDNS; every number is measured from outside, through the
# CLI, as a user would see it.
#
# Usage: benches/search_e2e.sh [RUNS]
#   RUNS: how many times the leader of the big lab is killed (default 3; each gives one
#   failover sample). Needs root, `ip` (iproute2), python3 and jq.
# Environment (defaults in brackets):
#   FILES     files per node in the big lab [100000]; the small lab has FILES in all
#   NODES     nodes in the big lab [6]: after a kill, NODES-1 nodes of FILES files remain
#   SEARCHES  searches per latency series [300]
#   WRITES    write-to-hit samples [25]
#   IWANT_BENCH_DIR  scratch space (~3 GB of small files for the defaults) [$TMPDIR or /tmp]
#   KEEP=1    keep the scratch directory (homes, node logs) at the end
#
# Two labs, one after the other:
#   small lab: 3 nodes; nodes 0 and 1 share FILES/2 files each, node 2 nothing.
#     search_follower_ms  wall time of one `iwant search ... --json` process on a follower
#     search_leader_ms    the same on the leader (it answers itself, no network)
#     write_to_hit_ms     a new file written on follower A -> the first search on node C (not A,
#                         not the leader) that lists it; searches back to back
#   big lab: NODES nodes sharing FILES files each.
#     search_big_ms       search wall time on a follower, NODES x FILES entries at the leader
#     leader_rss_mb       VmRSS of the leader's process holding NODES x FILES entries
#     full_index_ms       kill -9 of the leader -> a search from a survivor reports a new
#                         leader holding every survivor's entries ((NODES-1) x FILES files)
#     new_leader_rss_mb   VmRSS of that new leader then
# Queries cycle over a fixed mix (one word, two words, a word and a number, a typo, a word
# that matches nothing). The file names are `<word> <word> <n><number>.txt` in 100 folders per
# node, from 64 words; every file's content is unique. The script prints each series' median,
# p99 and max and exits 1 if anything failed.
set -euo pipefail
export LC_ALL=C

runs=${1:-3}
files=${FILES:-100000}
big_nodes=${NODES:-6}
searches=${SEARCHES:-300}
writes=${WRITES:-25}
for n in "$runs" "$files" "$big_nodes" "$searches" "$writes"; do
    if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
        echo "usage: $0 [RUNS]   (RUNS, FILES, NODES, SEARCHES, WRITES: positive numbers)" >&2
        exit 2
    fi
done
if ((big_nodes < 2 || big_nodes > 200)); then
    echo "NODES must be 2 to 200" >&2
    exit 2
fi
if (($(id -u) != 0)); then
    echo "$0 needs root (network namespaces)" >&2
    exit 1
fi
for tool in ip python3 jq; do
    command -v "$tool" >/dev/null || {
        echo "$0 needs $tool" >&2
        exit 1
    }
done
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo build --release --quiet --bin iwant
bin=$PWD/target/release/iwant

scratch=$(mktemp -d "${IWANT_BENCH_DIR:-${TMPDIR:-/tmp}}/iwant-search-e2e-XXXXXX")
tag=$$
bridge=isb$tag
max_nodes=$((big_nodes > 3 ? big_nodes : 3))
declare -a pids=() homes=()
failed=0

# Everything this script started goes, also on Ctrl-C or an error.
cleanup() {
    local pid i
    for pid in "${pids[@]}"; do
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        [[ -n $pid ]] && wait "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < max_nodes; i++)); do
        ip link del "isv$tag-$i" 2>/dev/null || true
        ip netns del "isn$tag-$i" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    if [[ ${KEEP:-} == 1 ]]; then
        echo "kept $scratch" >&2
    else
        rm -rf "$scratch"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The network: the recipe of tests/it/lab/mod.rs (no IPv6 on the host side, no uplink).
ip link add "$bridge" type bridge mcast_snooping 0
echo 1 >"/proc/sys/net/ipv6/conf/$bridge/disable_ipv6"
ip link set "$bridge" up
for ((i = 0; i < max_nodes; i++)); do
    ns=isn$tag-$i veth=isv$tag-$i
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    echo 1 >"/proc/sys/net/ipv6/conf/$veth/disable_ipv6"
    ip link set "$veth" master "$bridge"
    ip link set "$veth" up
    ip -n "$ns" addr add "10.251.$((tag % 250)).$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
done

# make_share DIR NODE COUNT: COUNT small files with unique content in 100 folders.
make_share() {
    python3 - "$1" "$2" "$3" <<'EOF'
import os, sys
root, node, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = ("amber bison cobalt delta ember falcon garnet harbor indigo lemon maple nectar orchid "
         "pepper raven saffron tundra umber violet walnut willow canyon meadow summit glacier "
         "prairie lagoon island forest desert river valley autumn winter spring summer morning "
         "evening silver golden copper bronze marble granite velvet cotton linen paper report "
         "budget invoice photo video music notes draft final backup archive project design "
         "sketch letter travel").split()
per_dir = max(1, -(-count // 100))
for i in range(count):
    d = os.path.join(root, f"{words[(i // per_dir) % 64]} {i // per_dir:03d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    name = f"{words[(i * 7 + node) % 64]} {words[(i * 13 + 3 * node) % 64]} {node}{i:06d}.txt"
    with open(os.path.join(d, name), "w") as f:
        f.write(f"{node}/{name}\n")
EOF
}

# start NODE HOME: starts `iwant node` in NODE's namespace (`ip netns exec` execs, so the pid
# is iwant's) and waits until it answers `status`.
start() {
    local i=$1 home=$2
    homes[i]=$home
    IWANT_LOG=info NO_COLOR=1 ip netns exec "isn$tag-$i" "$bin" --home "$home" node \
        </dev/null >>"$home.out" 2>>"$home.err" &
    pids[i]=$!
    local until=$((SECONDS + 60))
    until "$bin" --home "$home" status --json >/dev/null 2>&1; do
        if ! kill -0 "${pids[i]}" 2>/dev/null || ((SECONDS > until)); then
            echo "node $i did not start; end of $home.err:" >&2
            tail -n 20 "$home.err" >&2
            exit 1
        fi
        sleep 0.1
    done
}

stop() {
    local i=$1
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
    pids[i]=
}

status() { "$bin" --home "${homes[$1]}" status --json; }

# node_of PEER_ID: the node index running with that peer id (among running nodes).
node_of() {
    local i
    for i in "${!pids[@]}"; do
        [[ -n ${pids[i]} ]] || continue
        if [[ $(status "$i" | jq -r .peer_id) == "$1" ]]; then
            echo "$i"
            return
        fi
    done
    echo "no running node has peer id $1" >&2
    return 1
}

# wait_indexed NODE... : waits until each node's first scan is done; prints its entry count
# (files + directories, the shared folder included: what the leader counts), one per line.
wait_indexed() {
    local i s until=$((SECONDS + 900))
    for i in "$@"; do
        while :; do
            s=$(status "$i")
            [[ $(jq -r .index.ready <<<"$s") == true ]] && break
            if ((SECONDS > until)); then
                echo "node $i did not finish indexing: $s" >&2
                exit 1
            fi
            sleep 0.5
        done
        jq -r '.index.files + .index.dirs' <<<"$s"
    done
}

# leader_holds NODE ENTRIES [NOT_LEADER]: waits until a search from NODE reports a leader
# (other than NOT_LEADER) holding ENTRIES entries; prints that leader's peer id.
leader_holds() {
    local i=$1 want=$2 not=${3:-} out seen="" until=$((SECONDS + 600))
    while :; do
        out=$("$bin" --home "${homes[i]}" search falcon --limit 1 --json 2>/dev/null) || out=
        if [[ -n $out ]]; then
            seen=$(jq -r '"\(.leader) \(.indexed)"' <<<"$out")
            if [[ ${seen#* } == "$want" && ${seen% *} != "$not" ]]; then
                echo "${seen% *}"
                return
            fi
        fi
        if ((SECONDS > until)); then
            echo "the leader never held $want entries (last seen: leader, indexed = $seen)" >&2
            exit 1
        fi
        sleep 0.02
    done
}

now_us() { echo "${EPOCHREALTIME//[.,]/}"; }

rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

declare -A values=()
record() { values[$1]+="$2 "; }

queries=("falcon" "amber report" "walnut 1000042" "flacon" "budget meadow" "zebra")

# latency SERIES NODE COUNT: COUNT searches from NODE, one after the other.
latency() {
    local series=$1 i=$2 count=$3 k t0 t1
    for ((k = 0; k < count; k++)); do
        local q=${queries[k % ${#queries[@]}]}
        t0=$(now_us)
        # shellcheck disable=SC2086 # the query's words are separate arguments
        if ! "$bin" --home "${homes[i]}" search $q --json >/dev/null 2>"$scratch/search.err"; then
            echo "search '$q' on node $i failed: $(cat "$scratch/search.err")" >&2
            failed=$((failed + 1))
            continue
        fi
        t1=$(now_us)
        record "$series" "$(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100))"
    done
}

echo "making the small lab's files ($files in all)..." >&2
for i in 0 1; do make_share "$scratch/small$i/shared" "$i" $((files / 2)); done
mkdir -p "$scratch/small2/shared"
for i in 0 1 2; do start "$i" "$scratch/small$i"; done
wait_indexed 0 1 2 >"$scratch/per_node"
mapfile -t per_node <"$scratch/per_node"
total=$((per_node[0] + per_node[1] + per_node[2]))
leader_id=$(leader_holds 2 "$total")
leader=$(node_of "$leader_id")
echo "small lab: leader node $leader holds $total entries" >&2
follower=$(((leader + 1) % 3))
latency search_follower_ms "$follower" "$searches"
latency search_leader_ms "$leader" "$searches"

# Writes on A (a follower sharing files), searched on C (the other follower).
if ((leader == 2)); then a=0 c=1; else a=$((1 - leader)) c=2; fi
mkdir -p "$scratch/small$a/shared/probes"
for ((k = 0; k < writes; k++)); do
    token=probe${k}w$RANDOM
    t0=$(now_us)
    echo "$k" >"$scratch/small$a/shared/probes/$token.txt"
    until=$((SECONDS + 10))
    until "$bin" --home "${homes[c]}" search "$token" --json 2>/dev/null | grep -q "\"$token.txt\""; do
        if ((SECONDS > until)); then
            echo "write $k ($token) on node $a was not found on node $c within 10 s" >&2
            failed=$((failed + 1))
            continue 2
        fi
    done
    t1=$(now_us)
    record write_to_hit_ms $(((t1 - t0) / 1000))
done
for i in 0 1 2; do stop "$i"; done

echo "making the big lab's files ($big_nodes x $files)..." >&2
for ((i = 0; i < big_nodes; i++)); do make_share "$scratch/big$i/shared" "$i" "$files" & done
wait
t0=$(now_us)
for ((i = 0; i < big_nodes; i++)); do start "$i" "$scratch/big$i"; done
# shellcheck disable=SC2046 # one argument per node
wait_indexed $(seq 0 $((big_nodes - 1))) >"$scratch/per_node"
mapfile -t per_node <"$scratch/per_node"
total=0
for n in "${per_node[@]}"; do total=$((total + n)); done
leader_id=$(leader_holds 0 "$total")
echo "big lab: all $big_nodes nodes indexed and the leader holds $total entries $((($(now_us) - t0) / 1000000)) s after the start" >&2
for ((run = 1; run <= runs; run++)); do
    leader=$(node_of "$leader_id")
    survivor=$(((leader + 1) % big_nodes))
    if ((run == 1)); then
        latency search_big_ms "$survivor" $((searches / 3))
    fi
    record leader_rss_mb "$(rss_mb "${pids[leader]}")"
    kill -KILL "${pids[leader]}"
    wait "${pids[leader]}" 2>/dev/null || true
    pids[leader]=
    t0=$(now_us)
    new_id=$(leader_holds "$survivor" $((total - per_node[leader])) "$leader_id")
    t1=$(now_us)
    record full_index_ms $(((t1 - t0) / 1000))
    new=$(node_of "$new_id")
    record new_leader_rss_mb "$(rss_mb "${pids[new]}")"
    echo "run $run: killed node $leader; node $new holds $((total - per_node[leader])) entries after $(((t1 - t0) / 1000)) ms" >&2
    # The killed node comes back, and the new leader collects all again.
    start "$leader" "${homes[leader]}"
    leader_id=$(leader_holds "$survivor" "$total")
done

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); small lab: 3 nodes, $files files; big lab: $big_nodes nodes x $files files"
printf '%-20s %7s %9s %9s %9s\n' metric samples median p99 max
for metric in search_follower_ms search_leader_ms write_to_hit_ms search_big_ms leader_rss_mb full_index_ms new_leader_rss_mb; do
    [[ -n ${values[$metric]:-} ]] || continue
    sorted=$(tr ' ' '\n' <<<"${values[$metric]}" | grep . | sort -g)
    awk -v m="$metric" '{ v[NR] = $1 }
        END {
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            r = int(0.99 * NR); if (r < 0.99 * NR) r++
            printf "%-20s %7d %9s %9s %9s\n", m, NR, med, v[r], v[NR]
        }' <<<"$sorted"
done
if ((failed)); then
    echo "$failed searches or writes failed" >&2
    exit 1
fi
