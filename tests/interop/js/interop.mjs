// js-libp2p against a running iwant node, written from docs/protocols.md alone.
//
//   node --import ./polyfill.mjs interop.mjs --peer <peer id> --query <words> --path <path>
//        [--addr <multiaddr>] [--piece <index>] [--timeout-ms <ms>] [--hold]
//
// Finds the node by mDNS (or dials --addr instead: for manual runs where mDNS must stay off),
// identifies and pings it, searches for --query over /iwant/search/1.0.0 (CBOR written by hand,
// see cbor.mjs), takes the hit whose path is --path, fetches its piece list over
// /iwant/content/1.0.0 and checks that it merges to the id, then fetches piece --piece (and the
// last piece, past the end, and an unknown id) over /iwant/chunk/1 and hashes it per "Content
// ids" (blake3.mjs).
//
// Prints one JSON object on stdout, the values found (the harness asserts on them), and exits
// 0; on any failure it prints `{"error": ..., "partial": {...}}` and exits 1. With --hold it
// keeps the connection open after printing, until its stdin ends, so the harness can look at
// the node while the JS peer is connected.

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { mdns } from '@libp2p/mdns'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { randomBytes } from 'node:crypto'

import { encode, decode } from './cbor.mjs'
import { hash } from './blake3.mjs'
import { pieceSizeFor, pieceCount, pieceHash, mergePieces } from './content.mjs'

const SEARCH = '/iwant/search/1.0.0'
const CONTENT = '/iwant/content/1.0.0'
const CHUNK = '/iwant/chunk/1'

// Limits from docs/protocols.md.
const SEARCH_RESPONSE_MAX = 4 * 1024 * 1024
const CONTENT_RESPONSE_MAX = 2 * 1024 * 1024
const MAX_PIECE = 64 * 1024 * 1024

const hex = (b) => Buffer.from(b).toString('hex')
const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])

