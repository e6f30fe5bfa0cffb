//! What one download fetches: the distinct files of a file or directory id, cut into units
//! (one unit = one piece), each with what verifies it and where it goes on disk.
//!
//! A plan is built only from data already checked against the download's id: a file's piece
//! list (merged back into the id), or a directory's manifest (hashed back into the id, every
//! path checked by [`manifest::decode`]). So every unit of a plan can be verified on arrival.
//! Identical contents (same id at several paths) are one distinct file, fetched once.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use iwant_behaviours::id::Id;

use crate::share::{
    manifest::{self, Kind},
    pieces::{self, Layout, PieceHash},
    scan,
};
use crate::transfer::names::{self, NameRule};

/// Most entries a directory download may have.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Why data from a peer cannot become a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The piece list does not merge back into the id.
    #[error("the piece list does not belong to the id")]
    BadPieces,
    /// The manifest does not hash to the id.
    #[error("the manifest does not belong to the id")]
    BadManifestId,
    /// The manifest is malformed or holds an unsafe path.
    #[error(transparent)]
    BadManifest(#[from] manifest::ManifestError),
}

/// One distinct file of a download.
#[derive(Debug, Clone)]
pub struct DistinctFile {
    /// Its content id.
    pub id: Id,
    /// How it is cut.
    pub layout: Layout,
    /// Its piece list once known and verified (always for a single-file download; empty for a
    /// one-piece file).
    pub pieces: Option<Vec<PieceHash>>,
    /// Relative paths (network form) inside the download where this content goes; "" for a
    /// single-file download. The first one receives the data; the others are copies.
    pub paths: Vec<String>,
    /// For each of `paths`, the index of its entry in the manifest (0 for a single file).
    pub entries: Vec<usize>,
    /// Its first unit.
    pub first_unit: usize,
}

impl DistinctFile {
    /// Whether the file needs a piece list (more than one piece) that is not known yet.
    pub fn needs_pieces(&self) -> bool {
        self.layout.count() > 1 && self.pieces.is_none()
    }
}

/// Everything one download fetches.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The distinct files, in manifest order of their first path.
    pub files: Vec<DistinctFile>,
    /// Directories to create (network form, relative), parents first.
    pub dirs: Vec<String>,
    /// Unit lengths, for the planner.
    pub unit_lens: Vec<u64>,
    /// Whether this is a directory download.
    pub is_dir: bool,
}

/// Where a unit lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitRef {
    /// Index into [`Plan::files`].
    pub file: usize,
    /// Piece index within it.
    pub piece: u64,
    /// Byte offset of the piece in the file.
    pub offset: u64,
    /// Piece length.
    pub len: u64,
}

impl Plan {
    /// The plan of a single file `id` of `size` bytes with the piece list `pieces` (32 bytes per
    /// hash, empty for one piece), checked against the id.
    pub fn file(id: Id, size: u64, pieces: &[u8]) -> Result<Plan, PlanError> {
        let layout = Layout::for_len(size);
        let list = pieces::pieces_from_bytes(pieces).ok_or(PlanError::BadPieces)?;
        if layout.count() > 1 {
            if pieces::root_of_pieces(&layout, &list) != Some(id.into()) {
                return Err(PlanError::BadPieces);
            }
        } else if !list.is_empty() {
            return Err(PlanError::BadPieces);
        }
        let file = DistinctFile {
            id,
            layout,
            pieces: Some(list),
            paths: vec![String::new()],
            entries: vec![0],
            first_unit: 0,
        };
        Ok(Self::from_files(vec![file], Vec::new(), false))
    }

    /// The plan of directory `id` from its encoded manifest, checked against the id.
    /// Paths are mapped to names this platform can store ([`LocalNames`]).
    pub fn dir(id: Id, encoded: &[u8]) -> Result<Plan, PlanError> {
        Self::dir_with_rule(id, encoded, NameRule::current())
    }

