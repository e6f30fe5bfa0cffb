//! The leader index's tests: ranking, holders, paging, limits, snapshots, locate, and a
//! randomised comparison with a reference that scores every record on its own.

use fuzzy_matcher::FuzzyMatcher;
use rand::{rngs::SmallRng, RngExt, SeedableRng};

use super::{
    arena::{hash_id, Record},
    rank::{Class, Parsed, LIVE_BIT},
    search::Cand,
    *,
};

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
    index
        .upsert(peer(1), Collection::Shared, entries)
        .expect("within limits");
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
        // Accents and case fold both ways.
        (
            &["Café Müller/01 Vollmond.flac", "cafeteria.txt"],
            "cafe muller",
            &["Café Müller/01 Vollmond.flac"],
        ),
        (&["Cafe Muller.txt"], "CAFÉ", &["Cafe Muller.txt"]),
        (&["Straße.pdf", "strand.pdf"], "strasse", &["Straße.pdf"]),
        // An album's tracks found by its folder come in track order, not by title length.
        (
            &[
                "Queen - Greatest Hits/10 Bicycle Race.flac",
                "Queen - Greatest Hits/02 Under Pressure.flac",
                "Queen - Greatest Hits/1 Bohemian Rhapsody.flac",
                "Queen - Greatest Hits/03 Killer.flac",
            ],
            "greatest hits",
            &[
                "Queen - Greatest Hits/1 Bohemian Rhapsody.flac",
                "Queen - Greatest Hits/02 Under Pressure.flac",
                "Queen - Greatest Hits/03 Killer.flac",
                "Queen - Greatest Hits/10 Bicycle Race.flac",
            ],
        ),
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
fn natural_order_compares_numbers_by_value_and_is_total() {
    use super::rank::natural_cmp;
    use std::cmp::Ordering::*;
    for (a, b, want) in [
        ("track 2", "track 10", Less),
        ("track 02", "track 2", Less),
        ("a/9/x", "a/10/x", Less),
        ("b", "a10", Greater),
        ("x1y", "x1", Greater),
        ("same", "same", Equal),
    ] {
        assert_eq!(natural_cmp(a, b), want, "{a} vs {b}");
        assert_eq!(natural_cmp(b, a), want.reverse(), "{b} vs {a}");
    }
    // Sorting random names with it never meets an inconsistency (std's sort checks).
    let mut rng = SmallRng::seed_from_u64(7);
    let mut names: Vec<String> = (0..2000)
        .map(|_| {
            (0..rng.random_range(0..6))
                .map(|_| ['0', '1', '9', 'a', '/', ':', ' '][rng.random_range(0..7)])
                .collect()
        })
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    for w in names.windows(2) {
        assert_ne!(natural_cmp(&w[0], &w[1]), Greater, "{w:?}");
    }
}

