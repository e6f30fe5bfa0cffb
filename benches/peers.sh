#!/usr/bin/env bash
# iwant side by side with the tools people compare it with (issue 18), in one run, on the same
# files, between two network namespaces on one bridge (nothing leaves the machine):
#
#   iwant       two release nodes (mDNS off, the seeder named with --peer); `iwant get` timed
#               on the command line; node b is restarted before each 1 GiB get, so that each
#               one is the first transfer over a fresh connection
#   iwant+key   the same pair with a network key (private network, XSalsa20 under Noise)
#   rqbit       BitTorrent 9.1.0: `share` in a, `download --initial-peers` in b (no DHT, LSD,
#               trackers or UPnP; no encryption)
#   sendme      iroh 0.37.1 (QUIC + TLS): `send --relay disabled` in a, `receive` in b
#   raw TCP     socat, one connection (1 GiB only)
#
# Each transfer is timed from the receiving command's start until it exits with the data in
# place (metadata exchange included, nothing before it: seeders are ready, hashing done), then
# checked (b3sum, or diff of the tree) and removed. Prints every run, then the medians, the
# goals (iwant <= rqbit's time on the small files; iwant >= 1.5 x rqbit's rate on 1 GiB, first
# transfer included; keyed >= 0.85 x open) and whether they are met.
#
# Usage: sudo benches/peers.sh [RUNS] [MIB] [FILES]   (default 3 runs, 1024 MiB, 1000 files of
# 10 KB). Needs root, iproute2, socat and b3sum (installed with apt if missing); rqbit and
# sendme come from `cargo install --locked rqbit@9.1.0 sendme@0.37.1` into $PEER_TOOLS
# (default target/peer-tools; about 20 minutes on 2 cores the first time).
set -euo pipefail

runs=${1:-3}
mib=${2:-1024}
files=${3:-1000}
if ! [[ $runs =~ ^[1-9][0-9]*$ && $mib =~ ^[1-9][0-9]*$ && $files =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [RUNS] [MIB] [FILES]   (positive numbers; default 3 1024 1000)" >&2
    exit 2
fi
if ((EUID != 0)); then
    echo "$0: needs root (network namespaces)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
repo=$PWD
tools=${PEER_TOOLS:-$repo/target/peer-tools}

missing=()
for t in socat b3sum ip; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]})); then
    apt-get install -y socat b3sum iproute2 >/dev/null
fi
if [[ ! -x $tools/bin/rqbit || ! -x $tools/bin/sendme ]]; then
    echo "installing rqbit and sendme into $tools (once; about 20 minutes)..." >&2
    cargo install --locked --root "$tools" rqbit@9.1.0 sendme@0.37.1 >&2
fi
echo "building iwant (release)..." >&2
cargo build --release --quiet
iwant=$repo/target/release/iwant
rqbit=$tools/bin/rqbit
sendme=$tools/bin/sendme

# The lab: two namespaces on a bridge, and the scratch folder. Removed on any exit.
tag=iwpb$$
br=${tag}br
ns_a=${tag}a
ns_b=${tag}b
work=$(mktemp -d /tmp/iwant-peers-bench.XXXXXX)
cleanup() {
    for ns in "$ns_a" "$ns_b"; do
        if ip netns list | grep -qw "$ns"; then
            ip netns pids "$ns" | xargs -r kill -9 2>/dev/null || true
            ip netns del "$ns"
        fi
    done
    ip link del "$br" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip link add "$br" type bridge
ip link set "$br" up
i=0
for ns in "$ns_a" "$ns_b"; do
    i=$((i + 1))
    ip netns add "$ns"
    ip link add "${tag}v$i" type veth peer name "${tag}p$i"
    ip link set "${tag}p$i" master "$br"
    ip link set "${tag}p$i" up
    ip link set "${tag}v$i" netns "$ns"
    ip netns exec "$ns" ip addr add "10.231.0.$i/24" dev "${tag}v$i"
    ip netns exec "$ns" ip link set "${tag}v$i" up
    ip netns exec "$ns" ip link set lo up
done
in_a() { ip netns exec "$ns_a" "$@"; }
in_b() { ip netns exec "$ns_b" "$@"; }
export HOME=$work/home # rqbit and sendme keep their state here
mkdir -p "$HOME"

echo "making the files..." >&2
src=$work/src
mkdir -p "$src/small"
head -c $((mib << 20)) /dev/urandom >"$src/big.bin"
python3 - "$src/small" "$files" <<'EOF'
import os, sys
for i in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(10_000))
EOF
big_id=$(b3sum --no-names "$src/big.bin")
# In a virtual machine, page cache in memory the guest never touched before costs a fault in
# the host per page: the first 3 GiB written here went at 0.4 GB/s, the next at 3.5 GB/s. Every
# tool writes into the page cache; touch 4 GiB first so that none pays for it.
dd if=/dev/zero of="$work/warm" bs=1M count=4096 status=none
rm "$work/warm"
sync

