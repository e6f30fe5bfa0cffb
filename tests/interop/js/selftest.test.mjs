// Offline checks of the hand-written parts (`node --test`): BLAKE3 against vectors printed by
// the real b3sum, piece hashes merging back into the hash, and CBOR against the byte examples
// in docs/protocols.md.

import { test } from 'node:test'
import assert from 'node:assert/strict'

import { hash } from './blake3.mjs'
import { encode, decode } from './cbor.mjs'
import { pieceSizeFor, pieceCount, pieceHash, mergePieces } from './content.mjs'

const hex = (b) => Buffer.from(b).toString('hex')
const unhex = (s) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'))
const pattern = (n) => Uint8Array.from({ length: n }, (_, i) => i % 251)

// `python3 -c "...bytes(i % 251 for i in range(n))" | b3sum` (b3sum 1.2.0).
const VECTORS = {
  0: 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
  1: '2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213',
  64: '4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98',
  1023: '10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11',
  1024: '42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7',
  1025: 'd00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444',
  2048: 'e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a',
  3073: '7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3',
  31744: '62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47',
  700000: 'e8ef0dead6fb6dcbc3893e16cbff4773e754c4cab05d2bcf77ce1b87197de31a'
}

test('blake3 matches b3sum', () => {
  for (const [n, want] of Object.entries(VECTORS)) {
    assert.equal(hex(hash(pattern(Number(n)))), want, `${n} bytes`)
  }
})

test('piece hashes merge into the file hash', () => {
  const cases = [[700000, 262144], [31744, 1024], [31744, 4096], [3073, 1024], [3073, 2048], [2048, 1024], [1025, 1024]]
  for (const [n, pieceSize] of cases) {
    const data = pattern(n)
    const count = pieceCount(n, pieceSize)
    const hashes = []
    for (let i = 0; i < count; i++) {
      hashes.push(pieceHash(data.subarray(i * pieceSize, (i + 1) * pieceSize), i, pieceSize))
    }
    assert.equal(hex(mergePieces(hashes, pieceSize, n)), VECTORS[n], `${n} bytes in pieces of ${pieceSize}`)
  }
})

test('the piece rule', () => {
  assert.equal(pieceSizeFor(0), 262144)
  assert.equal(pieceSizeFor(700000), 262144)
  assert.equal(pieceCount(700000, 262144), 3)
  assert.equal(pieceSizeFor(2048 * 262144), 262144)
  assert.equal(pieceSizeFor(2048 * 262144 + 1), 524288)
  assert.equal(pieceCount(0, 262144), 1)
})

test('cbor encodes the examples of docs/protocols.md', () => {
  const id = new Uint8Array(32).fill(7)
  assert.equal(hex(encode({ pieces: { id } })), 'a166706965636573a16269645820' + '07'.repeat(32))
  assert.equal(
    hex(encode({ manifest: { id, offset: 5 } })),
    'a1686d616e6966657374a2626964582' + '0' + '07'.repeat(32) + '666f666673657405'
  )
  assert.equal(hex(encode('not_found')), '696e6f745f666f756e64')
})

test('cbor decodes what it encodes, and more', () => {
  const v = { a: [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32, 2 ** 53 - 1, -1, -25, -1000], b: null, c: true, d: 'é', e: new Uint8Array([1, 2]) }
  assert.deepEqual(decode(encode(v)), v)
  assert.equal(decode(unhex('1bffffffffffffffff')), 0xffffffffffffffffn)
  assert.deepEqual(decode(unhex('9f0102ff')), [1, 2])
  assert.deepEqual(decode(unhex('bf6161f5ff')), { a: true })
  assert.equal(decode(unhex('7f61616162ff')), 'ab')
  assert.equal(decode(unhex('f93c00')), 1)
  assert.throws(() => decode(unhex('0101')), /after the CBOR value/)
  assert.throws(() => decode(unhex('5820')), /longer than the input/)
})
