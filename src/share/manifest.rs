//! Directory manifests and directory ids.
//!
//! A directory's manifest lists every entry below it (files and directories, empty ones
//! included, at any depth), and its id is the BLAKE3 hash of the manifest's canonical
//! encoding, so the same tree has the same id on every machine. Encoding (all integers little
//! endian):
//!
//! ```text
//! manifest := MAGIC entry*            MAGIC = "iwant/manifest/1\n" (17 bytes)
//! entry    := path_len:u32 path:[u8; path_len] kind:u8 size:u64 id:[u8; 32]
//! ```
//!
//! `path` is relative to the directory, UTF-8, with `/` between components; entries are sorted
//! by the bytes of `path` and appear once each. `kind` is 0 for a file, 1 for a directory. A
//! file's `size` is its length and `id` its BLAKE3 hash; a directory's `size` and `id` are 0.

use iwant_behaviours::id::Id;

/// The first bytes of every manifest.
pub const MAGIC: &[u8] = b"iwant/manifest/1\n";

/// The longest path a manifest may hold, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// What a manifest entry is: the one [`iwant_behaviours::wire::Kind`] of iwant.
pub use iwant_behaviours::wire::Kind;

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the manifest's directory, `/`-separated.
    pub path: String,
    /// File or directory.
    pub kind: Kind,
    /// File length; 0 for directories.
    pub size: u64,
    /// File id; `None` for directories.
    pub id: Option<Id>,
}

/// Encodes entries (sorted here; the caller need not) as a manifest.
pub fn encode(entries: &mut [Entry]) -> Vec<u8> {
    entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut out =
        Vec::with_capacity(MAGIC.len() + entries.iter().map(|e| e.path.len() + 45).sum::<usize>());
    out.extend_from_slice(MAGIC);
    for e in entries.iter() {
        out.extend_from_slice(&(e.path.len() as u32).to_le_bytes());
        out.extend_from_slice(e.path.as_bytes());
        out.push(match e.kind {
            Kind::File => 0,
            Kind::Dir => 1,
        });
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(e.id.as_ref().map(|h| h.as_bytes()).unwrap_or(&[0; 32]));
    }
    out
}

/// The id of the directory whose manifest is `encoded`.
pub fn id_of(encoded: &[u8]) -> Id {
    Id::of(encoded)
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// It does not start with [`MAGIC`].
    #[error("not an iwant manifest")]
    BadMagic,
    /// It ends inside an entry.
    #[error("manifest truncated")]
    Truncated,
    /// It holds more entries than allowed.
    #[error("manifest has more than {0} entries")]
    TooManyEntries(usize),
    /// A path is unsafe, too long, not UTF-8, or out of order.
    #[error("manifest path {path:?} refused: {reason}")]
    BadPath {
        /// The path, lossily decoded.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// An entry has an unknown kind, or a directory with a size or id.
    #[error("manifest entry {0:?} is malformed")]
    BadEntry(String),
}

/// Decodes a manifest received from anyone, refusing anything not in canonical form: at most
/// `max_entries` entries, safe relative paths (see [`check_relative_path`]), strictly sorted.
pub fn decode(bytes: &[u8], max_entries: usize) -> Result<Vec<Entry>, ManifestError> {
    let mut rest = bytes.strip_prefix(MAGIC).ok_or(ManifestError::BadMagic)?;
    let mut entries: Vec<Entry> = Vec::new();
    while !rest.is_empty() {
        if entries.len() == max_entries {
            return Err(ManifestError::TooManyEntries(max_entries));
        }
        let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, ManifestError> {
            if rest.len() < n {
                return Err(ManifestError::Truncated);
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head.to_vec())
        };
        let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().expect("4 bytes")) as usize;
        if len > MAX_PATH_LEN {
            return Err(ManifestError::BadPath {
                path: String::new(),
                reason: "longer than 4096 bytes",
            });
        }
        let raw = take(&mut rest, len)?;
        let path = String::from_utf8(raw).map_err(|e| ManifestError::BadPath {
            path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            reason: "not UTF-8",
        })?;
        check_relative_path(&path).map_err(|reason| ManifestError::BadPath {
            path: path.clone(),
            reason,
        })?;
        if let Some(prev) = entries.last() {
            if prev.path.as_bytes() >= path.as_bytes() {
                return Err(ManifestError::BadPath {
                    path,
                    reason: "not sorted or repeated",
                });
            }
        }
        let kind = take(&mut rest, 1)?[0];
        let size = u64::from_le_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes"));
        let id: [u8; 32] = take(&mut rest, 32)?.try_into().expect("32 bytes");
        let entry = match kind {
            0 => Entry {
                path,
                kind: Kind::File,
                size,
                id: Some(Id(id)),
            },
            1 if size == 0 && id == [0; 32] => Entry {
                path,
                kind: Kind::Dir,
                size: 0,
                id: None,
            },
            _ => return Err(ManifestError::BadEntry(path)),
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// Checks that `path` is a safe relative path in the network format: non-empty `/`-separated
/// components, none empty, `.` or `..`, no NUL, at most [`MAX_PATH_LEN`] bytes. These are
/// unsafe everywhere; a name some platform merely cannot store (`CON`, `a:b`, `what?`) is
/// valid on the network and mapped by the downloader (`transfer::names::local_name`).
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("longer than 4096 bytes");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty component or absolute"),
            "." | ".." => return Err("`.` or `..` component"),
            _ => {}
        }
        if component.contains('\0') {
            return Err("NUL in a name");
        }
    }
    Ok(())
}