ms() { date +%s%N | cut -b1-13; }
# wait_for SECONDS WHAT COMMAND...: runs COMMAND until it succeeds.
wait_for() {
    local until=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) > until)); then
            echo "gave up waiting for $what" >&2
            exit 1
        fi
        sleep 0.2
    done
}
check_big() { [[ $(b3sum --no-names "$1") == "$big_id" ]] || { echo "$1 is not the file" >&2; exit 1; }; }
check_small() { diff -rq "$src/small" "$1" >/dev/null || { echo "$1 is not the tree" >&2; exit 1; }; }
settle() { rm -rf "$@"; sync; }

# --- iwant: a pair of nodes, open or with a key ---------------------------------------------
iwant_home() { echo "$work/iwant-$1"; }
iwant_setup() { # NAME [KEYFILE]
    local name=$1 key=${2:-} h
    for side in a b; do
        h=$(iwant_home "$name$side")
        mkdir -p "$h/downloads"
        "$iwant" --home "$h" download-to "$h/downloads" >/dev/null
        if [[ $side == a ]]; then "$iwant" --home "$h" share "$src" >/dev/null; else
            mkdir -p "$h/shared"
            "$iwant" --home "$h" share "$h/shared" >/dev/null
        fi
        if [[ -n $key ]]; then cp "$key" "$h/network.key"; fi
    done
}
declare -A pids=()
iwant_start() { # NAME SIDE PORT
    local h args=()
    h=$(iwant_home "$1$2")
    args=(--home "$h" node --no-mdns --listen "/ip4/10.231.0.$([[ $2 == a ]] && echo 1 || echo 2)/tcp/$3")
    [[ $2 == b ]] && args+=(--peer "/ip4/10.231.0.1/tcp/$3")
    [[ -f $h/network.key ]] && args+=(--network-key "$h/network.key")
    if [[ $2 == a ]]; then in_a "$iwant" "${args[@]}" >"$h.log" 2>&1 &
    else in_b "$iwant" "${args[@]}" >"$h.log" 2>&1 &
    fi
    pids[$1$2]=$!
}
iwant_stop() { # NAME SIDE: stops the node as Ctrl-C would, and waits for it
    local h
    h=$(iwant_home "$1$2")
    pkill -INT -f -- "--home $h node" || true
    # (The bracket keeps pgrep from finding this very command line.)
    wait_for 30 "node $1$2 to stop" bash -c "! pgrep -f -- '[-]-home $h node'"
    wait "${pids[$1$2]}" 2>/dev/null || true
}
# Node b sees the seeder's whole share (the small tree's id at its leader).
iwant_ready() { "$iwant" --home "$(iwant_home "$1b")" search f00000 --json | grep -q "small/f00000.bin\|f00000.bin"; }
iwant_get() { # NAME ID -> ms
    local h t0 t1
    h=$(iwant_home "$1b")
    t0=$(ms)
    "$iwant" --home "$h" get "$2" --json >"$work/get.json"
    t1=$(ms)
    echo $((t1 - t0))
}

