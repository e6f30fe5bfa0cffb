"""Part B of the py-libp2p interop test: misbehaving foreign peers against a running iwant node,
while a well-behaved client (Part A's flow) must still succeed.

    python misbehave.py --addr /ip4/127.0.0.1/tcp/PORT/p2p/PEERID --query NAME --path PATH

Four py-libp2p hosts, each its own peer id:
- ``idle``: connects, identifies, pings once, then only answers the node's pings and identify
  (py-libp2p's built-in handlers) for ``--hold`` seconds, watching whether it stays connected.
- ``flood``: opens ``--flood-streams`` `/iwant/chunk/1` streams (the docs allow 8 per peer),
  writes many pipelined whole-file requests on each and never reads; then inspects, without
  reading, what each stream received (the node should serve 8 and close the rest at once),
  resets them all and checks that a fresh stream is served again.
- ``garbage``: for every `/iwant/...` protocol in docs/protocols.md (one host per protocol)
  sends random bytes, truncated messages, huge declared lengths, deep nesting, oversized CBOR
  and malformed requests, one after the other, and records what the node answered and whether
  the connection survived; one more host leaves an incomplete request of each protocol open.
- ``good``: runs Part A's flow twice: once while the flood and the garbage are going on, once
  after the garbage is done (the flood and the idle peer still connected).

``--scenario slot-leak`` and ``--scenario election-term`` run two more hostile peers instead
(see their functions): both found node bugs when they were written. ``--scenario silent-voters``
(``--addrs``, ``--count``, ``--hold``) and ``--scenario mute-leader`` (``--addrs``, ``--term``,
``--hold``) are run by the namespace lab against several nodes.

Prints one JSON object on stdout; exits 0 when the script itself ran to the end (whether the
node behaved is for the caller to assert on), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
import traceback
from contextlib import AsyncExitStack

import trio

import cbor
import iwant_client as iw
from interop import good_flow

# ---------------------------------------------------------------------------------------------
# the idle peer


async def idle_peer(host, addr: str, hold: float, out: dict) -> None:
    t0 = time.monotonic()
    peer_id, conn = await iw.connect(host, addr)
    out["peer_id"] = str(host.get_id())
    out["connection"] = conn
    ident = await iw.identify(host, peer_id)
    out["agent"] = ident["agentVersion"]
    out["ping_rtt_ms"] = await iw.ping(host, peer_id, 1)
    out["disconnected_after_s"] = None
    while time.monotonic() - t0 < hold:
        if not iw.is_connected(host, peer_id):
            out["disconnected_after_s"] = round(time.monotonic() - t0, 2)
            break
        await trio.sleep(0.25)
    out["connected_at_end"] = iw.is_connected(host, peer_id)
    out["held_s"] = round(time.monotonic() - t0, 2)


# ---------------------------------------------------------------------------------------------
# the flooding peer


def stream_state(stream) -> dict:
    """What a yamux stream received, looked at without reading it."""
    ms = stream.muxed_stream
    buf = ms.conn.stream_buffers.get(ms.stream_id)
    return {
        "buffered": len(buf) if buf is not None else 0,
        "recv_closed": bool(ms.recv_closed),
        "reset": bool(ms.reset_received),
    }


async def flood_peer(host, addr: str, file_id_hex: str, n_streams: int, per_stream: int,
                     ready: trio.Event, release: trio.Event, out: dict) -> None:
    peer_id, conn = await iw.connect(host, addr)
    out["peer_id"] = str(host.get_id())
    out["connection"] = conn
    file_id = bytes.fromhex(file_id_hex)
    t_start = time.monotonic()
    streams = []
    out["open_errors"] = []
    out["write_errors"] = []
    for i in range(n_streams):
        t0 = time.monotonic()
        try:
            with trio.fail_after(10):
                s = await host.new_stream(peer_id, [iw.CHUNK])
        except Exception as e:  # noqa: BLE001 - recorded
            out["open_errors"].append({"stream": i, "error": f"{type(e).__name__}: {e}"[:200],
                                       "seconds": round(time.monotonic() - t0, 3)})
            continue
        streams.append((i, s))
        # ``per_stream`` requests for the whole file (3 pieces each), never read.
        try:
            with trio.fail_after(5):
                await s.write(iw.chunk_request(file_id, 0, 64) * per_stream)
        except Exception as e:  # noqa: BLE001 - recorded
            out["write_errors"].append({"stream": i, "error": f"{type(e).__name__}: {e}"})
    out["opened"] = len(streams)
    # Let the node fill the windows of the streams it serves and close the others.
    await trio.sleep(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [stream_state(s) for _, s in streams]
        served = sum(1 for st in states if st["buffered"] > 0)
        closed = sum(1 for st in states if st["recv_closed"] or st["reset"])
        if served + closed >= len(streams):
            break
        await trio.sleep(0.1)
    ready.set()
    await release.wait()
    states = [dict(stream=i, **stream_state(s)) for i, s in streams]
    out["streams"] = states
    out["served"] = sum(1 for st in states if st["buffered"] > 0)
    out["closed_empty"] = sum(
        1 for st in states if st["buffered"] == 0 and (st["recv_closed"] or st["reset"])
    )
    out["still_connected"] = iw.is_connected(host, peer_id)
    out["held_s"] = round(time.monotonic() - t_start, 2)
    for _, s in streams:
        try:
            await s.reset()
        except Exception:  # noqa: BLE001
            pass
    # Recovery: once the stalled streams are gone the peer is served again. Slots are freed
    # asynchronously, so a stream closed before its first frame (docs: treat like busy) or a
    # busy frame is retried after 500 ms, up to a deadline.
    t0 = time.monotonic()
    attempts = 0
    out["recovery"] = {"ok": False}
    while time.monotonic() - t0 < 15:
        attempts += 1
        try:
            with trio.fail_after(10):
                s = await host.new_stream(peer_id, [iw.CHUNK])
                await s.write(iw.chunk_request(file_id, 0, 1))
                await s.close_write()
                st, idx, data = await iw.read_frame(s, 0, iw.MIN_PIECE)
            if st == "ok" and data is not None and len(data) == iw.MIN_PIECE:
                out["recovery"] = {"ok": True, "attempts": attempts,
                                   "seconds": round(time.monotonic() - t0, 2)}
                break
            out["recovery"] = {"ok": False, "last": st}
        except Exception as e:  # noqa: BLE001 - recorded
            out["recovery"] = {"ok": False, "last": f"{type(e).__name__}: {e}"}
        await trio.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# the garbage peer


def _huge_bstr() -> bytes:
    # byte string declaring 2^64 - 1 bytes, then 8 bytes
    return b"\x5b" + b"\xff" * 8 + b"12345678"


def garbage_cases(file_id: bytes) -> list[tuple[str, str, bytes, bool]]:
    """(protocol, case, bytes to write, close the write side afterwards)."""
    rnd = os.urandom
    cases: list[tuple[str, str, bytes, bool]] = []
    good = {
        iw.PEERS: cbor.encode({"peers": [{"peer_id": "12D3KooWxx", "addrs": ["/ip4/1.2.3.4"]}]}),
        iw.INDEX: cbor.encode({"delta": {"base": 0, "version": 1, "upserted": [], "removed": []}}),
        iw.SEARCH: cbor.encode({"search": {"text": "a", "kind": None, "offset": 0, "limit": 5}}),
        iw.CONTENT: cbor.encode({"pieces": {"id": file_id}}),
    }
    limits = {iw.PEERS: 32 * 1024, iw.INDEX: 1024 * 1024, iw.SEARCH: 24 * 1024, iw.CONTENT: 10 * 1024}
    for proto in (iw.PEERS, iw.INDEX, iw.SEARCH, iw.CONTENT):
        limit = limits[proto]
        cases += [
            (proto, "random-1k", rnd(1024), True),
            (proto, "random-over-limit", rnd(limit + 4096), True),
            (proto, "truncated", good[proto][:-1], True),
            (proto, "empty", b"", True),
            (proto, "huge-bytestring-len", b"\xa1\x62id" + _huge_bstr(), True),
            (proto, "huge-map-len", b"\xbb" + b"\xff" * 8 + b"\x61a\x01", True),
            (proto, "huge-array-len", b"\xa1\x66search\x9b" + b"\xff" * 8, True),
            (proto, "deep-nesting", b"\x81" * (limit - 16) + b"\x00", True),
            (proto, "indefinite-unclosed", b"\xbf\x61a" + b"\x9f" * 64, True),
            (proto, "trailing-garbage", good[proto] + rnd(16), True),
            (proto, "two-values", good[proto] + good[proto], True),
            (proto, "no-close-partial", good[proto][:3], False),
        ]
    # oversized but well-formed CBOR, per protocol
    cases += [
        (iw.SEARCH, "oversized-text-5k", cbor.encode(
            {"search": {"text": "a" * 5000, "kind": None, "offset": 0, "limit": 5}}), True),
        (iw.SEARCH, "oversized-64k", cbor.encode(
            {"search": {"text": "a" * 65536, "kind": None, "offset": 0, "limit": 5}}), True),
        (iw.SEARCH, "text-300", cbor.encode(
            {"search": {"text": "a" * 300, "kind": None, "offset": 0, "limit": 5}}), True),
        (iw.SEARCH, "limit-1000", cbor.encode(
            {"search": {"text": "a", "kind": None, "offset": 0, "limit": 1000}}), True),
        (iw.SEARCH, "locate-bad-prefix", cbor.encode(
            {"locate": {"prefix": "xyz", "max": 5}}), True),
        (iw.SEARCH, "holders-too-many", cbor.encode(
            {"holders": {"ids": [file_id] * 513}}), True),
        (iw.SEARCH, "wrong-types", cbor.encode(
            {"search": {"text": 5, "kind": "file", "offset": -1, "limit": "x"}}), True),
        (iw.CONTENT, "oversized-12k", cbor.encode(
            {"pieces": {"id": file_id, "pad": b"\0" * (12 << 10)}}), True),
        (iw.CONTENT, "oversized-3m", cbor.encode(
            {"pieces": {"id": file_id, "pad": b"\0" * (3 << 20)}}), True),
        (iw.CONTENT, "id-31-bytes", cbor.encode({"pieces": {"id": file_id[:31]}}), True),
        (iw.CONTENT, "manifest-offset-past", cbor.encode(
            {"manifest": {"id": file_id, "offset": 1 << 40}}), True),
        (iw.CONTENT, "id-as-int-array", cbor.encode({"pieces": {"id": list(file_id)}}), True),
        (iw.CONTENT, "list-path-up", cbor.encode({"list": {"path": "../..", "after": None}}), True),
        (iw.CONTENT, "attrs-first-past", cbor.encode(
            {"attrs": {"id": file_id, "first": 1 << 40}}), True),
        (iw.PEERS, "too-many-records", cbor.encode({"peers": [
            {"peer_id": "12D3KooWBogus", "addrs": ["/ip4/127.0.0.1/tcp/1"]}] * 100}), True),
        (iw.PEERS, "oversized-40k", cbor.encode({"peers": [
            {"peer_id": "x" * 40000, "addrs": []}]}), True),
        (iw.INDEX, "oversized-2m", cbor.encode({"delta": {
            "base": 0, "version": 1, "upserted": [], "removed": ["a" * (2 << 20)]}}), True),
        (iw.INDEX, "too-many-removed", cbor.encode({"delta": {
            "base": 0, "version": 1, "upserted": [], "removed": ["x"] * 9000}}), True),
    ]
    # election: frames of one length byte + CBOR
    hb = cbor.encode({"heartbeat": {"term": 0}})
    cases += [
        (iw.ELECTION, "random-1k", rnd(1024), True),
        (iw.ELECTION, "len-0", b"\x00", True),
        (iw.ELECTION, "len-255", b"\xff" + rnd(255), True),
        (iw.ELECTION, "len-65", bytes([65]) + rnd(65), True),
        (iw.ELECTION, "truncated", bytes([len(hb)]) + hb[:-2], True),
        (iw.ELECTION, "bad-cbor", bytes([20]) + rnd(20), True),
        (iw.ELECTION, "unknown-message", bytes([12]) + cbor.encode({"zzz": {"t": 1}})[:12], True),
        (iw.ELECTION, "no-close-partial", bytes([40]) + rnd(3), False),
    ]
    # chunk: malformed fixed-size requests
    ok = iw.chunk_request(file_id, 0, 1)
    cases += [
        (iw.CHUNK, "random-1k", rnd(1024), True),
        (iw.CHUNK, "truncated-20", ok[:20], True),
        (iw.CHUNK, "op-2", iw.chunk_request(file_id, 0, 1, op=2), True),
        (iw.CHUNK, "op-0", iw.chunk_request(file_id, 0, 1, op=0), True),
        (iw.CHUNK, "count-0", iw.chunk_request(file_id, 0, 0), True),
        (iw.CHUNK, "count-65", iw.chunk_request(file_id, 0, 65), True),
        (iw.CHUNK, "count-max", bytes([1]) + file_id + struct.pack("<II", 0, 0xFFFFFFFF), True),
        (iw.CHUNK, "first-plus-count-overflow",
         bytes([1]) + file_id + struct.pack("<II", 0xFFFFFFFF, 1), True),
        (iw.CHUNK, "first-past-end", iw.chunk_request(file_id, 1000, 1), True),
        (iw.CHUNK, "valid-then-truncated", ok + ok[:7], True),
        (iw.CHUNK, "no-close-partial", ok[:5], False),
    ]
    return cases


async def alive(host, peer_id) -> bool:
    """Whether a ping gets through (on any connection: py-libp2p dials again by itself)."""
    try:
        with trio.fail_after(3):
            await iw.ping(host, peer_id, 1)
        return True
    except Exception:  # noqa: BLE001 - any failure means no
        return False


async def connection_survived(host, peer_id, conn, settle: float) -> bool:
    """Whether ``conn`` is still open and carrying pings, watched for ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        ok = await alive(host, peer_id)
        if not ok or conn.event_closed.is_set() or iw.current_connection(host, peer_id) is not conn:
            return False
        if time.monotonic() >= deadline:
            return True
        await trio.sleep(0.25)


