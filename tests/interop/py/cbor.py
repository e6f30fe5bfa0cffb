"""A minimal hand-written CBOR (RFC 8949) encoder and decoder, enough for iwant's messages.

Encoding: ``dict`` -> map (definite length, keys in the order given), ``str`` -> text,
``bytes`` -> byte string (major type 2), ``int`` >= 0 -> unsigned, < 0 -> negative,
``bool``/``None`` -> simple values, ``list``/``tuple`` -> array.

Decoding accepts every major type, definite and indefinite lengths, and floats; tags are
returned as ``Tag``. Limits are the caller's: the decoder only refuses what is malformed or
deeper than ``max_depth``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class CborError(ValueError):
    pass


@dataclass
class Tag:
    tag: int
    value: object


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")
    if n < 0x10000000000000000:
        return bytes([major << 5 | 27]) + n.to_bytes(8, "big")
    raise CborError("integer too large for CBOR")


def encode(value: object) -> bytes:
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: object, out: bytearray) -> None:
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        out += _head(0, value) if value >= 0 else _head(1, -1 - value)
    elif isinstance(value, (bytes, bytearray)):
        out += _head(2, len(value)) + bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += _head(3, len(raw)) + raw
    elif isinstance(value, (list, tuple)):
        out += _head(4, len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        out += _head(5, len(value))
        for k, v in value.items():
            _encode(k, out)
            _encode(v, out)
    else:
        raise CborError(f"cannot encode {type(value).__name__}")


_BREAK = object()


class _Reader:
    def __init__(self, data: bytes, max_depth: int):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise CborError(f"truncated: need {n} bytes at {self.pos}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def arg(self, info: int) -> int | None:
        if info < 24:
            return info
        if info == 24:
            return self.take(1)[0]
        if info == 25:
            return int.from_bytes(self.take(2), "big")
        if info == 26:
            return int.from_bytes(self.take(4), "big")
        if info == 27:
            return int.from_bytes(self.take(8), "big")
        if info == 31:
            return None  # indefinite
        raise CborError(f"reserved additional info {info}")

    def item(self, depth: int = 0) -> object:
        if depth > self.max_depth:
            raise CborError("nested too deep")
        ib = self.take(1)[0]
        major, info = ib >> 5, ib & 31
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info in (22, 23):
                return None
            if info == 25:
                return _half(self.take(2))
            if info == 26:
                return struct.unpack(">f", self.take(4))[0]
            if info == 27:
                return struct.unpack(">d", self.take(8))[0]
            if info == 31:
                return _BREAK
            if info < 24:
                return ("simple", info)
            if info == 24:
                return ("simple", self.take(1)[0])
            raise CborError(f"bad simple/float {info}")
        n = self.arg(info)
        if major == 0:
            if n is None:
                raise CborError("indefinite integer")
            return n
        if major == 1:
            if n is None:
                raise CborError("indefinite integer")
            return -1 - n
        if major in (2, 3):
            if n is None:
                parts = []
                while True:
                    part = self.item(depth + 1)
                    if part is _BREAK:
                        break
                    if not isinstance(part, (bytes, str)) or (major == 2) != isinstance(
                        part, bytes
                    ):
                        raise CborError("bad chunk in indefinite string")
                    parts.append(part)
                return b"".join(parts) if major == 2 else "".join(parts)
            raw = self.take(n)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CborError(f"invalid UTF-8: {e}") from e
        if major == 4:
            items = []
            if n is None:
                while (x := self.item(depth + 1)) is not _BREAK:
                    items.append(x)
            else:
                for _ in range(n):
                    x = self.item(depth + 1)
                    if x is _BREAK:
                        raise CborError("unexpected break")
                    items.append(x)
            return items
        if major == 5:
            m: dict = {}
            count = 0
            while n is None or count < n:
                k = self.item(depth + 1)
                if k is _BREAK:
                    if n is None:
                        break
                    raise CborError("unexpected break")
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise CborError("unexpected break")
                if isinstance(k, list):
                    k = tuple(k)
                m[k] = v
                count += 1
            return m
        if major == 6:
            if n is None:
                raise CborError("indefinite tag")
            return Tag(n, self.item(depth + 1))
        raise AssertionError("unreachable")


def _half(b: bytes) -> float:
    h = int.from_bytes(b, "big")
    exp, mant = (h >> 10) & 0x1F, h & 0x3FF
    if exp == 0:
        val = mant * 2.0**-24
    elif exp == 31:
        val = float("inf") if mant == 0 else float("nan")
    else:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    return -val if h & 0x8000 else val


def decode(data: bytes, max_depth: int = 64) -> object:
    """Decodes exactly one CBOR value that fills ``data``."""
    r = _Reader(data, max_depth)
    v = r.item()
    if v is _BREAK:
        raise CborError("unexpected break")
    if r.pos != len(data):
        raise CborError(f"{len(data) - r.pos} trailing bytes after the value")
    return v
