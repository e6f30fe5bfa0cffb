//! Foreign libp2p implementations (js-libp2p, py-libp2p) against a running iwant node, written
//! from docs/protocols.md alone. Their code lives in `tests/interop/{js,py}` with lock files.
//!
//! Both drive the same fixture: a 700,000-byte random file (three pieces of 262,144 bytes, the
//! last 175,712), whose id and piece hashes this side computes with the `blake3` crate.

mod js;
pub(crate) mod py;

use std::{collections::BTreeSet, fs::File, io::Read as _};

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt as _, Mode};
use serde_json::Value;

pub(crate) use crate::lab::{die_with_parent, find_on_path, in_ci};

/// docs/protocols.md, whose protocol table the node's identify must match.
const PROTOCOLS_MD: &str = include_str!("../../../docs/protocols.md");

/// The fixture's length and piece size.
const FILE_LEN: usize = 700_000;
const PIECE_SIZE: usize = 262_144;
/// The piece the scripts fetch (besides the last one).
const PIECE: usize = 1;

/// `len` bytes from /dev/urandom.
fn urandom(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("read /dev/urandom");
    data
}

/// The piece hashes of `data` per docs/protocols.md "Content ids".
fn piece_hashes(data: &[u8], piece_size: usize) -> Vec<[u8; 32]> {
    data.chunks(piece_size)
        .enumerate()
        .map(|(i, piece)| {
            blake3::Hasher::new()
                .set_input_offset((i * piece_size) as u64)
                .update(piece)
                .finalize_non_root()
        })
        .collect()
}

/// Merges a piece list (at least two pieces) into the root, as docs/protocols.md describes.
fn merge(pieces: &[[u8; 32]], piece_size: usize, len: usize) -> [u8; 32] {
    fn go(pieces: &[[u8; 32]], piece_size: usize, len: usize, root: bool) -> [u8; 32] {
        if len <= piece_size {
            return pieces[0];
        }
        let left = (len - 1).next_power_of_two() / 2;
        let (l, r) = pieces.split_at(left / piece_size);
        let (l, r) = (
            go(l, piece_size, left, false),
            go(r, piece_size, len - left, false),
        );
        if root {
            *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
        } else {
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        }
    }
    go(pieces, piece_size, len, true)
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The protocol ids in the table "Protocols spoken today" of docs/protocols.md (mDNS is not one).
fn documented_protocols() -> BTreeSet<String> {
    let table = PROTOCOLS_MD
        .split("## Protocols spoken today")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/protocols.md has a section `Protocols spoken today`");
    let ids: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `/"))
        .filter_map(|l| l.split('`').next())
        .map(|id| format!("/{id}"))
        .collect();
    assert!(
        ids.len() >= 5,
        "bug in the test: read only {ids:?} from the docs' table"
    );
    ids
}

/// The strings of a JSON array; panics on anything else.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}
