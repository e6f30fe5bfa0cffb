//! The leader's in-memory index of every node's entries, and search over it.
//!
//! [`NetworkIndex`] holds the [`Entry`]s every node reported, keyed by the reporting peer and
//! the path; [`NetworkIndex::search`] answers a [`Query`] with ranked [`SearchResults`], one
//! [`Hit`] per distinct content id with the peers holding it; [`NetworkIndex::locate`] finds ids
//! by a hex prefix. Every size is bounded: entries by [`Limits`], queries by
//! [`MAX_QUERY_BYTES`] and [`MAX_QUERY_WORDS`], pages by [`MAX_PAGE`], rows by [`MAX_MATCHES`],
//! holders per row by [`MAX_HOLDERS`].
//!
//! # Matching
//!
//! Case-insensitive, word order free, every query word must match. The tiers, best first (see
//! [`Tier`] and [`Hit::score`]): the whole query is the file name (or the name without its
//! extension); the name starts with the query; every word is a substring of the name; every
//! word is a subsequence of the name (`btmn` finds `batman.mkv`); every word is a subsequence of
//! the name or a substring of the path (`beatles help` finds `music/The Beatles/Help.flac`).
//! Only when nothing in the index matched does a typo pass run: each alphanumeric query token
//! must be a prefix of, or within 1 edit (tokens of 4–7 chars) or 2 edits (8 or more) of, a
//! token of the name (not of the directories), with the same digits (numbers are never
//! typo-matched). Empty or whitespace-only queries match nothing; the root entry (path `""`)
//! has no name and is never a search result.
//!
//! # Layout and cost
//!
//! Records live in an arena (`Vec`, with a free list) and hold the path once, plus a lowercase
//! copy only when it differs. A parallel array keeps two 64-bit character masks per record (name
//! and whole path), so a search rejects most records without reading a string. Each peer looks
//! its paths up in a `HashTable` of arena indices hashed by the arena's path, ids map to their
//! holders through a table of `(id, peer)` groups, and peer ids are interned to small slots.
//! A search scans the arena in parallel chunks (rayon), keeps a bounded best-per-id top list per
//! chunk and merges them. It blocks the calling thread until done: call it from a blocking
//! context, not from an async task.

mod arena;
mod rank;
mod search;
#[cfg(test)]
mod tests;
mod typo;

use std::{collections::BTreeMap, fmt};

use fuzzy_matcher::skim::SkimMatcherV2;
use hashbrown::{DefaultHashBuilder, HashSet, HashTable};
use libp2p::PeerId;

pub use crate::share::Kind;
use iwant_behaviours::id::Id;
pub use iwant_behaviours::index_sync::Collection;

use self::arena::{hash_path, live, IdEntry, Masks, PeerSlot, Record};

/// The most holders listed in one [`Hit`] (the smallest peer ids); `holder_count` has them all.
pub const MAX_HOLDERS: usize = iwant_behaviours::search::MAX_HOLDERS;
/// The most distinct rows a search ranks and counts: [`SearchResults::total`] stops there, and
/// pages end there.
pub const MAX_MATCHES: usize = 1000;
/// Query text beyond this many bytes is ignored (cut at a char boundary).
pub const MAX_QUERY_BYTES: usize = iwant_behaviours::search::MAX_QUERY;
/// Query words beyond this many are ignored.
pub const MAX_QUERY_WORDS: usize = 8;
/// The most hits one page returns: larger [`Query::limit`]s are clamped to it.
pub const MAX_PAGE: usize = iwant_behaviours::search::MAX_PAGE as usize;
/// The score of a [`Tier`] is `tier * TIER_SCALE + sub-score`, the sub-score in
/// `0..TIER_SCALE`.
pub const TIER_SCALE: i64 = 1_000_000;

const MAX_SUB: i64 = TIER_SCALE - 1;
/// "No record" in the arena's links; also marks a free arena slot's peer.
const NONE: u32 = u32::MAX;
/// Arena records scanned per parallel task, at least.
const MIN_CHUNK: usize = 4096;
/// Longest text the fuzzy matcher scores with its full matrix (longer ones get its cheaper
/// greedy score).
const FUZZY_FULL_CHARS: usize = 256;