"$iwant" keygen "$work/network.key" >/dev/null
iwant_setup open
iwant_setup keyed "$work/network.key"
iwant_start open a 4801
iwant_start keyed a 4802
small_id=""
wait_for 300 "the seeder to index" bash -c "'$iwant' --home '$(iwant_home opena)' ls --json | grep -c '\"small/f' | grep -qx $files"
small_id=$("$iwant" --home "$(iwant_home opena)" ls --json | python3 -c 'import json,sys; print(next(e["id"] for e in json.load(sys.stdin) if e["path"]=="small"))')
wait_for 300 "the keyed seeder to index" bash -c "'$iwant' --home '$(iwant_home keyeda)' ls --json | grep -c '\"small/f' | grep -qx $files"

# --- rqbit: one seeder per content, started once --------------------------------------------
rq_flags=(--disable-dht --disable-dht-persistence --disable-upnp-port-forward --disable-lsd --disable-trackers)
rq_share() { # PATH PORT -> magnet
    local log=$work/rqbit-share-$2.log
    in_a "$rqbit" "${rq_flags[@]}" --listen-ip 10.231.0.1 --listen-port "$2" \
        --http-api-listen-addr "127.0.0.1:$(($2 + 100))" share "$1" >"$log" 2>&1 &
    wait_for 600 "rqbit to share $1" grep -q "magnet:" "$log"
    grep -o "magnet:[^ \"]*" "$log" | head -n 1
}
rq_get() { # MAGNET PORT OUT SEEDER_PORT -> ms
    local t0 t1
    mkdir -p "$3"
    t0=$(ms)
    in_b "$rqbit" "${rq_flags[@]}" --listen-ip 10.231.0.2 --listen-port "$2" download -e \
        --disable-http-api --initial-peers "10.231.0.1:$4" -o "$3" "$1" >"$work/rqbit-get.log" 2>&1
    t1=$(ms)
    echo $((t1 - t0))
}
rq_big=$(rq_share "$src/big.bin" 4811)
rq_small=$(rq_share "$src/small" 4812)