async def run_case(host, peer_id, proto, name, payload, close, read_timeout) -> dict:
    rec = {"protocol": proto, "case": name, "sent": len(payload)}
    t0 = time.monotonic()
    try:
        with trio.fail_after(10):
            s = await host.new_stream(peer_id, [proto])
    except Exception as e:  # noqa: BLE001 - recorded
        rec["result"] = "open_failed"
        rec["error"] = f"{type(e).__name__}: {e}"[:300]
        return rec
    try:
        with trio.fail_after(15):
            # in pieces, so that a node closing early shows up as a write error
            for i in range(0, len(payload), 65536):
                await s.write(payload[i : i + 65536])
            if close:
                await s.close_write()
    except Exception as e:  # noqa: BLE001 - recorded
        rec["write_error"] = f"{type(e).__name__}: {e}"[:200]
    try:
        with trio.fail_after(read_timeout):
            raw, how = await iw.read_to_end(s, 8 << 20)
        rec["result"] = how
        rec["answer_len"] = len(raw)
        if raw:
            rec["answer_hex"] = raw[:48].hex()
            if proto != iw.CHUNK:
                try:
                    value = cbor.decode(raw)
                    rec["answer"] = repr(value)[:200]
                    if isinstance(value, str):
                        rec["variant"] = value
                    elif isinstance(value, dict) and len(value) == 1:
                        rec["variant"] = str(next(iter(value)))
                except cbor.CborError as e:
                    rec["answer"] = f"undecodable: {e}"
    except trio.TooSlowError:
        rec["result"] = "open_after_timeout"
        try:
            await s.reset()
        except Exception:  # noqa: BLE001
            pass
    except Exception as e:  # noqa: BLE001 - recorded
        rec["result"] = "read_error"
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
    rec["seconds"] = round(time.monotonic() - t0, 2)
    return rec


