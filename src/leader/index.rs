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

mod rank;
mod typo;

use std::{cmp::Ordering, collections::BTreeMap, fmt, hash::BuildHasher};

use fuzzy_matcher::{skim::SkimMatcherV2, FuzzyMatcher};
use hashbrown::{DefaultHashBuilder, HashSet, HashTable};
use libp2p::PeerId;
use rayon::prelude::*;

pub use crate::share::Kind;

use self::rank::{Class, Parsed, DIR_BIT, LIVE_BIT};

/// The most holders listed in one [`Hit`] (the smallest peer ids); `holder_count` has them all.
pub const MAX_HOLDERS: usize = 32;
/// The most distinct rows a search ranks and counts: [`SearchResults::total`] stops there, and
/// pages end there.
pub const MAX_MATCHES: usize = 1000;
/// Query text beyond this many bytes is ignored (cut at a char boundary).
pub const MAX_QUERY_BYTES: usize = 256;
/// Query words beyond this many are ignored.
pub const MAX_QUERY_WORDS: usize = 8;
/// The most hits one page returns: larger [`Query::limit`]s are clamped to it.
pub const MAX_PAGE: usize = 200;
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
    /// The content's BLAKE3 id.
    pub id: [u8; 32],
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

/// One stored entry. A free arena slot has `peer == NONE` and an empty `text`.
struct Record {
    /// The path, followed by its lowercase form when that differs.
    text: Box<str>,
    id: [u8; 32],
    size: u64,
    path_len: u32,
    /// Where the name starts in the path, and in its lowercase form.
    name_start: u32,
    lname_start: u32,
    /// Peer slot.
    peer: u32,
    /// Neighbours among the records of the same id and peer.
    prev: u32,
    next: u32,
    /// The peer's snapshot generation when last upserted.
    gen: u32,
    kind: Kind,
}

impl Record {
    fn free() -> Record {
        Record {
            text: Box::default(),
            id: [0; 32],
            size: 0,
            path_len: 0,
            name_start: 0,
            lname_start: 0,
            peer: NONE,
            prev: NONE,
            next: NONE,
            gen: 0,
            kind: Kind::File,
        }
    }

    fn path(&self) -> &str {
        &self.text[..self.path_len as usize]
    }

    fn lower(&self) -> &str {
        if self.text.len() > self.path_len as usize {
            &self.text[self.path_len as usize..]
        } else {
            &self.text
        }
    }

    fn name(&self) -> &str {
        &self.path()[self.name_start as usize..]
    }

    fn has_name(&self) -> bool {
        self.name_start < self.path_len
    }
}

/// The masks of one arena slot, apart from the records so scans stay in cache.
#[derive(Clone, Copy)]
struct Masks {
    /// Characters of the lowercase name, plus [`DIR_BIT`].
    name: u64,
    /// Characters of the lowercase path, plus [`LIVE_BIT`].
    path: u64,
    /// Adjacent byte pairs of the lowercase name (a 64-bit Bloom filter): a word can only be a
    /// substring of the name if the name has all its pairs.
    pairs: u64,
}

impl Masks {
    const FREE: Masks = Masks {
        name: 0,
        path: 0,
        pairs: 0,
    };
}

/// An id's holders: a representative record (whose id is the key) and the number of distinct
/// peers holding it.
struct IdEntry {
    rep: u32,
    holders: u32,
}