# --- sendme: one sender per content, started once -------------------------------------------
sm_send() { # PATH -> ticket
    local log=$work/sendme-$(basename "$1").log
    # (Its blob store goes in the current folder: the scratch one.)
    in_a env -C "$work" "$sendme" send "$1" --relay disabled >"$log" 2>&1 &
    wait_for 600 "sendme to import $1" grep -qo "blob[a-z0-9]\{20,\}" "$log"
    grep -o "blob[a-z0-9]*" "$log" | head -n 1
}
sm_get() { # TICKET OUT -> ms
    local t0 t1
    mkdir -p "$2"
    t0=$(ms)
    in_b env -C "$2" "$sendme" receive "$1" --relay disabled >"$work/sendme-get.log" 2>&1
    t1=$(ms)
    echo $((t1 - t0))
}
sm_big=$(sm_send "$src/big.bin")
sm_small=$(sm_send "$src/small")
# The seeders' set-up wrote gigabytes (sendme copies what it sends into its store) and may go on
# working after it printed its link (rqbit checks what it shares): flush the writes and wait
# until the machine is idle, or the first transfer timed pays for them.
sync
idle_pct() { # the CPU's idle share over one second, in percent
    local a b
    read -ra a < <(head -n 1 /proc/stat)
    sleep 1
    read -ra b < <(head -n 1 /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((100 * (b[4] - a[4]) / (total > 0 ? total : 1)))
}
for _ in $(seq 1 120); do
    (($(idle_pct) >= 90)) && break
done

# --- raw TCP ------------------------------------------------------------------------------------
raw_get() { # OUT -> ms
    local t0 t1
    in_a socat -b 262144 -u "FILE:$src/big.bin" TCP-LISTEN:4821,reuseaddr,bind=10.231.0.1 &
    local sender=$!
    wait_for 10 "socat to listen" in_a bash -c "ss -ltn | grep -q 10.231.0.1:4821"
    t0=$(ms)
    in_b socat -b 262144 -u TCP:10.231.0.1:4821 "CREATE:$1"
    t1=$(ms)
    wait "$sender"
    echo $((t1 - t0))
}

metrics=(iwant_big_ms iwant_keyed_big_ms rqbit_big_ms sendme_big_ms raw_big_ms
    iwant_small_ms rqbit_small_ms sendme_small_ms)
declare -A values=()
printf '%-4s' run
for m in "${metrics[@]}"; do printf ' %19s' "$m"; done
echo
for run in $(seq 1 "$runs"); do
    declare -A row=()
    # iwant, open and keyed: node b fresh for the big file (a first transfer).
    for name in open keyed; do
        port=$([[ $name == open ]] && echo 4801 || echo 4802)
        iwant_start "$name" b "$port"
        wait_for 60 "node b ($name) to see the seeder's files" iwant_ready "$name"
        out=$(iwant_home "${name}b")/downloads
        key=$([[ $name == open ]] && echo iwant_big_ms || echo iwant_keyed_big_ms)
        row[$key]=$(iwant_get "$name" "$big_id")
        check_big "$out/big.bin"
        settle "$out/big.bin"
        if [[ $name == open ]]; then
            row[iwant_small_ms]=$(iwant_get open "$small_id")
            check_small "$out/small"
            settle "$out/small"
        fi
        iwant_stop "$name" b
    done
    row[rqbit_big_ms]=$(rq_get "$rq_big" 4813 "$work/rq-out" 4811)
    check_big "$work/rq-out/big.bin"
    settle "$work/rq-out"
    row[rqbit_small_ms]=$(rq_get "$rq_small" 4814 "$work/rq-out" 4812)
    check_small "$work/rq-out/small"
    settle "$work/rq-out"
    row[sendme_big_ms]=$(sm_get "$sm_big" "$work/sm-out")
    check_big "$work/sm-out/big.bin"
    settle "$work/sm-out"
    row[sendme_small_ms]=$(sm_get "$sm_small" "$work/sm-out")
    check_small "$work/sm-out/small"
    settle "$work/sm-out"
    row[raw_big_ms]=$(raw_get "$work/raw.bin")
    check_big "$work/raw.bin"
    settle "$work/raw.bin"
    printf '%-4s' "$run"
    for m in "${metrics[@]}"; do
        printf ' %19s' "${row[$m]}"
        values[$m]+="${row[$m]} "
    done
    echo
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A med=()
echo
for m in "${metrics[@]}"; do
    med[$m]=$(median "${values[$m]}")
done
rate() { awk -v ms="$1" -v mib="$mib" 'BEGIN {printf "%.0f", mib * 1048576 / (ms / 1000) / 1e6}'; }
echo "| transfer (median of $runs) | iwant | iwant + network key | rqbit 9.1.0 | sendme 0.37.1 | raw TCP (socat) |"
echo "|---|---|---|---|---|---|"
echo "| $mib MiB, one seeder, first transfer | $(rate "${med[iwant_big_ms]}") MB/s | $(rate "${med[iwant_keyed_big_ms]}") MB/s | $(rate "${med[rqbit_big_ms]}") MB/s | $(rate "${med[sendme_big_ms]}") MB/s | $(rate "${med[raw_big_ms]}") MB/s |"
echo "| $files files × 10 KB | ${med[iwant_small_ms]} ms | | ${med[rqbit_small_ms]} ms | ${med[sendme_small_ms]} ms | |"
echo
awk -v i="${med[iwant_big_ms]}" -v r="${med[rqbit_big_ms]}" -v k="${med[iwant_keyed_big_ms]}" \
    -v is="${med[iwant_small_ms]}" -v rs="${med[rqbit_small_ms]}" 'BEGIN {
    printf "goal: iwant small files <= rqbit: %d ms vs %d ms, %s\n", is, rs, (is <= rs ? "met" : "missed")
    printf "goal: iwant 1 GiB rate >= 1.5 x rqbit: %.2f x, %s\n", r / i, (r / i >= 1.5 ? "met" : "missed")
    printf "goal: keyed rate >= 0.85 x open: %.2f x, %s\n", i / k, (i / k >= 0.85 ? "met" : "missed")
}'
