"""A small pure-Python BLAKE3 (hash mode only) with access to the tree.

Written from the BLAKE3 paper/spec for the iwant interop test: iwant's piece hashes are the
*chaining values* of subtrees of a file's BLAKE3 tree (docs/protocols.md, "Content ids"), which
the PyPI ``blake3`` bindings do not expose. Slow (a few hundred KiB/s) but small and exact.

Public functions:
- ``hash(data)``: the ordinary 32-byte BLAKE3 hash (what ``b3sum`` prints).
- ``subtree_cv(data, offset)``: the chaining value of the subtree formed by ``data`` at byte
  ``offset`` of its input, finalised as a non-root node (rust ``blake3::hazmat``:
  ``Hasher::new().set_input_offset(offset).update(data).finalize_non_root()``).
- ``parent_cv(left, right)`` / ``parent_root(left, right)``: the parent function, non-root or
  root.
- ``merge_pieces(pieces, piece_size, size)``: the root hash that a piece list implies.
"""

from __future__ import annotations

import struct

IV = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)
MSG_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)

CHUNK_START = 1 << 0
CHUNK_END = 1 << 1
PARENT = 1 << 2
ROOT = 1 << 3

BLOCK_LEN = 64
CHUNK_LEN = 1024
MASK = 0xFFFFFFFF


def _compress(cv, block: bytes, counter: int, block_len: int, flags: int):
    """The BLAKE3 compression function; returns all 16 output words."""
    m = list(struct.unpack("<16I", block))
    v = [
        cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
        IV[0], IV[1], IV[2], IV[3],
        counter & MASK, (counter >> 32) & MASK, block_len, flags,
    ]

    def g(a, b, c, d, x, y):
        va = (v[a] + v[b] + x) & MASK
        vd = v[d] ^ va
        vd = ((vd >> 16) | (vd << 16)) & MASK
        vc = (v[c] + vd) & MASK
        vb = v[b] ^ vc
        vb = ((vb >> 12) | (vb << 20)) & MASK
        va = (va + vb + y) & MASK
        vd ^= va
        vd = ((vd >> 8) | (vd << 24)) & MASK
        vc = (vc + vd) & MASK
        vb ^= vc
        vb = ((vb >> 7) | (vb << 25)) & MASK
        v[a], v[b], v[c], v[d] = va, vb, vc, vd

    for r in range(7):
        g(0, 4, 8, 12, m[0], m[1])
        g(1, 5, 9, 13, m[2], m[3])
        g(2, 6, 10, 14, m[4], m[5])
        g(3, 7, 11, 15, m[6], m[7])
        g(0, 5, 10, 15, m[8], m[9])
        g(1, 6, 11, 12, m[10], m[11])
        g(2, 7, 8, 13, m[12], m[13])
        g(3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in MSG_PERMUTATION]
    for i in range(8):
        v[i] ^= v[i + 8]
        v[i + 8] ^= cv[i]
    return v


def _words_to_bytes(words) -> bytes:
    return struct.pack("<8I", *words[:8])


def _bytes_to_words(b: bytes):
    return list(struct.unpack("<8I", b))


def _chunk_output(chunk: bytes, chunk_counter: int):
    """The last block of a chunk, ready to be compressed as non-root or root:
    returns (cv, block, counter, block_len, flags)."""
    assert len(chunk) <= CHUNK_LEN
    cv = list(IV)
    blocks = [chunk[i : i + BLOCK_LEN] for i in range(0, len(chunk), BLOCK_LEN)] or [b""]
    for n, block in enumerate(blocks):
        flags = CHUNK_START if n == 0 else 0
        if n == len(blocks) - 1:
            flags |= CHUNK_END
            return cv, block.ljust(BLOCK_LEN, b"\0"), chunk_counter, len(block), flags
        cv = _compress(cv, block, chunk_counter, BLOCK_LEN, flags)[:8]
    raise AssertionError("unreachable")