#[test]
fn typo_pass_runs_only_when_nothing_matched_as_a_subsequence() {
    let mut index = index_of(&["batman.mkv", "bataman.mkv"]);
    assert_eq!(
        tiers(&index, "btaman"),
        vec![("bataman.mkv".to_string(), Some(Tier::Fuzzy))]
    );
    index.remove(peer(1), Collection::Shared, &["bataman.mkv".to_string()]);
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
        .upsert(
            a,
            Collection::Shared,
            vec![e("movies/batman.mkv", 7), e("other.txt", 1)],
        )
        .expect("ok");
    index
        .upsert(
            b,
            Collection::Shared,
            vec![e("copy/batman.mkv", 7), e("films/batman.mkv", 7)],
        )
        .expect("ok");
    index
        .upsert(
            c,
            Collection::Shared,
            vec![e("x/the batman.mkv", 7), e("batman2.mkv", 2)],
        )
        .expect("ok");
    let results = index.search(&Query::new("batman"));
    assert_eq!(results.total, 2);
    assert_eq!(results.hits.len(), 2);
    let row = &results.hits[0];
    assert_eq!(row.id, Id(shared));
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
        .upsert(peer(1), Collection::Shared, vec![file("a/song.mp3", 1)])
        .expect("ok");
    index
        .upsert(peer(1), Collection::Shared, vec![file("b/song.mp3", 2)])
        .expect("ok");
    index
        .upsert(peer(2), Collection::Shared, vec![file("c/song.mp3", 2)])
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
        .upsert(
            peer(1),
            Collection::Shared,
            vec![file("a", 1), file("b", 2)],
        )
        .expect("ok");
    assert_eq!(
        index.upsert(
            peer(1),
            Collection::Shared,
            vec![file("c", 3), file("d", 4), file("a", 5)]
        ),
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
        .upsert(
            peer(1),
            Collection::Shared,
            vec![file("a", 6), file("c", 3), file("c", 8)],
        )
        .expect("ok");
    assert_eq!(index.peer_len(&peer(1)), 3);
    assert_eq!(index.search(&Query::new("c")).hits[0].size, 8);
    index
        .upsert(
            peer(2),
            Collection::Shared,
            vec![file("x", 1), file("y", 2)],
        )
        .expect("ok");
    // The index is full. A small node makes room by dropping the largest one (peer 1, 3).
    index
        .upsert(peer(3), Collection::Shared, vec![file("z", 9)])
        .expect("room made");
    assert_eq!(index.take_evicted(), vec![(peer(1), 3)]);
    assert_eq!(index.take_evicted(), vec![], "reported once");
    assert_eq!(index.peer_len(&peer(1)), 0);
    assert_eq!((index.peers(), index.len()), (2, 3));
    // The dropped node cannot come back by pushing out a smaller one: refused, nothing applied.
    assert_eq!(
        index.upsert(
            peer(1),
            Collection::Shared,
            vec![file("a", 1), file("b", 2), file("c", 3)]
        ),
        Err(LimitError::TooMany {
            entries: 6,
            limit: 5
        })
    );
    assert_eq!(index.take_evicted(), vec![]);
    assert_eq!((index.peers(), index.len()), (2, 3));
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
            Collection::Shared,
            vec![file("keep.txt", 1), file("gone.txt", 2), file("old.txt", 3)],
        )
        .expect("ok");
    index
        .upsert(peer(2), Collection::Shared, vec![file("gone.txt", 2)])
        .expect("ok");
    index.begin_snapshot(p, Collection::Shared);
    index
        .upsert(p, Collection::Shared, vec![file("keep.txt", 1)])
        .expect("ok");
    // Old entries stay searchable during the snapshot.
    assert_eq!(paths(&index, "old"), ["old.txt"]);
    // Restarting forgets what the aborted snapshot sent.
    index.begin_snapshot(p, Collection::Shared);
    index
        .upsert(
            p,
            Collection::Shared,
            vec![file("keep.txt", 1), file("new.txt", 4)],
        )
        .expect("ok");
    assert_eq!(index.finish_snapshot(p, Collection::Shared), 2);
    assert_eq!(index.finish_snapshot(p, Collection::Shared), 0);
    assert_eq!(index.peer_len(&p), 2);
    assert!(paths(&index, "old").is_empty());
    let gone = index.search(&Query::new("gone"));
    assert_eq!(
        gone.hits[0].holders,
        vec![(peer(2), "gone.txt".to_string())]
    );
    // An empty snapshot empties the peer.
    index.begin_snapshot(p, Collection::Shared);
    assert_eq!(index.finish_snapshot(p, Collection::Shared), 2);
    assert_eq!(index.peer_len(&p), 0);
    assert_eq!(index.peers(), 1);
    assert_eq!(index.finish_snapshot(peer(9), Collection::Shared), 0);
}

#[test]
fn a_peers_two_collections_are_synced_apart_and_hold_an_id_once() {
    let mut index = NetworkIndex::new(Limits::default());
    let (p, d) = (peer(1), Collection::Downloads);
    index
        .upsert(
            p,
            Collection::Shared,
            vec![file("song.flac", 1), file("a.txt", 2)],
        )
        .expect("ok");
    // The same path in the other collection is another entry.
    index
        .upsert(p, d, vec![file("song.flac", 1), file("got.mkv", 3)])
        .expect("ok");
    assert_eq!(index.peer_len(&p), 4);
    // One peer holding an id in both collections is one holder.
    let hit = &index.search(&Query::new("song")).hits[0];
    assert_eq!(hit.holder_count, 1);
    // A snapshot of the downloads leaves the shared folder's entries alone, and the reverse.
    index.begin_snapshot(p, d);
    index.upsert(p, d, vec![file("got.mkv", 3)]).expect("ok");
    assert_eq!(index.finish_snapshot(p, d), 1);
    assert_eq!(paths(&index, "song"), ["song.flac"]);
    assert_eq!(index.peer_len(&p), 3);
    index.begin_snapshot(p, Collection::Shared);
    assert_eq!(index.finish_snapshot(p, Collection::Shared), 2);
    assert_eq!(paths(&index, "got"), ["got.mkv"]);
    // A removal names its collection.
    index.remove(p, Collection::Shared, &["got.mkv".to_string()]);
    assert_eq!(index.peer_len(&p), 1);
    index.remove(p, d, &["got.mkv".to_string()]);
    assert_eq!(index.peer_len(&p), 0);
    assert_eq!(index.peers(), 0);
}