async def garbage_peer(addr: str, file_id_hex: str, out: dict) -> None:
    """One host (peer id) per protocol, its cases one after the other, each followed by a
    liveness check (a case that makes the node close the connection is recorded, and the host
    dials again); plus one host holding every incomplete request open at once."""
    cases = garbage_cases(bytes.fromhex(file_id_hex))
    out["cases"] = []
    out["peers"] = {}

    async def sequential(proto, mine):
        async with iw.running_host() as host:
            peer_id, _ = await iw.connect(host, addr)
            out["peers"][proto] = str(host.get_id())
            for _, name, payload, close in mine:
                conn = iw.current_connection(host, peer_id)
                rec = await run_case(host, peer_id, proto, name, payload, close, 15)
                # The leader drops a sender whose index push it refused (docs), not at once:
                # after a `refused` answer give the node 3 s to close the connection.
                settle = 3.0 if rec.get("variant") == "refused" else 0.0
                rec["connection_survived"] = await connection_survived(
                    host, peer_id, conn, settle)
                if iw.current_connection(host, peer_id) is None:
                    with trio.fail_after(10):
                        await iw.connect(host, addr)
                out["cases"].append(rec)

    async def held_open(mine):
        async with iw.running_host() as host:
            peer_id, _ = await iw.connect(host, addr)
            out["peers"]["held-open"] = str(host.get_id())

            async def one(proto, name, payload, close):
                rec = await run_case(host, peer_id, proto, name, payload, close, 13)
                out["cases"].append(rec)

            async with trio.open_nursery() as n:
                for case in mine:
                    n.start_soon(one, *case)

    async with trio.open_nursery() as n:
        for proto in iw.IWANT_PROTOCOLS:
            n.start_soon(sequential, proto, [c for c in cases if c[0] == proto and c[3]])
        n.start_soon(held_open, [c for c in cases if not c[3]])
    out["count"] = len(out["cases"])