struct PeerSlot {
    peer: PeerId,
    /// The peer's records, hashed by path.
    paths: HashTable<u32>,
    gen: u32,
    snapshot: bool,
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

fn hash_path(h: &DefaultHashBuilder, path: &str) -> u64 {
    h.hash_one(path)
}

fn hash_id(h: &DefaultHashBuilder, id: &[u8; 32]) -> u64 {
    h.hash_one(id)
}

fn hash_id_peer(h: &DefaultHashBuilder, id: &[u8; 32], slot: u32) -> u64 {
    h.hash_one((id, slot))
}

fn live(peers: &mut [Option<PeerSlot>], slot: u32) -> &mut PeerSlot {
    peers[slot as usize]
        .as_mut()
        .expect("bug: a record points to a dead peer slot")
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
            by_id: HashTable::new(),
            by_id_peer: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            matcher: SkimMatcherV2::default()
                .respect_case()
                .element_limit(2 * (FUZZY_FULL_CHARS + 1)),
        }
    }

    /// Starts a full snapshot from `peer`: entries upserted until [`Self::finish_snapshot`] are
    /// the new truth; entries of the peer not upserted since are removed by `finish_snapshot`.
    /// (Old entries stay searchable meanwhile.) Calling it again restarts the snapshot.
    pub fn begin_snapshot(&mut self, peer: PeerId) {
        let slot = self.intern(peer);
        let p = live(&mut self.peers, slot);
        p.gen = p.gen.wrapping_add(1);
        p.snapshot = true;
    }

    /// Adds or replaces the peer's entries by path (of one path given twice, the last wins).
    /// All-or-nothing: if the batch would exceed a limit, nothing of it is applied and the error
    /// says which limit.
    pub fn upsert(&mut self, peer: PeerId, entries: Vec<Entry>) -> Result<(), LimitError> {
        let slot = self.slot_of.get(&peer).copied();
        let existing = slot.map_or(0, |s| self.peer_slot(s).paths.len());
        let mut fresh: HashSet<&str> = HashSet::new();
        for e in &entries {
            if slot.is_none_or(|s| self.find_path(s, &e.path).is_none()) {
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
        if self.len + added > self.limits.max_entries {
            return Err(LimitError::TooMany {
                entries: self.len + added,
                limit: self.limits.max_entries,
            });
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
            self.put(slot, e);
        }
        Ok(())
    }

    /// Removes the peer's entries at these paths (unknown paths are ignored). A peer can only
    /// ever touch its own entries (the peer id is the authenticated sender).
    pub fn remove(&mut self, peer: PeerId, paths: &[String]) {
        let Some(&slot) = self.slot_of.get(&peer) else {
            return;
        };
        for path in paths {
            if let Some(i) = self.find_path(slot, path) {
                self.remove_record(i);
            }
        }
        self.drop_slot_if_idle(slot);
    }

    /// Ends the snapshot begun by [`Self::begin_snapshot`]; returns how many stale entries
    /// went. Without a begun snapshot it does nothing and returns 0.
    pub fn finish_snapshot(&mut self, peer: PeerId) -> usize {
        let Some(&slot) = self.slot_of.get(&peer) else {
            return 0;
        };
        let p = live(&mut self.peers, slot);
        if !p.snapshot {
            return 0;
        }
        p.snapshot = false;
        let gen = p.gen;
        let records = &self.records;
        let stale: Vec<u32> = p
            .paths
            .iter()
            .copied()
            .filter(|&i| records[i as usize].gen != gen)
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
        live(&mut self.peers, slot).snapshot = false;
        self.drop_slot_if_idle(slot);
        all.len()
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

    /// Runs a query; never panics whatever the text (empty, huge, unicode, control chars).
    /// Empty or whitespace-only text matches nothing.
    pub fn search(&self, query: &Query) -> SearchResults {
        let Some(q) = Parsed::new(&query.text) else {
            return SearchResults {
                total: 0,
                hits: Vec::new(),
            };
        };
        let limit = query.limit.min(MAX_PAGE);
        let want = query.offset.saturating_add(limit).min(MAX_MATCHES);
        let (mut total, mut ranked) = self.scan(want, query.kind, |chunk, i, m| {
            self.match_main(&q, chunk, i, m)
        });
        if total == 0 {
            let tokens = typo::Tokens::new(&q);
            if !tokens.is_empty() {
                (total, ranked) = self.scan(want, query.kind, |chunk, i, m| {
                    self.match_typo(&tokens, chunk, i, m)
                });
            }
        }
        let hits = ranked
            .iter()
            .skip(query.offset)
            .take(limit)
            .map(|c| self.hit(c.rec, c.score))
            .collect();
        SearchResults { total, hits }
    }

    /// Every distinct id whose lowercase hex starts with `prefix` (1..=64 hex digits, either
    /// case; anything else finds nothing), the smallest ids first, at most `max` of them (and at
    /// most [`MAX_MATCHES`]), each with its holders. The path shown is the shortest one; the
    /// score is 0.
    pub fn locate(&self, prefix: &str, max: usize) -> Vec<Hit> {
        let max = max.min(MAX_MATCHES);
        if prefix.is_empty() || prefix.len() > 64 || max == 0 {
            return Vec::new();
        }
        let Some(nibbles) = prefix
            .chars()
            .map(|c| c.to_digit(16).map(|d| d as u8))
            .collect::<Option<Vec<u8>>>()
        else {
            return Vec::new();
        };
        let matches = |id: &[u8; 32]| {
            nibbles.iter().enumerate().all(|(k, &n)| {
                let byte = id[k / 2];
                (if k % 2 == 0 { byte >> 4 } else { byte & 0xf }) == n
            })
        };
        let better = |a: u32, b: u32| {
            let (ra, rb) = (&self.records[a as usize], &self.records[b as usize]);
            ra.id
                .cmp(&rb.id)
                .then(ra.path_len.cmp(&rb.path_len))
                .then_with(|| ra.path().cmp(rb.path()))
                .then(a.cmp(&b))
        };
        let smallest = |mut found: Vec<u32>| {
            found.sort_unstable_by(|&a, &b| better(a, b));
            found.dedup_by(|a, b| self.records[*a as usize].id == self.records[*b as usize].id);
            found.truncate(max);
            found
        };
        let chunk = self.chunk_len();
        let per_chunk: Vec<Vec<u32>> = self
            .records
            .par_chunks(chunk)
            .enumerate()
            .map(|(c, records)| {
                let found = records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.peer != NONE && matches(&r.id))
                    .map(|(j, _)| (c * chunk + j) as u32)
                    .collect();
                smallest(found)
            })
            .collect();
        smallest(per_chunk.concat())
            .into_iter()
            .map(|i| self.hit(i, 0))
            .collect()
    }

    // ---- storage ----

    fn peer_slot(&self, slot: u32) -> &PeerSlot {
        self.peers[slot as usize]
            .as_ref()
            .expect("bug: a live slot index points to a dead slot")
    }

    fn intern(&mut self, peer: PeerId) -> u32 {
        if let Some(&slot) = self.slot_of.get(&peer) {
            return slot;
        }
        let p = PeerSlot {
            peer,
            paths: HashTable::new(),
            gen: 0,
            snapshot: false,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.peers[slot as usize] = Some(p);
                slot
            }
            None => {
                self.peers.push(Some(p));
                (self.peers.len() - 1) as u32
            }
        };
        self.slot_of.insert(peer, slot);
        slot
    }

    /// Frees a peer's slot once it has no entry and no open snapshot.
    fn drop_slot_if_idle(&mut self, slot: u32) {
        let p = self.peer_slot(slot);
        if p.paths.is_empty() && !p.snapshot {
            let peer = p.peer;
            self.slot_of.remove(&peer);
            self.peers[slot as usize] = None;
            self.free_slots.push(slot);
        }
    }

    fn find_path(&self, slot: u32, path: &str) -> Option<u32> {
        let records = &self.records;
        self.peer_slot(slot)
            .paths
            .find(hash_path(&self.hasher, path), |&j| {
                records[j as usize].path() == path
            })
            .copied()
    }

    /// Adds or replaces one entry of the peer in `slot` (limits already checked).
    fn put(&mut self, slot: u32, e: Entry) {
        let gen = self.peer_slot(slot).gen;
        let dir = if e.kind == Kind::Dir { DIR_BIT } else { 0 };
        if let Some(i) = self.find_path(slot, &e.path) {
            if self.records[i as usize].id != e.id {
                self.unlink_id(i);
                self.records[i as usize].id = e.id;
                self.link_id(i);
            }
            let r = &mut self.records[i as usize];
            r.size = e.size;
            r.kind = e.kind;
            r.gen = gen;
            let m = &mut self.masks[i as usize];
            m.name = (m.name & !DIR_BIT) | dir;
            return;
        }
        let path_len = e.path.len();
        let name_start = e.path.rfind('/').map_or(0, |s| s + 1);
        let lower = e.path.to_lowercase();
        let lname_start = lower.rfind('/').map_or(0, |s| s + 1);
        let masks = Masks {
            name: rank::mask_of(&lower.as_bytes()[lname_start..]) | dir,
            path: rank::mask_of(lower.as_bytes()) | LIVE_BIT,
            pairs: rank::pairs_of(&lower.as_bytes()[lname_start..]),
        };
        let text = if lower == e.path {
            e.path
        } else {
            let mut t = e.path;
            t.push_str(&lower);
            t
        };
        let record = Record {
            text: text.into_boxed_str(),
            id: e.id,
            size: e.size,
            // Paths come from a node's share and are far below 4 GiB; a longer one would have
            // been refused by the protocol layer's message size limit.
            path_len: path_len as u32,
            name_start: name_start as u32,
            lname_start: lname_start as u32,
            peer: slot,
            prev: NONE,
            next: NONE,
            gen,
            kind: e.kind,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.records[i as usize] = record;
                self.masks[i as usize] = masks;
                i
            }
            None => {
                self.records.push(record);
                self.masks.push(masks);
                (self.records.len() - 1) as u32
            }
        };
        let records = &self.records;
        let hasher = &self.hasher;
        live(&mut self.peers, slot).paths.insert_unique(
            hash_path(hasher, records[i as usize].path()),
            i,
            |&j| hash_path(hasher, records[j as usize].path()),
        );
        self.link_id(i);
        self.len += 1;
    }

    fn remove_record(&mut self, i: u32) {
        self.unlink_id(i);
        let r = &self.records[i as usize];
        let h = hash_path(&self.hasher, r.path());
        match live(&mut self.peers, r.peer)
            .paths
            .find_entry(h, |&j| j == i)
        {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => unreachable!("bug: a record missing from its peer's path table"),
        }
        self.records[i as usize] = Record::free();
        self.masks[i as usize] = Masks::FREE;
        self.free.push(i);
        self.len -= 1;
    }

    /// Adds record `i` to its id's holders.
    fn link_id(&mut self, i: u32) {
        let (id, peer) = {
            let r = &self.records[i as usize];
            (r.id, r.peer)
        };
        let h = hash_id_peer(&self.hasher, &id, peer);
        let records = &self.records;
        let head = self
            .by_id_peer
            .find(h, |&j| {
                let r = &records[j as usize];
                r.id == id && r.peer == peer
            })
            .copied();
        if let Some(head) = head {
            let after = self.records[head as usize].next;
            self.records[i as usize].prev = head;
            self.records[i as usize].next = after;
            self.records[head as usize].next = i;
            if after != NONE {
                self.records[after as usize].prev = i;
            }
            return;
        }
        let hasher = &self.hasher;
        self.by_id_peer.insert_unique(h, i, |&j| {
            let r = &records[j as usize];
            hash_id_peer(hasher, &r.id, r.peer)
        });
        let h = hash_id(hasher, &id);
        match self.by_id.find_mut(h, |e| records[e.rep as usize].id == id) {
            Some(e) => e.holders += 1,
            None => {
                self.by_id
                    .insert_unique(h, IdEntry { rep: i, holders: 1 }, |e| {
                        hash_id(hasher, &records[e.rep as usize].id)
                    });
            }
        }
    }

    /// Takes record `i` out of its id's holders (its fields stay as they are).
    fn unlink_id(&mut self, i: u32) {
        let (id, peer, prev, next) = {
            let r = &self.records[i as usize];
            (r.id, r.peer, r.prev, r.next)
        };
        if prev != NONE {
            self.records[prev as usize].next = next;
            if next != NONE {
                self.records[next as usize].prev = prev;
            }
        } else {
            let h = hash_id_peer(&self.hasher, &id, peer);
            let Ok(mut head) = self.by_id_peer.find_entry(h, |&j| j == i) else {
                unreachable!("bug: the first record of an (id, peer) group is not in the table");
            };
            if next != NONE {
                *head.get_mut() = next;
                self.records[next as usize].prev = NONE;
            } else {
                head.remove();
                let records = &self.records;
                let h = hash_id(&self.hasher, &id);
                let Ok(mut entry) = self
                    .by_id
                    .find_entry(h, |e| records[e.rep as usize].id == id)
                else {
                    unreachable!("bug: a held id is not in the id table");
                };
                entry.get_mut().holders -= 1;
                if entry.get().holders == 0 {
                    entry.remove();
                    self.records[i as usize].prev = NONE;
                    self.records[i as usize].next = NONE;
                    return;
                }
            }
        }
        self.records[i as usize].prev = NONE;
        self.records[i as usize].next = NONE;
        // Another record of the id represents it from now on, if `i` did.
        let records = &self.records;
        let h = hash_id(&self.hasher, &id);
        let Some(entry) = self.by_id.find_mut(h, |e| records[e.rep as usize].id == id) else {
            unreachable!("bug: a held id is not in the id table");
        };
        if entry.rep != i {
            return;
        }
        entry.rep = if prev != NONE {
            prev
        } else if next != NONE {
            next
        } else {
            self.slot_of
                .values()
                .find_map(|&slot| {
                    self.by_id_peer
                        .find(hash_id_peer(&self.hasher, &id, slot), |&j| {
                            let r = &records[j as usize];
                            r.id == id && r.peer == slot
                        })
                        .copied()
                })
                .expect("bug: an id with holders has no (id, peer) group")
        };
    }

    fn holders(&self, id: &[u8; 32]) -> u32 {
        self.by_id
            .find(hash_id(&self.hasher, id), |e| {
                self.records[e.rep as usize].id == *id
            })
            .map_or(0, |e| e.holders)
    }

    /// The row of record `i`: its id with every holder.
    fn hit(&self, i: u32, score: i64) -> Hit {
        let r = &self.records[i as usize];
        let mut holders = Vec::new();
        let mut holder_count = 0;
        for (peer, &slot) in &self.slot_of {
            let found = self
                .by_id_peer
                .find(hash_id_peer(&self.hasher, &r.id, slot), |&j| {
                    let h = &self.records[j as usize];
                    h.id == r.id && h.peer == slot
                });
            let Some(&head) = found else {
                continue;
            };
            holder_count += 1;
            if holders.len() < MAX_HOLDERS {
                let path = if slot == r.peer {
                    r.path()
                } else {
                    self.records[head as usize].path()
                };
                holders.push((*peer, path.to_owned()));
            }
        }
        Hit {
            id: r.id,
            kind: r.kind,
            size: r.size,
            name: r.name().to_owned(),
            path: r.path().to_owned(),
            score,
            holders,
            holder_count,
        }
    }

    // ---- search ----

    fn chunk_len(&self) -> usize {
        (self.records.len() / (rayon::current_num_threads() * 4)).max(MIN_CHUNK)
    }

    /// Runs `matcher` over every live record of the kind in parallel chunks; returns the number
    /// of distinct matching ids (up to [`MAX_MATCHES`]) and the best `want` rows, ranked.
    fn scan<F>(&self, want: usize, kind: Option<Kind>, matcher: F) -> (usize, Vec<Cand>)
    where
        F: Fn(&mut Chunk, u32, Masks) + Sync,
    {
        let chunk = self.chunk_len();
        let parts: Vec<Chunk> = self
            .masks
            .par_chunks(chunk)
            .enumerate()
            .map(|(c, masks)| {
                let mut state = Chunk::new(want);
                for (j, &m) in masks.iter().enumerate() {
                    if m.path & LIVE_BIT == 0 {
                        continue;
                    }
                    match kind {
                        Some(Kind::Dir) if m.name & DIR_BIT == 0 => continue,
                        Some(Kind::File) if m.name & DIR_BIT != 0 => continue,
                        _ => {}
                    }
                    matcher(&mut state, (c * chunk + j) as u32, m);
                }
                state.top.compact(self);
                state
            })
            .collect();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut top = TopK::new(want);
        for part in parts {
            for id in part.seen {
                if seen.len() == MAX_MATCHES {
                    break;
                }
                seen.insert(id);
            }
            top.cands.extend(part.top.cands);
        }
        top.compact(self);
        (seen.len(), top.cands)
    }

    /// The main pass for record `i`: tiers exact to path.
    fn match_main(&self, q: &Parsed, chunk: &mut Chunk, i: u32, m: Masks) {
        if q.mask & !m.path != 0 {
            return;
        }
        let counting = chunk.counting();
        if !counting {
            let in_name = q.mask & !m.name == 0;
            // Substring tiers and above need every word's pairs in the name.
            let best = if in_name && q.pairs & !m.pairs == 0 {
                Tier::Exact
            } else if in_name {
                Tier::Fuzzy
            } else {
                Tier::Path
            };
            if !chunk.top.admits(best.with(MAX_SUB)) {
                return;
            }
        }
        let r = &self.records[i as usize];
        if !r.has_name() {
            return;
        }
        let min_tier = if counting {
            Tier::Typo
        } else {
            chunk.top.floor_tier()
        };
        let Some(class) = rank::classify(q, r.lower(), r.lname_start as usize, m.name, min_tier)
        else {
            return;
        };
        chunk.saw(&r.id);
        let score = match class {
            Class::Scored(tier, sub) => tier.with(sub),
            Class::Fuzzy => {
                if !chunk.top.admits(Tier::Fuzzy.with(MAX_SUB)) {
                    return;
                }
                let lname = &r.lower()[r.lname_start as usize..];
                let sub: i64 = q
                    .words
                    .iter()
                    .map(|w| self.matcher.fuzzy_match(lname, &w.text).unwrap_or(0))
                    .sum();
                Tier::Fuzzy.with(sub)
            }
        };
        self.offer(chunk, i, score);
    }

    /// The typo pass for record `i`.
    fn match_typo(&self, tokens: &typo::Tokens, chunk: &mut Chunk, i: u32, m: Masks) {
        if !tokens.may_match(m.name) {
            return;
        }
        if !chunk.counting() && !chunk.top.admits(Tier::Typo.with(MAX_SUB)) {
            return;
        }
        let r = &self.records[i as usize];
        if !r.has_name() {
            return;
        }
        let Some(sub) = tokens.score(&r.lower()[r.lname_start as usize..]) else {
            return;
        };
        chunk.saw(&r.id);
        self.offer(chunk, i, Tier::Typo.with(sub));
    }

    fn offer(&self, chunk: &mut Chunk, i: u32, score: i64) {
        if !chunk.top.admits(score) {
            return;
        }
        let r = &self.records[i as usize];
        let cand = Cand {
            score,
            name_len: r.path_len - r.name_start,
            holders: self.holders(&r.id),
            rec: i,
        };
        chunk.top.push(cand, self);
    }

    /// The ranking: `Less` when `a` comes first.
    fn rank(&self, a: &Cand, b: &Cand) -> Ordering {
        b.score
            .cmp(&a.score)
            .then(a.name_len.cmp(&b.name_len))
            .then(b.holders.cmp(&a.holders))
            .then_with(|| {
                let (ra, rb) = (&self.records[a.rec as usize], &self.records[b.rec as usize]);
                ra.path()
                    .cmp(rb.path())
                    .then(ra.id.cmp(&rb.id))
                    .then(a.rec.cmp(&b.rec))
            })
    }
}