#[test]
fn a_peer_cannot_remove_another_peers_entries() {
    let mut index = NetworkIndex::new(Limits::default());
    index
        .upsert(peer(1), Collection::Shared, vec![file("mine.txt", 1)])
        .expect("ok");
    index
        .upsert(peer(2), Collection::Shared, vec![file("theirs.txt", 2)])
        .expect("ok");
    index.remove(
        peer(2),
        Collection::Shared,
        &["mine.txt".to_string(), "nope".to_string()],
    );
    index.remove(peer(3), Collection::Shared, &["mine.txt".to_string()]);
    assert_eq!(paths(&index, "mine"), ["mine.txt"]);
    index.remove(peer(2), Collection::Shared, &["theirs.txt".to_string()]);
    assert!(paths(&index, "theirs").is_empty());
    assert_eq!(index.len(), 1);
    assert_eq!(index.peers(), 1);
    assert_eq!(index.remove_peer(&peer(2)), 0);
}

#[test]
fn replacing_an_entry_moves_it_to_its_new_id() {
    let mut index = NetworkIndex::new(Limits::default());
    index
        .upsert(peer(1), Collection::Shared, vec![file("a.txt", 1)])
        .expect("ok");
    index
        .upsert(peer(1), Collection::Shared, vec![file("a.txt", 2)])
        .expect("ok");
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
    index
        .upsert(peer(1), Collection::Shared, vec![root])
        .expect("ok");
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
    index
        .upsert(peer(1), Collection::Shared, entries)
        .expect("ok");
    index
        .upsert(peer(2), Collection::Shared, vec![file("copy", 5)])
        .expect("ok");
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
            .all(|h| hex(&h.id.0).starts_with(&prefix.to_lowercase())));
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
        .upsert(
            peer(1),
            Collection::Shared,
            vec![dir, file("music/Queen/queen.flac", 2)],
        )
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
    index
        .upsert(peer(1), Collection::Shared, entries)
        .expect("ok");
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
        index
            .upsert(peer(1), Collection::Shared, entries)
            .expect("ok");
        index
            .upsert(peer(2), Collection::Shared, vec![file("f1", 1)])
            .expect("ok");
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

/// rand's small seeded generator, for the randomised tests.
struct Rng(SmallRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SmallRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
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
        assert_eq!(index.find_path(r.peer, r.coll, r.path()), Some(i as u32));
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
    let mut rng = Rng::new(7);
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
                index.begin_snapshot(peer(p), Collection::Shared);
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
            index
                .upsert(peer(p), Collection::Shared, entries)
                .expect("within limits");
            let gone: Vec<String> = (0..100).map(|_| random_path(&mut rng)).collect();
            index.remove(peer(p), Collection::Shared, &gone);
            if round == 4 && p == 2 {
                index.finish_snapshot(peer(p), Collection::Shared);
            }
        }
    }
    assert!(index.len() > 3 * MIN_CHUNK);
    check_invariants(&index);
    let queries = [
        "ab", "a", "abc", "cab dab", "bad", "b c", "ab/cd", "abcd", "dcba", "ab.txt", "a b c d",
        "cabd", "xyz", "abcabc", "dab_ab",
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
    index.begin_snapshot(peer(1), Collection::Shared);
    assert!(index.finish_snapshot(peer(1), Collection::Shared) > 0);
    check_invariants(&index);
    let q = Query::new("cab");
    assert_eq!(index.search(&q), reference(&index, &q));
}