# ---------------------------------------------------------------------------------------------
# scenario "slot-leak": chunk slots of a connection that the node itself closes


async def hold_chunk_streams(host, peer_id, file_id: bytes, n: int, keep: list) -> int:
    """Opens up to ``n`` chunk streams, each with an incomplete request (held by the server
    for as long as the stream lives); returns how many the node accepted."""
    opened = 0
    for _ in range(n):
        try:
            with trio.fail_after(10):
                s = await host.new_stream(peer_id, [iw.CHUNK])
                await s.write(iw.chunk_request(file_id, 0, 1)[:5])
            keep.append(s)
            opened += 1
        except Exception:  # noqa: BLE001 - counted
            pass
    return opened


async def slot_leak(args) -> dict:
    """A peer holds 8 chunk streams and stops answering pings, so the node closes its
    connection (docs: no answered ping for 20 s, net::LIVENESS_TIMEOUT). Afterwards the same peer must get its 8 streams
    again, and 7 other peers 8 each: 64 in all, the documented total."""
    out: dict = {}
    file_id = bytes.fromhex(args.file_id)
    async with iw.running_host() as x:
        async def mute(stream):
            await trio.sleep(3600)

        x.set_stream_handler(iw.PING, mute)
        peer_id, _ = await iw.connect(x, args.addr)
        keep: list = []
        out["first_opened"] = await hold_chunk_streams(x, peer_id, file_id, 8, keep)
        t0 = time.monotonic()
        while iw.is_connected(x, peer_id) and time.monotonic() - t0 < 40:
            await trio.sleep(0.1)
        out["closed_by_node_after_s"] = round(time.monotonic() - t0, 2)
        out["closed_by_node"] = not iw.is_connected(x, peer_id)
        from libp2p.host.ping import PingService

        x.set_stream_handler(iw.PING, PingService(x).handle_ping)
        keep.clear()
        await trio.sleep(1)
        await iw.connect(x, args.addr)
        out["same_peer_reopened"] = await hold_chunk_streams(x, peer_id, file_id, 8, keep)
        counts: list[int] = []
        done = trio.Event()

        async def other(ready: trio.Event):
            async with iw.running_host() as h:
                pid, _ = await iw.connect(h, args.addr)
                mine: list = []
                counts.append(await hold_chunk_streams(h, pid, file_id, 8, mine))
                ready.set()
                await done.wait()

        async with trio.open_nursery() as n:
            events = []
            for _ in range(7):
                ev = trio.Event()
                events.append(ev)
                n.start_soon(other, ev)
                await ev.wait()  # one after the other: a clear count per peer
            out["other_peers_opened"] = counts
            out["total_opened"] = out["same_peer_reopened"] + sum(counts)
            done.set()
    return out


