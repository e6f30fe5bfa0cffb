//! Search (`/iwant/search/1.0.0`): ask the leader what the network shares.
//!
//! Any peer may send the leader a [`Request`]: a ranked, paged [`Query`] by name, or a
//! [`Request::Locate`] of an id prefix. The leader answers with one page of [`Hit`]s: every
//! distinct id once, with the peers that hold it. A node that is not the leader answers
//! [`Response::NotLeader`].
//!
//! Swarming: a node downloading files tells the leader which pieces of each it has verified
//! ([`Request::Partial`], at most once a second, soft state), and [`Request::Holders`] answers
//! list these partial holders with their pieces next to the whole holders.
//!
//! Limits: queries of at most [`MAX_QUERY`] bytes, pages of at most [`MAX_PAGE`] hits, at most
//! [`MAX_HOLDERS`] holders listed per hit (with the full count), at most [`MAX_RESULTS`]
//! results per query in total. `docs/protocols.md` has the spec.

use std::time::Duration;

use libp2p::{
    request_response::{self, cbor},
    StreamProtocol,
};
use serde::{Deserialize, Serialize};

use crate::wire::{Bytes, Id, Kind};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/iwant/search/1.0.0");

/// Longest query text, in bytes.
pub const MAX_QUERY: usize = 256;

/// Most hits in one response.
pub const MAX_PAGE: u32 = 200;

/// Most results a query can page through.
pub const MAX_RESULTS: u32 = 1000;

/// Most holders listed per hit.
pub const MAX_HOLDERS: usize = 32;

/// Most ids in one [`Request::Holders`].
pub const MAX_HOLDER_IDS: usize = 512;

/// Most files in one [`Request::Partial`].
pub const MAX_PARTIAL_FILES: usize = 64;

/// Longest piece bitfield, in bytes: one bit per piece, and a file has at most 2,048 pieces.
pub const MAX_HAVE: usize = 256;

/// Most partial holders listed per id in a [`Response::Holders`].
pub const MAX_PARTIAL_HOLDERS: usize = 16;

/// How long the leader keeps a [`Request::Partial`] that is not sent again.
pub const PARTIAL_TTL: Duration = Duration::from_secs(10);

/// Largest encoded request, in bytes: a [`Request::Holders`] of [`MAX_HOLDER_IDS`] ids.
pub const MAX_REQUEST: u64 = 24 * 1024;

/// Largest encoded response, in bytes: a full page of hits with the longest paths.
pub const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node asks the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Search by name.
    Search(Query),
    /// The ids that start with a hex prefix, with their holders.
    Locate {
        /// 1 to 64 lower-case hex digits.
        prefix: String,
        /// Most ids to return (at most [`MAX_PAGE`]).
        max: u32,
    },
    /// The holders of each of these ids (e.g. the files of a folder being downloaded), at most
    /// [`MAX_HOLDER_IDS`]; answered with [`Response::Holders`].
    Holders {
        /// The ids.
        #[serde(deserialize_with = "crate::wire::capped::<_, _, MAX_HOLDER_IDS>")]
        ids: Vec<Id>,
    },
    /// "I am downloading these files and have verified these pieces of each": replaces what
    /// the sender said before (an empty list withdraws it); kept for [`PARTIAL_TTL`] unless
    /// sent again. Answered with [`Response::Noted`].
    Partial {
        /// At most [`MAX_PARTIAL_FILES`] files.
        #[serde(deserialize_with = "crate::wire::capped::<_, _, MAX_PARTIAL_FILES>")]
        files: Vec<PartialFile>,
    },
}

/// A file a node is downloading, and the pieces of it that it has verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialFile {
    /// The file's content id.
    pub id: Id,
    /// Bit `i % 8` of byte `i / 8` is piece `i` (pieces as the id's layout cuts them); at
    /// most [`MAX_HAVE`] bytes.
    pub have: Bytes,
}

/// A partial holder of an id, in a [`Response::Holders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialHolder {
    /// Its peer id (base58).
    pub peer: String,
    /// The pieces it has, as in [`PartialFile::have`].
    pub have: Bytes,
}

