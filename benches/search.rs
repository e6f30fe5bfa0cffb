//! Search benchmark of the leader's network index: prints a table; results go to
//! docs/benchmarks.md.
//!
//! `cargo bench --bench search` (release build). Builds indexes of 100,000 and 1,000,000
//! synthetic entries (music, photos, source code, films, documents; directories too; a fifth of
//! the content held by several of the 5 peers) and times ~200 queries per class. Sizes can be
//! chosen with `IWANT_BENCH_SIZES=100000,1000000`.

use std::time::{Duration, Instant};

use iwant::leader::index::{Collection, Entry, Kind, Limits, NetworkIndex, Query, Tier};
use libp2p::PeerId;
use rand::{rngs::SmallRng, RngExt, SeedableRng};

const PEERS: usize = 5;
const QUERIES_PER_CLASS: usize = 200;
/// Entries per `upsert` call, about what one index message carries.
const BATCH: usize = 10_000;

const ARTIST_FIRST: &[&str] = &[
    "Aurora", "Black", "Blue", "Crystal", "Daft", "Electric", "Foo", "Golden", "Iron", "Kings",
    "Lana", "Massive", "Neon", "Pink", "Queens", "Radio", "Silver", "Sonic", "Talking", "Arctic",
    "Royal", "Velvet", "White", "Wild", "Young", "Deep", "Cold", "Bright", "Stone", "Early",
    "Grand", "Little", "Modern", "Northern", "Quiet", "Red", "Saint", "Twin",
];
const ARTIST_LAST: &[&str] = &[
    "Monkeys",
    "Keys",
    "Punk",
    "Fighters",
    "Maiden",
    "Leon",
    "Attack",
    "Floyd",
    "Stone Age",
    "Head",
    "Youth",
    "Heads",
    "Stripes",
    "Underground",
    "Moons",
    "Orchestra",
    "Collective",
    "Brothers",
    "Sisters",
    "Machine",
    "Garden",
    "Parade",
    "Horses",
    "Division",
    "Republic",
    "Society",
    "Ensemble",
    "Lights",
    "Rivers",
    "Mountains",
    "Harbour",
    "Engine",
];
const TITLE_WORDS: &[&str] = &[
    "love",
    "night",
    "river",
    "moon",
    "summer",
    "dance",
    "heart",
    "light",
    "dream",
    "fire",
    "ocean",
    "road",
    "rain",
    "city",
    "shadow",
    "golden",
    "lonely",
    "midnight",
    "morning",
    "winter",
    "forever",
    "broken",
    "wild",
    "electric",
    "highway",
    "paradise",
    "secret",
    "thunder",
    "silence",
    "echo",
    "horizon",
    "garden",
    "mirror",
    "window",
    "island",
    "desert",
    "velvet",
    "crystal",
    "neon",
    "satellite",
    "memory",
    "letter",
    "stranger",
    "harbour",
    "kingdom",
    "station",
    "orbit",
    "canyon",
    "avalanche",
    "lantern",
    "meadow",
    "compass",
];
const PROJECTS: &[&str] = &[
    "iwant",
    "tokio",
    "serde",
    "hyper",
    "axum",
    "ripgrep",
    "bevy",
    "rocket",
    "diesel",
    "tauri",
    "wasmtime",
    "polars",
    "helix",
    "alacritty",
    "zola",
    "nushell",
    "deno",
    "starship",
    "sled",
    "quinn",
    "rustls",
    "clap",
    "rayon",
    "crossbeam",
    "regex",
    "libp2p",
    "iroh",
    "redb",
];
const CODE_WORDS: &[&str] = &[
    "net",
    "index",
    "store",
    "config",
    "error",
    "parser",
    "lexer",
    "codec",
    "server",
    "client",
    "handler",
    "protocol",
    "behaviour",
    "swarm",
    "transport",
    "runtime",
    "scheduler",
    "cache",
    "buffer",
    "reader",
    "writer",
    "stream",
    "frame",
    "message",
    "router",
    "service",
    "util",
    "state",
    "event",
    "timer",
    "queue",
    "worker",
    "pool",
    "table",
    "query",
    "plan",
    "hash",
];
const EXTS: &[&str] = &["rs", "rs", "rs", "toml", "md", "py", "c", "h", "go", "ts"];
const DOC_TOPICS: &[&str] = &[
    "taxes",
    "invoices",
    "contracts",
    "school",
    "recipes",
    "manuals",
    "travel",
    "health",
    "insurance",
    "letters",
    "reports",
    "work",
    "house",
    "car",
    "bank",
    "garden",
];
const DOC_WORDS: &[&str] = &[
    "annual",
    "report",
    "invoice",
    "contract",
    "summary",
    "notes",
    "minutes",
    "budget",
    "receipt",
    "statement",
    "proposal",
    "draft",
    "final",
    "review",
    "plan",
    "schedule",
    "application",
    "certificate",
    "policy",
    "manual",
    "guide",
    "checklist",
    "letter",
];

