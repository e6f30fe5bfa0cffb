"""An iwant client on py-libp2p, written from docs/protocols.md alone.

Transport: TCP + Noise (``/noise``) + Yamux (``/yamux/1.0.0``) only: py-libp2p's defaults also
offer TLS, SECIO, plaintext and mplex, so the host is built with exactly these two.
"""

from __future__ import annotations

import os
import struct
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair as new_ed25519
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

import blake3_pure
import cbor

IDENTIFY = TProtocol("/ipfs/id/1.0.0")
PING = TProtocol("/ipfs/ping/1.0.0")
PEERS = TProtocol("/iwant/peers/1.0.0")
ELECTION = TProtocol("/iwant/election/1")
INDEX = TProtocol("/iwant/index/1.0.0")
SEARCH = TProtocol("/iwant/search/1.0.0")
CONTENT = TProtocol("/iwant/content/1.0.0")
CHUNK = TProtocol("/iwant/chunk/1")
IWANT_PROTOCOLS = [PEERS, ELECTION, INDEX, SEARCH, CONTENT, CHUNK]

# Chunk protocol statuses (docs/protocols.md, `/iwant/chunk/1`).
OK, NOT_FOUND, OUT_OF_RANGE, UNAVAILABLE, BUSY = 0, 1, 2, 3, 4
STATUS_NAMES = {0: "ok", 1: "not_found", 2: "out_of_range", 3: "unavailable", 4: "busy"}

MIN_PIECE = 262144
MAX_PIECES = 2048


class ProtocolViolation(Exception):
    pass


class StreamEnded(Exception):
    """The stream ended (EOF or reset) before the bytes we needed."""

    def __init__(self, got: int, wanted: int, reset: bool):
        super().__init__(f"stream ended after {got} of {wanted} bytes (reset={reset})")
        self.got, self.wanted, self.reset = got, wanted, reset


def make_host():
    """A py-libp2p host with an ed25519 identity, Noise and Yamux only, no mDNS."""
    key_pair = new_ed25519()
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        muxer_opt={TProtocol(YAMUX_ID): Yamux},
        enable_mDNS=False,
    )


@asynccontextmanager
async def running_host() -> AsyncIterator:
    host = make_host()
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            yield host
        finally:
            try:
                await host.close()
            except Exception:
                pass