    /// [`Plan::dir`] with local names under `rule` (tests force other platforms' rules).
    pub fn dir_with_rule(id: Id, encoded: &[u8], rule: NameRule) -> Result<Plan, PlanError> {
        if manifest::id_of(encoded) != id {
            return Err(PlanError::BadManifestId);
        }
        let mut entries = manifest::decode(encoded, MAX_ENTRIES)?;
        let mut names = LocalNames::new(rule);
        for e in &mut entries {
            e.path = names.local_path(&e.path);
        }
        let mut by_id: HashMap<Id, usize> = HashMap::new();
        let mut files: Vec<DistinctFile> = Vec::new();
        let mut dirs = Vec::new();
        for (entry, e) in entries.into_iter().enumerate() {
            match (e.kind, e.id) {
                (Kind::Dir, _) => dirs.push(e.path),
                (Kind::File, Some(fid)) => match by_id.get(&fid) {
                    // Same content twice: fetched once, copied. Sizes must agree.
                    Some(&i) if files[i].layout.len() == e.size => {
                        files[i].paths.push(e.path);
                        files[i].entries.push(entry);
                    }
                    Some(_) => {
                        return Err(PlanError::BadManifest(manifest::ManifestError::BadEntry(
                            e.path,
                        )))
                    }
                    None => {
                        by_id.insert(fid, files.len());
                        files.push(DistinctFile {
                            id: fid,
                            layout: Layout::for_len(e.size),
                            pieces: None,
                            paths: vec![e.path],
                            entries: vec![entry],
                            first_unit: 0,
                        });
                    }
                },
                (Kind::File, None) => {
                    return Err(PlanError::BadManifest(manifest::ManifestError::BadEntry(
                        e.path,
                    )))
                }
            }
        }
        // One-piece files verify against their id; they never need a piece list.
        for f in &mut files {
            if f.layout.count() == 1 {
                f.pieces = Some(Vec::new());
            }
        }
        Ok(Self::from_files(files, dirs, true))
    }

    fn from_files(mut files: Vec<DistinctFile>, dirs: Vec<String>, is_dir: bool) -> Plan {
        let mut unit_lens = Vec::new();
        for f in &mut files {
            f.first_unit = unit_lens.len();
            for i in 0..f.layout.count() {
                let r = f.layout.piece_range(i).expect("bug: piece in range");
                unit_lens.push(r.end - r.start);
            }
        }
        Plan {
            files,
            dirs,
            unit_lens,
            is_dir,
        }
    }

    /// Where unit `unit` lives.
    pub fn unit(&self, unit: usize) -> UnitRef {
        let file = self.files.partition_point(|f| f.first_unit <= unit) - 1;
        let f = &self.files[file];
        let piece = (unit - f.first_unit) as u64;
        let range = f.layout.piece_range(piece).expect("bug: unit in range");
        UnitRef {
            file,
            piece,
            offset: range.start,
            len: range.end - range.start,
        }
    }

    /// The units of distinct file `file`.
    pub fn units_of(&self, file: usize) -> std::ops::Range<usize> {
        let f = &self.files[file];
        f.first_unit..f.first_unit + f.layout.count() as usize
    }

    /// Whether `data` is unit `unit`. False while the file's piece list is unknown.
    pub fn verify(&self, unit: usize, data: &[u8]) -> bool {
        let u = self.unit(unit);
        let f = &self.files[u.file];
        match &f.pieces {
            Some(list) => f.layout.verify_piece(&f.id.into(), list, u.piece, data),
            None => false,
        }
    }

    /// Where distinct file `file`'s data goes, under the partial file or directory `part`.
    pub fn data_path(&self, part: &Path, file: usize) -> PathBuf {
        if self.is_dir {
            scan::native(part, &self.files[file].paths[0])
        } else {
            part.to_path_buf()
        }
    }

    /// Every path (copies included) of distinct file `file` under `root`: the partial file or
    /// directory, or the placed download.
    pub fn paths_of(&self, root: &Path, file: usize) -> Vec<PathBuf> {
        if self.is_dir {
            self.files[file]
                .paths
                .iter()
                .map(|p| scan::native(root, p))
                .collect()
        } else {
            vec![root.to_path_buf()]
        }
    }

    /// Total bytes of the distinct files (what is fetched).
    pub fn total_bytes(&self) -> u64 {
        self.unit_lens.iter().sum()
    }
}

/// The local path of every network path of one manifest, mapped component by component by
/// `names::local_name`; two entries of one folder that would land on one local name (the
/// mapping, or case-blind platforms, make them equal) keep distinct names: the later one in
/// manifest order gets ` (n)` before its extension. Deterministic in the manifest, so a resumed
/// download maps every path the same way.
#[derive(Debug)]
pub struct LocalNames {
    rule: NameRule,
    /// Network path of a folder -> its local path.
    mapped: HashMap<String, String>,
    /// Local path of each folder -> the names taken in it (folded on case-blind platforms).
    taken: HashMap<String, HashSet<String>>,
}