/// rand's small seeded generator: the same corpus for the same seed.
struct Rng(SmallRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SmallRng::seed_from_u64(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.random()
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn title(rng: &mut Rng, words: usize) -> String {
    let mut t = String::new();
    for i in 0..words {
        if i > 0 {
            t.push(' ');
        }
        let w = rng.pick(TITLE_WORDS);
        let mut chars = w.chars();
        if let Some(first) = chars.next() {
            t.extend(first.to_uppercase());
            t.push_str(chars.as_str());
        }
    }
    t
}

/// The path and size of content number `c`: the same content always has the same path.
fn content_path(c: u64) -> (String, u64) {
    let mut rng = Rng::new(c ^ 0x5eed);
    let size = 1 + rng.next() % 50_000_000;
    let path = match rng.below(100) {
        0..=34 => {
            let artist = format!("{} {}", rng.pick(ARTIST_FIRST), rng.pick(ARTIST_LAST));
            let words = 1 + rng.below(3);
            let album = title(&mut rng, words);
            let year = 1965 + rng.below(60);
            let track = 1 + rng.below(14);
            let words = 1 + rng.below(4);
            let song = title(&mut rng, words);
            let ext = if rng.chance(70) { "flac" } else { "mp3" };
            format!("music/{artist}/{album} ({year})/{track:02} - {song}.{ext}")
        }
        35..=59 => {
            let year = 2005 + rng.below(21);
            let month = 1 + rng.below(12);
            if rng.chance(60) {
                let n = rng.below(10_000);
                format!("photos/{year}/{year}-{month:02}/IMG_{n:04}.JPG")
            } else {
                let n = rng.below(100_000);
                format!("photos/{year}/{year}-{month:02}/DSC{n:05}.jpg")
            }
        }
        60..=84 => {
            let project = rng.pick(PROJECTS);
            let module = rng.pick(CODE_WORDS);
            let file = format!("{}_{}", rng.pick(CODE_WORDS), rng.pick(CODE_WORDS));
            let ext = rng.pick(EXTS);
            format!("src/{project}/{module}/{file}.{ext}")
        }
        85..=89 => {
            let words = 1 + rng.below(3);
            let film = title(&mut rng, words);
            let year = 1950 + rng.below(76);
            let ext = if rng.chance(80) { "mkv" } else { "mp4" };
            format!("films/{film} ({year})/{film} ({year}).{ext}")
        }
        _ => {
            let topic = rng.pick(DOC_TOPICS);
            let year = 2000 + rng.below(26);
            let a = rng.pick(DOC_WORDS);
            let b = rng.pick(DOC_WORDS);
            let v = 1 + rng.below(5);
            format!("documents/{topic}/{year}/{a} {b} v{v}.pdf")
        }
    };
    (path, size)
}

fn id_of(c: u64) -> [u8; 32] {
    *blake3::hash(&c.to_le_bytes()).as_bytes()
}

/// Entry `i` of peer `p`: a fifth shared with other peers (same id; most under the same
/// path, some under a backup path), one in ten a directory, the rest unique files.
fn entry(p: usize, i: u64, shared_pool: u64, rng: &mut Rng) -> Entry {
    let roll = rng.below(100);
    let (c, prefix) = match roll {
        0..=14 => ((1 << 62) | (rng.next() % shared_pool), ""),
        15..=19 => ((1 << 62) | (rng.next() % shared_pool), "backup/"),
        _ => (((p as u64 + 1) << 48) | i, ""),
    };
    let (path, size) = content_path(c);
    if roll >= 90 {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        let mut id = id_of(c);
        id[0] ^= 0xd1;
        return Entry {
            path: dir,
            kind: Kind::Dir,
            size: 0,
            id,
        };
    }
    Entry {
        path: format!("{prefix}{path}"),
        kind: Kind::File,
        size,
        id: id_of(c),
    }
}

/// CPU time used by the process so far, all threads together.
#[cfg(unix)]
fn cpu_time() -> Option<Duration> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    (rc == 0).then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

#[cfg(not(unix))]
fn cpu_time() -> Option<Duration> {
    None
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mb(kib: Option<u64>) -> String {
    kib.map_or("n/a".to_string(), |k| {
        format!("{:.0} MB", k as f64 / 1024.0)
    })
}

fn build(n: usize, peers: &[PeerId]) -> (NetworkIndex, Duration) {
    let mut index = NetworkIndex::new(Limits::default());
    let per_peer = n / peers.len();
    let shared_pool = (n / 20).max(1) as u64;
    let start = Instant::now();
    for (p, peer) in peers.iter().enumerate() {
        let mut rng = Rng::new(p as u64 + 1);
        let mut i = 0u64;
        index.begin_snapshot(*peer, Collection::Shared);
        // Paths that repeat within a peer replace each other; keep going to `per_peer`.
        while index.peer_len(peer) < per_peer {
            let missing = per_peer - index.peer_len(peer);
            let batch: Vec<Entry> = (0..missing.min(BATCH))
                .map(|_| {
                    i += 1;
                    entry(p, i, shared_pool, &mut rng)
                })
                .collect();
            index
                .upsert(*peer, Collection::Shared, batch)
                .expect("within limits");
        }
        index.finish_snapshot(*peer, Collection::Shared);
    }
    (index, start.elapsed())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Short,
    Word,
    TwoWords,
    Typo,
    NoMatch,
}

impl Class {
    const ALL: [Class; 5] = [
        Class::Short,
        Class::Word,
        Class::TwoWords,
        Class::Typo,
        Class::NoMatch,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Short => "short (2-3 letters)",
            Class::Word => "one word",
            Class::TwoWords => "two words",
            Class::Typo => "typo (typo pass)",
            Class::NoMatch => "no match",
        }
    }
}

fn any_word(rng: &mut Rng) -> String {
    let list = match rng.below(6) {
        0 => ARTIST_FIRST,
        1 => ARTIST_LAST,
        2 => PROJECTS,
        3 => CODE_WORDS,
        4 => DOC_WORDS,
        _ => TITLE_WORDS,
    };
    rng.pick(list).to_lowercase()
}

fn query_text(class: Class, rng: &mut Rng) -> String {
    match class {
        Class::Short => {
            const LETTERS: &[u8] = b"etaoinshrdlcumwfgypbvk";
            let len = 2 + rng.below(2);
            (0..len)
                .map(|_| LETTERS[rng.below(LETTERS.len())] as char)
                .collect()
        }
        Class::Word => any_word(rng),
        Class::TwoWords => {
            if rng.chance(50) {
                format!("{} {}", rng.pick(TITLE_WORDS), rng.pick(TITLE_WORDS))
            } else {
                format!("{} {}", any_word(rng), any_word(rng))
            }
        }
        Class::Typo => {
            // One typo in a longer word that occurs in file names (the typo pass looks at
            // names only).
            let mut word: Vec<char> = loop {
                let list = match rng.below(3) {
                    0 => TITLE_WORDS,
                    1 => DOC_WORDS,
                    _ => CODE_WORDS,
                };
                let w = rng.pick(list);
                if w.chars().count() >= 6 && !w.contains(' ') {
                    break w.chars().collect();
                }
            };
            // A swap of two neighbouring letters alone is mostly still a subsequence of some
            // long name; a rare letter in place of another one makes it fall through.
            let at = 1 + rng.below(word.len() - 2);
            if rng.chance(50) {
                word.swap(at, at + 1);
            } else {
                const RARE: &[u8] = b"qxzj";
                word[at] = RARE[rng.below(RARE.len())] as char;
            }
            word.into_iter().collect()
        }
        Class::NoMatch => {
            const RARE: &[u8] = b"qxzjvkw";
            (0..6)
                .map(|_| RARE[rng.below(RARE.len())] as char)
                .collect()
        }
    }
}

struct Stats {
    class: Class,
    times: Vec<Duration>,
    /// CPU time of the whole process (all threads) per query.
    cpu: Vec<Duration>,
    totals: usize,
    discarded: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Times the query classes; a typo query counts only when the main pass found nothing (so
/// the typo pass ran), a no-match query only when nothing at all was found.
fn run_queries(index: &NetworkIndex) -> Vec<Stats> {
    let mut rng = Rng::new(42);
    let _ = index.search(&Query::new("warm up"));
    Class::ALL
        .iter()
        .map(|&class| {
            let mut stats = Stats {
                class,
                times: Vec::new(),
                cpu: Vec::new(),
                totals: 0,
                discarded: 0,
            };
            let mut attempts = 0;
            while stats.times.len() < QUERIES_PER_CLASS && attempts < 5 * QUERIES_PER_CLASS {
                attempts += 1;
                let q = Query::new(query_text(class, &mut rng));
                let (start, cpu_start) = (Instant::now(), cpu_time());
                let results = std::hint::black_box(index.search(&q));
                let took = start.elapsed();
                let cpu = cpu_time()
                    .zip(cpu_start)
                    .map(|(end, start)| end.saturating_sub(start));
                let counts = match class {
                    Class::Typo => results.hits.iter().all(|h| h.tier() == Some(Tier::Typo)),
                    Class::NoMatch => results.total == 0,
                    _ => true,
                };
                if counts {
                    stats.times.push(took);
                    stats.cpu.extend(cpu);
                    stats.totals += results.total;
                } else {
                    stats.discarded += 1;
                }
            }
            stats.times.sort();
            stats.cpu.sort();
            stats
        })
        .collect()
}

fn main() {
    let sizes: Vec<usize> = std::env::var("IWANT_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    let peers: Vec<PeerId> = (0..PEERS).map(|_| PeerId::random()).collect();
    println!(
        "machine: {} threads (rayon), {PEERS} peers",
        rayon::current_num_threads()
    );
    for n in sizes {
        let before = rss_kib();
        let (index, took) = build(n, &peers);
        let after = rss_kib();
        println!();
        println!("### {n} entries");
        println!();
        println!("| build | entries | peers | RSS before | RSS after | RSS added |");
        println!("|---|---|---|---|---|---|");
        let added = before.zip(after).map(|(b, a)| a.saturating_sub(b));
        println!(
            "| {:.2} s | {} | {} | {} | {} | {} |",
            took.as_secs_f64(),
            index.len(),
            index.peers(),
            mb(before),
            mb(after),
            mb(added),
        );
        println!();
        println!("| query class | queries | p50 | p99 | max | CPU p50 | mean total | discarded |");
        println!("|---|---|---|---|---|---|---|---|");
        for s in run_queries(&index) {
            let count = s.times.len().max(1);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.class.name(),
                s.times.len(),
                ms(percentile(&s.times, 0.5)),
                ms(percentile(&s.times, 0.99)),
                ms(s.times.last().copied().unwrap_or_default()),
                if s.cpu.is_empty() {
                    "n/a".to_string()
                } else {
                    ms(percentile(&s.cpu, 0.5))
                },
                s.totals / count,
                s.discarded,
            );
        }
        drop(index);
    }
}
