//! Index sync (`/iwant/index/1.0.0`): every node pushes its index to the elected leader.
//!
//! A node sends the leader a full snapshot of its index in pages ([`SnapshotPage`]), then a
//! [`Delta`] for every change, each naming the index version it applies to. The leader answers
//! every request with a [`Response`]: `ack` with the version it now holds for the sender, or
//! `need_snapshot` when it sees a gap (a delta whose base it does not hold, a page out of
//! order), or `not_leader`. A node sends one request at a time and resends a full snapshot to
//! every new leader.
//!
//! The leader keys every entry by the sender's authenticated peer id: there is no peer id in
//! the messages, so a node can only add or remove its own entries.
//!
//! A node offers up to two [`Collection`]s: its shared folder, and what it downloaded. Each is
//! synced on its own (its own snapshots, versions and deltas; every message names its
//! collection, the shared folder when the field is absent), and a snapshot of one never
//! touches the other's entries.
//!
//! Wire format: libp2p request-response, one CBOR value per stream direction. Limits: requests
//! of at most [`MAX_REQUEST`] bytes (bigger ones fail to decode), at most [`MAX_ENTRIES`]
//! entries or removed paths per message, paths of at most [`MAX_PATH`] bytes. [`Request::check`]
//! verifies the bounds; a peer that breaks them is cut off. `docs/protocols.md` has the spec.

use std::time::Duration;

use libp2p::{
    request_response::{self, cbor},
    StreamProtocol,
};
use serde::{Deserialize, Serialize};

use crate::wire::{self, Id, Kind};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/iwant/index/1.0.0");

/// Largest encoded request, in bytes.
pub const MAX_REQUEST: u64 = 1024 * 1024;

/// Largest encoded response, in bytes.
pub const MAX_RESPONSE: u64 = 4 * 1024;

/// Most entries (or removed paths) in one message.
pub const MAX_ENTRIES: usize = 8192;

/// Longest path, in bytes.
pub const MAX_PATH: usize = wire::MAX_PATH;

/// How many bytes of entries a sender puts in one page: well under [`MAX_REQUEST`] whatever
/// the paths.
pub const PAGE_BUDGET: usize = 640 * 1024;

/// A generous upper bound of one entry's encoding beyond its path's bytes.
pub const ENTRY_OVERHEAD: usize = 80;

/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node sends its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// One page of a full snapshot.
    Snapshot(SnapshotPage),
    /// The changes from version `base` to version `version`.
    Delta(Delta),
}

/// Which of a node's collections a message is about.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    /// The shared folder (paths are relative to it).
    #[default]
    Shared,
    /// What the node downloaded and offers in turn (paths are relative to its download
    /// folder; only content the node itself downloaded, unchanged, is in it).
    Downloads,
}

impl Collection {
    /// Both collections.
    pub const ALL: [Collection; 2] = [Collection::Shared, Collection::Downloads];

    /// Whether this is the default, [`Collection::Shared`] (then the field is not sent).
    pub fn is_shared(&self) -> bool {
        *self == Collection::Shared
    }

    /// A small index, 0 or 1.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One page of a snapshot. Pages are numbered from 0 and sent in order; page 0 starts a new
/// snapshot (dropping any unfinished one); the page with `last` completes it, and the leader
/// then forgets the sender's entries that no page of it named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// The collection this snapshot is of.
    #[serde(default, skip_serializing_if = "Collection::is_shared")]
    pub collection: Collection,
    /// Chosen by the sender per snapshot; every page of one snapshot carries the same value.
    pub session: u64,
    /// The page's number, from 0.
    pub page: u32,
    /// Whether this is the final page.
    pub last: bool,
    /// The index version the snapshot shows.
    pub version: u64,
    /// Entries of this page.
    #[serde(deserialize_with = "wire::capped::<_, _, MAX_ENTRIES>")]
    pub entries: Vec<Entry>,
}

/// The changes between two index versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The collection this delta is of.
    #[serde(default, skip_serializing_if = "Collection::is_shared")]
    pub collection: Collection,
    /// The version the leader must hold for the sender for this delta to apply.
    pub base: u64,
    /// The version after it (`base` itself for an empty delta that only checks the leader
    /// still holds `base`).
    pub version: u64,
    /// Entries added or changed.
    #[serde(deserialize_with = "wire::capped::<_, _, MAX_ENTRIES>")]
    pub upserted: Vec<Entry>,
    /// Paths of entries removed.
    #[serde(deserialize_with = "wire::capped::<_, _, MAX_ENTRIES>")]
    pub removed: Vec<String>,
}