/// A matching record on its way to the ranking.
#[derive(Debug, Clone, Copy)]
struct Cand {
    score: i64,
    name_len: u32,
    holders: u32,
    rec: u32,
}

/// What one parallel task keeps: the ids it saw match (up to [`MAX_MATCHES`]) and its best rows.
struct Chunk {
    seen: HashSet<[u8; 32]>,
    top: TopK,
}

impl Chunk {
    fn new(want: usize) -> Self {
        Chunk {
            seen: HashSet::new(),
            top: TopK::new(want),
        }
    }

    /// Whether matches still count towards the total. Once this chunk saw [`MAX_MATCHES`]
    /// distinct ids, the total is known to be `MAX_MATCHES` and only rows that can still place
    /// need looking at.
    fn counting(&self) -> bool {
        self.seen.len() < MAX_MATCHES
    }

    fn saw(&mut self, id: &[u8; 32]) {
        if self.counting() {
            self.seen.insert(*id);
        }
    }
}

/// The best `want` rows with distinct ids, kept as a list compacted now and then (sorted,
/// one row per id, truncated). Dedup happens before truncation, so no id is lost: an id's best
/// record in a chunk ranks below `want` other ids only if the id cannot place overall.
struct TopK {
    want: usize,
    cands: Vec<Cand>,
    /// The last kept row once `want` are kept: anything ranking after it cannot place.
    floor: Option<Cand>,
}

