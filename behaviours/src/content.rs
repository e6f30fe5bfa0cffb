//! Content (`/iwant/content/1.0.0`): what a holder knows about content it shares, short of the
//! bytes themselves.
//!
//! A downloader asks a holder for a file's piece list ([`Request::Pieces`]), checks it against
//! the id, and then fetches the pieces over [`crate::chunk`]; for a directory it first fetches
//! the manifest, one page of at most [`MAX_MANIFEST_PAGE`] bytes at a time
//! ([`Request::Manifest`]), and checks its BLAKE3 hash against the id. A node that does not share
//! the id answers [`Response::NotFound`].
//!
//! Limits: requests of at most [`MAX_REQUEST`] bytes, responses of at most [`MAX_RESPONSE`],
//! piece lists of at most [`MAX_PIECES`] hashes, manifests of at most [`MAX_MANIFEST`] bytes,
//! refusal reasons of at most [`MAX_REASON`] bytes. `docs/protocols.md` has the spec.

use std::time::Duration;

use libp2p::{
    request_response::{self, cbor},
    StreamProtocol,
};
use serde::{Deserialize, Serialize};

use crate::wire::{Bytes, Id};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/iwant/content/1.0.0");

/// Largest encoded request, in bytes.
pub const MAX_REQUEST: u64 = 1024;

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
    /// This node does not share that id (now).
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
        }
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
}