/// One shared file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the sender's shared folder, `/` between components; "" is the shared
    /// folder itself.
    pub path: String,
    /// File or directory.
    pub kind: Kind,
    /// A file's length, or the total length of the files below a directory.
    pub size: u64,
    /// The content id (32 bytes).
    pub id: Id,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Applied; the leader now holds `version` of the sender's index (for a page that is not
    /// the last one: the version of the snapshot under way).
    Ack {
        /// The version held.
        version: u64,
    },
    /// The leader cannot apply this; send a full snapshot.
    NeedSnapshot,
    /// This node is not the leader (any more).
    NotLeader,
    /// The leader is overloaded; try again shortly.
    Busy,
    /// The message broke a limit; the leader dropped the sender's entries.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The behaviour: request-response with the CBOR codec and the limits above.
pub type Behaviour = cbor::Behaviour<Request, Response>;

/// The behaviour's events.
pub type Event = request_response::Event<Request, Response>;

/// An index sync behaviour with iwant's limits.
pub fn behaviour() -> Behaviour {
    crate::wire::cbor_behaviour(PROTOCOL, MAX_REQUEST, MAX_RESPONSE, REQUEST_TIMEOUT)
}

impl Request {
    /// The collection the message is about.
    pub fn collection(&self) -> Collection {
        match self {
            Request::Snapshot(page) => page.collection,
            Request::Delta(delta) => delta.collection,
        }
    }

    /// Checks every bound of the message; the error says which one was broken.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Request::Snapshot(page) => check_entries(&page.entries),
            Request::Delta(delta) => {
                check_entries(&delta.upserted)?;
                if delta.removed.len() > MAX_ENTRIES {
                    return Err(format!(
                        "{} removed paths in one message, more than {MAX_ENTRIES}",
                        delta.removed.len()
                    ));
                }
                delta.removed.iter().try_for_each(|p| wire::check_path(p))?;
                if delta.version < delta.base {
                    return Err(format!(
                        "delta from version {} back to {}",
                        delta.base, delta.version
                    ));
                }
                Ok(())
            }
        }
    }
}

fn check_entries(entries: &[Entry]) -> Result<(), String> {
    if entries.len() > MAX_ENTRIES {
        return Err(format!(
            "{} entries in one message, more than {MAX_ENTRIES}",
            entries.len()
        ));
    }
    for entry in entries {
        wire::check_path(&entry.path)?;
        if entry.path.is_empty() && entry.kind != Kind::Dir {
            return Err("a file with an empty path".into());
        }
    }
    Ok(())
}