impl TopK {
    fn new(want: usize) -> Self {
        TopK {
            want,
            cands: Vec::new(),
            floor: None,
        }
    }

    /// Whether a row scoring `score` might place.
    fn admits(&self, score: i64) -> bool {
        self.want > 0 && self.floor.is_none_or(|f| score >= f.score)
    }

    /// The lowest tier that might still place.
    fn floor_tier(&self) -> Tier {
        self.floor
            .and_then(|f| Tier::of_score(f.score))
            .unwrap_or(Tier::Typo)
    }

    fn push(&mut self, cand: Cand, index: &NetworkIndex) {
        if let Some(floor) = self.floor {
            if index.rank(&cand, &floor) != Ordering::Less {
                return;
            }
        }
        self.cands.push(cand);
        if self.cands.len() >= 2 * self.want + 64 {
            self.compact(index);
        }
    }

    fn compact(&mut self, index: &NetworkIndex) {
        self.cands.sort_unstable_by(|a, b| index.rank(a, b));
        let mut ids: HashSet<[u8; 32]> = HashSet::with_capacity(self.cands.len());
        self.cands
            .retain(|c| ids.insert(index.records[c.rec as usize].id));
        self.cands.truncate(self.want);
        if self.cands.len() == self.want {
            self.floor = self.cands.last().copied();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        // Deterministic peer ids: identity multihashes of fixed bytes.
        let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        bytes.extend([n; 32]);
        PeerId::from_bytes(&bytes).expect("valid identity peer id")
    }

    fn id(n: u32) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    fn file(path: &str, n: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: u64::from(n),
            id: id(n),
        }
    }