/// One entry as a node reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the node's share, `/`-separated; `""` is the share's root.
    pub path: String,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 id of the content (a directory's is its manifest's).
    pub id: [u8; 32],
}

/// Bounds on what the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries one peer may have in the index. Default: 1,000,000.
    pub max_entries_per_peer: usize,
    /// Entries of all peers together. Default: 2,000,000 (and never above `u32::MAX - 1`).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries_per_peer: 1_000_000,
            max_entries: 2_000_000,
        }
    }
}

/// Why an [`NetworkIndex::upsert`] was refused (and nothing of it applied).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    /// The peer would have more entries than [`Limits::max_entries_per_peer`].
    #[error(
        "the peer would have {peer_entries} entries in the index, more than its limit of {limit}"
    )]
    TooManyForPeer {
        /// Entries the peer would have had.
        peer_entries: usize,
        /// The limit.
        limit: usize,
    },
    /// The index would hold more entries than [`Limits::max_entries`].
    #[error("the index would hold {entries} entries, more than its limit of {limit}")]
    TooMany {
        /// Entries the index would have held.
        entries: usize,
        /// The limit.
        limit: usize,
    },
}

/// A search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// What to look for; see the module docs. Whitespace separates words.
    pub text: String,
    /// Only files, or only directories; `None` for both.
    pub kind: Option<Kind>,
    /// Ranked rows to skip.
    pub offset: usize,
    /// Rows to return, at most [`MAX_PAGE`].
    pub limit: usize,
}

impl Query {
    /// Rows per page of [`Query::new`].
    pub const DEFAULT_LIMIT: usize = 20;

    /// The first page of [`Query::DEFAULT_LIMIT`] rows for `text`, of any kind.
    pub fn new(text: impl Into<String>) -> Self {
        Query {
            text: text.into(),
            kind: None,
            offset: 0,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// Matching rows (distinct ids) in the whole index, counted up to [`MAX_MATCHES`]: a value
    /// of `MAX_MATCHES` means "at least that many".
    pub total: usize,
    /// The requested page of rows, best first.
    pub hits: Vec<Hit>,
}

/// One row: a content id, wherever and by whomever it is held.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The content's id.
    pub id: Id,
    /// File or directory (of the best-matching path).
    pub kind: Kind,
    /// Size in bytes (of the best-matching path).
    pub size: u64,
    /// The file name of the best-matching path (its last component); for paths show `path`.
    pub name: String,
    /// The best-matching path (relative, `/`-separated) among its holders.
    pub path: String,
    /// Higher is better: `tier * TIER_SCALE + sub-score`, sub-score in `0..=999_999`. Tiers
    /// ([`Tier`]): 6 the query is the name (or the name without its extension), 5 the name
    /// starts with the query, 4 every word is a substring of the name (word starts score
    /// higher), 3 every word is a subsequence of the name (the fuzzy matcher's score), 2 some
    /// word is found only in the directory part of the path, 1 typo match (only when nothing
    /// else matched). [`NetworkIndex::locate`] gives 0. Equal scores rank by shorter name, then
    /// more holders, then path bytes, then id.
    pub score: i64,
    /// Distinct peers holding this id, at most [`MAX_HOLDERS`] (the smallest peer ids, sorted),
    /// each with the path it holds the id under.
    pub holders: Vec<(PeerId, String)>,
    /// How many distinct peers hold this id.
    pub holder_count: usize,
}

impl Hit {
    /// The tier of [`Hit::score`], if it is a search score.
    pub fn tier(&self) -> Option<Tier> {
        Tier::of_score(self.score)
    }
}

/// How a row matched, worst to best; see [`Hit::score`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Only with typos forgiven (only when nothing matched otherwise).
    Typo = 1,
    /// Some word matched only in the directory part of the path.
    Path = 2,
    /// Every word is a subsequence of the name.
    Fuzzy = 3,
    /// Every word is a substring of the name.
    Substring = 4,
    /// The name starts with the query.
    Prefix = 5,
    /// The query is the name, or the name without its extension.
    Exact = 6,
}