impl LocalNames {
    /// No names mapped yet, under `rule`.
    pub fn new(rule: NameRule) -> Self {
        Self {
            rule,
            mapped: HashMap::new(),
            taken: HashMap::new(),
        }
    }

    fn fold(&self, name: &str) -> String {
        if self.rule.case_blind() {
            name.to_lowercase()
        } else {
            name.to_string()
        }
    }

    /// The local path (`/`-separated) of network path `path`.
    pub fn local_path(&mut self, path: &str) -> String {
        let mut local = String::new();
        let mut network = String::new();
        for component in path.split('/') {
            if !network.is_empty() {
                network.push('/');
            }
            network.push_str(component);
            let name = match self.mapped.get(&network) {
                Some(full) => full.rsplit('/').next().unwrap_or_default().to_string(),
                None => {
                    let base = names::local_name(component, self.rule);
                    let mut n = 0;
                    let name = loop {
                        let candidate = names::numbered(&base, n, false);
                        let folded = self.fold(&candidate);
                        let taken = self.taken.entry(local.clone()).or_default();
                        if taken.insert(folded) {
                            break candidate;
                        }
                        n += 1;
                    };
                    let full = if local.is_empty() {
                        name.clone()
                    } else {
                        format!("{local}/{name}")
                    };
                    self.mapped.insert(network.clone(), full);
                    name
                }
            };
            if !local.is_empty() {
                local.push('/');
            }
            local.push_str(&name);
        }
        local
    }
}

/// A bitfield of done units, as persisted: bit `i % 8` of byte `i / 8` is unit `i`.
pub fn bitfield(done: impl Iterator<Item = bool>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, d) in done.enumerate() {
        if i % 8 == 0 {
            out.push(0);
        }
        if d {
            *out.last_mut().expect("bug: pushed") |= 1 << (i % 8);
        }
    }
    out
}

/// Reads a persisted bitfield back for `units` units (missing bits are not done).
pub fn from_bitfield(bits: &[u8], units: usize) -> Vec<bool> {
    (0..units).map(|i| bit(bits, i)).collect()
}

