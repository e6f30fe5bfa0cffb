"""Part A of the py-libp2p interop test: a well-behaved client against a running iwant node.

    python interop.py --addr /ip4/127.0.0.1/tcp/PORT/p2p/PEERID --query NAME --path PATH \
        [--piece 1] [--timeout 60] [--iwant BIN --home DIR]

Dials the node over TCP + Noise + Yamux, runs identify and ping, searches for ``--query``
(CBOR encoded by hand, decoded by the hand-written decoder in cbor.py) until a hit with
``--path`` appears, locates it by id prefix, fetches its piece list over `/iwant/content/1.0.0`
and piece ``--piece`` (and the last one) over `/iwant/chunk/1`, hashes them with the pure-Python
BLAKE3 in blake3_pure.py and merges the piece list to the id; with ``--iwant``/``--home``, it
then asks the node (``iwant status --json``) how it lists this peer. Prints one JSON object on stdout;
exits 0 when every step ran (the values are for the caller to assert on), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import trio

import blake3_pure
import iwant_client as iw


async def find_hit(host, peer_id, query: str, path: str, deadline: float) -> dict:
    """Searches until the leader answers with a hit at ``path`` (a lone node elects itself
    and receives its own index asynchronously), retrying `busy` / `not_leader` after 500 ms."""
    attempts = 0
    last = None
    while True:
        attempts += 1
        last = await iw.search(host, peer_id, query)
        if last["answer"] == "results" and any(h["path"] == path for h in last["hits"]):
            last["attempts"] = attempts
            return last
        if last["answer"] not in ("results", "busy", "not_leader"):
            raise iw.ProtocolViolation(f"search answered {last}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no hit at {path!r} after {attempts} searches: {last}")
        await trio.sleep(0.5)


async def good_flow(host, addr: str, query: str, path: str, piece: int,
                    search_deadline_s: float = 20.0) -> dict:
    out: dict = {"stage": "connect"}
    t0 = time.monotonic()
    peer_id, conn = await iw.connect(host, addr)
    out["local_peer_id"] = str(host.get_id())
    out["remote_peer_id"] = str(peer_id)
    out["connection"] = conn

    out["stage"] = "identify"
    out["identify"] = await iw.identify(host, peer_id)

    out["stage"] = "ping"
    rtts = await iw.ping(host, peer_id, 3)
    out["ping"] = {"rtt_ms": rtts, "count": len(rtts)}

    out["stage"] = "search"
    res = await find_hit(host, peer_id, query, path, time.monotonic() + search_deadline_s)
    out["search"] = res
    hit = next(h for h in res["hits"] if h["path"] == path)
    file_id = bytes.fromhex(hit["id"])

    out["stage"] = "locate"
    out["locate"] = await iw.locate(host, peer_id, hit["id"][:8], 10)

    out["stage"] = "content"
    plist = await iw.pieces(host, peer_id, file_id)
    out["content"] = plist
    if plist["answer"] != "pieces":
        raise iw.ProtocolViolation(f"content answered {plist}")
    size, piece_size = plist["size"], plist["piece_size"]
    count = len(plist["pieces"])
    if count < 2:
        raise iw.ProtocolViolation("the test wants a multi-piece file")

    out["stage"] = "chunk"
    stream = await host.new_stream(peer_id, [iw.CHUNK])
    bogus = os.urandom(32)
    last = count - 1
    # Three pipelined requests, answered in order: the wanted piece; the last piece and one
    # past the end (docs' example: ok, then out_of_range at the piece count); an unknown id.
    await stream.write(
        iw.chunk_request(file_id, piece, 1)
        + iw.chunk_request(file_id, last, 2)
        + iw.chunk_request(bogus, 0, 1)
    )
    await stream.close_write()
    frames = []
    st, idx, data = await iw.read_frame(stream, piece, iw.piece_len(piece, piece_size, size))
    frames.append({"status": st, "index": idx, "len": len(data) if data else 0})
    wanted = data
    st, idx, data = await iw.read_frame(stream, last, iw.piece_len(last, piece_size, size))
    frames.append({"status": st, "index": idx, "len": len(data) if data else 0})
    last_data = data
    st, idx, _ = await iw.read_frame(stream, count, None)
    frames.append({"status": st, "index": idx, "len": 0})
    st, idx, _ = await iw.read_frame(stream, 0, None)
    frames.append({"status": st, "index": idx, "len": 0})
    tail, how = await iw.read_to_end(stream, 1 << 20)
    out["chunk"] = {"frames": frames, "trailing_bytes": len(tail), "end": how}

    out["stage"] = "hash"
    th = time.monotonic()
    computed = blake3_pure.subtree_cv(wanted, piece * piece_size) if wanted else None
    computed_last = blake3_pure.subtree_cv(last_data, last * piece_size) if last_data else None
    out["piece"] = {
        "index": piece,
        "len": len(wanted) if wanted else None,
        "computed_hash": computed.hex() if computed else None,
        "list_entry": plist["pieces"][piece],
        "last_index": last,
        "last_len": len(last_data) if last_data else None,
        "last_computed_hash": computed_last.hex() if computed_last else None,
        "last_list_entry": plist["pieces"][last],
        "hash_seconds": time.monotonic() - th,
    }
    out["file_id"] = hit["id"]
    out["merged_root"] = plist["merged_root"]
    out["stage"] = "done"
    out["seconds"] = time.monotonic() - t0
    return out


async def node_view(iwant: str, home: str, me: str, limit: float) -> dict:
    """While still connected: the node's own `status --json` entry for this peer, once it
    shows an agent and a ping time (the node pings every second)."""
    deadline = time.monotonic() + limit
    while True:
        proc = await trio.run_process([iwant, "--home", home, "status", "--json"],
                                      capture_stdout=True, capture_stderr=True, check=False)
        entry = None
        if proc.returncode == 0:
            peers = json.loads(proc.stdout).get("peers") or []
            entry = next((p for p in peers if p.get("peer_id") == me), None)
            if entry and entry.get("agent") and entry.get("rtt_us") is not None:
                return entry
        if time.monotonic() > deadline:
            return {"error": f"not listed with agent and rtt after {limit}s", "last": entry}
        await trio.sleep(0.25)


async def main_async(args) -> dict:
    with trio.fail_after(args.timeout):
        async with iw.running_host() as host:
            out = await good_flow(host, args.addr, args.query, args.path, args.piece)
            if args.iwant:
                out["node_view"] = await node_view(args.iwant, args.home,
                                                   out["local_peer_id"], 15.0)
            return out


def describe(e: BaseException) -> str:
    """The leaf exceptions of a (nested) exception group, with where they were raised."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    at = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
    return f"{type(e).__name__}: {e}{at}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--piece", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--iwant", help="the iwant binary, to ask the node what it sees of us")
    ap.add_argument("--home", help="the node's home, with --iwant")
    args = ap.parse_args()
    blake3_pure._self_test()
    try:
        out = trio.run(main_async, args)
        out["ok"] = True
        code = 0
    except BaseException as e:  # report everything as JSON, including timeouts
        out = {"ok": False, "error": describe(e), "traceback": traceback.format_exc()[-8000:]}
        code = 1
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