/// Cuts `entries` into snapshot pages that stay within [`PAGE_BUDGET`] bytes and
/// [`MAX_ENTRIES`] entries each; always at least one page (an empty index is one empty page).
pub fn paginate(
    collection: Collection,
    entries: Vec<Entry>,
    session: u64,
    version: u64,
) -> Vec<SnapshotPage> {
    let mut pages = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry.path.len() + ENTRY_OVERHEAD;
        if !current.is_empty() && (bytes + size > PAGE_BUDGET || current.len() == MAX_ENTRIES) {
            pages.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(entry);
    }
    pages.push(current);
    let count = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, entries)| SnapshotPage {
            collection,
            session,
            page: i as u32,
            last: i + 1 == count,
            version,
            entries,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: 7,
            id: Id([9; 32]),
        }
    }

    fn encoded_len<T: Serialize>(value: &T) -> usize {
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, value).unwrap();
        buf.len()
    }

    #[test]
    fn messages_round_trip_through_cbor() {
        let requests = [
            Request::Snapshot(SnapshotPage {
                collection: Collection::Shared,
                session: 3,
                page: 0,
                last: true,
                version: 12,
                entries: vec![entry("a/b.txt")],
            }),
            Request::Delta(Delta {
                collection: Collection::Downloads,
                base: 12,
                version: 13,
                upserted: vec![entry("c")],
                removed: vec!["a/b.txt".into()],
            }),
        ];
        for request in requests {
            let mut buf = Vec::new();
            cbor4ii::serde::to_writer(&mut buf, &request).unwrap();
            let back: Request = cbor4ii::serde::from_slice(&buf).unwrap();
            assert_eq!(back, request);
            back.check().unwrap();
        }
    }

    #[test]
    fn the_shared_folder_is_the_collection_of_messages_that_name_none() {
        // A message of the shared folder is encoded as before collections existed, and a
        // message without the field is about the shared folder.
        let delta = Delta {
            collection: Collection::Shared,
            base: 1,
            version: 2,
            upserted: vec![],
            removed: vec![],
        };
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &Request::Delta(delta.clone())).unwrap();
        assert!(!buf.windows(10).any(|w| w == b"collection"));
        let back: Request = cbor4ii::serde::from_slice(&buf).unwrap();
        assert_eq!(back, Request::Delta(delta));
        let downloads = Request::Delta(Delta {
            collection: Collection::Downloads,
            base: 1,
            version: 2,
            upserted: vec![],
            removed: vec![],
        });
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &downloads).unwrap();
        assert!(buf.windows(9).any(|w| w == b"downloads"));
    }

    #[test]
    fn pages_stay_under_the_codec_limit_whatever_the_paths() {
        let long = "x/".repeat(MAX_PATH / 2 - 1) + "y";
        assert!(long.len() <= MAX_PATH);
        let entries: Vec<Entry> = (0..2_000)
            .map(|i| entry(&format!("{long}{i}")[..MAX_PATH.min(long.len())]))
            .chain((0..20_000).map(|i| entry(&format!("short/{i}"))))
            .collect();
        let pages = paginate(Collection::Shared, entries, 1, 5);
        assert!(pages.len() > 2);
        assert_eq!(pages.iter().map(|p| p.entries.len()).sum::<usize>(), 22_000);
        for (i, page) in pages.iter().enumerate() {
            assert_eq!(page.page as usize, i);
            assert_eq!(page.last, i + 1 == pages.len());
            assert!(page.entries.len() <= MAX_ENTRIES);
            let len = encoded_len(&Request::Snapshot(page.clone()));
            assert!(len as u64 <= MAX_REQUEST, "page {i}: {len} bytes");
        }
        assert_eq!(paginate(Collection::Downloads, Vec::new(), 1, 0).len(), 1);
    }

    #[test]
    fn hostile_messages_are_refused() {
        let too_many = Request::Snapshot(SnapshotPage {
            collection: Collection::Shared,
            session: 1,
            page: 0,
            last: true,
            version: 1,
            entries: vec![entry("a"); MAX_ENTRIES + 1],
        });
        assert!(too_many.check().unwrap_err().contains("entries"));
        for bad in [
            "x".repeat(MAX_PATH + 1),
            "../etc/passwd".into(),
            "/abs".into(),
            "a//b".into(),
            "a/./b".into(),
            "nul\0".into(),
            "trailing/".into(),
        ] {
            let request = Request::Delta(Delta {
                collection: Collection::Shared,
                base: 1,
                version: 2,
                upserted: vec![entry(&bad)],
                removed: vec![],
            });
            assert!(request.check().is_err(), "{bad:?} accepted");
            let request = Request::Delta(Delta {
                collection: Collection::Shared,
                base: 1,
                version: 2,
                upserted: vec![],
                removed: vec![bad.clone()],
            });
            assert!(request.check().is_err(), "{bad:?} accepted as removed");
        }
        let backwards = Request::Delta(Delta {
            collection: Collection::Shared,
            base: 5,
            version: 4,
            upserted: vec![],
            removed: vec![],
        });
        assert!(backwards.check().is_err());
        let empty_file = Request::Delta(Delta {
            collection: Collection::Shared,
            base: 1,
            version: 2,
            upserted: vec![entry("")],
            removed: vec![],
        });
        assert!(empty_file.check().is_err());
    }

    #[test]
    fn too_many_entries_decode_capped_and_are_still_refused() {
        let page = Request::Snapshot(SnapshotPage {
            collection: Collection::Shared,
            session: 1,
            page: 0,
            last: true,
            version: 1,
            entries: vec![entry("a"); MAX_ENTRIES + 100],
        });
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &page).unwrap();
        let back: Request = cbor4ii::serde::from_slice(&buf).unwrap();
        let Request::Snapshot(back_page) = &back else {
            panic!("{back:?}")
        };
        assert_eq!(
            back_page.entries.len(),
            MAX_ENTRIES + 1,
            "one more than the cap is kept"
        );
        assert!(back.check().unwrap_err().contains("entries"));
        let delta = Request::Delta(Delta {
            collection: Collection::Shared,
            base: 1,
            version: 2,
            upserted: vec![entry("u"); MAX_ENTRIES + 5],
            removed: vec!["r".into(); MAX_ENTRIES + 5],
        });
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &delta).unwrap();
        let Request::Delta(back) = cbor4ii::serde::from_slice(&buf).unwrap() else {
            panic!("not a delta")
        };
        assert_eq!(back.upserted.len(), MAX_ENTRIES + 1);
        assert_eq!(back.removed.len(), MAX_ENTRIES + 1);
        assert!(Request::Delta(back).check().is_err());
    }
}