/// A search by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The words, as the user typed them.
    pub text: String,
    /// Only files or only directories.
    pub kind: Option<Kind>,
    /// How many ranked results to skip.
    pub offset: u32,
    /// How many to return (at most [`MAX_PAGE`]).
    pub limit: u32,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// One page of results.
    Results(Results),
    /// For a [`Request::Holders`]: the peer ids (base58) holding each id, in the order asked,
    /// at most [`MAX_HOLDERS`] each.
    Holders {
        /// One list per id asked.
        #[serde(deserialize_with = "crate::wire::capped::<_, _, MAX_HOLDER_IDS>")]
        holders: Vec<Vec<String>>,
        /// One list per id asked (or none at all): the nodes downloading it, with the pieces
        /// they have, at most [`MAX_PARTIAL_HOLDERS`] each.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            deserialize_with = "crate::wire::capped::<_, _, MAX_HOLDER_IDS>"
        )]
        partial: Vec<Vec<PartialHolder>>,
    },
    /// A [`Request::Partial`] was taken.
    Noted,
    /// This node is not the leader (any more).
    NotLeader,
    /// The leader runs too many searches at once; try again shortly.
    Busy,
    /// The request broke a limit.
    Refused {
        /// Why.
        reason: String,
    },
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Results {
    /// Distinct ids that matched (at most [`MAX_RESULTS`]).
    pub total: u64,
    /// Entries the leader holds, over all nodes.
    pub indexed: u64,
    /// Nodes whose index the leader holds.
    pub nodes: u32,
    /// This page, best first.
    #[serde(deserialize_with = "crate::wire::capped::<_, _, { MAX_PAGE as usize }>")]
    pub hits: Vec<Hit>,
}

/// One distinct piece of content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The content id.
    pub id: Id,
    /// File or directory.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// The best-matching path among its holders' (relative, `/`-separated).
    pub path: String,
    /// The rank: higher is better (see `docs/protocols.md`).
    pub score: i64,
    /// Peer ids (base58) of holders, at most [`MAX_HOLDERS`].
    #[serde(deserialize_with = "crate::wire::capped::<_, _, MAX_HOLDERS>")]
    pub holders: Vec<String>,
    /// How many peers hold it.
    pub holder_count: u32,
}

/// The behaviour: request-response with the CBOR codec and the limits above.
pub type Behaviour = cbor::Behaviour<Request, Response>;

/// The behaviour's events.
pub type Event = request_response::Event<Request, Response>;

/// A search behaviour with iwant's limits.
pub fn behaviour() -> Behaviour {
    crate::wire::cbor_behaviour(PROTOCOL, MAX_REQUEST, MAX_RESPONSE, REQUEST_TIMEOUT)
}

impl Query {
    /// Checks the query's bounds (the text's length, the page size); the error says which one
    /// was broken. The leader checks every query it gets with this, and a node every query its
    /// user asks, before it goes out.
    pub fn check(&self) -> Result<(), String> {
        if self.text.len() > MAX_QUERY {
            return Err(format!(
                "the search is {} bytes long; at most {MAX_QUERY} are allowed",
                self.text.len()
            ));
        }
        if self.limit > MAX_PAGE {
            return Err(format!(
                "a limit of {} results; at most {MAX_PAGE} are allowed",
                self.limit
            ));
        }
        Ok(())
    }
}