# ---------------------------------------------------------------------------------------------
# scenario "election-term": a foreign participant announcing the largest term


async def sink(stream) -> None:
    """Reads a stream to its end and drops what it reads (an election stream we never answer)."""
    try:
        while await stream.read(1024):
            pass
    except Exception:  # noqa: BLE001 - the node may reset it
        pass


async def election_term(args) -> dict:
    """A foreign peer that accepts `/iwant/election/1` (so the node counts it as a participant)
    sends `Heartbeat {term: 2^64 - 1}` for 2 s and leaves. The node must survive and, once it
    has elected a leader again, answer a well-behaved client's search."""
    out: dict = {}
    async with iw.running_host() as h:
        h.set_stream_handler(iw.ELECTION, sink)
        peer_id, _ = await iw.connect(h, args.addr)
        s = await h.new_stream(peer_id, [iw.ELECTION])
        hb = cbor.encode({"heartbeat": {"term": 2**64 - 1}})
        out["frame_hex"] = (bytes([len(hb)]) + hb).hex()
        for _ in range(10):
            await s.write(bytes([len(hb)]) + hb)
            await trio.sleep(0.2)
        out["hijacker"] = str(h.get_id())
    # Give the node its election timeouts, then a well-behaved client (retrying not_leader).
    async with iw.running_host() as g:
        try:
            res = await good_flow(g, args.addr, args.query, args.path, args.piece,
                                  search_deadline_s=30.0)
            res["ok"] = True
        except Exception as e:  # noqa: BLE001 - recorded
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out["good"] = res
    return out


