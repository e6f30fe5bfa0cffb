//! Content (`/iwant/content/1.0.0`): what a holder knows about content it shares, short of the
//! bytes themselves.
//!
//! A downloader asks a holder for a file's piece list ([`Request::Pieces`]), checks it against
//! the id, and then fetches the pieces over [`crate::chunk`]; for a directory it first fetches
//! the manifest, one page of at most [`MAX_MANIFEST_PAGE`] bytes at a time
//! ([`Request::Manifest`]), and checks its BLAKE3 hash against the id. A node that does not share
//! the id answers [`Response::NotFound`].
//!
//! The executable bit and modification time of a file, or of each file of a directory, are not
//! part of the content: they do not change its id and are not verified. A downloader asks for
//! them apart ([`Request::Attrs`]) and uses them as hints, within bounds it checks itself.
//!
//! A node also lists what its shared folder holds, a page at a time ([`Request::List`]), for
//! people who browse another node (`iwant ls --peer`).
//!
//! Limits: requests of at most [`MAX_REQUEST`] bytes, responses of at most [`MAX_RESPONSE`],
//! piece lists of at most [`MAX_PIECES`] hashes, manifests of at most [`MAX_MANIFEST`] bytes,
//! refusal reasons of at most [`MAX_REASON`] bytes, attribute pages of at most
//! [`MAX_ATTRS_PAGE`] records. `docs/protocols.md` has the spec.

use std::time::Duration;

use libp2p::{
    request_response::{self, cbor},
    StreamProtocol,
};
use serde::{Deserialize, Serialize};

use crate::wire::{Bytes, Id};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/iwant/content/1.0.0");

/// Largest encoded request, in bytes (two paths of a listing and their framing).
pub const MAX_REQUEST: u64 = 10 * 1024;

/// Most entries in one page of a listing.
pub const MAX_LIST_PAGE: usize = 1024;

/// Most bytes of paths in one page of a listing (a holder ends a page before it would pass
/// this, after at least one entry).
pub const LIST_PAGE_PATHS: usize = 1024 * 1024;

/// Most manifest bytes in one response.
pub const MAX_MANIFEST_PAGE: usize = 1024 * 1024;

/// Largest manifest a node serves or accepts in total (64 MiB).
pub const MAX_MANIFEST: u64 = 64 * 1024 * 1024;

/// Most piece hashes of one file (iwant's piece rule gives at most 2048).
pub const MAX_PIECES: usize = 2048;

/// Length of one piece hash, in bytes.
pub const PIECE_HASH_LEN: usize = 32;

/// Smallest piece size a piece list may name: one BLAKE3 chunk.
pub const MIN_PIECE_SIZE: u64 = 1024;

/// Longest refusal reason, in bytes.
pub const MAX_REASON: usize = 1024;

/// Largest encoded response, in bytes: a full manifest page and its framing.
pub const MAX_RESPONSE: u64 = 2 * 1024 * 1024;

/// Length of one attribute record ([`FileAttrs`]), in bytes.
pub const ATTRS_LEN: usize = 9;

/// Most attribute records in one response.
pub const MAX_ATTRS_PAGE: usize = 65_536;

/// Most attribute records of one id: one per manifest entry (an entry takes at least 46 bytes).
pub const MAX_ATTRS: u64 = MAX_MANIFEST / 46;

/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a downloader asks a holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The piece list of a file this node shares.
    Pieces {
        /// The file's id.
        id: Id,
    },
    /// `MAX_MANIFEST_PAGE` bytes (or fewer, at the end) of a directory's manifest, from `offset`.
    Manifest {
        /// The directory's id.
        id: Id,
        /// The first manifest byte wanted (at most [`MAX_MANIFEST`]).
        offset: u64,
    },
    /// One page of what the holder's shared folder holds at `path` and below ("" for all of
    /// it), sorted by the bytes of their paths, from the first path after `after`.
    List {
        /// A folder (or file) of the share, as its entries name it.
        path: String,
        /// The last path of the previous page; `None` for the first page.
        after: Option<String>,
    },
    /// The attributes ([`FileAttrs`]) of a file (one record), or of each entry of a
    /// directory's manifest in manifest order, from record `first` on.
    Attrs {
        /// The file's or directory's id.
        id: Id,
        /// The first record wanted (at most [`MAX_ATTRS`]).
        first: u64,
    },
}