/// Whether unit `i` is set in the bitfield `bits` (false past its end).
pub fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::pieces::FileHash;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    #[test]
    fn a_file_plan_verifies_each_piece_and_refuses_a_foreign_piece_list() {
        let layout = Layout::for_len(3 * 262_144 + 17);
        let bytes = data(layout.len() as usize, 1);
        let hash = FileHash::of_bytes(layout, &bytes);
        let plan = Plan::file(hash.id.into(), layout.len(), &hash.pieces_bytes()).unwrap();
        assert_eq!(plan.unit_lens, [262_144, 262_144, 262_144, 17]);
        for u in 0..4 {
            let r = plan.unit(u);
            let piece = &bytes[r.offset as usize..(r.offset + r.len) as usize];
            assert!(plan.verify(u, piece));
            let mut bad = piece.to_vec();
            bad[0] ^= 1;
            assert!(!plan.verify(u, &bad));
        }
        let other = FileHash::of_bytes(layout, &data(layout.len() as usize, 2));
        assert_eq!(
            Plan::file(hash.id.into(), layout.len(), &other.pieces_bytes()).unwrap_err(),
            PlanError::BadPieces
        );
        assert_eq!(
            Plan::file(hash.id.into(), layout.len(), &[0; 31]).unwrap_err(),
            PlanError::BadPieces
        );
    }

    #[test]
    fn interesting_sizes_make_the_right_units() {
        for len in [0u64, 1, 1023, 1024, 262_143, 262_144, 262_145, 2 * 262_144] {
            let bytes = data(len as usize, 3);
            let hash = FileHash::of_bytes(Layout::for_len(len), &bytes);
            let plan = Plan::file(hash.id.into(), len, &hash.pieces_bytes()).unwrap();
            assert_eq!(plan.total_bytes(), len, "len {len}");
            assert_eq!(plan.unit_lens.len() as u64, Layout::for_len(len).count());
            let mut at = 0;
            for u in 0..plan.unit_lens.len() {
                let r = plan.unit(u);
                assert_eq!(r.offset, at);
                assert!(plan.verify(u, &bytes[at as usize..(at + r.len) as usize]));
                at += r.len;
            }
        }
    }

    #[test]
    fn a_dir_plan_fetches_identical_contents_once_and_keeps_empty_dirs() {
        let same = data(10, 4);
        let id = blake3::hash(&same);
        let mut entries = vec![
            manifest::Entry {
                path: "a".into(),
                kind: Kind::Dir,
                size: 0,
                id: None,
            },
            manifest::Entry {
                path: "a/x".into(),
                kind: Kind::File,
                size: 10,
                id: Some(id.into()),
            },
            manifest::Entry {
                path: "b y".into(),
                kind: Kind::File,
                size: 10,
                id: Some(id.into()),
            },
            manifest::Entry {
                path: "empty".into(),
                kind: Kind::Dir,
                size: 0,
                id: None,
            },
        ];
        let encoded = manifest::encode(&mut entries);
        let plan = Plan::dir(manifest::id_of(&encoded), &encoded).unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].paths, ["a/x", "b y"]);
        assert_eq!(plan.dirs, ["a", "empty"]);
        assert!(plan.verify(0, &same));
        assert_eq!(
            Plan::dir(blake3::hash(b"other").into(), &encoded).unwrap_err(),
            PlanError::BadManifestId
        );
    }

    #[test]
    fn a_manifest_with_unsafe_paths_makes_no_plan() {
        for path in ["../evil", "/etc/passwd", "a/../../b", "a\0b", "a//b", "x/"] {
            let mut raw = manifest::MAGIC.to_vec();
            raw.extend_from_slice(&(path.len() as u32).to_le_bytes());
            raw.extend_from_slice(path.as_bytes());
            raw.push(0);
            raw.extend_from_slice(&1u64.to_le_bytes());
            raw.extend_from_slice(blake3::hash(b"x").as_bytes());
            let err = Plan::dir(manifest::id_of(&raw), &raw).unwrap_err();
            assert!(
                matches!(err, PlanError::BadManifest(_)),
                "{path:?}: {err:?}"
            );
        }
    }

    #[test]
    fn bitfields_round_trip() {
        let done = [true, false, true, true, false, false, false, false, true];
        let bits = bitfield(done.iter().copied());
        assert_eq!(bits, [0b0000_1101, 0b1]);
        assert_eq!(from_bitfield(&bits, 9), done);
        assert_eq!(from_bitfield(&[], 3), [false; 3]);
    }

    #[test]
    fn local_names_never_collide_in_a_folder() {
        let mut names = LocalNames::new(NameRule::Windows);
        assert_eq!(names.local_path("d:x/A.txt"), "d\u{F03A}x/A.txt");
        assert_eq!(names.local_path("d:x/a.txt"), "d\u{F03A}x/a (1).txt");
        assert_eq!(names.local_path("d:x/q?"), "d\u{F03A}x/q\u{F03F}");
        assert_eq!(
            names.local_path("d:x/q\u{F03F}"),
            "d\u{F03A}x/q\u{F03F} (1)"
        );
        assert_eq!(names.local_path("d\u{F03A}x/A.txt"), "d\u{F03A}x (1)/A.txt");
        assert_eq!(names.local_path("d:x/A.txt"), "d\u{F03A}x/A.txt", "stable");
        let mut unix = LocalNames::new(NameRule::Unix);
        assert_eq!(unix.local_path("d/A.txt"), "d/A.txt");
        assert_eq!(unix.local_path("d/a.txt"), "d/a.txt");
    }

    #[test]
    fn a_manifest_with_unstorable_names_makes_a_mapped_plan() {
        let mut entries: Vec<manifest::Entry> =
            ["CON", "Song: Title.txt", "what?.txt", "trailing."]
                .iter()
                .enumerate()
                .map(|(i, p)| manifest::Entry {
                    path: p.to_string(),
                    kind: Kind::File,
                    size: 10 + i as u64,
                    id: Some(blake3::hash(p.as_bytes()).into()),
                })
                .collect();
        let encoded = manifest::encode(&mut entries);
        let id = manifest::id_of(&encoded);
        let unix = Plan::dir_with_rule(id, &encoded, NameRule::Unix).unwrap();
        let mut paths: Vec<_> = unix.files.iter().map(|f| f.paths[0].clone()).collect();
        paths.sort();
        assert_eq!(paths, ["CON", "Song: Title.txt", "trailing.", "what?.txt"]);
        let win = Plan::dir_with_rule(id, &encoded, NameRule::Windows).unwrap();
        let mut paths: Vec<_> = win.files.iter().map(|f| f.paths[0].clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "Song\u{F03A} Title.txt",
                "trailing\u{F02E}",
                "what\u{F03F}.txt",
                "\u{F043}ON"
            ]
        );
    }
}