def _parent_output(left: bytes, right: bytes):
    return list(IV), left + right, 0, BLOCK_LEN, PARENT


def _cv(output) -> bytes:
    cv, block, counter, block_len, flags = output
    return _words_to_bytes(_compress(cv, block, counter, block_len, flags))


def _root(output) -> bytes:
    cv, block, _counter, block_len, flags = output
    # Root output block 0 (32 bytes): the first 8 words, counter 0, ROOT flag.
    return _words_to_bytes(_compress(cv, block, 0, block_len, flags | ROOT))


def _largest_pow2_below(n: int) -> int:
    """The largest power of two strictly less than n (n > 1)."""
    p = 1
    while p * 2 < n:
        p *= 2
    return p


def _subtree_output(data: bytes, chunk_counter: int):
    """The output (not yet compressed) of the subtree of ``data`` starting at chunk
    ``chunk_counter``, split as BLAKE3 splits it: the left part is the largest power-of-two
    number of chunks that leaves at least one byte on the right."""
    if len(data) <= CHUNK_LEN:
        return _chunk_output(data, chunk_counter)
    chunks = (len(data) + CHUNK_LEN - 1) // CHUNK_LEN
    left_len = _largest_pow2_below(chunks) * CHUNK_LEN
    left = _cv(_subtree_output(data[:left_len], chunk_counter))
    right = _cv(_subtree_output(data[left_len:], chunk_counter + left_len // CHUNK_LEN))
    return _parent_output(left, right)


def hash(data: bytes) -> bytes:  # noqa: A001 - the natural name
    """The ordinary BLAKE3 hash of ``data``."""
    return _root(_subtree_output(data, 0))


def subtree_cv(data: bytes, offset: int) -> bytes:
    """Non-root chaining value of ``data`` as the subtree at input ``offset``."""
    if offset % CHUNK_LEN:
        raise ValueError("offset must be a multiple of the chunk length")
    return _cv(_subtree_output(data, offset // CHUNK_LEN))


def parent_cv(left: bytes, right: bytes) -> bytes:
    return _cv(_parent_output(left, right))


def parent_root(left: bytes, right: bytes) -> bytes:
    return _root(_parent_output(left, right))


def merge_pieces(pieces: list[bytes], piece_size: int, size: int) -> bytes:
    """The root hash implied by a piece list, merged as docs/protocols.md says: split a run of
    pieces covering n bytes at left = largest power of two < n bytes, merge left and right
    recursively with the non-root parent function, the top pair with the root one."""
    if len(pieces) < 2:
        raise ValueError("a piece list to merge has at least two pieces")

    def run(first: int, start: int, end: int, root: bool) -> bytes:
        # pieces[first..] cover bytes start..end of the file
        n = end - start
        if n <= piece_size:
            return pieces[first]
        left = _largest_pow2_below(n)
        if left % piece_size:
            raise ValueError("split falls inside a piece")
        mid = first + left // piece_size
        lcv = run(first, start, start + left, False)
        rcv = run(mid, start + left, end, False)
        return parent_root(lcv, rcv) if root else parent_cv(lcv, rcv)

    return run(0, 0, size, True)


def _self_test() -> None:
    """Checks against the PyPI ``blake3`` bindings when they are installed (they are a
    dependency of py-libp2p), and the tree identities on a small input."""
    import os

    data = os.urandom(5000)
    try:
        import blake3 as native  # type: ignore

        for n in (0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3073, 5000):
            assert hash(data[:n]) == native.blake3(data[:n]).digest(), n
    except ImportError:
        pass
    # 5000 bytes at piece size 1024*2: pieces of 2048, 2048, 904: tree splits at 4096.
    ps = 2048
    pieces = [subtree_cv(data[i : i + ps], i) for i in range(0, 5000, ps)]
    assert merge_pieces(pieces, ps, 5000) == hash(data)


if __name__ == "__main__":
    _self_test()
    print("ok")