function parseArgs (argv) {
  const args = { piece: 1, timeoutMs: 90000, hold: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`)
      return argv[++i]
    }
    if (a === '--peer') args.peer = next()
    else if (a === '--addr') args.addr = next()
    else if (a === '--query') args.query = next()
    else if (a === '--path') args.path = next()
    else if (a === '--piece') args.piece = Number(next())
    else if (a === '--timeout-ms') args.timeoutMs = Number(next())
    else if (a === '--hold') args.hold = true
    else throw new Error(`unknown argument ${a}`)
  }
  for (const k of ['peer', 'query', 'path']) {
    if (args[k] === undefined) throw new Error(`--${k} is required`)
  }
  if (!Number.isInteger(args.piece) || args.piece < 0) throw new Error('--piece must be a piece index')
  return args
}

const log = (...m) => console.error(`[interop.js +${(performance.now() / 1000).toFixed(2)}s]`, ...m)

/** Reads a stream exactly, on top of js-libp2p's async iterator of chunks. */
class Reader {
  constructor (stream) {
    this.it = stream[Symbol.asyncIterator]()
    this.parts = []
    this.len = 0
    this.ended = false
  }

  async fill (n) {
    while (this.len < n && !this.ended) {
      const { value, done } = await this.it.next()
      if (done) {
        this.ended = true
        break
      }
      const bytes = value instanceof Uint8Array ? value : value.subarray()
      if (bytes.length > 0) {
        this.parts.push(bytes)
        this.len += bytes.length
      }
    }
  }

  /** Exactly `n` bytes, or null when the stream ended cleanly before the first of them. */
  async readOrEnd (n) {
    await this.fill(n)
    if (this.len === 0 && this.ended) return null
    if (this.len < n) throw new Error(`stream ended after ${this.len} of ${n} bytes`)
    const out = new Uint8Array(n)
    let o = 0
    while (o < n) {
      const p = this.parts[0]
      const k = Math.min(p.length, n - o)
      out.set(p.subarray(0, k), o)
      o += k
      if (k === p.length) this.parts.shift()
      else this.parts[0] = p.subarray(k)
    }
    this.len -= n
    return out
  }

  async read (n) {
    const b = await this.readOrEnd(n)
    if (b === null) throw new Error(`stream ended before ${n} expected bytes`)
    return b
  }

  /** Everything up to the end of the stream, at most `max` bytes. */
  async readToEnd (max) {
    while (!this.ended) {
      await this.fill(this.len + 1)
      if (this.len > max) throw new Error(`more than ${max} bytes`)
    }
    return this.readOrEnd(this.len).then((b) => b ?? new Uint8Array(0))
  }
}

/** Runs `fn(stream)` on a new stream for `protocol`, aborting it after `ms`. */
async function withStream (conn, protocol, ms, fn) {
  const signal = AbortSignal.timeout(ms)
  const stream = await conn.newStream(protocol, { signal })
  const timer = setTimeout(() => stream.abort(new Error(`${protocol}: no answer within ${ms} ms`)), ms)
  try {
    return await fn(stream)
  } finally {
    clearTimeout(timer)
    if (stream.status === 'open') await stream.close().catch(() => {})
  }
}

/**
 * One request-response exchange under the docs' common rules: write one CBOR value, close the
 * write side, read one CBOR value (the server closes after it).
 */
async function requestResponse (conn, protocol, request, maxResponse) {
  return withStream(conn, protocol, 10000, async (stream) => {
    const bytes = encode(request)
    stream.send(bytes)
    await stream.close()
    const reply = await new Reader(stream).readToEnd(maxResponse)
    if (reply.length === 0) throw new Error(`${protocol}: the stream ended without a response`)
    return { requestHex: hex(bytes), reply: decode(reply), replyBytes: reply.length }
  })
}

function chunkRequest (id, first, count) {
  const b = new Uint8Array(41)
  const dv = new DataView(b.buffer)
  b[0] = 1
  b.set(id, 1)
  dv.setUint32(33, first, true)
  dv.setUint32(37, count, true)
  return b
}

async function readFrameHeader (reader) {
  const h = await reader.readOrEnd(9)
  if (h === null) return null
  const dv = new DataView(h.buffer, h.byteOffset, 9)
  return { status: h[0], index: dv.getUint32(1, true), len: dv.getUint32(5, true) }
}

const result = {}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const deadline = setTimeout(() => {
    fail(new Error(`not done within ${args.timeoutMs} ms`), result)
  }, args.timeoutMs)

  const target = peerIdFromString(args.peer)
  const started = performance.now()
  const node = await createLibp2p({
    // A pure client: no listen address, so it announces nothing over mDNS and nobody dials it.
    addresses: { listen: [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: args.addr ? [] : [mdns({ interval: 1000, broadcast: false })],
    // Identify runs once, when this script asks for it (step 2).
    services: { identify: identify({ runOnConnectionOpen: false }), ping: ping() }
  })
  result.self_peer_id = node.peerId.toString()
  log('started as', result.self_peer_id)

  // 1. Find the node (mDNS) and dial it.
  let dialTarget
  if (args.addr) {
    dialTarget = multiaddr(args.addr)
    result.discovery = { method: 'addr', addr: args.addr }
  } else {
    const found = await new Promise((resolve) => {
      const onPeer = (evt) => {
        const { id, multiaddrs } = evt.detail
        log('mDNS discovered', id.toString(), multiaddrs.map(String))
        if (id.equals(target)) {
          node.removeEventListener('peer:discovery', onPeer)
          resolve(evt.detail)
        }
      }
      node.addEventListener('peer:discovery', onPeer)
    })
    result.discovery = {
      method: 'mdns',
      peer_id: found.id.toString(),
      multiaddrs: found.multiaddrs.map(String),
      after_ms: Math.round(performance.now() - started)
    }
    dialTarget = found.id
  }
  const conn = await node.dial(dialTarget, { signal: AbortSignal.timeout(10000) })
  if (!conn.remotePeer.equals(target)) {
    throw new Error(`dialled ${conn.remotePeer} instead of ${target}`)
  }
  result.connection = { remote_peer: conn.remotePeer.toString(), remote_addr: conn.remoteAddr.toString() }
  log('connected to', result.connection.remote_addr)

  // 2. Identify.
  const id = await node.services.identify.identify(conn, { signal: AbortSignal.timeout(10000) })
  result.identify = {
    agent_version: id.agentVersion,
    protocol_version: id.protocolVersion,
    protocols: [...id.protocols].sort(),
    listen_addrs: id.listenAddrs.map(String)
  }
  log('identify:', id.agentVersion, id.protocolVersion)

  // 3. Ping (three times, over the connection we have).
  const rtts = []
  const wall = []
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now()
    rtts.push(await node.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(10000) }))
    wall.push(Number((performance.now() - t0).toFixed(3)))
  }
  // rtt_ms: what js-libp2p's ping reports (whole ms); wall_ms: each call as this script saw it.
  result.ping = { rtt_ms: rtts, wall_ms: wall }
  log('ping rtt ms:', rtts, 'wall ms:', wall)

  // 4. Search (the node leads: it is the only iwant node). `not_leader`/`busy`: ask again.
  const searchRequest = { search: { text: args.query, kind: 'file', offset: 0, limit: 20 } }
  let search
  let attempts = 0
  for (;;) {
    attempts++
    search = await requestResponse(conn, SEARCH, searchRequest, SEARCH_RESPONSE_MAX)
    if (search.reply !== 'not_leader' && search.reply !== 'busy') break
    log('search answered', search.reply, '- asking again')
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  const results = search.reply?.results
  if (!results) throw new Error(`search answered ${JSON.stringify(search.reply)}`)
  const hits = results.hits.map((h) => {
    if (!(h.id instanceof Uint8Array) || h.id.length !== 32) throw new Error(`hit id is not 32 bytes: ${h.id}`)
    return {
      id: hex(h.id),
      kind: h.kind,
      size: h.size,
      path: h.path,
      score: h.score,
      holders: h.holders,
      holder_count: h.holder_count
    }
  })
  result.search = {
    request_hex: search.requestHex,
    attempts,
    total: results.total,
    indexed: results.indexed,
    nodes: results.nodes,
    hits
  }
  const hit = results.hits.find((h) => h.path === args.path)
  if (!hit) throw new Error(`no hit with path ${args.path}: ${JSON.stringify(hits)}`)
  log('search hit', hex(hit.id), hit.size, hit.path)

  // 4b. Locate by an id prefix.
  const prefix = hex(hit.id).slice(0, 12)
  const locate = await requestResponse(conn, SEARCH, { locate: { prefix, max: 10 } }, SEARCH_RESPONSE_MAX)
  if (!locate.reply?.results) throw new Error(`locate answered ${JSON.stringify(locate.reply)}`)
  result.locate = {
    prefix,
    hits: locate.reply.results.hits.map((h) => ({ id: hex(h.id), kind: h.kind, size: h.size, path: h.path, holders: h.holders }))
  }

  // 5. The piece list, checked against the id.
  const content = await requestResponse(conn, CONTENT, { pieces: { id: hit.id } }, CONTENT_RESPONSE_MAX)
  const pl = content.reply?.pieces
  if (!pl) throw new Error(`pieces answered ${JSON.stringify(content.reply)}`)
  const { size, piece_size: pieceSize, pieces } = pl
  if (!(pieces instanceof Uint8Array)) throw new Error('pieces is not a byte string')
  const count = pieceCount(size, pieceSize)
  const listed = count === 1 ? 0 : count
  if (pieces.length !== 32 * listed) throw new Error(`${pieces.length} bytes of piece hashes for ${count} pieces`)
  const hashes = []
  for (let i = 0; i < listed; i++) hashes.push(pieces.subarray(32 * i, 32 * i + 32))
  const merged = listed ? mergePieces(hashes, pieceSize, size) : null
  result.pieces = {
    request_hex: content.requestHex,
    size,
    piece_size: pieceSize,
    piece_size_by_rule: pieceSizeFor(size),
    count,
    hashes: hashes.map(hex),
    merged_root: merged && hex(merged),
    merged_root_is_id: merged !== null && sameBytes(merged, hit.id)
  }
  log('piece list:', count, 'pieces of', pieceSize, 'merged root', result.pieces.merged_root)
  if (args.piece >= count) throw new Error(`piece ${args.piece} asked, the file has ${count}`)

  // 6. Chunks: piece --piece; then from the last piece on, two pieces (the last, then
  //    out_of_range); then an id nobody shares (not_found). Pipelined on one stream.
  const pieceLen = (i) => Math.min(pieceSize, size - i * pieceSize)
  const unknown = new Uint8Array(randomBytes(32))
  const requests = [
    { first: args.piece, count: 1, id: hit.id },
    { first: count - 1, count: 2, id: hit.id },
    { first: 5, count: 3, id: unknown }
  ]
  result.chunk = await withStream(conn, CHUNK, 20000, async (stream) => {
    for (const r of requests) stream.send(chunkRequest(r.id, r.first, r.count))
    await stream.close()
    const reader = new Reader(stream)
    const answers = []
    for (const r of requests) {
      const frames = []
      for (let expect = r.first; expect < r.first + r.count;) {
        const f = await readFrameHeader(reader)
        if (f === null) throw new Error(`stream ended before the answer to ${JSON.stringify({ first: r.first, count: r.count })} was complete`)
        if (f.status > 4) throw new Error(`unknown status ${f.status}`)
        if (f.index !== expect) throw new Error(`frame for piece ${f.index}, expected ${expect}`)
        const frame = { status: f.status, index: f.index, len: f.len }
        frames.push(frame)
        if (f.status !== 0) {
          if (f.len !== 0) throw new Error(`error frame with len ${f.len}`)
          break
        }
        const want = r.id === hit.id && f.index < count ? pieceLen(f.index) : -1
        if (f.len !== want || want > MAX_PIECE) throw new Error(`piece ${f.index} has len ${f.len}, expected ${want}`)
        const data = await reader.read(f.len)
        if (hashes.length) {
          const cv = pieceHash(data, f.index, pieceSize)
          frame.hash = hex(cv)
          frame.list_entry = hex(hashes[f.index])
          frame.matches_list = sameBytes(cv, hashes[f.index])
        } else {
          // A one-piece file has no list: its piece is checked against the id directly.
          const h = hash(data)
          frame.hash = hex(h)
          frame.matches_id = sameBytes(h, hit.id)
        }
        expect++
      }
      answers.push({ id: hex(r.id), first: r.first, count: r.count, frames })
    }
    const tail = await reader.readOrEnd(1)
    return { answers, clean_end: tail === null }
  })
  log('chunk answers:', JSON.stringify(result.chunk.answers.map((a) => a.frames.map((f) => [f.status, f.index, f.len]))))

  result.elapsed_ms = Math.round(performance.now() - started)
  clearTimeout(deadline)
  process.stdout.write(JSON.stringify(result) + '\n')

  if (args.hold) {
    // Keep the connection until the harness closes our stdin (the deadline still applies).
    const holdTimer = setTimeout(() => fail(new Error('held past the deadline'), {}), args.timeoutMs)
    await new Promise((resolve) => {
      process.stdin.on('end', resolve)
      process.stdin.on('close', resolve)
      process.stdin.resume()
    })
    clearTimeout(holdTimer)
  }
  await node.stop()
  process.exit(0)
}

function fail (err, partial) {
  process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err), partial }) + '\n')
  process.exit(1)
}

main().catch((err) => fail(err, result))