impl Tier {
    /// The tier a score belongs to.
    pub fn of_score(score: i64) -> Option<Tier> {
        Some(match score.div_euclid(TIER_SCALE) {
            1 => Tier::Typo,
            2 => Tier::Path,
            3 => Tier::Fuzzy,
            4 => Tier::Substring,
            5 => Tier::Prefix,
            6 => Tier::Exact,
            _ => return None,
        })
    }

    /// The lowest score of the tier.
    pub fn base(self) -> i64 {
        self as i64 * TIER_SCALE
    }

    fn with(self, sub: i64) -> i64 {
        self.base() + sub.clamp(0, MAX_SUB)
    }
}

/// The network-wide index; see the module docs.
pub struct NetworkIndex {
    limits: Limits,
    records: Vec<Record>,
    masks: Vec<Masks>,
    free: Vec<u32>,
    len: usize,
    peers: Vec<Option<PeerSlot>>,
    free_slots: Vec<u32>,
    slot_of: BTreeMap<PeerId, u32>,
    /// Nodes dropped to make room since [`Self::take_evicted`] was last called, with how many
    /// entries each had.
    evicted: Vec<(PeerId, usize)>,
    /// id → holders.
    by_id: HashTable<IdEntry>,
    /// (id, peer slot) → first record of that peer with that id.
    by_id_peer: HashTable<u32>,
    hasher: DefaultHashBuilder,
    matcher: SkimMatcherV2,
}