    fn index_of(paths: &[&str]) -> NetworkIndex {
        let mut index = NetworkIndex::new(Limits::default());
        let entries = paths
            .iter()
            .enumerate()
            .map(|(n, p)| file(p, n as u32))
            .collect();
        index.upsert(peer(1), entries).expect("within limits");
        index
    }

    fn paths(index: &NetworkIndex, text: &str) -> Vec<String> {
        let q = Query {
            limit: MAX_PAGE,
            ..Query::new(text)
        };
        index.search(&q).hits.into_iter().map(|h| h.path).collect()
    }

    fn tiers(index: &NetworkIndex, text: &str) -> Vec<(String, Option<Tier>)> {
        let q = Query {
            limit: MAX_PAGE,
            ..Query::new(text)
        };
        index
            .search(&q)
            .hits
            .into_iter()
            .map(|h| (h.path.clone(), h.tier()))
            .collect()
    }

    #[test]
    fn tiers_rank_exact_prefix_substring_fuzzy_path() {
        let index = index_of(&[
            "films/bat-man returns.mkv",
            "batman/cover.jpg",
            "films/the batman.mkv",
            "films/Batman Begins.mkv",
            "films/Batman.mkv",
            "films/notes.txt",
        ]);
        let want = [
            ("films/Batman.mkv", Some(Tier::Exact)),
            ("films/Batman Begins.mkv", Some(Tier::Prefix)),
            ("films/the batman.mkv", Some(Tier::Substring)),
            ("films/bat-man returns.mkv", Some(Tier::Fuzzy)),
            ("batman/cover.jpg", Some(Tier::Path)),
        ];
        let want: Vec<_> = want.iter().map(|(p, t)| (p.to_string(), *t)).collect();
        assert_eq!(tiers(&index, "BATMAN"), want);
    }

    #[test]
    fn ranking_table() {
        // (names in the index, query, expected order of paths)
        let cases: &[(&[&str], &str, &[&str])] = &[
            // Subsequences match, case-insensitively.
            (&["Batman.mkv", "robin.mkv"], "btmn", &["Batman.mkv"]),
            // Word order is free; every word must match.
            (
                &[
                    "Batman Begins (2005).mkv",
                    "Batman (1989).mkv",
                    "Begins.txt",
                ],
                "begins batman",
                &["Batman Begins (2005).mkv"],
            ),
            // The exact name beats the name without extension, which beats a prefix.
            (
                &["batman.mkv.part.tmp", "batman.mkv.part", "batman.mkv"],
                "batman.mkv",
                &["batman.mkv", "batman.mkv.part", "batman.mkv.part.tmp"],
            ),
            // A word start beats a match inside a word.
            (
                &["abatman.mkv", "a batman.mkv"],
                "batman",
                &["a batman.mkv", "abatman.mkv"],
            ),
            // Within a tier and score, the shorter name first, then path bytes.
            (
                &["batman.mkv.bak", "batman.mkv"],
                "btmn",
                &["batman.mkv", "batman.mkv.bak"],
            ),
            (
                &["b/readme.md", "a/readme.md"],
                "readme",
                &["a/readme.md", "b/readme.md"],
            ),
            // A match in the name beats one that needs the directory.
            (
                &["music/queen/song.flac", "music/queen.flac"],
                "queen",
                &["music/queen.flac", "music/queen/song.flac"],
            ),
            // Words can be split between the directory and the name.
            (
                &["music/The Beatles/Help.flac", "music/Help.flac"],
                "beatles help",
                &["music/The Beatles/Help.flac"],
            ),
            // Typos, only because nothing matched as a subsequence.
            (&["batman.mkv", "robin.mkv"], "btaman", &["batman.mkv"]),
            (&["src/main.rs", "src/lib.rs"], "mian.rs", &["src/main.rs"]),
            // Numbers are never typo-matched.
            (&["report 2025.pdf"], "report 2026", &[]),
            (&["report 2025.pdf"], "reprot 2025", &["report 2025.pdf"]),
            // Short tokens are not typo-matched.
            (&["cat.png"], "cta", &[]),
        ];
        for (names, query, want) in cases {
            let index = index_of(names);
            assert_eq!(
                paths(&index, query),
                *want,
                "query {query:?} over {names:?}"
            );
        }
    }

    #[test]
    fn typo_pass_runs_only_when_nothing_matched_as_a_subsequence() {
        let mut index = index_of(&["batman.mkv", "bataman.mkv"]);
        assert_eq!(
            tiers(&index, "btaman"),
            vec![("bataman.mkv".to_string(), Some(Tier::Fuzzy))]
        );
        index.remove(peer(1), &["bataman.mkv".to_string()]);
        assert_eq!(
            tiers(&index, "btaman"),
            vec![("batman.mkv".to_string(), Some(Tier::Typo))]
        );
    }

    #[test]
    fn same_id_across_peers_and_paths_is_one_row_with_all_holders() {
        let mut index = NetworkIndex::new(Limits::default());
        let shared = id(7);
        let e = |path: &str, n: u32| Entry {
            path: path.into(),
            kind: Kind::File,
            size: 5,
            id: id(n),
        };
        let (a, b, c) = (peer(3), peer(1), peer(2));
        index
            .upsert(a, vec![e("movies/batman.mkv", 7), e("other.txt", 1)])
            .expect("ok");
        index
            .upsert(b, vec![e("copy/batman.mkv", 7), e("films/batman.mkv", 7)])
            .expect("ok");
        index
            .upsert(c, vec![e("x/the batman.mkv", 7), e("batman2.mkv", 2)])
            .expect("ok");
        let results = index.search(&Query::new("batman"));
        assert_eq!(results.total, 2);
        assert_eq!(results.hits.len(), 2);
        let row = &results.hits[0];
        assert_eq!(row.id, shared);
        assert_eq!(row.tier(), Some(Tier::Exact));
        assert_eq!(row.path, "copy/batman.mkv");
        assert_eq!(row.holder_count, 3);
        let mut want = vec![
            (a, "movies/batman.mkv".to_string()),
            (b, "copy/batman.mkv".to_string()),
            (c, "x/the batman.mkv".to_string()),
        ];
        want.sort();
        assert_eq!(row.holders, want);
        assert_eq!(results.hits[1].path, "batman2.mkv");

        // One holder goes: the row stays, with fewer holders.
        assert_eq!(index.remove_peer(&b), 2);
        let row = &index.search(&Query::new("batman")).hits[0];
        assert_eq!(row.holder_count, 2);
        assert_eq!(row.path, "movies/batman.mkv");
    }

