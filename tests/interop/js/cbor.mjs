// A tiny CBOR (RFC 8949) encoder and decoder, hand-written for the interop test so that the
// bytes on the wire come from docs/protocols.md and this file, not from a library.
//
// JS ↔ CBOR: non-negative integers (Number or BigInt) ↔ major 0, negative ↔ major 1,
// Uint8Array ↔ byte string (major 2), string ↔ text (major 3), Array ↔ array (major 4),
// plain object ↔ map with text keys (major 5, in insertion order), null/true/false ↔ simple
// values. The decoder also reads indefinite lengths, floats, `undefined` and tags (as
// `{ tag, value }`), and maps with non-text keys (as a `Map`). Integers beyond 2^53 decode as
// BigInt.

const te = new TextEncoder()
const td = new TextDecoder('utf-8', { fatal: true })

function head (major, n, out) {
  n = BigInt(n)
  const m = major << 5
  if (n < 24n) out.push(m | Number(n))
  else if (n < 0x100n) out.push(m | 24, Number(n))
  else if (n < 0x10000n) out.push(m | 25, Number(n >> 8n), Number(n & 0xffn))
  else if (n < 0x100000000n) {
    out.push(m | 26)
    for (let s = 24n; s >= 0n; s -= 8n) out.push(Number((n >> s) & 0xffn))
  } else if (n < 0x10000000000000000n) {
    out.push(m | 27)
    for (let s = 56n; s >= 0n; s -= 8n) out.push(Number((n >> s) & 0xffn))
  } else throw new RangeError(`integer ${n} does not fit CBOR's 64 bits`)
}

function enc (v, out) {
  if (v === null) out.push(0xf6)
  else if (v === false) out.push(0xf4)
  else if (v === true) out.push(0xf5)
  else if (typeof v === 'number' || typeof v === 'bigint') {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new TypeError(`not an integer: ${v}`)
    const n = BigInt(v)
    if (n >= 0n) head(0, n, out)
    else head(1, -1n - n, out)
  } else if (typeof v === 'string') {
    const b = te.encode(v)
    head(3, b.length, out)
    for (const x of b) out.push(x)
  } else if (v instanceof Uint8Array) {
    head(2, v.length, out)
    for (const x of v) out.push(x)
  } else if (Array.isArray(v)) {
    head(4, v.length, out)
    for (const x of v) enc(x, out)
  } else if (typeof v === 'object') {
    const keys = Object.keys(v)
    head(5, keys.length, out)
    for (const k of keys) {
      enc(k, out)
      enc(v[k], out)
    }
  } else throw new TypeError(`cannot encode ${typeof v}`)
}

/** The CBOR encoding of `value`. */
export function encode (value) {
  const out = []
  enc(value, out)
  return Uint8Array.from(out)
}

class Decoder {
  constructor (bytes) {
    this.b = bytes
    this.i = 0
  }

  byte () {
    if (this.i >= this.b.length) throw new Error(`CBOR ends early at byte ${this.i}`)
    return this.b[this.i++]
  }

  take (n) {
    if (n > this.b.length - this.i) throw new Error(`CBOR ends early: ${n} bytes wanted at ${this.i}, ${this.b.length - this.i} left`)
    const s = this.b.subarray(this.i, this.i + n)
    this.i += n
    return s
  }

  /** The argument of an initial byte with additional info `ai`, as a BigInt (null: indefinite). */
  arg (ai) {
    if (ai < 24) return BigInt(ai)
    if (ai === 31) return null
    const len = { 24: 1, 25: 2, 26: 4, 27: 8 }[ai]
    if (len === undefined) throw new Error(`reserved CBOR additional info ${ai} at byte ${this.i - 1}`)
    let n = 0n
    for (const x of this.take(len)) n = (n << 8n) | BigInt(x)
    return n
  }

  static num (n) {
    return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n
  }

  length (n, what) {
    if (n > BigInt(this.b.length)) throw new Error(`CBOR ${what} of length ${n} is longer than the input`)
    return Number(n)
  }

  chunks (major, ib) {
    // Indefinite-length string: definite chunks of the same major type until 0xff.
    const parts = []
    for (;;) {
      const h = this.byte()
      if (h === 0xff) break
      if (h >> 5 !== major || (h & 31) === 31) throw new Error(`bad chunk 0x${h.toString(16)} in indefinite string 0x${ib.toString(16)}`)
      parts.push(this.take(this.length(this.arg(h & 31), 'string chunk')))
    }
    const all = new Uint8Array(parts.reduce((a, p) => a + p.length, 0))
    let o = 0
    for (const p of parts) { all.set(p, o); o += p.length }
    return all
  }

  value () {
    const ib = this.byte()
    const major = ib >> 5
    const ai = ib & 31
    switch (major) {
      case 0: {
        const n = this.arg(ai)
        if (n === null) throw new Error('indefinite integer')
        return Decoder.num(n)
      }
      case 1: {
        const n = this.arg(ai)
        if (n === null) throw new Error('indefinite integer')
        return Decoder.num(-1n - n)
      }
      case 2:
      case 3: {
        const n = this.arg(ai)
        const raw = n === null ? this.chunks(major, ib) : Uint8Array.from(this.take(this.length(n, 'string')))
        return major === 2 ? raw : td.decode(raw)
      }
      case 4: {
        const n = this.arg(ai)
        const out = []
        if (n === null) {
          while (this.b[this.i] !== 0xff) out.push(this.value())
          this.i++
        } else {
          const len = this.length(n, 'array')
          for (let k = 0; k < len; k++) out.push(this.value())
        }
        return out
      }
      case 5: {
        const n = this.arg(ai)
        const entries = []
        if (n === null) {
          while (this.b[this.i] !== 0xff) entries.push([this.value(), this.value()])
          this.i++
        } else {
          const len = this.length(n, 'map')
          for (let k = 0; k < len; k++) entries.push([this.value(), this.value()])
        }
        if (entries.every(([k]) => typeof k === 'string')) {
          const obj = {}
          for (const [k, v] of entries) {
            if (Object.hasOwn(obj, k)) throw new Error(`duplicate map key ${JSON.stringify(k)}`)
            obj[k] = v
          }
          return obj
        }
        return new Map(entries)
      }
      case 6: {
        const tag = this.arg(ai)
        if (tag === null) throw new Error('indefinite tag')
        return { tag: Decoder.num(tag), value: this.value() }
      }
      default: {
        if (ai === 20) return false
        if (ai === 21) return true
        if (ai === 22) return null
        if (ai === 23) return undefined
        const dv = (n) => new DataView(this.take(n).slice().buffer)
        if (ai === 25) return halfToNumber(dv(2).getUint16(0))
        if (ai === 26) return dv(4).getFloat32(0)
        if (ai === 27) return dv(8).getFloat64(0)
        if (ai === 24) return { simple: this.byte() }
        if (ai < 20) return { simple: ai }
        throw new Error(`unexpected CBOR byte 0x${ib.toString(16)} at ${this.i - 1}`)
      }
    }
  }
}

function halfToNumber (h) {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >> 10) & 0x1f
  const f = h & 0x3ff
  if (e === 0) return s * 2 ** -14 * (f / 1024)
  if (e === 31) return f ? NaN : s * Infinity
  return s * 2 ** (e - 15) * (1 + f / 1024)
}

/** Decodes exactly one CBOR value filling all of `bytes` (trailing bytes are an error). */
export function decode (bytes) {
  const d = new Decoder(bytes)
  const v = d.value()
  if (d.i !== bytes.length) throw new Error(`${bytes.length - d.i} bytes after the CBOR value`)
  return v
}
