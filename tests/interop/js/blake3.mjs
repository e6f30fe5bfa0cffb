// A small pure-JS BLAKE3 (hash mode, 32-byte output), written from the BLAKE3 paper, with what
// iwant's "Content ids" (docs/protocols.md) need beyond a plain hash: the chaining value of a
// subtree at an input offset (the `blake3::hazmat` `set_input_offset` + `finalize_non_root`) and
// the parent function, non-root and root, to merge a piece list back into a file id.
//
// Slow (plain JS, no SIMD) but ample for a few MiB in a test.

const OUT_LEN = 32
const BLOCK_LEN = 64
export const CHUNK_LEN = 1024

const CHUNK_START = 1
const CHUNK_END = 2
const PARENT = 4
const ROOT = 8

const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
])

const PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]

function rotr (x, n) {
  return (x >>> n) | (x << (32 - n))
}

function g (s, a, b, c, d, mx, my) {
  s[a] = (s[a] + s[b] + mx) | 0
  s[d] = rotr(s[d] ^ s[a], 16)
  s[c] = (s[c] + s[d]) | 0
  s[b] = rotr(s[b] ^ s[c], 12)
  s[a] = (s[a] + s[b] + my) | 0
  s[d] = rotr(s[d] ^ s[a], 8)
  s[c] = (s[c] + s[d]) | 0
  s[b] = rotr(s[b] ^ s[c], 7)
}

function round (s, m) {
  g(s, 0, 4, 8, 12, m[0], m[1])
  g(s, 1, 5, 9, 13, m[2], m[3])
  g(s, 2, 6, 10, 14, m[4], m[5])
  g(s, 3, 7, 11, 15, m[6], m[7])
  g(s, 0, 5, 10, 15, m[8], m[9])
  g(s, 1, 6, 11, 12, m[10], m[11])
  g(s, 2, 7, 8, 13, m[12], m[13])
  g(s, 3, 4, 9, 14, m[14], m[15])
}

/**
 * The compression function: chaining value `cv` (8 words), message block `block` (16 words),
 * 64-bit `counter` (a Number below 2^53), `blockLen` bytes, `flags`. Returns the first 8 words
 * of the output, the next chaining value (all 32-byte outputs need).
 */
function compress (cv, block, counter, blockLen, flags) {
  const s = new Int32Array(16)
  for (let i = 0; i < 8; i++) s[i] = cv[i]
  s[8] = IV[0]; s[9] = IV[1]; s[10] = IV[2]; s[11] = IV[3]
  s[12] = counter % 0x100000000
  s[13] = Math.floor(counter / 0x100000000)
  s[14] = blockLen
  s[15] = flags
  let m = Int32Array.from(block)
  for (let r = 0; r < 7; r++) {
    round(s, m)
    if (r < 6) {
      const p = new Int32Array(16)
      for (let i = 0; i < 16; i++) p[i] = m[PERMUTATION[i]]
      m = p
    }
  }
  const out = new Uint32Array(8)
  for (let i = 0; i < 8; i++) out[i] = s[i] ^ s[i + 8]
  return out
}

/** Bytes `bytes[off .. off + len]` (len ≤ 64, zero padded) as 16 little-endian words. */
function blockWords (bytes, off, len) {
  const w = new Uint32Array(16)
  for (let i = 0; i < len; i++) {
    w[i >> 2] |= bytes[off + i] << (8 * (i & 3))
  }
  return w
}

function wordsToBytes (words) {
  const out = new Uint8Array(OUT_LEN)
  for (let i = 0; i < 8; i++) {
    out[4 * i] = words[i] & 0xff
    out[4 * i + 1] = (words[i] >>> 8) & 0xff
    out[4 * i + 2] = (words[i] >>> 16) & 0xff
    out[4 * i + 3] = (words[i] >>> 24) & 0xff
  }
  return out
}

function bytesToWords (bytes) {
  return blockWords(bytes, 0, OUT_LEN).subarray(0, 8)
}

/** The chaining value of one chunk (≤ 1024 bytes, possibly empty) numbered `counter`. */
function chunkCv (bytes, off, len, counter, root) {
  let cv = IV
  const blocks = Math.max(1, Math.ceil(len / BLOCK_LEN))
  for (let b = 0; b < blocks; b++) {
    const start = b * BLOCK_LEN
    const blockLen = Math.min(BLOCK_LEN, len - start)
    const last = b === blocks - 1
    const flags = (b === 0 ? CHUNK_START : 0) | (last ? CHUNK_END : 0) | (last && root ? ROOT : 0)
    // A root chunk is chunk 0, so its counter is also the root output block counter (0).
    cv = compress(cv, blockWords(bytes, off + start, blockLen), counter, blockLen, flags)
  }
  return cv
}

function parentWords (left, right, root) {
  const block = new Uint32Array(16)
  block.set(left, 0)
  block.set(right, 8)
  return compress(IV, block, 0, BLOCK_LEN, PARENT | (root ? ROOT : 0))
}

/** The largest power of two strictly below `n` (n ≥ 2). */
export function largestPowerOfTwoBelow (n) {
  let p = 1
  while (p * 2 < n) p *= 2
  return p
}

/**
 * The chaining value of the subtree formed by `bytes[off .. off + len]`, whose first chunk is
 * number `counter`; finalised as the root when `root`. BLAKE3's tree: a run of more than one
 * chunk splits with the largest power-of-two number of chunks that leaves the right side
 * non-empty on the left.
 */
function subtree (bytes, off, len, counter, root) {
  if (len <= CHUNK_LEN) return chunkCv(bytes, off, len, counter, root)
  const left = largestPowerOfTwoBelow(Math.ceil(len / CHUNK_LEN)) * CHUNK_LEN
  const l = subtree(bytes, off, left, counter, false)
  const r = subtree(bytes, off + left, len - left, counter + left / CHUNK_LEN, false)
  return parentWords(l, r, root)
}

/** The plain BLAKE3 hash of `bytes` (what b3sum prints). */
export function hash (bytes) {
  return wordsToBytes(subtree(bytes, 0, bytes.length, 0, true))
}

/**
 * The non-root chaining value of `bytes` hashed at input offset `offset` (a multiple of 1024),
 * like `Hasher::new().set_input_offset(offset).update(bytes).finalize_non_root()`. The caller
 * makes sure `bytes` is a whole subtree of the larger input (iwant's pieces are).
 */
export function chainingValue (bytes, offset) {
  if (offset % CHUNK_LEN !== 0) throw new Error(`input offset ${offset} is not a multiple of ${CHUNK_LEN}`)
  return wordsToBytes(subtree(bytes, 0, bytes.length, offset / CHUNK_LEN, false))
}

/** The parent node of two 32-byte chaining values; `root` for the top of the tree. */
export function parent (left, right, root) {
  return wordsToBytes(parentWords(bytesToWords(left), bytesToWords(right), root))
}