# ---------------------------------------------------------------------------------------------
# scenario "silent-voters": identities that join the election and never vote


async def silent_voters(args) -> dict:
    """``--count`` hosts, each its own peer id, connect to every node in ``--addrs`` and accept
    `/iwant/election/1` streams (so the nodes count them as participants), read everything sent
    on them and never write a byte; they stay for ``--hold`` seconds. Prints one line
    ``{"connected": n}`` once every host is connected to every node, then the result."""
    out: dict = {}
    addrs = [a for a in args.addrs.split(",") if a]

    async with AsyncExitStack() as stack:
        hosts = []
        for _ in range(args.count):
            h = await stack.enter_async_context(iw.running_host())
            h.set_stream_handler(iw.ELECTION, sink)
            hosts.append(h)
        for h in hosts:
            for addr in addrs:
                await iw.connect(h, addr)
        sys.stdout.write(json.dumps({"connected": len(hosts) * len(addrs)}) + "\n")
        sys.stdout.flush()
        await trio.sleep(args.hold)
        out["still_connected"] = sum(
            1 for h in hosts for a in addrs
            if iw.is_connected(h, iw.info_from_p2p_addr(iw.multiaddr.Multiaddr(a)).peer_id)
        )
        out["voters"] = [str(h.get_id()) for h in hosts]
    return out


