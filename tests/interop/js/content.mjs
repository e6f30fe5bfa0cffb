// iwant's content ids (docs/protocols.md, "Content ids"): the piece rule, piece hashes and the
// merge of a piece list back into a file id, on top of blake3.mjs.

import { chainingValue, parent, largestPowerOfTwoBelow } from './blake3.mjs'

/** `piece_size = max(262144, next_power_of_two(ceil(len / 2048)))`. */
export function pieceSizeFor (len) {
  let p = 1
  while (p < Math.ceil(len / 2048)) p *= 2
  return Math.max(262144, p)
}

/** How many pieces a file of `size` bytes has (an empty file is one empty piece). */
export function pieceCount (size, pieceSize) {
  return size === 0 ? 1 : Math.ceil(size / pieceSize)
}

/** Piece `index`'s hash: its BLAKE3 chaining value at input offset `index × piece_size`. */
export function pieceHash (data, index, pieceSize) {
  return chainingValue(data, index * pieceSize)
}

/**
 * Merges the piece hashes of a file of `size` bytes (more than one piece) into its root: a run
 * covering n bytes splits at the largest power of two below n, merged with the non-root parent
 * function, the top pair with the root parent function.
 */
export function mergePieces (hashes, pieceSize, size) {
  if (hashes.length < 2) throw new Error('a piece list to merge has at least two pieces')
  const go = (first, bytes, root) => {
    if (bytes <= pieceSize) return hashes[first]
    const left = largestPowerOfTwoBelow(bytes)
    const l = go(first, left, false)
    const r = go(first + left / pieceSize, bytes - left, false)
    return parent(l, r, root)
  }
  return go(0, size, true)
}
