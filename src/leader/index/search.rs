//! Search over the arena: the parallel scan, the two matching passes (main and typo), the
//! bounded best-per-id top list, and the rows (hits) a search or a locate returns.

use std::cmp::Ordering;

use fuzzy_matcher::FuzzyMatcher;
use hashbrown::HashSet;
use iwant_behaviours::id::{Id, IdPrefix};
use libp2p::PeerId;
use rayon::prelude::*;

use super::{
    arena::{hash_id, hash_id_peer, Masks},
    rank::{self, Class, Parsed, DIR_BIT, LIVE_BIT},
    typo, Hit, Kind, NetworkIndex, Query, SearchResults, Tier, MAX_HOLDERS, MAX_MATCHES, MAX_PAGE,
    MAX_SUB, MIN_CHUNK, NONE,
};

impl NetworkIndex {
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
        let Ok(prefix) = prefix.parse::<IdPrefix>() else {
            return Vec::new();
        };
        if max == 0 {
            return Vec::new();
        }
        let matches = |id: &[u8; 32]| prefix.matches(&Id(*id));
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

    pub(super) fn holders(&self, id: &[u8; 32]) -> u32 {
        self.by_id
            .find(hash_id(&self.hasher, id), |e| {
                self.records[e.rep as usize].id == *id
            })
            .map_or(0, |e| e.holders)
    }

    /// The holders of exactly `id` (at most [`MAX_HOLDERS`]); none when nobody holds it.
    pub fn holders_of(&self, id: &[u8; 32]) -> Vec<PeerId> {
        let records = &self.records;
        self.by_id
            .find(hash_id(&self.hasher, id), |e| {
                records[e.rep as usize].id == *id
            })
            .map(|e| {
                self.hit(e.rep, 0)
                    .holders
                    .into_iter()
                    .map(|(peer, _)| peer)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The row of record `i`: its id with every holder.
    pub(super) fn hit(&self, i: u32, score: i64) -> Hit {
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
            id: iwant_behaviours::id::Id(r.id),
            kind: r.kind,
            size: r.size,
            name: r.name().to_owned(),
            path: r.path().to_owned(),
            score,
            holders,
            holder_count,
        }
    }

    pub(super) fn chunk_len(&self) -> usize {
        (self.records.len() / (rayon::current_num_threads() * 4)).max(MIN_CHUNK)
    }

    /// Runs `matcher` over every live record of the kind in parallel chunks; returns the number
    /// of distinct matching ids (up to [`MAX_MATCHES`]) and the best `want` rows, ranked.
    pub(super) fn scan<F>(&self, want: usize, kind: Option<Kind>, matcher: F) -> (usize, Vec<Cand>)
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
    pub(super) fn match_main(&self, q: &Parsed, chunk: &mut Chunk, i: u32, m: Masks) {
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
    pub(super) fn match_typo(&self, tokens: &typo::Tokens, chunk: &mut Chunk, i: u32, m: Masks) {
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

    pub(super) fn offer(&self, chunk: &mut Chunk, i: u32, score: i64) {
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

    /// The ranking: `Less` when `a` comes first. Equal scores: the shorter name (when the
    /// name is what matched: not in the path and typo tiers, where the folder or a forgiven
    /// typo did, so `01 …`, `02 …` of an album are not ordered by their titles' lengths),
    /// more holders, the path in natural order (`track 2` before `track 10`), the id.
    pub(super) fn rank(&self, a: &Cand, b: &Cand) -> Ordering {
        let name_len = |c: &Cand| match Tier::of_score(c.score) {
            Some(Tier::Path | Tier::Typo) => 0,
            _ => c.name_len,
        };
        b.score
            .cmp(&a.score)
            .then(name_len(a).cmp(&name_len(b)))
            .then(b.holders.cmp(&a.holders))
            .then_with(|| {
                let (ra, rb) = (&self.records[a.rec as usize], &self.records[b.rec as usize]);
                rank::natural_cmp(ra.path(), rb.path())
                    .then(ra.id.cmp(&rb.id))
                    .then(a.rec.cmp(&b.rec))
            })
    }
}

/// A matching record on its way to the ranking.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cand {
    pub(super) score: i64,
    pub(super) name_len: u32,
    pub(super) holders: u32,
    pub(super) rec: u32,
}

/// What one parallel task keeps: the ids it saw match (up to [`MAX_MATCHES`]) and its best rows.
pub(super) struct Chunk {
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
pub(super) struct TopK {
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