/// The holder's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// `pieces`: 32 bytes per piece hash, empty for a one-piece file (a CBOR byte string).
    Pieces {
        /// The file's length in bytes.
        size: u64,
        /// The piece size: a power of two of at least [`MIN_PIECE_SIZE`].
        piece_size: u64,
        /// The piece hashes in order, [`PIECE_HASH_LEN`] bytes each.
        pieces: Bytes,
    },
    /// One page of the manifest: its total length and the bytes at `offset`.
    Manifest {
        /// The manifest's length in bytes (at most [`MAX_MANIFEST`]).
        total: u64,
        /// Where `bytes` start in the manifest: the request's offset.
        offset: u64,
        /// At most [`MAX_MANIFEST_PAGE`] bytes.
        bytes: Bytes,
    },
    /// At most [`MAX_ATTRS_PAGE`] attribute records, [`ATTRS_LEN`] bytes each.
    Attrs {
        /// How many records the id has: 1 for a file, the number of manifest entries for a
        /// directory (at most [`MAX_ATTRS`]).
        total: u64,
        /// The index of the first record in `attrs`: the request's `first`.
        first: u64,
        /// The records, in order.
        attrs: Bytes,
    },
    /// One page of a listing: at most [`MAX_LIST_PAGE`] entries, in path order; an empty
    /// page ends the listing.
    List {
        /// How many entries there are at and below the path in all (a hint for people).
        total: u64,
        /// The entries.
        entries: Vec<crate::index_sync::Entry>,
    },
    /// This node does not share that id (now), or nothing at that path.
    NotFound,
    /// Too many requests at once; try again shortly.
    Busy,
    /// The request broke a limit.
    Refused {
        /// Why (at most [`MAX_REASON`] bytes).
        reason: String,
    },
}

/// The behaviour: request-response with the CBOR codec and the limits above.
pub type Behaviour = cbor::Behaviour<Request, Response>;

/// The behaviour's events.
pub type Event = request_response::Event<Request, Response>;

/// A content behaviour with iwant's limits.
pub fn behaviour() -> Behaviour {
    crate::wire::cbor_behaviour(PROTOCOL, MAX_REQUEST, MAX_RESPONSE, REQUEST_TIMEOUT)
}