    #[test]
    fn more_holders_rank_first_among_equals() {
        let mut index = NetworkIndex::new(Limits::default());
        index
            .upsert(peer(1), vec![file("a/song.mp3", 1)])
            .expect("ok");
        index
            .upsert(peer(1), vec![file("b/song.mp3", 2)])
            .expect("ok");
        index
            .upsert(peer(2), vec![file("c/song.mp3", 2)])
            .expect("ok");
        assert_eq!(paths(&index, "song"), ["b/song.mp3", "a/song.mp3"]);
    }

    #[test]
    fn pages_are_stable_and_disjoint() {
        let names: Vec<String> = (0..150)
            .map(|n| format!("dir{}/track {n:03}.flac", n % 7))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let index = index_of(&refs);
        let page = |offset, limit| {
            let q = Query {
                offset,
                limit,
                ..Query::new("track")
            };
            index.search(&q)
        };
        let all = page(0, 150);
        assert_eq!(all.total, 150);
        assert_eq!(all.hits.len(), 150);
        let mut joined = Vec::new();
        for offset in (0..150).step_by(20) {
            let p = page(offset, 20);
            assert_eq!(p.total, 150);
            joined.extend(p.hits);
        }
        assert_eq!(joined, all.hits);
        let mut ids: Vec<_> = joined.iter().map(|h| h.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 150);
        assert!(page(500, 20).hits.is_empty());
        assert_eq!(page(0, 10_000).hits.len(), 150);
        assert!(page(0, 0).hits.is_empty());
        assert_eq!(page(0, 0).total, 150);
    }

    #[test]
    fn total_is_capped_and_large_pages_are_clamped() {
        let names: Vec<String> = (0..MAX_MATCHES + 500)
            .map(|n| format!("f{n}.txt"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let index = index_of(&refs);
        let q = Query {
            limit: usize::MAX,
            offset: 0,
            ..Query::new("txt")
        };
        let results = index.search(&q);
        assert_eq!(results.total, MAX_MATCHES);
        assert_eq!(results.hits.len(), MAX_PAGE);
        let q = Query {
            limit: MAX_PAGE,
            offset: MAX_MATCHES - 10,
            ..Query::new("txt")
        };
        assert_eq!(index.search(&q).hits.len(), 10);
        let q = Query {
            offset: usize::MAX,
            ..Query::new("txt")
        };
        assert!(index.search(&q).hits.is_empty());
    }

    #[test]
    fn limits_are_all_or_nothing() {
        let limits = Limits {
            max_entries_per_peer: 3,
            max_entries: 5,
        };
        let mut index = NetworkIndex::new(limits);
        index
            .upsert(peer(1), vec![file("a", 1), file("b", 2)])
            .expect("ok");
        assert_eq!(
            index.upsert(peer(1), vec![file("c", 3), file("d", 4), file("a", 5)]),
            Err(LimitError::TooManyForPeer {
                peer_entries: 4,
                limit: 3
            })
        );
        assert_eq!(index.peer_len(&peer(1)), 2);
        assert!(paths(&index, "c").is_empty());
        assert_eq!(index.search(&Query::new("a")).hits[0].size, 1);
        // Replacing known paths and repeating a path within the batch add nothing.
        index
            .upsert(peer(1), vec![file("a", 6), file("c", 3), file("c", 8)])
            .expect("ok");
        assert_eq!(index.peer_len(&peer(1)), 3);
        assert_eq!(index.search(&Query::new("c")).hits[0].size, 8);
        index
            .upsert(peer(2), vec![file("x", 1), file("y", 2)])
            .expect("ok");
        assert_eq!(
            index.upsert(peer(3), vec![file("z", 9)]),
            Err(LimitError::TooMany {
                entries: 6,
                limit: 5
            })
        );
        assert_eq!(index.peers(), 2);
        assert_eq!(index.len(), 5);
        assert_eq!(
            LimitError::TooMany {
                entries: 6,
                limit: 5
            }
            .to_string(),
            "the index would hold 6 entries, more than its limit of 5"
        );
    }

    #[test]
    fn snapshot_removes_what_was_not_sent_again() {
        let mut index = NetworkIndex::new(Limits::default());
        let p = peer(1);
        index
            .upsert(
                p,
                vec![file("keep.txt", 1), file("gone.txt", 2), file("old.txt", 3)],
            )
            .expect("ok");
        index
            .upsert(peer(2), vec![file("gone.txt", 2)])
            .expect("ok");
        index.begin_snapshot(p);
        index.upsert(p, vec![file("keep.txt", 1)]).expect("ok");
        // Old entries stay searchable during the snapshot.
        assert_eq!(paths(&index, "old"), ["old.txt"]);
        // Restarting forgets what the aborted snapshot sent.
        index.begin_snapshot(p);
        index
            .upsert(p, vec![file("keep.txt", 1), file("new.txt", 4)])
            .expect("ok");
        assert_eq!(index.finish_snapshot(p), 2);
        assert_eq!(index.finish_snapshot(p), 0);
        assert_eq!(index.peer_len(&p), 2);
        assert!(paths(&index, "old").is_empty());
        let gone = index.search(&Query::new("gone"));
        assert_eq!(
            gone.hits[0].holders,
            vec![(peer(2), "gone.txt".to_string())]
        );
        // An empty snapshot empties the peer.
        index.begin_snapshot(p);
        assert_eq!(index.finish_snapshot(p), 2);
        assert_eq!(index.peer_len(&p), 0);
        assert_eq!(index.peers(), 1);
        assert_eq!(index.finish_snapshot(peer(9)), 0);
    }

    #[test]
    fn a_peer_cannot_remove_another_peers_entries() {
        let mut index = NetworkIndex::new(Limits::default());
        index
            .upsert(peer(1), vec![file("mine.txt", 1)])
            .expect("ok");
        index
            .upsert(peer(2), vec![file("theirs.txt", 2)])
            .expect("ok");
        index.remove(peer(2), &["mine.txt".to_string(), "nope".to_string()]);
        index.remove(peer(3), &["mine.txt".to_string()]);
        assert_eq!(paths(&index, "mine"), ["mine.txt"]);
        index.remove(peer(2), &["theirs.txt".to_string()]);
        assert!(paths(&index, "theirs").is_empty());
        assert_eq!(index.len(), 1);
        assert_eq!(index.peers(), 1);
        assert_eq!(index.remove_peer(&peer(2)), 0);
    }

    #[test]
    fn replacing_an_entry_moves_it_to_its_new_id() {
        let mut index = NetworkIndex::new(Limits::default());
        index.upsert(peer(1), vec![file("a.txt", 1)]).expect("ok");
        index.upsert(peer(1), vec![file("a.txt", 2)]).expect("ok");
        assert!(index.locate(&hex(&id(1)), 5).is_empty());
        let hits = index.locate(&hex(&id(2)), 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].path, "a.txt");
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn hostile_queries_do_not_panic() {
        let index = index_of(&["batman.mkv", "Ünïcödé/日本語.txt", "a\u{301}b.txt", ""]);
        let queries = [
            "x".repeat(10 * 1024),
            "w ".repeat(1000),
            "\0".to_string(),
            "bat\0man".to_string(),
            "😀".repeat(100),
            "e\u{301}\u{301}\u{301}".to_string(),
            "日本".to_string(),
            "\u{7f}\u{1b}[31m".to_string(),
            "İSTANBUL ǅ ß".to_string(),
            "/".to_string(),
            ".".to_string(),
            " ".repeat(300) + "batman",
        ];
        for text in queries {
            for kind in [None, Some(Kind::File), Some(Kind::Dir)] {
                let q = Query {
                    kind,
                    ..Query::new(text.clone())
                };
                let _ = index.search(&q);
            }
        }
        assert_eq!(paths(&index, "日本"), ["Ünïcödé/日本語.txt"]);
        assert_eq!(paths(&index, "ünï"), ["Ünïcödé/日本語.txt"]);
        assert!(paths(&index, "").is_empty());
        assert!(paths(&index, " \t ").is_empty());
    }

    #[test]
    fn root_entry_is_stored_but_never_a_search_result() {
        let mut index = NetworkIndex::new(Limits::default());
        let root = Entry {
            path: String::new(),
            kind: Kind::Dir,
            size: 0,
            id: id(99),
        };
        index.upsert(peer(1), vec![root]).expect("ok");
        assert_eq!(index.len(), 1);
        for text in ["a", "\0", "x y"] {
            assert!(paths(&index, text).is_empty());
        }
        let found = index.locate(&hex(&id(99))[..6], 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "");
        assert_eq!(found[0].name, "");
    }

    fn hex(id: &[u8; 32]) -> String {
        id.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn locate_by_hex_prefix() {
        let mut index = NetworkIndex::new(Limits::default());
        let entries: Vec<Entry> = (0..200).map(|n| file(&format!("f{n}"), n)).collect();
        index.upsert(peer(1), entries).expect("ok");
        index.upsert(peer(2), vec![file("copy", 5)]).expect("ok");
        let full = hex(&id(5));
        for prefix in [
            &full[..1],
            &full[..2],
            &full[..7],
            &full[..],
            &full.to_uppercase(),
        ] {
            let hits = index.locate(prefix, 1000);
            assert!(!hits.is_empty(), "{prefix}");
            assert!(hits
                .iter()
                .all(|h| hex(&h.id).starts_with(&prefix.to_lowercase())));
            let mut sorted: Vec<_> = hits.iter().map(|h| h.id).collect();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, hits.iter().map(|h| h.id).collect::<Vec<_>>());
        }
        let hits = index.locate(&full, 10);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].holder_count, 2);
        assert_eq!(hits[0].path, "f5");
        assert_eq!(index.locate(&full[..1], 3).len(), 3);
        for bad in ["", "xyz", "0g", &"0".repeat(65), "é"] {
            assert!(index.locate(bad, 10).is_empty(), "{bad:?}");
        }
        assert!(index.locate(&full, 0).is_empty());
    }