/// An index row as [`encode_below`] reads it (the node's store rows implement it; this file
/// stays free of the store, so the fuzz crate compiles it on its own).
pub trait IndexRow {
    /// The path relative to the share, `/`-separated.
    fn path(&self) -> &str;
    /// Whether it is a directory.
    fn is_dir(&self) -> bool;
    /// A file's length.
    fn size(&self) -> u64;
    /// A file's id.
    fn id(&self) -> Id;
}

/// The encoded manifest of directory `dir` ("" for the root), its total file bytes and file
/// count, from entries of the share sorted by path that hold at least everything below `dir`.
pub fn encode_below<R: IndexRow>(entries: &[R], dir: &str) -> (Vec<u8>, u64, u64) {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let start = entries.partition_point(|e| e.path() < prefix.as_str());
    let below = entries[start..]
        .iter()
        .take_while(|e| e.path().starts_with(&prefix));
    let mut manifest_entries = Vec::new();
    let (mut size, mut files) = (0, 0);
    for e in below {
        let path = e.path()[prefix.len()..].to_string();
        if e.is_dir() {
            manifest_entries.push(Entry {
                path,
                kind: Kind::Dir,
                size: 0,
                id: None,
            });
        } else {
            size += e.size();
            files += 1;
            manifest_entries.push(Entry {
                path,
                kind: Kind::File,
                size: e.size(),
                id: Some(e.id()),
            });
        }
    }
    (encode(&mut manifest_entries), size, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, fill: u8) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size,
            id: Some(Id([fill; 32])),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            size: 0,
            id: None,
        }
    }

    #[test]
    fn encoding_is_canonical_whatever_the_input_order() {
        let mut a = vec![file("b/x", 3, 1), dir("a"), file("b", 0, 2)];
        let mut b = vec![dir("a"), file("b", 0, 2), file("b/x", 3, 1)];
        assert_eq!(encode(&mut a), encode(&mut b));
        assert_eq!(id_of(&encode(&mut a)), id_of(&encode(&mut b)));
        let mut c = vec![dir("a"), file("b", 0, 2), file("b/x", 4, 1)];
        assert_ne!(
            id_of(&encode(&mut a)),
            id_of(&encode(&mut c)),
            "size is covered"
        );
    }

    #[test]
    fn encoding_matches_the_documented_bytes() {
        let mut entries = vec![file("a", 5, 7)];
        let bytes = encode(&mut entries);
        let mut expected = MAGIC.to_vec();
        expected.extend_from_slice(&[1, 0, 0, 0, b'a', 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(bytes, expected);
        assert_eq!(
            id_of(&encode(&mut Vec::new())),
            blake3::hash(MAGIC),
            "empty directory"
        );
    }

    #[test]
    fn decode_round_trips_and_refuses_hostile_manifests() {
        let mut entries = vec![dir("d"), file("d/f", 10, 3), file("e", 1, 4)];
        let bytes = encode(&mut entries);
        assert_eq!(decode(&bytes, 10).unwrap(), entries);
        assert_eq!(decode(&bytes, 2), Err(ManifestError::TooManyEntries(2)));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1], 10),
            Err(ManifestError::Truncated)
        );
        assert_eq!(decode(b"nope", 10), Err(ManifestError::BadMagic));
        for bad in ["../x", "/abs", "a//b", "a/./b", "a/", "a/..", "a\u{0}b", ""] {
            let mut e = vec![file(bad, 1, 1)];
            let bytes = encode(&mut e);
            assert!(
                matches!(decode(&bytes, 10), Err(ManifestError::BadPath { .. })),
                "{bad:?}"
            );
        }
        // Out of order or repeated.
        let mut twice = MAGIC.to_vec();
        for _ in 0..2 {
            twice.extend_from_slice(&encode(&mut [file("a", 1, 1)])[MAGIC.len()..]);
        }
        assert!(matches!(
            decode(&twice, 10),
            Err(ManifestError::BadPath { .. })
        ));
        // A huge declared path length is refused before anything is allocated.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&huge, 10),
            Err(ManifestError::BadPath { .. })
        ));
    }

    #[test]
    fn ordinary_names_are_safe() {
        for ok in [
            "a",
            "a/b c/d.txt",
            "über/日本.md",
            ".hidden",
            "console/x",
            "COM10",
            // Unstorable on some platform, but safe: the downloader maps them.
            "C:/x",
            "a\\b",
            "nul",
            "COM1.txt",
            "x.",
            "Song: Title.txt",
            "tab\tname",
        ] {
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
        }
    }

    /// `bytes` as a manifest of `entries` (in their order, not sorted), for hostile variants.
    fn raw(entries: &[(&[u8], u8, u64, [u8; 32])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (path, kind, size, id) in entries {
            out.extend((path.len() as u32).to_le_bytes());
            out.extend(*path);
            out.push(*kind);
            out.extend(size.to_le_bytes());
            out.extend(id);
        }
        out
    }

    /// What a decoded manifest keeps in memory: the entry vector and the paths.
    fn retained(entries: &[Entry], capacity: usize) -> usize {
        capacity * std::mem::size_of::<Entry>()
            + entries.iter().map(|e| e.path.capacity()).sum::<usize>()
    }

    /// The fixed part of an entry on the wire: length, kind, size, id.
    const ENTRY_FIXED: usize = 4 + 1 + 8 + 32;

    #[test]
    fn hostile_lengths_kinds_and_limits_are_refused() {
        let id = [5u8; 32];
        // Paths at and just over the limit, with their bytes present.
        let at = "a".repeat(MAX_PATH_LEN);
        assert_eq!(
            decode(&raw(&[(at.as_bytes(), 0, 1, id)]), 10).unwrap()[0].path,
            at
        );
        let over = "a".repeat(MAX_PATH_LEN + 1);
        assert!(matches!(
            decode(&raw(&[(over.as_bytes(), 0, 1, id)]), 10),
            Err(ManifestError::BadPath { .. })
        ));
        // Declared lengths with little or nothing behind them.
        for len in [MAX_PATH_LEN as u32 + 1, 1 << 31, u32::MAX] {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(len.to_le_bytes());
            bytes.extend(b"abc");
            assert!(
                matches!(decode(&bytes, 10), Err(ManifestError::BadPath { .. })),
                "{len}"
            );
        }
        for len in [5u32, MAX_PATH_LEN as u32] {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(len.to_le_bytes());
            bytes.extend(b"abc");
            assert_eq!(decode(&bytes, 10), Err(ManifestError::Truncated), "{len}");
        }
        // Unknown kinds; directories with a size or an id.
        for kind in 2..=255u8 {
            assert!(matches!(
                decode(&raw(&[(b"a", kind, 0, [0; 32])]), 10),
                Err(ManifestError::BadEntry(_))
            ));
        }
        assert!(matches!(
            decode(&raw(&[(b"d", 1, 1, [0; 32])]), 10),
            Err(ManifestError::BadEntry(_))
        ));
        assert!(matches!(
            decode(&raw(&[(b"d", 1, 0, id)]), 10),
            Err(ManifestError::BadEntry(_))
        ));
        // A file may have any size and id, including the largest.
        let big = decode(&raw(&[(b"f", 0, u64::MAX, [0xff; 32])]), 10).unwrap();
        assert_eq!(big[0].size, u64::MAX);
        // Not UTF-8; an empty path; out of order.
        for path in [&b"\xff\xfe"[..], b"a/\xc0\x80", b""] {
            assert!(matches!(
                decode(&raw(&[(path, 0, 1, id)]), 10),
                Err(ManifestError::BadPath { .. })
            ));
        }
        assert!(matches!(
            decode(&raw(&[(b"b", 0, 1, id), (b"a", 0, 1, id)]), 10),
            Err(ManifestError::BadPath { .. })
        ));
        // The entry limit: exactly `max` entries decode, one more does not; 0 allows none.
        let many: Vec<String> = (0..100).map(|i| format!("f{i:03}")).collect();
        let entries: Vec<(&[u8], u8, u64, [u8; 32])> =
            many.iter().map(|p| (p.as_bytes(), 0, 1, id)).collect();
        let bytes = raw(&entries);
        assert_eq!(decode(&bytes, 100).unwrap().len(), 100);
        assert_eq!(decode(&bytes, 99), Err(ManifestError::TooManyEntries(99)));
        assert_eq!(decode(&bytes, 0), Err(ManifestError::TooManyEntries(0)));
        assert_eq!(decode(MAGIC, 0), Ok(vec![]));
        // Magic: any other first 17 bytes, or fewer.
        for cut in 0..MAGIC.len() {
            assert_eq!(decode(&MAGIC[..cut], 10), Err(ManifestError::BadMagic));
        }
        assert_eq!(
            decode(b"iwant/manifest/2\n", 10),
            Err(ManifestError::BadMagic)
        );
    }

    #[test]
    fn the_largest_manifests_keep_a_small_multiple_of_their_size() {
        // 65,536 of the shortest entries (directories with names of 1 to 4 hex digits):
        // 46 to 49 bytes each on the wire, a 72-byte `Entry` and the name in memory.
        let names: Vec<String> = (0..4 << 20 >> 6).map(|i| format!("{i:x}")).collect();
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let entries: Vec<(&[u8], u8, u64, [u8; 32])> = sorted
            .iter()
            .map(|p| (p.as_bytes(), 1, 0, [0; 32]))
            .collect();
        let bytes = raw(&entries);
        let decoded = decode(&bytes, usize::MAX).unwrap();
        assert_eq!(decoded.len(), names.len());
        let kept = retained(&decoded, decoded.capacity());
        assert!(kept <= 4 * bytes.len(), "{kept} bytes for {}", bytes.len());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::{raw, retained, ENTRY_FIXED};

        /// A path that [`check_relative_path`] accepts, with characters from every class it
        /// allows.
        fn safe_path() -> impl Strategy<Value = String> {
            prop::collection::vec(
                "[a-zA-Z0-9_\\-]([a-zA-Z0-9_ .\\-äé日本🦀]{0,10}[a-z0-9])?",
                1..4,
            )
            .prop_map(|parts| parts.join("/"))
            .prop_filter("a safe path", |p| check_relative_path(p).is_ok())
        }

        fn entry() -> impl Strategy<Value = Entry> {
            prop_oneof![
                (any::<u64>(), any::<[u8; 32]>()).prop_map(|(size, id)| (
                    Kind::File,
                    size,
                    Some(Id(id))
                )),
                Just((Kind::Dir, 0, None)),
            ]
            .prop_flat_map(|(kind, size, id)| {
                safe_path().prop_map(move |path| Entry {
                    path,
                    kind,
                    size,
                    id,
                })
            })
        }

        fn manifest() -> impl Strategy<Value = Vec<Entry>> {
            prop::collection::vec(entry(), 0..12).prop_map(|mut entries| {
                entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
                entries.dedup_by(|a, b| a.path == b.path);
                entries
            })
        }

        /// Any bytes, bytes after the magic, and valid manifests with a few bytes changed.
        fn input() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                prop::collection::vec(any::<u8>(), 0..300)
                    .prop_map(|tail| [MAGIC, &tail[..]].concat()),
                (
                    manifest(),
                    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                    any::<prop::sample::Index>()
                )
                    .prop_map(|(mut entries, edits, cut)| {
                        let mut bytes = encode(&mut entries);
                        for (i, b) in edits {
                            let i = i.index(bytes.len());
                            bytes[i] = b;
                        }
                        let keep = bytes.len() - cut.index(bytes.len()) / 8;
                        bytes.truncate(keep);
                        bytes
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Anything decodes to an error or to a manifest whose canonical encoding is the
            /// input itself (the decoder accepts only canonical manifests), within the entry
            /// limit and keeping a small multiple of the input in memory.
            #[test]
            fn arbitrary_bytes_decode_to_errors_or_canonical_manifests(bytes in input(), max in 0usize..16) {
                match decode(&bytes, max) {
                    Ok(mut entries) => {
                        prop_assert!(entries.len() <= max);
                        prop_assert!(retained(&entries, entries.capacity()) <= 4 * bytes.len() + 4096);
                        for e in &entries {
                            prop_assert!(check_relative_path(&e.path).is_ok());
                        }
                        prop_assert_eq!(encode(&mut entries), bytes);
                    }
                    Err(ManifestError::BadMagic) => prop_assert!(!bytes.starts_with(MAGIC)),
                    Err(_) => prop_assert!(bytes.starts_with(MAGIC)),
                }
            }

            /// Valid manifests round-trip; cut anywhere, they are refused as truncated, except
            /// at an entry boundary, where they are the shorter manifest (the id, checked
            /// before decoding, is what tells it from the whole).
            #[test]
            fn manifests_round_trip_and_truncations_are_refused(mut entries in manifest()) {
                let bytes = encode(&mut entries);
                prop_assert_eq!(&decode(&bytes, entries.len()).unwrap(), &entries);
                let mut boundaries = vec![MAGIC.len()];
                for e in &entries {
                    boundaries.push(boundaries.last().unwrap() + ENTRY_FIXED + e.path.len());
                }
                prop_assert_eq!(*boundaries.last().unwrap(), bytes.len());
                for cut in 0..bytes.len() {
                    let got = decode(&bytes[..cut], usize::MAX);
                    if cut < MAGIC.len() {
                        prop_assert_eq!(got, Err(ManifestError::BadMagic));
                    } else if let Some(k) = boundaries.iter().position(|b| *b == cut) {
                        prop_assert_eq!(&got.unwrap()[..], &entries[..k]);
                    } else {
                        prop_assert_eq!(got, Err(ManifestError::Truncated), "cut at {}", cut);
                    }
                }
            }

            /// Raw entries with any path bytes, kind, size and id: accepted exactly when the
            /// path is safe and the kind is a file, or a directory with size and id zero.
            #[test]
            fn raw_entries_are_accepted_exactly_when_valid(
                path in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..12),
                    safe_path().prop_map(String::into_bytes),
                ],
                kind in prop_oneof![0u8..=2, any::<u8>()],
                size in prop_oneof![Just(0u64), any::<u64>()],
                id in prop_oneof![Just([0u8; 32]), any::<[u8; 32]>()],
            ) {
                let valid_path = std::str::from_utf8(&path).is_ok_and(|p| check_relative_path(p).is_ok());
                let valid_entry = kind == 0 || (kind == 1 && size == 0 && id == [0; 32]);
                let got = decode(&raw(&[(&path, kind, size, id)]), 1);
                prop_assert_eq!(got.is_ok(), valid_path && valid_entry, "{:?}", got);
                if !valid_path {
                    let is_bad_path = matches!(got, Err(ManifestError::BadPath { .. }));
                    prop_assert!(is_bad_path);
                }
            }
        }
    }
}
