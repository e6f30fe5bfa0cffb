#!/usr/bin/env python3
"""Writes a few valid messages per fuzz target into corpus/<target>/, as starting points.

The corpus folder is not committed (.gitignore); run this once before fuzzing:
    python3 seeds.py
"""
import os
import struct


def head(major, n):
    m = major << 5
    if n < 24:
        return bytes([m | n])
    for low, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([m | low]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor(v):
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(cbor(x) for x in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(v)


PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
ID = bytes(range(32))
ENTRY = {"path": "a/b.txt", "kind": "file", "size": 12, "id": ID}
HIT = {"id": ID, "kind": "dir", "size": 5, "path": "d", "score": -3,
       "holders": [PEER], "holder_count": 1}

SEEDS = {
    "peers_request": [{"peers": []},
                      {"peers": [{"peer_id": PEER, "addrs": ["/ip4/10.0.0.1/tcp/4747"]}]}],
    "peers_response": [{}],
    "index_request": [{"snapshot": {"session": 1, "page": 0, "last": True, "version": 3,
                                    "entries": [ENTRY]}},
                      {"delta": {"base": 3, "version": 4, "upserted": [ENTRY],
                                 "removed": ["x/y"]}}],
    "index_response": [{"ack": {"version": 4}}, "need_snapshot", "not_leader", "busy",
                       {"refused": {"reason": "too many entries"}}],
    "search_request": [{"search": {"text": "batman", "kind": None, "offset": 0, "limit": 20}},
                       {"search": {"text": "x", "kind": "file", "offset": 5, "limit": 1}},
                       {"locate": {"prefix": "abc", "max": 5}}],
    "search_response": [{"results": {"total": 1, "indexed": 9, "nodes": 2, "hits": [HIT]}},
                        "not_leader", "busy", {"refused": {"reason": "long"}}],
    "content_request": [{"pieces": {"id": ID}}, {"manifest": {"id": ID, "offset": 5}}],
    "content_response": [{"pieces": {"size": 600000, "piece_size": 262144,
                                     "pieces": bytes(96)}},
                         {"pieces": {"size": 0, "piece_size": 262144, "pieces": b""}},
                         {"manifest": {"total": 100, "offset": 90, "bytes": bytes(10)}},
                         "not_found", "busy", {"refused": {"reason": "offset"}}],
}


def election():
    out = []
    for m in [{"heartbeat": {"term": 7}}, {"vote_request": {"term": 1 << 40}},
              {"vote_reply": {"term": 2, "granted": True}}, {"goodbye": {"term": 0}}]:
        body = cbor(m)
        out.append(bytes([len(body)]) + body)
    return [b"".join(out), out[0]]


def chunk():
    req = b"\x01" + ID + struct.pack("<II", 2, 3)
    frames = (b"\x00" + struct.pack("<II", 2, 4) + b"abcd"
              + b"\x02" + struct.pack("<II", 3, 0))
    return [req, req + req], [struct.pack("<H", 4) + frames]


def manifest():
    out = b"iwant/manifest/1\n"
    for path, kind, size, id in [(b"a", 1, 0, bytes(32)), (b"a/f", 0, 5, ID), (b"b", 0, 0, ID)]:
        out += struct.pack("<I", len(path)) + path + bytes([kind]) + struct.pack("<Q", size) + id
    return [out, b"iwant/manifest/1\n"]


def mdns():
    # An answer of rust-libp2p's libp2p-mdns 0.49 (behaviours/src/mdns/packet.rs has the same
    # bytes) and a query for libp2p peers.
    answer = bytes.fromhex(
        "123484000000000100000001045f703270045f756470056c6f63616c00000c0001000001680037357347"
        "435437796231726c42566f364a3764443132395236625879564c53797269585063575258394e46316c6d"
        "747a64784356756d5400357347435437796231726c42566f364a3764443132395236625879564c537972"
        "69585063575258394e46316c6d747a64784356756d54000010800100000168005857646e73616464723d"
        "2f6970342f31302e392e302e312f7463702f343734372f7032702f313244334b6f6f57454658416b6d35"
        "4237784145557843486d3369357a7a5237566d43414447554c337351473551525659746f72")
    query = (struct.pack(">6H", 0, 0, 1, 0, 0, 0) + b"\x04_p2p\x04_udp\x05local\x00"
             + struct.pack(">HH", 12, 1))
    return [answer, query]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    seeds = {name: [cbor(v) for v in values] for name, values in SEEDS.items()}
    seeds["election_frame"] = election()
    seeds["chunk_request"], seeds["chunk_frames"] = chunk()
    seeds["manifest"] = manifest()
    seeds["mdns_packet"] = mdns()
    for name, values in seeds.items():
        folder = os.path.join(here, "corpus", name)
        os.makedirs(folder, exist_ok=True)
        for i, v in enumerate(values):
            with open(os.path.join(folder, f"seed-{i}"), "wb") as f:
                f.write(v)
    print(f"seeds for {len(seeds)} targets in {os.path.join(here, 'corpus')}")


if __name__ == "__main__":
    main()