impl fmt::Debug for NetworkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkIndex")
            .field("entries", &self.len)
            .field("peers", &self.peers())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl NetworkIndex {
    /// An empty index.
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_entries: limits.max_entries.min(NONE as usize - 1),
            ..limits
        };
        NetworkIndex {
            limits,
            records: Vec::new(),
            masks: Vec::new(),
            free: Vec::new(),
            len: 0,
            peers: Vec::new(),
            free_slots: Vec::new(),
            slot_of: BTreeMap::new(),
            evicted: Vec::new(),
            by_id: HashTable::new(),
            by_id_peer: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            matcher: SkimMatcherV2::default()
                .respect_case()
                .element_limit(2 * (FUZZY_FULL_CHARS + 1)),
        }
    }

    /// Starts a full snapshot of collection `coll` from `peer`: its entries upserted until
    /// [`Self::finish_snapshot`] are the new truth; entries of that collection of the peer not
    /// upserted since are removed by `finish_snapshot` (the other collection's stay). (Old
    /// entries stay searchable meanwhile.) Calling it again restarts the snapshot.
    pub fn begin_snapshot(&mut self, peer: PeerId, coll: Collection) {
        let slot = self.intern(peer);
        let p = live(&mut self.peers, slot);
        p.gen[coll.index()] = p.gen[coll.index()].wrapping_add(1);
        p.snapshot[coll.index()] = true;
    }

    /// Adds or replaces the peer's entries of collection `coll` by path (of one path given
    /// twice, the last wins). All-or-nothing: if the batch would exceed a limit, nothing of it
    /// is applied and the error says which limit. The limits count both collections of a peer.
    pub fn upsert(
        &mut self,
        peer: PeerId,
        coll: Collection,
        entries: Vec<Entry>,
    ) -> Result<(), LimitError> {
        let slot = self.slot_of.get(&peer).copied();
        let existing = slot.map_or(0, |s| self.peer_slot(s).paths.len());
        let mut fresh: HashSet<&str> = HashSet::new();
        for e in &entries {
            if slot.is_none_or(|s| self.find_path(s, coll, &e.path).is_none()) {
                fresh.insert(&e.path);
            }
        }
        let added = fresh.len();
        drop(fresh);
        let peer_entries = existing + added;
        if peer_entries > self.limits.max_entries_per_peer {
            return Err(LimitError::TooManyForPeer {
                peer_entries,
                limit: self.limits.max_entries_per_peer,
            });
        }
        // A full index makes room by dropping the largest nodes, as long as each is larger
        // than this one would be: a node with a small index is never refused because others
        // filled the index, and a node cannot push a smaller one out. All or nothing.
        if self.len + added > self.limits.max_entries {
            let mut larger: Vec<(usize, PeerId)> = self
                .slot_of
                .iter()
                .filter(|(p, _)| **p != peer)
                .map(|(p, &s)| (self.peer_slot(s).paths.len(), *p))
                .filter(|(entries, _)| *entries > peer_entries)
                .collect();
            larger.sort_unstable_by(|a, b| b.cmp(a));
            let mut over = self.len + added - self.limits.max_entries;
            let mut drop = Vec::new();
            for (entries, p) in larger {
                if over == 0 {
                    break;
                }
                over = over.saturating_sub(entries);
                drop.push((p, entries));
            }
            if over > 0 {
                return Err(LimitError::TooMany {
                    entries: self.len + added,
                    limit: self.limits.max_entries,
                });
            }
            for (p, entries) in drop {
                self.remove_peer(&p);
                self.evicted.push((p, entries));
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        let slot = slot.unwrap_or_else(|| self.intern(peer));
        let reuse = self.free.len();
        self.records.reserve(added.saturating_sub(reuse));
        self.masks.reserve(added.saturating_sub(reuse));
        {
            let records = &self.records;
            let hasher = &self.hasher;
            live(&mut self.peers, slot)
                .paths
                .reserve(added, |&j| hash_path(hasher, records[j as usize].path()));
        }
        for e in entries {
            self.put(slot, coll, e);
        }
        Ok(())
    }

    /// Removes the peer's entries of collection `coll` at these paths (unknown paths are
    /// ignored). A peer can only ever touch its own entries (the peer id is the authenticated
    /// sender).
    pub fn remove(&mut self, peer: PeerId, coll: Collection, paths: &[String]) {
        let Some(&slot) = self.slot_of.get(&peer) else {
            return;
        };
        for path in paths {
            if let Some(i) = self.find_path(slot, coll, path) {
                self.remove_record(i);
            }
        }
        self.drop_slot_if_idle(slot);
    }

    /// Ends the snapshot of `coll` begun by [`Self::begin_snapshot`]; returns how many stale
    /// entries went. Without a begun snapshot it does nothing and returns 0.
    pub fn finish_snapshot(&mut self, peer: PeerId, coll: Collection) -> usize {
        let Some(&slot) = self.slot_of.get(&peer) else {
            return 0;
        };
        let p = live(&mut self.peers, slot);
        if !p.snapshot[coll.index()] {
            return 0;
        }
        p.snapshot[coll.index()] = false;
        let gen = p.gen[coll.index()];
        let records = &self.records;
        let stale: Vec<u32> = p
            .paths
            .iter()
            .copied()
            .filter(|&i| {
                let r = &records[i as usize];
                r.coll == coll && r.gen != gen
            })
            .collect();
        for &i in &stale {
            self.remove_record(i);
        }
        self.drop_slot_if_idle(slot);
        stale.len()
    }

    /// Forgets everything of `peer` (an open snapshot too); returns how many entries went.
    pub fn remove_peer(&mut self, peer: &PeerId) -> usize {
        let Some(&slot) = self.slot_of.get(peer) else {
            return 0;
        };
        let all: Vec<u32> = self.peer_slot(slot).paths.iter().copied().collect();
        for &i in &all {
            self.remove_record(i);
        }
        live(&mut self.peers, slot).snapshot = [false; 2];
        self.drop_slot_if_idle(slot);
        all.len()
    }

    /// The nodes whose entries [`Self::upsert`] dropped to make room for a smaller node's, with
    /// how many entries each had, since the last call.
    pub fn take_evicted(&mut self) -> Vec<(PeerId, usize)> {
        std::mem::take(&mut self.evicted)
    }

    /// How many entries `peer` has in the index.
    pub fn peer_len(&self, peer: &PeerId) -> usize {
        self.slot_of
            .get(peer)
            .map_or(0, |&s| self.peer_slot(s).paths.len())
    }

    /// How many entries the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many peers have at least one entry in the index.
    pub fn peers(&self) -> usize {
        self.peers
            .iter()
            .flatten()
            .filter(|p| !p.paths.is_empty())
            .count()
    }
}
