//! Pieces: how a file is cut, hashed and verified.
//!
//! A file's id is its plain BLAKE3 hash (what `b3sum` prints). The file is cut into pieces of
//! [`Layout::piece_size`] bytes, a power of two of at least [`MIN_PIECE`], chosen so that no file
//! has more than [`MAX_PIECES`] pieces; the last piece may be short. Because each piece is an
//! aligned, power-of-two run of BLAKE3 chunks, it is a whole subtree of the file's BLAKE3 tree:
//! a piece's hash is that subtree's chaining value (`blake3::hazmat`), and the chaining values
//! of all pieces merge back into the root hash, the id. So a downloader can
//!
//! 1. check a piece list received from anyone against the id ([`root_of_pieces`]), and then
//! 2. check every piece on arrival against its entry ([`Layout::verify_piece`]).
//!
//! A file of at most one piece has an empty piece list: the piece is checked against the id.
//! See `docs/decisions/0001-piece-hashes-from-the-blake3-tree.md`.

use std::ops::Range;

use blake3::{
    hazmat::{
        left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt,
        Mode,
    },
    Hash, Hasher,
};

/// The smallest piece: 256 KiB.
pub const MIN_PIECE: u64 = 256 * 1024;

/// The most pieces a file has; larger files get larger pieces.
pub const MAX_PIECES: u64 = 2048;

/// BLAKE3's chunk length; every piece size is a power-of-two multiple of it.
pub const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// A piece hash: the chaining value of the piece's BLAKE3 subtree.
pub type PieceHash = ChainingValue;

/// How a file of a given length is cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    len: u64,
    piece_size: u64,
}

impl Layout {
    /// The layout iwant uses for a file of `len` bytes:
    /// `piece_size = max(MIN_PIECE, next_power_of_two(ceil(len / MAX_PIECES)))`.
    pub fn for_len(len: u64) -> Self {
        Self::with_rule(len, MIN_PIECE, MAX_PIECES)
    }

    /// The same rule with other bounds (tests use small ones). `min_piece` must be a power of
    /// two of at least [`CHUNK_LEN`].
    pub fn with_rule(len: u64, min_piece: u64, max_pieces: u64) -> Self {
        assert!(
            min_piece.is_power_of_two() && min_piece >= CHUNK_LEN,
            "bug: bad min_piece"
        );
        let piece_size = len
            .div_ceil(max_pieces.max(1))
            .next_power_of_two()
            .max(min_piece);
        Self { len, piece_size }
    }

    /// A layout received from elsewhere; `None` unless `piece_size` is a power of two of at
    /// least [`CHUNK_LEN`].
    pub fn from_parts(len: u64, piece_size: u64) -> Option<Self> {
        (piece_size.is_power_of_two() && piece_size >= CHUNK_LEN)
            .then_some(Self { len, piece_size })
    }

    /// The file length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The piece size.
    pub fn piece_size(&self) -> u64 {
        self.piece_size
    }

    /// The number of pieces; an empty file has one (empty) piece.
    pub fn count(&self) -> u64 {
        self.len.div_ceil(self.piece_size).max(1)
    }

    /// The byte range of piece `index` (`None` past the end).
    pub fn piece_range(&self, index: u64) -> Option<Range<u64>> {
        if index >= self.count() {
            return None;
        }
        let start = index * self.piece_size;
        Some(start..(start + self.piece_size).min(self.len))
    }

    /// How many piece hashes a piece list for this layout holds: 0 for a one-piece file.
    pub fn piece_list_len(&self) -> usize {
        if self.count() > 1 {
            self.count() as usize
        } else {
            0
        }
    }

    /// Hashes piece `index` whose bytes are `data` (the caller reads them from the file).
    /// For a one-piece file this is not needed: the piece is checked against the id.
    pub fn piece_hash(&self, index: u64, data: &[u8]) -> PieceHash {
        let start = index * self.piece_size;
        Hasher::new()
            .set_input_offset(start)
            .update(data)
            .finalize_non_root()
    }