async def connect(host, addr: str):
    """Dials ``addr`` (``/ip4/.../tcp/.../p2p/...``); returns (peer id, connection info)."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    await host.connect(info)
    conns = host.get_network().connections.get(info.peer_id) or []
    conn = conns[0] if isinstance(conns, list) else conns
    return info.peer_id, {
        "security": conn.get_negotiated_security_protocol(),
        "muxer": conn.get_negotiated_muxer_protocol(),
        "muxer_class": type(conn.muxed_conn).__name__,
        "secured_class": type(conn.muxed_conn.secured_conn).__name__,
    }


def is_connected(host, peer_id) -> bool:
    conns = host.get_network().connections.get(peer_id)
    return bool(conns)


def current_connection(host, peer_id):
    """The (first) live connection to ``peer_id``, or None. py-libp2p's ``new_stream`` dials
    again by itself when the connection is gone, so a test that wants to know whether the node
    closed a connection compares these objects rather than asking "connected?"."""
    conns = host.get_network().connections.get(peer_id) or []
    if not isinstance(conns, list):
        conns = [conns]
    for conn in conns:
        if not conn.event_closed.is_set():
            return conn
    return None


async def read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except StreamEOF:
            raise StreamEnded(len(buf), n, False) from None
        except StreamReset:
            raise StreamEnded(len(buf), n, True) from None
        if not chunk:
            raise StreamEnded(len(buf), n, False)
        buf += chunk
    return bytes(buf)


async def read_to_end(stream, limit: int) -> tuple[bytes, str]:
    """Reads until the stream ends; returns (bytes, how it ended: "eof" or "reset").
    Raises ProtocolViolation past ``limit`` bytes."""
    buf = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except StreamEOF:
            return bytes(buf), "eof"
        except StreamReset:
            return bytes(buf), "reset"
        if not chunk:
            return bytes(buf), "eof"
        buf += chunk
        if len(buf) > limit:
            raise ProtocolViolation(f"response over {limit} bytes")


# ---------------------------------------------------------------------------------------------
# identify and ping


def _uvarint(data: bytes) -> tuple[int, int]:
    n = shift = 0
    for i, b in enumerate(data[:10]):
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i + 1
        shift += 7
    raise ProtocolViolation("bad varint")


async def identify(host, peer_id) -> dict:
    """Runs `/ipfs/id/1.0.0`: the listener writes one uvarint-length-prefixed protobuf."""
    stream = await host.new_stream(peer_id, [IDENTIFY])
    raw, _ = await read_to_end(stream, 1 << 16)
    length, used = _uvarint(raw)
    if used + length != len(raw):
        raise ProtocolViolation(f"identify: {len(raw)} bytes for a {length}-byte message")
    msg = Identify()
    msg.ParseFromString(raw[used:])
    return {
        "agentVersion": msg.agent_version,
        "protocolVersion": msg.protocol_version,
        "protocols": list(msg.protocols),
        "listenAddrs": [str(multiaddr.Multiaddr(a)) for a in msg.listen_addrs],
    }


async def ping(host, peer_id, count: int = 3) -> list[float]:
    """`/ipfs/ping/1.0.0`: 32 random bytes echoed back; RTTs in milliseconds."""
    stream = await host.new_stream(peer_id, [PING])
    rtts = []
    for _ in range(count):
        payload = os.urandom(32)
        start = time.perf_counter()
        await stream.write(payload)
        echo = await read_exact(stream, 32)
        rtts.append((time.perf_counter() - start) * 1000.0)
        if echo != payload:
            raise ProtocolViolation("ping: echo differs")
    await stream.close()
    return rtts


# ---------------------------------------------------------------------------------------------
# request-response (common rules): one CBOR value, close write side, read one CBOR value


async def request(host, peer_id, protocol: TProtocol, body: bytes, limit: int):
    stream = await host.new_stream(peer_id, [protocol])
    await stream.write(body)
    await stream.close_write()
    raw, how = await read_to_end(stream, limit)
    if not raw:
        raise ProtocolViolation(f"{protocol}: no response (stream {how})")
    return cbor.decode(raw), raw


def _variant(resp) -> tuple[str, object]:
    """An enum value: a unit variant is its name, any other a map with one key."""
    if isinstance(resp, str):
        return resp, None
    if isinstance(resp, dict) and len(resp) == 1:
        ((k, v),) = resp.items()
        return k, v
    raise ProtocolViolation(f"not an enum value: {resp!r}")


def _hit_json(hit: dict) -> dict:
    if not isinstance(hit.get("id"), bytes) or len(hit["id"]) != 32:
        raise ProtocolViolation("hit id is not 32 bytes")
    return {
        "id": hit["id"].hex(),
        "kind": hit["kind"],
        "size": hit["size"],
        "path": hit["path"],
        "score": hit["score"],
        "holders": list(hit["holders"]),
        "holder_count": hit["holder_count"],
    }


async def search(host, peer_id, text: str, limit: int = 20) -> dict:
    body = cbor.encode(
        {"search": {"text": text, "kind": None, "offset": 0, "limit": limit}}
    )
    resp, _ = await request(host, peer_id, SEARCH, body, 4 * 1024 * 1024)
    name, value = _variant(resp)
    if name != "results":
        return {"answer": name, "value": value}
    return {
        "answer": "results",
        "request_hex": body.hex(),
        "total": value["total"],
        "indexed": value["indexed"],
        "nodes": value["nodes"],
        "hits": [_hit_json(h) for h in value["hits"]],
    }


async def locate(host, peer_id, prefix: str, max_: int = 10) -> dict:
    body = cbor.encode({"locate": {"prefix": prefix, "max": max_}})
    resp, _ = await request(host, peer_id, SEARCH, body, 4 * 1024 * 1024)
    name, value = _variant(resp)
    if name != "results":
        return {"answer": name, "value": value}
    return {"answer": "results", "hits": [_hit_json(h) for h in value["hits"]]}


def piece_size_for(size: int) -> int:
    per = -(-size // 2048)
    p2 = 1
    while p2 < per:
        p2 *= 2
    return max(MIN_PIECE, p2)


async def pieces(host, peer_id, file_id: bytes) -> dict:
    """Fetches and checks the piece list of ``file_id`` (`/iwant/content/1.0.0`)."""
    body = cbor.encode({"pieces": {"id": file_id}})
    resp, _ = await request(host, peer_id, CONTENT, body, 2 * 1024 * 1024)
    name, value = _variant(resp)
    if name != "pieces":
        return {"answer": name, "value": value}
    size, piece_size, raw = value["size"], value["piece_size"], value["pieces"]
    if not isinstance(raw, bytes) or len(raw) % 32 or len(raw) > 32 * MAX_PIECES:
        raise ProtocolViolation("pieces: not a byte string of 32-byte hashes")
    if piece_size < 1024 or piece_size & (piece_size - 1):
        raise ProtocolViolation("pieces: piece_size not a power of two >= 1024")
    count = max(1, -(-size // piece_size))
    hashes = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    if count == 1:
        if hashes:
            raise ProtocolViolation("pieces: a one-piece file has a list")
        merged = None
    else:
        if len(hashes) != count:
            raise ProtocolViolation(f"pieces: {len(hashes)} hashes for {count} pieces")
        merged = blake3_pure.merge_pieces(hashes, piece_size, size)
    return {
        "answer": "pieces",
        "request_hex": body.hex(),
        "size": size,
        "piece_size": piece_size,
        "expected_piece_size": piece_size_for(size),
        "pieces": [h.hex() for h in hashes],
        "merged_root": merged.hex() if merged else None,
        "merged_matches_id": merged == file_id if merged else None,
    }


# ---------------------------------------------------------------------------------------------
# /iwant/chunk/1


def chunk_request(file_id: bytes, first: int, count: int, op: int = 1) -> bytes:
    return bytes([op]) + file_id + struct.pack("<II", first, count)


async def read_frame(stream, expect_index: int, expect_len: int | None):
    """Reads one response frame; checks it as docs/protocols.md says a client must.
    ``expect_len`` is the length piece ``expect_index`` must have (None: no ok expected)."""
    header = await read_exact(stream, 9)
    status = header[0]
    index, length = struct.unpack("<II", header[1:])
    if status not in STATUS_NAMES:
        raise ProtocolViolation(f"chunk: unknown status {status}")
    if index != expect_index:
        raise ProtocolViolation(f"chunk: index {index}, expected {expect_index}")
    if status != OK:
        if length != 0:
            raise ProtocolViolation("chunk: error frame with data")
        return STATUS_NAMES[status], index, None
    if expect_len is None or length != expect_len:
        raise ProtocolViolation(f"chunk: len {length}, expected {expect_len}")
    return "ok", index, await read_exact(stream, length)


def piece_len(index: int, piece_size: int, size: int) -> int | None:
    count = max(1, -(-size // piece_size))
    if index >= count:
        return None
    return min(piece_size, size - index * piece_size)


async def get_pieces(stream, file_id: bytes, first: int, count: int, piece_size: int,
                     size: int):
    """One request and its whole answer: list of (status, index, data)."""
    await stream.write(chunk_request(file_id, first, count))
    frames = []
    for i in range(first, first + count):
        status, index, data = await read_frame(stream, i, piece_len(i, piece_size, size))
        frames.append((status, index, data))
        if status != "ok":
            break
    return frames