# ---------------------------------------------------------------------------------------------
# scenario "mute-leader": an identity that wins the election and serves nothing


async def mute_leader(args) -> dict:
    """One host connects to every node in ``--addrs``, accepts `/iwant/election/1`,
    `/iwant/index/1.0.0` and `/iwant/search/1.0.0` streams and never answers on them, and
    sends `Heartbeat {term: --term}` to every node every 200 ms for ``--hold`` seconds: a
    leader claim the nodes follow, from a leader that serves nothing. Prints one line
    ``{"leader": peer_id}`` once it heartbeats every node, then the result."""
    out: dict = {}
    addrs = [a for a in args.addrs.split(",") if a]
    async with iw.running_host() as h:
        for proto in (iw.ELECTION, iw.INDEX, iw.SEARCH):
            h.set_stream_handler(proto, sink)
        streams = []
        for addr in addrs:
            peer_id, _ = await iw.connect(h, addr)
            streams.append(await h.new_stream(peer_id, [iw.ELECTION]))
        hb = cbor.encode({"heartbeat": {"term": args.term}})
        frame = bytes([len(hb)]) + hb
        sys.stdout.write(json.dumps({"leader": str(h.get_id())}) + "\n")
        sys.stdout.flush()
        sent, failed = 0, 0
        end = time.monotonic() + args.hold
        while time.monotonic() < end:
            for s in streams:
                try:
                    await s.write(frame)
                    sent += 1
                except Exception:  # noqa: BLE001 - a node may close it
                    failed += 1
            await trio.sleep(0.2)
        out["heartbeats"] = sent
        out["failed_writes"] = failed
    return out


# ---------------------------------------------------------------------------------------------
# scenario "index-flood": identities that fill the leader's index


async def index_flood(args) -> dict:
    """``--count`` hosts, each its own peer id, push a snapshot of ``--entries`` made-up entries
    each (pages of 8,192) to the leader at ``--addr``, one host after the other; then stay
    connected for ``--hold`` seconds. Prints one line ``{"pushed": [...]}`` (each host's last
    answer) once all pushed, then the result."""
    out: dict = {"answers": []}
    async with AsyncExitStack() as stack:
        for n in range(args.count):
            h = await stack.enter_async_context(iw.running_host())
            peer_id, _ = await iw.connect(h, args.addr)
            session = int.from_bytes(os.urandom(8), "big")
            total, page, answer = args.entries, 0, None
            while True:
                first = page * 8192
                count = min(8192, total - first)
                last = first + count >= total
                entries = [
                    {"path": f"flood/{n}/{first + k:07d}.bin", "kind": "file", "size": 1,
                     "id": os.urandom(32)}
                    for k in range(count)
                ]
                body = cbor.encode({"snapshot": {"session": session, "page": page,
                                                 "last": last, "version": 1,
                                                 "entries": entries}})
                answer, _ = await iw.request(h, peer_id, iw.INDEX, body, 4096)
                if last or not (isinstance(answer, dict) and "ack" in answer):
                    break
                page += 1
            out["answers"].append(answer if isinstance(answer, (dict, str)) else repr(answer))
        sys.stdout.write(json.dumps({"pushed": out["answers"]}, default=str) + "\n")
        sys.stdout.flush()
        await trio.sleep(args.hold)
    return out


# ---------------------------------------------------------------------------------------------


