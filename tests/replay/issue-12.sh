#!/usr/bin/env bash
# Replays issue 12's bullets ("safe by default") against a binary, in a scratch HOME, on
# loopback with mDNS off: the refusals and their messages, a missing shared folder at start,
# and how long Ctrl-C takes in the middle of hashing 2 x 16 GiB sparse files. Not run by CI
# (the tests assert the same); for people and closing notes.
# Usage: bash tests/replay/issue-12.sh target/debug/iwant
set -u
B=$1; T=$(mktemp -d); export HOME=$T/me; mkdir -p $HOME/.ssh $HOME/Public
echo key > $HOME/.ssh/id_ed25519; echo hist > $HOME/.bash_history
H=$T/apps/h; I="$B --home $H"
say() { echo "\$ $*"; "$@" 2>&1 | sed 's/^/    /'; echo "    (exit ${PIPESTATUS[0]})"; }
say $I download-to --create $T/elsewhere
say $I share $HOME
say $I share /nonexistent/deep/folder; ls -d /nonexistent 2>&1 | sed 's/^/    /'
say $I share '~/Public'; ls -d "$PWD/~" 2>&1 | sed 's/^/    /'
echo x > $T/file.txt; say $I share $T/file.txt
say $I share /proc
say $I share --force /proc
# A missing shared folder at start is not recreated.
say $I share --create $T/disk/share; rmdir $T/disk/share $T/disk
$I node --no-mdns --listen /ip4/127.0.0.1/tcp/0 > $T/node.out 2> $T/node.err & P=$!
for i in $(seq 100); do $I status >/dev/null 2>&1 && break; sleep 0.1; done
$I status | grep -E "Shared folder|Watching"; ls -d $T/disk 2>&1 | sed 's/^/    /'
# Ctrl-C while hashing: 2 × 16 GiB sparse files.
mkdir -p $T/big; truncate -s 16G $T/big/a.img $T/big/b.img
say $I share $T/big
for i in $(seq 100); do $I status --json 2>/dev/null | grep -q '"hashing": {' && break; sleep 0.1; done
s=$(date +%s.%N); kill -INT $P; wait $P; e=$(date +%s.%N)
echo "Ctrl-C in mid-hashing: the node stopped in $(echo "$e - $s" | bc) s (exit $?)"
rm -rf $T