    #[test]
    fn kind_filter() {
        let mut index = NetworkIndex::new(Limits::default());
        let dir = Entry {
            path: "music/Queen".into(),
            kind: Kind::Dir,
            size: 0,
            id: id(1),
        };
        index
            .upsert(peer(1), vec![dir, file("music/Queen/queen.flac", 2)])
            .expect("ok");
        let search = |kind| {
            let q = Query {
                kind,
                ..Query::new("queen")
            };
            index
                .search(&q)
                .hits
                .into_iter()
                .map(|h| h.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(search(None), ["music/Queen", "music/Queen/queen.flac"]);
        assert_eq!(search(Some(Kind::Dir)), ["music/Queen"]);
        assert_eq!(search(Some(Kind::File)), ["music/Queen/queen.flac"]);
    }

    #[test]
    fn results_are_the_same_over_many_chunks() {
        // More records than one parallel chunk, with one id held at both ends of the arena.
        let mut index = NetworkIndex::new(Limits::default());
        let mut entries: Vec<Entry> = (0..3 * MIN_CHUNK as u32)
            .map(|n| file(&format!("d{}/note {n}.txt", n % 13), n + 10))
            .collect();
        entries[0] = file("a/target.txt", 1);
        entries.push(file("z/target.txt", 1));
        index.upsert(peer(1), entries).expect("ok");
        let results = index.search(&Query::new("target"));
        assert_eq!(results.total, 1);
        assert_eq!(results.hits[0].path, "a/target.txt");
        let q = Query {
            limit: MAX_PAGE,
            ..Query::new("note 1")
        };
        let page = index.search(&q);
        assert_eq!(page.total, MAX_MATCHES);
        assert_eq!(page.hits[0].name, "note 1.txt");
        let scores: Vec<i64> = page.hits.iter().map(|h| h.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn slots_and_records_are_reused() {
        let mut index = NetworkIndex::new(Limits::default());
        for round in 0..3 {
            let entries = (0..100).map(|n| file(&format!("f{n}"), n)).collect();
            index.upsert(peer(1), entries).expect("ok");
            index.upsert(peer(2), vec![file("f1", 1)]).expect("ok");
            assert_eq!(index.len(), 101, "round {round}");
            assert_eq!(index.locate(&hex(&id(1)), 1)[0].holder_count, 2);
            assert_eq!(index.remove_peer(&peer(1)), 100);
            assert_eq!(index.locate(&hex(&id(1)), 1)[0].holder_count, 1);
            assert_eq!(index.remove_peer(&peer(2)), 1);
            assert!(index.is_empty());
            assert_eq!(index.peers(), 0);
        }
        assert!(index.records.len() <= 101);
    }

    /// A tiny deterministic generator for the randomised tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Every record is where the tables say, and every id counts its distinct holders.
    fn check_invariants(index: &NetworkIndex) {
        let mut live = 0;
        let mut holders: std::collections::HashMap<[u8; 32], std::collections::HashSet<u32>> =
            Default::default();
        for (i, r) in index.records.iter().enumerate() {
            if r.peer == NONE {
                assert_eq!(index.masks[i].path & LIVE_BIT, 0);
                continue;
            }
            live += 1;
            assert_eq!(index.find_path(r.peer, r.path()), Some(i as u32));
            holders.entry(r.id).or_default().insert(r.peer);
        }
        assert_eq!(live, index.len());
        assert_eq!(index.by_id.len(), holders.len());
        for (id, peers) in &holders {
            assert_eq!(index.holders(id) as usize, peers.len());
            let row = index.hit(
                index
                    .by_id
                    .find(hash_id(&index.hasher, id), |e| {
                        index.records[e.rep as usize].id == *id
                    })
                    .expect("id entry")
                    .rep,
                0,
            );
            assert_eq!(row.holder_count, peers.len());
        }
    }

    /// What `search` must return, computed the slow way: every record scored on its own.
    fn reference(index: &NetworkIndex, query: &Query) -> SearchResults {
        let Some(q) = Parsed::new(&query.text) else {
            return SearchResults {
                total: 0,
                hits: Vec::new(),
            };
        };
        let tokens = typo::Tokens::new(&q);
        let live =
            |r: &Record| r.peer != NONE && r.has_name() && query.kind.is_none_or(|k| k == r.kind);
        let main = |i: usize, r: &Record| {
            let class = rank::classify(
                &q,
                r.lower(),
                r.lname_start as usize,
                index.masks[i].name,
                Tier::Typo,
            )?;
            Some(match class {
                Class::Scored(tier, sub) => tier.with(sub),
                Class::Fuzzy => {
                    let lname = &r.lower()[r.lname_start as usize..];
                    let sub = q
                        .words
                        .iter()
                        .map(|w| index.matcher.fuzzy_match(lname, &w.text).unwrap_or(0))
                        .sum();
                    Tier::Fuzzy.with(sub)
                }
            })
        };
        let typo = |_: usize, r: &Record| {
            let sub = tokens.score(&r.lower()[r.lname_start as usize..])?;
            Some(Tier::Typo.with(sub))
        };
        let score_all = |f: &dyn Fn(usize, &Record) -> Option<i64>| -> Vec<Cand> {
            index
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| live(r))
                .filter_map(|(i, r)| {
                    f(i, r).map(|score| Cand {
                        score,
                        name_len: r.path_len - r.name_start,
                        holders: index.holders(&r.id),
                        rec: i as u32,
                    })
                })
                .collect()
        };
        let mut cands = score_all(&main);
        if cands.is_empty() && !tokens.is_empty() {
            cands = score_all(&typo);
        }
        cands.sort_by(|a, b| index.rank(a, b));
        let mut ids = std::collections::HashSet::new();
        cands.retain(|c| ids.insert(index.records[c.rec as usize].id));
        let total = cands.len().min(MAX_MATCHES);
        cands.truncate(MAX_MATCHES);
        let hits = cands
            .iter()
            .skip(query.offset)
            .take(query.limit.min(MAX_PAGE))
            .map(|c| index.hit(c.rec, c.score))
            .collect();
        SearchResults { total, hits }
    }

    #[test]
    fn search_agrees_with_scoring_every_record_on_its_own() {
        const WORDS: [&str; 12] = [
            "ab", "abc", "ba", "cab", "bad", "dab", "a", "b", "c", "d", "cd", "dc",
        ];
        let mut rng = Rng(7);
        let mut index = NetworkIndex::new(Limits::default());
        let random_path = |rng: &mut Rng| {
            let depth = rng.below(3);
            let mut path = String::new();
            for level in 0..=depth {
                if level > 0 {
                    path.push('/');
                }
                for w in 0..1 + rng.below(3) {
                    if w > 0 {
                        path.push(if rng.below(2) == 0 { ' ' } else { '_' });
                    }
                    path.push_str(WORDS[rng.below(WORDS.len())]);
                }
            }
            if rng.below(3) == 0 {
                path.push_str(".Txt");
            }
            path
        };
        // Enough records for several parallel chunks; ids repeat across peers and paths.
        for round in 0..6 {
            for p in 1..=4u8 {
                if round == 3 && p == 2 {
                    index.begin_snapshot(peer(p));
                }
                let entries = (0..1500)
                    .map(|_| Entry {
                        path: random_path(&mut rng),
                        kind: if rng.below(5) == 0 {
                            Kind::Dir
                        } else {
                            Kind::File
                        },
                        size: rng.below(100) as u64,
                        id: id(rng.below(3000) as u32),
                    })
                    .collect();
                index.upsert(peer(p), entries).expect("within limits");
                let gone: Vec<String> = (0..100).map(|_| random_path(&mut rng)).collect();
                index.remove(peer(p), &gone);
                if round == 4 && p == 2 {
                    index.finish_snapshot(peer(p));
                }
            }
        }
        assert!(index.len() > 3 * MIN_CHUNK);
        check_invariants(&index);
        let queries = [
            "ab", "a", "abc", "cab dab", "bad", "b c", "ab/cd", "abcd", "dcba", "ab.txt",
            "a b c d", "cabd", "xyz", "abcabc", "dab_ab",
        ];
        for text in queries {
            for (kind, offset, limit) in [
                (None, 0, 20),
                (None, 0, 0),
                (Some(Kind::Dir), 0, 7),
                (None, 37, 50),
                (Some(Kind::File), 980, 50),
                (None, 0, MAX_PAGE),
            ] {
                let q = Query {
                    text: text.to_string(),
                    kind,
                    offset,
                    limit,
                };
                assert_eq!(index.search(&q), reference(&index, &q), "{q:?}");
            }
        }
        // Forgetting peers keeps every table consistent.
        index.remove_peer(&peer(3));
        index.begin_snapshot(peer(1));
        assert!(index.finish_snapshot(peer(1)) > 0);
        check_invariants(&index);
        let q = Query::new("cab");
        assert_eq!(index.search(&q), reference(&index, &q));
    }
}