impl Request {
    /// Checks every bound of the request; the error says which one was broken.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Request::Search(query) => query.check(),
            Request::Locate { prefix, max } => {
                if prefix.is_empty()
                    || prefix.len() > 64
                    || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(format!("{prefix:?} is not 1 to 64 hex digits"));
                }
                if *max > MAX_PAGE {
                    return Err(format!("{max} ids asked for, more than {MAX_PAGE}"));
                }
                Ok(())
            }
            Request::Holders { ids } => {
                if ids.len() > MAX_HOLDER_IDS {
                    return Err(format!(
                        "the holders of {} ids asked for, more than {MAX_HOLDER_IDS}",
                        ids.len()
                    ));
                }
                Ok(())
            }
            Request::Partial { files } => {
                if files.len() > MAX_PARTIAL_FILES {
                    return Err(format!(
                        "{} partial files, more than {MAX_PARTIAL_FILES}",
                        files.len()
                    ));
                }
                match files.iter().find(|f| f.have.len() > MAX_HAVE) {
                    Some(f) => Err(format!(
                        "a piece bitfield of {} bytes for {}, more than {MAX_HAVE}",
                        f.have.len(),
                        f.id
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_holders_request_and_answer_fit_their_limits() {
        let request = Request::Holders {
            ids: vec![Id([0xcd; 32]); MAX_HOLDER_IDS],
        };
        request.check().unwrap();
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &request).unwrap();
        assert!(buf.len() as u64 <= MAX_REQUEST, "{} bytes", buf.len());
        let too_many = Request::Holders {
            ids: vec![Id([1; 32]); MAX_HOLDER_IDS + 1],
        };
        assert!(too_many.check().is_err());
        let peer = libp2p::PeerId::random().to_string();
        let partial = PartialHolder {
            peer: peer.clone(),
            have: Bytes(vec![0xff; MAX_HAVE]),
        };
        let answer = Response::Holders {
            holders: vec![vec![peer; MAX_HOLDERS]; MAX_HOLDER_IDS],
            partial: vec![vec![partial; MAX_PARTIAL_HOLDERS]; MAX_HOLDER_IDS],
        };
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &answer).unwrap();
        assert!(buf.len() as u64 <= MAX_RESPONSE, "{} bytes", buf.len());
        let back: Response = cbor4ii::serde::from_slice(&buf).unwrap();
        assert_eq!(back, answer);
    }

    #[test]
    fn the_largest_partial_request_fits_and_bad_ones_are_refused() {
        let file = PartialFile {
            id: Id([0xee; 32]),
            have: Bytes(vec![0xff; MAX_HAVE]),
        };
        let request = Request::Partial {
            files: vec![file.clone(); MAX_PARTIAL_FILES],
        };
        request.check().unwrap();
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &request).unwrap();
        assert!(buf.len() as u64 <= MAX_REQUEST, "{} bytes", buf.len());
        let too_many = Request::Partial {
            files: vec![file.clone(); MAX_PARTIAL_FILES + 1],
        };
        assert!(too_many.check().is_err());
        let too_long = Request::Partial {
            files: vec![PartialFile {
                have: Bytes(vec![1; MAX_HAVE + 1]),
                ..file
            }],
        };
        assert!(too_long.check().is_err());
        // An answer without partial holders (an older leader's) still decodes.
        let plain = Response::Holders {
            holders: vec![vec![]],
            partial: vec![],
        };
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &plain).unwrap();
        assert_eq!(cbor4ii::serde::from_slice::<Response>(&buf).unwrap(), plain);
    }

    #[test]
    fn a_full_page_of_the_longest_hits_fits_the_response_limit() {
        let hit = Hit {
            id: Id([0xab; 32]),
            kind: Kind::File,
            size: u64::MAX,
            path: "p".repeat(crate::wire::MAX_PATH),
            score: i64::MIN,
            holders: vec![libp2p::PeerId::random().to_string(); MAX_HOLDERS],
            holder_count: u32::MAX,
        };
        let results = Response::Results(Results {
            total: u64::MAX,
            indexed: u64::MAX,
            nodes: u32::MAX,
            hits: vec![hit; MAX_PAGE as usize],
        });
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &results).unwrap();
        assert!(buf.len() as u64 <= MAX_RESPONSE, "{} bytes", buf.len());
        let back: Response = cbor4ii::serde::from_slice(&buf).unwrap();
        assert_eq!(back, results);
    }

    #[test]
    fn the_largest_valid_request_fits_and_bad_ones_are_refused() {
        let request = Request::Search(Query {
            text: "\u{10ffff}".repeat(MAX_QUERY / 4),
            kind: Some(Kind::Dir),
            offset: u32::MAX,
            limit: MAX_PAGE,
        });
        request.check().unwrap();
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &request).unwrap();
        assert!(buf.len() as u64 <= MAX_REQUEST);

        let long = Request::Search(Query {
            text: "a".repeat(MAX_QUERY + 1),
            kind: None,
            offset: 0,
            limit: 10,
        });
        assert!(long.check().is_err());
        let big_page = Request::Search(Query {
            text: "a".into(),
            kind: None,
            offset: 0,
            limit: MAX_PAGE + 1,
        });
        assert!(big_page.check().is_err());
        for prefix in ["", "xyz", &"a".repeat(65)] {
            let locate = Request::Locate {
                prefix: prefix.into(),
                max: 1,
            };
            assert!(locate.check().is_err(), "{prefix:?}");
        }
        Request::Locate {
            prefix: "AB12".into(),
            max: 10,
        }
        .check()
        .unwrap();
    }

    #[test]
    fn hostile_result_lists_decode_capped() {
        let hit = Hit {
            id: Id([1; 32]),
            kind: Kind::File,
            size: 1,
            path: "p".into(),
            score: 0,
            holders: vec![String::new(); MAX_HOLDERS + 100],
            holder_count: 0,
        };
        let results = Response::Results(Results {
            total: 0,
            indexed: 0,
            nodes: 0,
            hits: vec![hit; MAX_PAGE as usize + 10],
        });
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &results).unwrap();
        let Response::Results(back) = cbor4ii::serde::from_slice(&buf).unwrap() else {
            panic!("not results")
        };
        assert_eq!(back.hits.len(), MAX_PAGE as usize + 1);
        assert!(back.hits.iter().all(|h| h.holders.len() == MAX_HOLDERS + 1));
    }
}
