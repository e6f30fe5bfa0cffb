#!/usr/bin/env bash
# Creates tests/interop/py/.venv from requirements.lock, for the py-libp2p interop tests
# (tests/it/interop/py.rs runs this too, once per test process).
#
# Idempotent: a venv whose marker file (written last) names this lock file's hash and the
# Python version is kept; anything else (missing, half-installed, stale) is removed and
# installed again. Concurrent runs wait for each other (flock on requirements.lock).
#
# Python: $PYTHON, else python3.11, else python3. Exit 3 when there is none.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/requirements.lock"
venv="$here/.venv"
marker="$venv/.iwant-installed"

py="${PYTHON:-}"
if [ -z "$py" ]; then
    py="$(command -v python3.11 || command -v python3 || true)"
fi
if [ -z "$py" ] || ! "$py" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    echo "install.sh: no python3 (3.10 or later) found" >&2
    exit 3
fi

exec 9<"$lock"
flock 9

want="$("$py" -c 'import hashlib, platform, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest(), platform.python_version())' "$lock")"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
    echo "py interop venv is up to date ($venv)"
    exit 0
fi

start=$(date +%s)
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps -r "$lock"
"$venv/bin/python" -m pip check
# The test's own modules import and the pure-Python BLAKE3 agrees with the native bindings.
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -c 'import sys
sys.path.insert(0, sys.argv[1])
import blake3_pure, cbor, iwant_client
blake3_pure._self_test()' "$here"
echo "$want" >"$marker"
echo "py interop venv installed in $(($(date +%s) - start)) s ($venv)"