    /// Checks piece `index` (`data`) against the file's `id` and verified `pieces` list. Wrong
    /// length, wrong index or wrong content all return false; nothing panics on hostile input.
    pub fn verify_piece(&self, id: &Hash, pieces: &[PieceHash], index: u64, data: &[u8]) -> bool {
        let Some(range) = self.piece_range(index) else {
            return false;
        };
        if data.len() as u64 != range.end - range.start {
            return false;
        }
        if self.count() == 1 {
            return blake3::hash(data) == *id;
        }
        match pieces.get(index as usize) {
            Some(expected) => self.piece_hash(index, data) == *expected,
            None => false,
        }
    }
}

/// Merges a full piece list back into the root hash. `None` when the list's length does not
/// fit the layout. A list is valid for a file exactly when this equals the file's id.
pub fn root_of_pieces(layout: &Layout, pieces: &[PieceHash]) -> Option<Hash> {
    if layout.count() < 2 || pieces.len() as u64 != layout.count() {
        return None;
    }
    let (left, right) = split(layout, pieces, layout.len());
    Some(merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The two child chaining values of the subtree covering `pieces` (at least two) and `len`
/// bytes.
fn split(layout: &Layout, pieces: &[PieceHash], len: u64) -> (ChainingValue, ChainingValue) {
    let left_len = left_subtree_len(len);
    // left_len is a power of two ≥ piece_size whenever the subtree spans two or more pieces.
    let left_count = (left_len / layout.piece_size()) as usize;
    let (l, r) = pieces.split_at(left_count);
    (
        subtree(layout, l, left_len),
        subtree(layout, r, len - left_len),
    )
}

fn subtree(layout: &Layout, pieces: &[PieceHash], len: u64) -> ChainingValue {
    if pieces.len() == 1 {
        return pieces[0];
    }
    let (left, right) = split(layout, pieces, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// A file's id and piece hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    /// The BLAKE3 hash of the whole file.
    pub id: Hash,
    /// How it is cut.
    pub layout: Layout,
    /// One hash per piece, or empty for a one-piece file.
    pub pieces: Vec<PieceHash>,
}

impl FileHash {
    /// Hashes bytes in memory (tests, small inputs).
    pub fn of_bytes(layout: Layout, data: &[u8]) -> Self {
        assert_eq!(
            layout.len(),
            data.len() as u64,
            "bug: layout for another length"
        );
        if layout.count() == 1 {
            return Self {
                id: blake3::hash(data),
                layout,
                pieces: Vec::new(),
            };
        }
        let pieces: Vec<PieceHash> = (0..layout.count())
            .map(|i| {
                let r = layout.piece_range(i).expect("bug: index in range");
                layout.piece_hash(i, &data[r.start as usize..r.end as usize])
            })
            .collect();
        let id = root_of_pieces(&layout, &pieces).expect("bug: full piece list");
        Self { id, layout, pieces }
    }

    /// The piece list as bytes (32 per piece), as stored and sent.
    pub fn pieces_bytes(&self) -> Vec<u8> {
        self.pieces.iter().flatten().copied().collect()
    }
}

/// Parses a piece list from bytes; `None` unless it is a whole number of 32-byte hashes.
pub fn pieces_from_bytes(bytes: &[u8]) -> Option<Vec<PieceHash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("bug: 32-byte chunk"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        // Deterministic, non-repeating content.
        let mut out = Vec::with_capacity(len);
        let mut x: u32 = 0x9e37_79b9;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Small bounds so that every interesting size is cheap: pieces of at least 4 KiB, at most
    /// 8 pieces (so 32 KiB + 1 byte switches to 8 KiB pieces).
    const MIN: u64 = 4096;
    const MAXP: u64 = 8;

    fn sizes() -> Vec<u64> {
        vec![
            0,
            1,
            1023,
            1024,
            1025,
            MIN - 1,
            MIN,
            MIN + 1,
            3 * MIN + 17,
            MIN * MAXP - 1,
            MIN * MAXP,
            MIN * MAXP + 1, // switches to the next piece size
            5 * MIN * MAXP + 3,
        ]
    }

    #[test]
    fn id_is_plain_blake3_and_piece_lists_merge_to_it() {
        for len in sizes() {
            let bytes = data(len as usize);
            let layout = Layout::with_rule(len, MIN, MAXP);
            let hash = FileHash::of_bytes(layout, &bytes);
            assert_eq!(hash.id, blake3::hash(&bytes), "len {len}");
            assert!(
                layout.count() <= MAXP,
                "len {len}: {} pieces",
                layout.count()
            );
            assert_eq!(hash.pieces.len(), layout.piece_list_len());
            if layout.count() > 1 {
                assert_eq!(
                    root_of_pieces(&layout, &hash.pieces),
                    Some(hash.id),
                    "len {len}"
                );
            }
            for i in 0..layout.count() {
                let r = layout.piece_range(i).unwrap();
                assert!(layout.verify_piece(
                    &hash.id,
                    &hash.pieces,
                    i,
                    &bytes[r.start as usize..r.end as usize]
                ));
            }
        }
    }

    #[test]
    fn piece_size_switches_where_the_rule_says() {
        assert_eq!(Layout::with_rule(MIN * MAXP, MIN, MAXP).piece_size(), MIN);
        assert_eq!(
            Layout::with_rule(MIN * MAXP + 1, MIN, MAXP).piece_size(),
            2 * MIN
        );
        assert_eq!(Layout::for_len(0).piece_size(), MIN_PIECE);
        assert_eq!(Layout::for_len(1 << 30).piece_size(), 512 * 1024);
        assert_eq!(Layout::for_len(1 << 30).count(), MAX_PIECES);
        assert_eq!(Layout::for_len((1 << 30) + 1).count(), 1025);
    }

    #[test]
    fn any_flipped_byte_fails_verification() {
        for len in [MIN - 1, 3 * MIN + 17, MIN * MAXP + 1] {
            let bytes = data(len as usize);
            let layout = Layout::with_rule(len, MIN, MAXP);
            let hash = FileHash::of_bytes(layout, &bytes);
            for i in 0..layout.count() {
                let r = layout.piece_range(i).unwrap();
                let piece = &bytes[r.start as usize..r.end as usize];
                for pos in [0, piece.len() / 2, piece.len() - 1] {
                    let mut bad = piece.to_vec();
                    bad[pos] ^= 0x01;
                    assert!(
                        !layout.verify_piece(&hash.id, &hash.pieces, i, &bad),
                        "len {len} piece {i} byte {pos}"
                    );
                }
                // Truncated, extended, or presented as another piece.
                assert!(!layout.verify_piece(&hash.id, &hash.pieces, i, &piece[..piece.len() - 1]));
                let mut longer = piece.to_vec();
                longer.push(0);
                assert!(!layout.verify_piece(&hash.id, &hash.pieces, i, &longer));
                if layout.count() > 1 {
                    let other = (i + 1) % layout.count();
                    assert!(
                        !layout.verify_piece(&hash.id, &hash.pieces, other, piece) || other == i
                    );
                }
                assert!(!layout.verify_piece(&hash.id, &hash.pieces, layout.count(), piece));
            }
        }
    }

    #[test]
    fn a_tampered_piece_list_does_not_merge_to_the_id() {
        let len = 5 * MIN + 3;
        let layout = Layout::with_rule(len, MIN, MAXP);
        let hash = FileHash::of_bytes(layout, &data(len as usize));
        let mut bad = hash.pieces.clone();
        bad[2][0] ^= 1;
        assert_ne!(root_of_pieces(&layout, &bad), Some(hash.id));
        assert_eq!(
            root_of_pieces(&layout, &hash.pieces[1..]),
            None,
            "wrong count"
        );
        let mut swapped = hash.pieces.clone();
        swapped.swap(0, 1);
        assert_ne!(root_of_pieces(&layout, &swapped), Some(hash.id));
        assert_eq!(
            pieces_from_bytes(&hash.pieces_bytes()),
            Some(hash.pieces.clone())
        );
        assert_eq!(pieces_from_bytes(&[0; 33]), None);
    }

    #[test]
    fn hostile_layouts_are_refused() {
        assert!(Layout::from_parts(10, 1000).is_none());
        assert!(Layout::from_parts(10, 512).is_none());
        assert!(Layout::from_parts(10, 0).is_none());
        assert!(Layout::from_parts(u64::MAX, 1 << 20).is_some());
    }
}