impl Request {
    /// Checks every bound of the request; the error says which one was broken.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Request::Pieces { .. } => Ok(()),
            Request::Manifest { offset, .. } => {
                if *offset > MAX_MANIFEST {
                    return Err(format!(
                        "a manifest offset of {offset}, beyond the largest manifest ({MAX_MANIFEST} bytes)"
                    ));
                }
                Ok(())
            }
            Request::List { path, after } => {
                crate::wire::check_path(path)?;
                if let Some(after) = after {
                    crate::wire::check_path(after)?;
                }
                Ok(())
            }
            Request::Attrs { first, .. } => {
                if *first > MAX_ATTRS {
                    return Err(format!(
                        "attributes from record {first}, beyond the most an id has ({MAX_ATTRS})"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A file's attributes that travel with its content without being part of it (9 bytes on the
/// wire: one flag byte, then the modification time as a little-endian `i64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileAttrs {
    /// Modification time, nanoseconds since the Unix epoch; `None` when not known.
    pub mtime_ns: Option<i64>,
    /// Whether the holder's copy is executable (by its owner).
    pub executable: bool,
}

impl FileAttrs {
    /// Flag bit: the file is executable.
    pub const EXECUTABLE: u8 = 1;
    /// Flag bit: the modification time is known.
    pub const MTIME: u8 = 2;

    /// The 9-byte record.
    pub fn to_bytes(self) -> [u8; ATTRS_LEN] {
        let mut out = [0; ATTRS_LEN];
        out[0] = if self.executable { Self::EXECUTABLE } else { 0 }
            | if self.mtime_ns.is_some() {
                Self::MTIME
            } else {
                0
            };
        out[1..].copy_from_slice(&self.mtime_ns.unwrap_or(0).to_le_bytes());
        out
    }

    /// Reads one record; unknown flag bits are ignored.
    pub fn from_bytes(record: &[u8; ATTRS_LEN]) -> Self {
        let flags = record[0];
        let mut time = [0; 8];
        time.copy_from_slice(&record[1..]);
        Self {
            mtime_ns: (flags & Self::MTIME != 0).then(|| i64::from_le_bytes(time)),
            executable: flags & Self::EXECUTABLE != 0,
        }
    }

    /// Every record of `bytes` (whose length is a multiple of [`ATTRS_LEN`], as
    /// [`Response::check`] makes sure).
    pub fn all(bytes: &[u8]) -> impl Iterator<Item = Self> + '_ {
        bytes
            .chunks_exact(ATTRS_LEN)
            .map(|r| Self::from_bytes(r.try_into().expect("bug: a 9-byte chunk")))
    }
}

impl Response {
    /// Checks every bound of the response; the error says which one was broken.
    ///
    /// For [`Response::Pieces`] this includes that the number of hashes fits `size` and
    /// `piece_size` (none for one piece); that the hashes belong to the id is for the caller to
    /// check. For [`Response::Manifest`] it includes that a page short of the end is not empty;
    /// that `offset` is the one asked for is for the caller to check.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Response::Pieces {
                size,
                piece_size,
                pieces,
            } => {
                if !pieces.len().is_multiple_of(PIECE_HASH_LEN) {
                    return Err(format!(
                        "a piece list of {} bytes, not a multiple of {PIECE_HASH_LEN}",
                        pieces.len()
                    ));
                }
                if pieces.len() > MAX_PIECES * PIECE_HASH_LEN {
                    return Err(format!(
                        "{} piece hashes, more than {MAX_PIECES}",
                        pieces.len() / PIECE_HASH_LEN
                    ));
                }
                if !piece_size.is_power_of_two() || *piece_size < MIN_PIECE_SIZE {
                    return Err(format!(
                        "a piece size of {piece_size}, not a power of two of at least {MIN_PIECE_SIZE}"
                    ));
                }
                let count = size.div_ceil(*piece_size).max(1);
                let expected = if count == 1 { 0 } else { count };
                if (pieces.len() / PIECE_HASH_LEN) as u64 != expected {
                    return Err(format!(
                        "{} piece hashes for {size} bytes in pieces of {piece_size}, which need {expected}",
                        pieces.len() / PIECE_HASH_LEN
                    ));
                }
                Ok(())
            }
            Response::Manifest {
                total,
                offset,
                bytes,
            } => {
                if bytes.len() > MAX_MANIFEST_PAGE {
                    return Err(format!(
                        "a manifest page of {} bytes, more than {MAX_MANIFEST_PAGE}",
                        bytes.len()
                    ));
                }
                if *total > MAX_MANIFEST {
                    return Err(format!(
                        "a manifest of {total} bytes, more than {MAX_MANIFEST}"
                    ));
                }
                let end = offset.checked_add(bytes.len() as u64);
                if end.is_none_or(|end| end > *total) {
                    return Err(format!(
                        "{} manifest bytes at offset {offset}, beyond its {total} bytes",
                        bytes.len()
                    ));
                }
                if bytes.is_empty() && offset != total {
                    return Err(format!(
                        "an empty manifest page at offset {offset} of {total} bytes"
                    ));
                }
                Ok(())
            }
            Response::Attrs {
                total,
                first,
                attrs,
            } => {
                if !attrs.len().is_multiple_of(ATTRS_LEN) {
                    return Err(format!(
                        "attributes of {} bytes, not a multiple of {ATTRS_LEN}",
                        attrs.len()
                    ));
                }
                let count = (attrs.len() / ATTRS_LEN) as u64;
                if count > MAX_ATTRS_PAGE as u64 {
                    return Err(format!(
                        "{count} attribute records in one page, more than {MAX_ATTRS_PAGE}"
                    ));
                }
                if *total > MAX_ATTRS {
                    return Err(format!("{total} attribute records, more than {MAX_ATTRS}"));
                }
                if first.checked_add(count).is_none_or(|end| end > *total) {
                    return Err(format!(
                        "{count} attribute records from {first}, beyond their {total}"
                    ));
                }
                if count == 0 && first != total {
                    return Err(format!(
                        "an empty attributes page at record {first} of {total}"
                    ));
                }
                Ok(())
            }
            Response::List { entries, .. } => {
                if entries.len() > MAX_LIST_PAGE {
                    return Err(format!(
                        "{} entries in one page, more than {MAX_LIST_PAGE}",
                        entries.len()
                    ));
                }
                for entry in entries {
                    crate::wire::check_path(&entry.path)?;
                }
                if entries
                    .windows(2)
                    .any(|w| w[0].path.as_bytes() >= w[1].path.as_bytes())
                {
                    return Err("a page of entries not in path order".into());
                }
                Ok(())
            }
            Response::NotFound | Response::Busy => Ok(()),
            Response::Refused { reason } => {
                if reason.len() > MAX_REASON {
                    return Err(format!(
                        "a refusal reason of {} bytes, more than {MAX_REASON}",
                        reason.len()
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, value).unwrap();
        buf
    }

    fn pieces(size: u64, piece_size: u64, count: usize) -> Response {
        Response::Pieces {
            size,
            piece_size,
            pieces: Bytes(vec![0xcd; count * PIECE_HASH_LEN]),
        }
    }

    #[test]
    fn the_largest_responses_and_requests_fit_their_limits() {
        let page = Response::Manifest {
            total: MAX_MANIFEST,
            offset: MAX_MANIFEST - MAX_MANIFEST_PAGE as u64,
            bytes: Bytes(vec![0xff; MAX_MANIFEST_PAGE]),
        };
        page.check().unwrap();
        let buf = encode(&page);
        assert!(buf.len() as u64 <= MAX_RESPONSE, "{} bytes", buf.len());
        assert_eq!(cbor4ii::serde::from_slice::<Response>(&buf).unwrap(), page);

        let list = pieces(u64::MAX, 1 << 53, MAX_PIECES);
        list.check().unwrap();
        let buf = encode(&list);
        assert!(buf.len() as u64 <= MAX_RESPONSE);
        assert_eq!(cbor4ii::serde::from_slice::<Response>(&buf).unwrap(), list);

        let attrs = Response::Attrs {
            total: MAX_ATTRS,
            first: MAX_ATTRS - MAX_ATTRS_PAGE as u64,
            attrs: Bytes(vec![0xff; MAX_ATTRS_PAGE * ATTRS_LEN]),
        };
        attrs.check().unwrap();
        let buf = encode(&attrs);
        assert!(buf.len() as u64 <= MAX_RESPONSE, "{} bytes", buf.len());

        let refused = Response::Refused {
            reason: "r".repeat(MAX_REASON),
        };
        refused.check().unwrap();
        assert!(encode(&refused).len() as u64 <= MAX_RESPONSE);

        for request in [
            Request::Pieces { id: Id([0xab; 32]) },
            Request::Manifest {
                id: Id([0xab; 32]),
                offset: MAX_MANIFEST,
            },
            Request::Attrs {
                id: Id([0xab; 32]),
                first: MAX_ATTRS,
            },
            Request::List {
                path: "p".repeat(crate::wire::MAX_PATH),
                after: Some("a".repeat(crate::wire::MAX_PATH)),
            },
        ] {
            request.check().unwrap();
            let buf = encode(&request);
            assert!(buf.len() as u64 <= MAX_REQUEST);
            assert_eq!(
                cbor4ii::serde::from_slice::<Request>(&buf).unwrap(),
                request
            );
        }
    }

    #[test]
    fn messages_have_the_documented_cbor_shape() {
        // {"manifest": {"id": h'07…', "offset": 5}}
        let buf = encode(&Request::Manifest {
            id: Id([7; 32]),
            offset: 5,
        });
        let mut expected = vec![0xa1, 0x68];
        expected.extend(b"manifest");
        expected.extend([0xa2, 0x62]);
        expected.extend(b"id");
        expected.extend([0x58, 32]);
        expected.extend([7; 32]);
        expected.push(0x66);
        expected.extend(b"offset");
        expected.push(0x05);
        assert_eq!(buf, expected);

        // {"pieces": {"id": h'07…'}}
        let buf = encode(&Request::Pieces { id: Id([7; 32]) });
        let mut expected = vec![0xa1, 0x66];
        expected.extend(b"pieces");
        expected.extend([0xa1, 0x62]);
        expected.extend(b"id");
        expected.extend([0x58, 32]);
        expected.extend([7; 32]);
        assert_eq!(buf, expected);

        // {"pieces": {"size": 0, "piece_size": 262144, "pieces": h''}}
        let buf = encode(&pieces(0, 262_144, 0));
        let mut expected = vec![0xa1, 0x66];
        expected.extend(b"pieces");
        expected.extend([0xa3, 0x64]);
        expected.extend(b"size");
        expected.extend([0x00, 0x6a]);
        expected.extend(b"piece_size");
        expected.extend([0x1a, 0x00, 0x04, 0x00, 0x00, 0x66]);
        expected.extend(b"pieces");
        expected.push(0x40);
        assert_eq!(buf, expected);

        let mut not_found = vec![0x69];
        not_found.extend(b"not_found");
        assert_eq!(encode(&Response::NotFound), not_found);
        let mut busy = vec![0x64];
        busy.extend(b"busy");
        assert_eq!(encode(&Response::Busy), busy);
    }

    #[test]
    fn piece_lists_must_fit_the_file() {
        let mib = 1024 * 1024;
        pieces(0, 256 * 1024, 0).check().unwrap();
        pieces(1, 256 * 1024, 0).check().unwrap();
        pieces(256 * 1024, 256 * 1024, 0).check().unwrap();
        pieces(256 * 1024 + 1, 256 * 1024, 2).check().unwrap();
        pieces(1024 * mib, 512 * 1024, 2048).check().unwrap();
        pieces(1024, 1024, 0).check().unwrap();

        let bad = [
            pieces(0, 256 * 1024, 1),
            pieces(256 * 1024 + 1, 256 * 1024, 0),
            pieces(256 * 1024 + 1, 256 * 1024, 3),
            pieces(2049 * 1024, 1024, 2049),
            pieces(10, 1000, 0),
            pieces(10, 512, 0),
            pieces(10, 0, 0),
            Response::Pieces {
                size: 512 * 1024,
                piece_size: 256 * 1024,
                pieces: Bytes(vec![0; 63]),
            },
        ];
        for response in bad {
            assert!(response.check().is_err(), "{response:?}");
        }
    }

    #[test]
    fn manifest_pages_must_lie_inside_the_manifest() {
        let page = |total, offset, len| Response::Manifest {
            total,
            offset,
            bytes: Bytes(vec![1; len]),
        };
        page(0, 0, 0).check().unwrap();
        page(10, 0, 10).check().unwrap();
        page(10, 4, 6).check().unwrap();
        page(10, 10, 0).check().unwrap();
        page(10, 0, 3).check().unwrap();

        for bad in [
            page(10, 5, 6),
            page(10, 11, 0),
            page(10, 4, 0),
            page(MAX_MANIFEST + 1, 0, 1),
            page(u64::MAX, u64::MAX, 1),
            page(2 * MAX_MANIFEST_PAGE as u64, 0, MAX_MANIFEST_PAGE + 1),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }

        assert!(Response::Refused {
            reason: "r".repeat(MAX_REASON + 1)
        }
        .check()
        .is_err());
        assert!(Request::Manifest {
            id: Id([0; 32]),
            offset: MAX_MANIFEST + 1
        }
        .check()
        .is_err());
    }

    #[test]
    fn attribute_pages_must_lie_inside_their_records() {
        let page = |total, first, count| Response::Attrs {
            total,
            first,
            attrs: Bytes(vec![0; count * ATTRS_LEN]),
        };
        page(1, 0, 1).check().unwrap();
        page(0, 0, 0).check().unwrap();
        page(10, 4, 6).check().unwrap();
        page(10, 10, 0).check().unwrap();
        for bad in [
            page(1, 0, 2),
            page(10, 4, 0),
            page(10, 11, 0),
            page(MAX_ATTRS + 1, 0, 1),
            page(u64::MAX, u64::MAX, 1),
            page(MAX_ATTRS, 0, MAX_ATTRS_PAGE + 1),
            Response::Attrs {
                total: 1,
                first: 0,
                attrs: Bytes(vec![0; ATTRS_LEN - 1]),
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert!(Request::Attrs {
            id: Id([0; 32]),
            first: MAX_ATTRS + 1
        }
        .check()
        .is_err());
    }

    #[test]
    fn listing_pages_are_bounded_and_in_order() {
        use crate::{index_sync::Entry, wire::Kind};
        let entry = |path: &str| Entry {
            path: path.into(),
            kind: Kind::File,
            size: 1,
            id: Id([1; 32]),
        };
        let page = |paths: &[&str]| Response::List {
            total: 10,
            entries: paths.iter().map(|p| entry(p)).collect(),
        };
        page(&[]).check().unwrap();
        page(&["", "a", "a/b", "b"]).check().unwrap();
        for bad in [
            page(&["b", "a"]),
            page(&["a", "a"]),
            page(&["../x"]),
            page(&["/abs"]),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_LIST_PAGE).map(|i| format!("{i:05}")).collect();
        let too_many = Response::List {
            total: 0,
            entries: many.iter().map(|p| entry(p)).collect(),
        };
        assert!(too_many.check().is_err());
        // The largest page a holder sends fits the response limit.
        let long = "x".repeat(LIST_PAGE_PATHS / MAX_LIST_PAGE - 6);
        let full = Response::List {
            total: u64::MAX,
            entries: (0..MAX_LIST_PAGE)
                .map(|i| entry(&format!("{long}{i:05}")))
                .collect(),
        };
        full.check().unwrap();
        assert!(encode(&full).len() as u64 <= MAX_RESPONSE);
        for bad in [
            Request::List {
                path: "../up".into(),
                after: None,
            },
            Request::List {
                path: String::new(),
                after: Some("a//b".into()),
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attribute_records_round_trip_and_ignore_unknown_flags() {
        for a in [
            FileAttrs::default(),
            FileAttrs {
                mtime_ns: Some(-5),
                executable: false,
            },
            FileAttrs {
                mtime_ns: Some(1_700_000_000_123_456_789),
                executable: true,
            },
            FileAttrs {
                mtime_ns: None,
                executable: true,
            },
        ] {
            assert_eq!(FileAttrs::from_bytes(&a.to_bytes()), a);
        }
        // Flags 0x83: executable, time known, and a bit this version does not know.
        let mut record = [0x83, 0, 0, 0, 0, 0, 0, 0, 0];
        record[1..].copy_from_slice(&42i64.to_le_bytes());
        assert_eq!(
            FileAttrs::from_bytes(&record),
            FileAttrs {
                mtime_ns: Some(42),
                executable: true
            }
        );
        let two: Vec<u8> = [record, [0; ATTRS_LEN]].concat();
        assert_eq!(FileAttrs::all(&two).count(), 2);
    }
}