async def main_async(args) -> dict:
    if args.scenario == "index-flood":
        with trio.fail_after(args.timeout):
            return await index_flood(args)
    if args.scenario == "mute-leader":
        with trio.fail_after(args.timeout):
            return await mute_leader(args)
    if args.scenario == "silent-voters":
        with trio.fail_after(args.timeout):
            return await silent_voters(args)
    if args.scenario == "slot-leak":
        with trio.fail_after(args.timeout):
            return await slot_leak(args)
    if args.scenario == "election-term":
        with trio.fail_after(args.timeout):
            return await election_term(args)
    out: dict = {"idle": {}, "flood": {}, "garbage": {}, "good": []}
    with trio.fail_after(args.timeout):
        async with AsyncExitStack() as stack:
            h_idle = await stack.enter_async_context(iw.running_host())
            h_flood = await stack.enter_async_context(iw.running_host())
            h_good = await stack.enter_async_context(iw.running_host())
            flood_ready, release_flood = trio.Event(), trio.Event()
            garbage_done = trio.Event()

            async def garbage():
                try:
                    await garbage_peer(args.addr, args.file_id, out["garbage"])
                except Exception as e:  # noqa: BLE001 - recorded
                    out["garbage"]["error"] = f"{type(e).__name__}: {e}"
                    raise
                finally:
                    garbage_done.set()

            async def good(label):
                t0 = time.monotonic()
                try:
                    res = await good_flow(h_good, args.addr, args.query, args.path, args.piece)
                    res["ok"] = True
                except Exception as e:  # noqa: BLE001 - recorded
                    res = {"ok": False, "error": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc()[-2000:]}
                res["label"] = label
                res["wall_s"] = round(time.monotonic() - t0, 2)
                out["good"].append(res)

            async with trio.open_nursery() as n:
                n.start_soon(idle_peer, h_idle, args.addr, args.hold, out["idle"])
                n.start_soon(flood_peer, h_flood, args.addr, args.file_id, args.flood_streams,
                             args.per_stream, flood_ready, release_flood, out["flood"])
                with trio.fail_after(30):
                    await flood_ready.wait()
                n.start_soon(garbage)
                # during: the flood holds its streams and the garbage runs
                await good("during")
                out["garbage_done_before_first_good"] = garbage_done.is_set()
                with trio.fail_after(60):
                    await garbage_done.wait()
                await good("after-garbage")
                release_flood.set()
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
    ap.add_argument("--addr", help="the node (every scenario but silent-voters)")
    ap.add_argument("--query")
    ap.add_argument("--path")
    ap.add_argument("--file-id", help="hex id of the multi-piece file")
    ap.add_argument("--addrs", default="",
                    help="silent-voters, mute-leader: every node, comma-separated")
    ap.add_argument("--term", type=int, default=1, help="mute-leader: the term it claims")
    ap.add_argument("--count", type=int, default=4, help="silent-voters, index-flood: identities")
    ap.add_argument("--entries", type=int, default=10000, help="index-flood: entries per identity")
    ap.add_argument("--piece", type=int, default=1)
    ap.add_argument("--hold", type=float, default=35.0)
    ap.add_argument("--flood-streams", type=int, default=12)
    ap.add_argument("--per-stream", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=150.0)
    ap.add_argument("--scenario",
                    choices=["main", "slot-leak", "election-term", "silent-voters", "index-flood",
                             "mute-leader"],
                    default="main")
    args = ap.parse_args()
    if args.scenario in ("silent-voters", "mute-leader"):
        if not args.addrs:
            ap.error(f"{args.scenario} needs --addrs")
    elif args.scenario == "index-flood":
        if not args.addr:
            ap.error("index-flood needs --addr")
    elif not (args.addr and args.query and args.path and args.file_id):
        ap.error("--addr, --query, --path and --file-id are required")
    try:
        out = trio.run(main_async, args)
        out["ok"] = True
        code = 0
    except Exception as e:  # noqa: BLE001 - recorded
        out = {"ok": False, "error": describe(e), "traceback": traceback.format_exc()[-8000:]}
        code = 1
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
