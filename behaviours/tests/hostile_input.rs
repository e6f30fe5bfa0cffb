//! Hostile input for every decoder of network bytes in this crate, measured with a counting
//! allocator (`allocation-counter`).
//!
//! The request-response protocols are driven through the very codec the network path runs
//! (`libp2p::request_response::cbor::codec::Codec` with each protocol's size caps, read over a
//! `futures::io::Cursor`); the chunk frames through `chunk::read_request`, `read_header` and
//! `read_piece`; election frames through `election::protocol::recv`. Each input must give an
//! error or a valid value, never a panic, a stack overflow or an allocation beyond the bound
//! that the protocol's size limit implies.
//!
//! The allocator counts per thread, so the tests may run in parallel: only what the measured
//! closure's own thread allocates is counted.

use std::{fmt::Debug, io};

use futures::{executor::block_on, io::Cursor};
use iwant_behaviours::{
    chunk, content,
    election::protocol as election,
    index_sync, peer_exchange, search,
    wire::{Bytes, Id, Kind},
};
use libp2p::{
    request_response::{cbor::codec::Codec as CborCodec, Codec},
    StreamProtocol,
};
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};

// ---------------------------------------------------------------------------------------------
// Allocations are counted by `allocation-counter` (its allocator becomes the global one of this
// test binary), per thread.

/// Runs `f` and returns its result with the most bytes it had allocated at once on this
/// thread, beyond what was live before (including what it returns).
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let mut result = None;
    let info = allocation_counter::measure(|| result = Some(f()));
    (
        result.expect("bug: measured code ran"),
        info.bytes_max as usize,
    )
}

#[test]
fn the_counting_allocator_counts() {
    let (v, peak) = measure(|| vec![0u8; 100_000]);
    assert!(peak >= 100_000, "{peak}");
    drop(v);
    let ((), peak) = measure(|| {
        for _ in 0..10 {
            drop(std::hint::black_box(vec![0u8; 10_000]));
        }
    });
    assert!((10_000..20_000).contains(&peak), "{peak}");
}

// ---------------------------------------------------------------------------------------------
// The request-response message types, read through libp2p's CBOR codec as the network does.

/// One message type of a request-response protocol.
trait Wire: Serialize + DeserializeOwned + PartialEq + Debug + Clone + Send + 'static {
    const NAME: &'static str;
    /// The codec's cap on this message's encoding.
    const LIMIT: u64;
    /// Whether the top-level value is a struct (a map of fields) rather than an enum.
    const STRUCT_TOP: bool;
    /// Reads one message with the protocol's codec from `bytes`, as a stream would carry them.
    fn read(bytes: &[u8]) -> io::Result<Self>;
    /// Writes one message with the protocol's codec.
    fn write(&self) -> Vec<u8>;
    /// The receiver's checks after decoding (bounds, ids, paths).
    fn check(&self) -> Result<(), String>;
    /// Valid values, as encodings to build hostile variants of.
    fn samples() -> Vec<Self>;
}

macro_rules! wire {
    ($ty:ty, $name:literal, $req:ty, $resp:ty, $proto:expr, $max_req:expr, $max_resp:expr,
     $side:ident, struct_top = $top:literal, check = $check:expr, samples = $samples:expr) => {
        impl Wire for $ty {
            const NAME: &'static str = $name;
            const LIMIT: u64 = wire!(@limit $side, $max_req, $max_resp);
            const STRUCT_TOP: bool = $top;
            fn read(bytes: &[u8]) -> io::Result<Self> {
                let mut codec = CborCodec::<$req, $resp>::default()
                    .set_request_size_maximum($max_req)
                    .set_response_size_maximum($max_resp);
                let protocol: StreamProtocol = $proto;
                let mut io = Cursor::new(bytes);
                wire!(@read $side, codec, protocol, io)
            }
            fn write(&self) -> Vec<u8> {
                let mut codec = CborCodec::<$req, $resp>::default();
                let protocol: StreamProtocol = $proto;
                let mut io = Cursor::new(Vec::new());
                wire!(@write $side, codec, protocol, io, self.clone());
                io.into_inner()
            }
            fn check(&self) -> Result<(), String> {
                #[allow(clippy::redundant_closure_call)]
                ($check)(self)
            }
            fn samples() -> Vec<Self> {
                $samples
            }
        }
    };
    (@limit request, $max_req:expr, $max_resp:expr) => { $max_req };
    (@limit response, $max_req:expr, $max_resp:expr) => { $max_resp };
    (@read request, $codec:ident, $p:ident, $io:ident) => {
        block_on($codec.read_request(&$p, &mut $io))
    };
    (@read response, $codec:ident, $p:ident, $io:ident) => {
        block_on($codec.read_response(&$p, &mut $io))
    };
    (@write request, $codec:ident, $p:ident, $io:ident, $v:expr) => {
        block_on($codec.write_request(&$p, &mut $io, $v)).expect("encodes")
    };
    (@write response, $codec:ident, $p:ident, $io:ident, $v:expr) => {
        block_on($codec.write_response(&$p, &mut $io, $v)).expect("encodes")
    };
}

/// The peer id (base58) of the ed25519 key whose secret is 32 times `seed`.
fn peer_id(seed: u8) -> String {
    static IDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        (0..=255u8)
            .map(|s| {
                let key = libp2p::identity::Keypair::ed25519_from_bytes([s; 32]).expect("a key");
                key.public().to_peer_id().to_string()
            })
            .collect()
    })[seed as usize]
        .clone()
}

fn entry(path: &str) -> index_sync::Entry {
    index_sync::Entry {
        path: path.into(),
        kind: Kind::File,
        size: 12,
        id: Id([3; 32]),
    }
}

fn hit(path: &str, holders: usize) -> search::Hit {
    search::Hit {
        id: Id([4; 32]),
        kind: Kind::Dir,
        size: 1 << 40,
        path: path.into(),
        score: -5,
        holders: (0..holders).map(|i| peer_id(i as u8)).collect(),
        holder_count: holders as u32,
    }
}

wire!(
    peer_exchange::Announce,
    "peers request",
    peer_exchange::Announce,
    peer_exchange::Ack,
    peer_exchange::PROTOCOL,
    peer_exchange::MAX_MESSAGE,
    peer_exchange::MAX_MESSAGE,
    request,
    struct_top = true,
    check = |a: &peer_exchange::Announce| a.parse().map(|_| ()),
    samples = vec![
        peer_exchange::Announce { peers: vec![] },
        peer_exchange::Announce {
            peers: (0..3)
                .map(|i| peer_exchange::PeerRecord {
                    peer_id: peer_id(i),
                    addrs: vec![
                        format!("/ip4/10.0.0.{i}/tcp/4747"),
                        "/ip4/1.2.3.4/tcp/1".into()
                    ],
                })
                .collect(),
        },
    ]
);

wire!(
    peer_exchange::Ack,
    "peers response",
    peer_exchange::Announce,
    peer_exchange::Ack,
    peer_exchange::PROTOCOL,
    peer_exchange::MAX_MESSAGE,
    peer_exchange::MAX_MESSAGE,
    response,
    struct_top = true,
    check = |_: &peer_exchange::Ack| Ok(()),
    samples = vec![peer_exchange::Ack {}]
);

wire!(
    index_sync::Request,
    "index request",
    index_sync::Request,
    index_sync::Response,
    index_sync::PROTOCOL,
    index_sync::MAX_REQUEST,
    index_sync::MAX_RESPONSE,
    request,
    struct_top = false,
    check = index_sync::Request::check,
    samples = vec![
        index_sync::Request::Snapshot(index_sync::SnapshotPage {
            collection: Default::default(),
            session: 7,
            page: 0,
            last: true,
            version: 9,
            entries: vec![entry("a/b"), entry("c")],
        }),
        index_sync::Request::Delta(index_sync::Delta {
            collection: Default::default(),
            base: 1,
            version: 2,
            upserted: vec![entry("x")],
            removed: vec!["y/z".into(), "w".into()],
        }),
    ]
);

wire!(
    index_sync::Response,
    "index response",
    index_sync::Request,
    index_sync::Response,
    index_sync::PROTOCOL,
    index_sync::MAX_REQUEST,
    index_sync::MAX_RESPONSE,
    response,
    struct_top = false,
    check = |_: &index_sync::Response| Ok(()),
    samples = vec![
        index_sync::Response::Ack { version: u64::MAX },
        index_sync::Response::Refused {
            reason: "too many".into()
        },
        index_sync::Response::NeedSnapshot,
    ]
);

wire!(
    search::Request,
    "search request",
    search::Request,
    search::Response,
    search::PROTOCOL,
    search::MAX_REQUEST,
    search::MAX_RESPONSE,
    request,
    struct_top = false,
    check = search::Request::check,
    samples = vec![
        search::Request::Search(search::Query {
            text: "batman begins".into(),
            kind: Some(Kind::File),
            offset: 3,
            limit: 20,
        }),
        search::Request::Locate {
            prefix: "abc".into(),
            max: 5
        },
    ]
);

wire!(
    search::Response,
    "search response",
    search::Request,
    search::Response,
    search::PROTOCOL,
    search::MAX_REQUEST,
    search::MAX_RESPONSE,
    response,
    struct_top = false,
    check = |_: &search::Response| Ok(()),
    samples = vec![
        search::Response::Results(search::Results {
            total: 2,
            indexed: 10,
            nodes: 3,
            hits: vec![hit("a/b.mkv", 2), hit("c", 0)],
        }),
        search::Response::Refused {
            reason: "no".into()
        },
    ]
);

wire!(
    content::Request,
    "content request",
    content::Request,
    content::Response,
    content::PROTOCOL,
    content::MAX_REQUEST,
    content::MAX_RESPONSE,
    request,
    struct_top = false,
    check = content::Request::check,
    samples = vec![
        content::Request::Pieces { id: Id([7; 32]) },
        content::Request::Manifest {
            id: Id([7; 32]),
            offset: 5
        },
    ]
);

wire!(
    content::Response,
    "content response",
    content::Request,
    content::Response,
    content::PROTOCOL,
    content::MAX_REQUEST,
    content::MAX_RESPONSE,
    response,
    struct_top = false,
    check = content::Response::check,
    samples = vec![
        content::Response::Pieces {
            size: 600_000,
            piece_size: 262_144,
            pieces: Bytes(vec![9; 96]),
        },
        content::Response::Manifest {
            total: 100,
            offset: 90,
            bytes: Bytes(vec![1; 10])
        },
        content::Response::Refused {
            reason: "offset".into()
        },
    ]
);

/// The most a decode of one message may allocate at once: what the codec buffers (at most the
/// limit, in a vector that doubles as it grows: counted as old and new block at once, 3x) and
/// what the decoded value holds (the bytes and strings it copies, 1x; vectors of elements at
/// least as large in memory as on the wire are capped at their protocol's count limit), plus
/// 256 KiB for the capped vectors, errors and bookkeeping.
fn bound(limit: u64) -> usize {
    4 * limit as usize + (256 << 10)
}

/// What a short hostile input (a few hundred bytes) may allocate whatever lengths it claims:
/// cbor4ii reserves at most 16 KiB for a claimed byte or text string, and the capped vectors
/// at most 64 elements for a claimed sequence.
const SMALL_INPUT_BOUND: usize = 64 << 10;

/// Decodes `bytes` as `T`, checks the measured peak against [`bound`], and on success runs the
/// receiver's checks and, for a value that passes them, asserts that it re-encodes to
/// something that decodes to the same value.
fn decode_bounded<T: Wire>(bytes: &[u8]) -> Result<T, String> {
    let (result, peak) = measure(|| T::read(bytes));
    let allowed = bound(T::LIMIT);
    assert!(
        peak <= allowed,
        "{}: {} input bytes allocated {peak} bytes at once, more than {allowed}",
        T::NAME,
        bytes.len()
    );
    let value = result.map_err(|e| e.to_string())?;
    value.check()?;
    let again = value.write();
    assert_eq!(
        T::read(&again).expect("a checked value re-decodes"),
        value,
        "{}",
        T::NAME
    );
    Ok(value)
}

fn peak_of<T: Wire>(bytes: &[u8]) -> (bool, usize) {
    let (result, peak) = measure(|| T::read(bytes));
    (result.is_ok(), peak)
}

/// Runs `f` for every request-response message type.
macro_rules! for_each_wire {
    ($f:ident $(, $arg:expr)*) => {{
        $f::<peer_exchange::Announce>($($arg),*);
        $f::<peer_exchange::Ack>($($arg),*);
        $f::<index_sync::Request>($($arg),*);
        $f::<index_sync::Response>($($arg),*);
        $f::<search::Request>($($arg),*);
        $f::<search::Response>($($arg),*);
        $f::<content::Request>($($arg),*);
        $f::<content::Response>($($arg),*);
    }};
}

// ---------------------------------------------------------------------------------------------
// A little CBOR: heads, and a walk over a valid encoding that finds every item's head.

const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;

/// The shortest head of `major` with argument `n`.
fn head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [&[m | 25][..], &(n as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[m | 26][..], &(n as u32).to_be_bytes()].concat(),
        _ => [&[m | 27][..], &n.to_be_bytes()].concat(),
    }
}

/// The 9-byte head of `major` with argument `n`, whatever its size.
fn wide_head(major: u8, n: u64) -> Vec<u8> {
    [&[(major << 5) | 27][..], &n.to_be_bytes()].concat()
}

fn text(s: &str) -> Vec<u8> {
    [head(TEXT, s.len() as u64), s.as_bytes().to_vec()].concat()
}

/// An item's head in an encoding: where it starts, its major type, its argument, and where
/// its content starts.
#[derive(Debug, Clone, Copy)]
struct Head {
    at: usize,
    major: u8,
    arg: u64,
    body: usize,
}

/// Walks the definite-length item at `at`, recording every head in it; returns its end.
fn walk(buf: &[u8], at: usize, out: &mut Vec<Head>) -> usize {
    let b = buf[at];
    let (major, low) = (b >> 5, b & 0x1f);
    let (arg, body) = match low {
        0..=23 => (low as u64, at + 1),
        24..=27 => {
            let n = 1usize << (low - 24);
            let mut v = 0u64;
            for &byte in &buf[at + 1..at + 1 + n] {
                v = v << 8 | byte as u64;
            }
            (v, at + 1 + n)
        }
        _ => panic!("not a definite-length item at {at}: {b:#x}"),
    };
    out.push(Head {
        at,
        major,
        arg,
        body,
    });
    match major {
        0 | 1 | 7 => body,
        2 | 3 => body + arg as usize,
        4 => (0..arg).fold(body, |pos, _| walk(buf, pos, out)),
        5 => (0..2 * arg).fold(body, |pos, _| walk(buf, pos, out)),
        _ => walk(buf, body, out),
    }
}

/// Every head of the single definite-length item that is `buf`, in order.
fn heads(buf: &[u8]) -> Vec<Head> {
    let mut out = Vec::new();
    let end = walk(buf, 0, &mut out);
    assert_eq!(end, buf.len(), "one item");
    out
}

/// Where the item at `at` ends.
fn item_end(buf: &[u8], at: usize) -> usize {
    walk(buf, at, &mut Vec::new())
}

/// `buf` with one more key-value pair in the map whose head is `map` (argument below 23): the
/// pair goes first, right after the head.
fn insert_pair(buf: &[u8], map: Head, pair: &[u8]) -> Vec<u8> {
    assert!(map.major == MAP && map.arg < 23 && map.body == map.at + 1);
    let mut out = buf[..map.at].to_vec();
    out.push((MAP << 5) | (map.arg as u8 + 1));
    out.extend_from_slice(pair);
    out.extend_from_slice(&buf[map.body..]);
    out
}

/// The head of the map that holds the message's fields: the top-level map of a struct, or the
/// map inside a variant of an enum.
fn fields_map(buf: &[u8], struct_top: bool) -> Option<Head> {
    let all = heads(buf);
    if struct_top {
        all.first().copied().filter(|h| h.major == MAP)
    } else {
        // {"variant": {fields}}: a 1-entry map, a text key, then the fields' map.
        match all.get(..3) {
            Some([outer, key, inner])
                if outer.major == MAP && key.major == TEXT && inner.major == MAP =>
            {
                Some(*inner)
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile CBOR.

/// For every byte string, text string, array and map in every sample message, claim a huge
/// length (the limit + 1, 2^32, 2^63, u64::MAX) with nothing behind it, or with the rest of
/// the message behind it: each is refused, and none allocates more than a few MiB.
fn huge_length_claims<T: Wire>(worst: &mut Vec<(String, usize)>) {
    let mut max = 0;
    for sample in T::samples() {
        let buf = sample.write();
        for h in heads(&buf) {
            if !matches!(h.major, BYTES | TEXT | ARRAY | MAP) {
                continue;
            }
            for claim in [T::LIMIT + 1, 1 << 32, 1 << 63, u64::MAX] {
                for rest in [&[][..], &buf[h.body..]] {
                    let input = [&buf[..h.at], &wide_head(h.major, claim)[..], rest].concat();
                    let (ok, peak) = peak_of::<T>(&input);
                    assert!(!ok, "{}: claim {claim} at {} accepted", T::NAME, h.at);
                    assert!(
                        peak <= SMALL_INPUT_BOUND,
                        "{}: {} bytes claiming {claim} elements of major {} at {} allocated {peak}",
                        T::NAME,
                        input.len(),
                        h.major,
                        h.at
                    );
                    max = max.max(peak);
                }
            }
        }
    }
    worst.push((T::NAME.to_string(), max));
}

#[test]
fn huge_length_claims_are_refused_and_allocate_little() {
    let mut worst = Vec::new();
    for_each_wire!(huge_length_claims, &mut worst);
    eprintln!("peak allocation for a huge length claim: {worst:?}");
}

/// A 10-byte input claiming a 4 GiB string or byte string at the top, or as the variant name
/// of an enum, allocates 20 KiB at most (cbor4ii reserves up to 16 KiB before it finds the data
/// missing); one claiming a 4 GiB array or map, at most [`SMALL_INPUT_BOUND`].
fn tiny_claims<T: Wire>() {
    for major in [BYTES, TEXT] {
        for prefix in [&[][..], &[0xa1][..]] {
            let input = [prefix, &head(major, (4 << 30) - 1)[..], &[0x61, 0x62, 0x63]].concat();
            assert!(input.len() <= 10);
            let (ok, peak) = peak_of::<T>(&input);
            assert!(!ok, "{}: {input:02x?}", T::NAME);
            assert!(
                peak <= 24 << 10,
                "{}: {input:02x?} allocated {peak}",
                T::NAME
            );
        }
    }
    for major in [ARRAY, MAP] {
        let input = [&head(major, 4 << 30)[..], &[0x80, 0xa0]].concat();
        let (ok, peak) = peak_of::<T>(&input);
        assert!(!ok, "{}: {input:02x?}", T::NAME);
        assert!(
            peak <= SMALL_INPUT_BOUND,
            "{}: {input:02x?} allocated {peak}",
            T::NAME
        );
    }
}

#[test]
fn a_ten_byte_claim_of_4_gib_allocates_at_most_20_kib() {
    for_each_wire!(tiny_claims);
}

/// Nesting far deeper than any message: as the value of an unknown key in every field map (a
/// decoder skips unknown keys, recursively), and as the whole message. cbor4ii stops at 256
/// levels; the decoders must refuse without overflowing a stack smaller than a tokio
/// worker's (2 MiB).
fn deep_nesting<T: Wire>() {
    let depth = 100_000;
    let nests: [(&str, Vec<u8>); 5] = [
        ("arrays", [vec![0x81; depth], vec![0x00]].concat()),
        ("indefinite arrays", vec![0x9f; depth]),
        ("maps", [[0xa1, 0x00].repeat(depth), vec![0x00]].concat()),
        ("tags", [vec![0xc6; depth], vec![0x00]].concat()),
        (
            "byte strings in chunks",
            [vec![0x5f; depth], vec![0x40]].concat(),
        ),
    ];
    let shallow = [vec![0x81; 100], vec![0x00]].concat();
    for (what, nest) in &nests {
        let (ok, _) = peak_of::<T>(nest);
        assert!(!ok, "{}: {what} as the message", T::NAME);
        for sample in T::samples() {
            let buf = sample.write();
            let Some(map) = fields_map(&buf, T::STRUCT_TOP) else {
                continue;
            };
            let pair = [&text("zz")[..], nest].concat();
            let (ok, _) = peak_of::<T>(&insert_pair(&buf, map, &pair));
            assert!(!ok, "{}: {what} under an unknown key", T::NAME);
            // A modest nesting under an unknown key is skipped: unknown keys are ignored.
            let pair = [&text("zz")[..], &shallow[..]].concat();
            let decoded = T::read(&insert_pair(&buf, map, &pair));
            assert_eq!(
                decoded.expect("an unknown key is ignored"),
                sample,
                "{}",
                T::NAME
            );
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_a_small_stack() {
    let handle = std::thread::Builder::new()
        .name("small stack".into())
        .stack_size(256 * 1024)
        .spawn(|| for_each_wire!(deep_nesting))
        .expect("a thread");
    handle.join().expect("no panic");
}

/// A message padded (with an unknown key) to exactly the codec's limit decodes; one byte more
/// is refused.
fn at_the_limit<T: Wire>() {
    for sample in T::samples() {
        let buf = sample.write();
        let Some(map) = fields_map(&buf, T::STRUCT_TOP) else {
            continue;
        };
        let padded = |total: usize| {
            let base = buf.len() + text("pad").len();
            for head_len in [1, 2, 3, 5, 9] {
                let Some(pad) = total.checked_sub(base + head_len) else {
                    continue;
                };
                if head(BYTES, pad as u64).len() == head_len {
                    let pair =
                        [&text("pad")[..], &head(BYTES, pad as u64), &vec![0xee; pad]].concat();
                    let out = insert_pair(&buf, map, &pair);
                    assert_eq!(out.len(), total);
                    return out;
                }
            }
            panic!("{}: no padding gives {total} bytes", T::NAME)
        };
        let limit = T::LIMIT as usize;
        let exact = padded(limit);
        let (result, peak) = measure(|| T::read(&exact));
        assert_eq!(
            result.expect("a message at the limit decodes"),
            sample,
            "{}",
            T::NAME
        );
        assert!(peak <= bound(T::LIMIT), "{}: {peak}", T::NAME);
        let over = padded(limit + 1);
        assert!(
            T::read(&over).is_err(),
            "{}: one byte over the limit",
            T::NAME
        );
        // Once more beyond the limit: the codec reads only up to it.
        let far = padded(2 * limit);
        let (ok, peak) = peak_of::<T>(&far);
        assert!(!ok, "{}", T::NAME);
        assert!(peak <= bound(T::LIMIT), "{}: {peak}", T::NAME);
    }
}

#[test]
fn messages_at_the_limit_decode_and_one_byte_more_is_refused() {
    for_each_wire!(at_the_limit);
}

/// Every strict prefix of a valid encoding is refused.
fn truncations<T: Wire>() {
    for sample in T::samples() {
        let buf = sample.write();
        assert_eq!(T::read(&buf).unwrap(), sample);
        sample
            .check()
            .unwrap_or_else(|e| panic!("{}: sample fails its check: {e}", T::NAME));
        for cut in 0..buf.len() {
            assert!(T::read(&buf[..cut]).is_err(), "{}: cut at {cut}", T::NAME);
        }
    }
}

#[test]
fn truncated_messages_are_refused() {
    for_each_wire!(truncations);
}

/// The same key twice in a field map is refused, and so is an unknown variant.
fn duplicate_keys_and_unknown_variants<T: Wire>() {
    for sample in T::samples() {
        let buf = sample.write();
        if let Some(map) = fields_map(&buf, T::STRUCT_TOP).filter(|m| m.arg > 0) {
            // The map's first key and value, once more.
            let value_at = item_end(&buf, map.body);
            let pair = buf[map.body..item_end(&buf, value_at)].to_vec();
            let doubled = insert_pair(&buf, map, &pair);
            assert!(T::read(&doubled).is_err(), "{}: a key twice", T::NAME);
        }
        if !T::STRUCT_TOP {
            // Rename the variant to one of the same length that no type has.
            let hs = heads(&buf);
            let key = hs[if hs[0].major == MAP { 1 } else { 0 }];
            assert_eq!(key.major, TEXT);
            let mut renamed = buf.clone();
            for b in &mut renamed[key.body..key.body + key.arg as usize] {
                *b = b'q';
            }
            assert!(
                T::read(&renamed).is_err(),
                "{}: an unknown variant",
                T::NAME
            );
        }
    }
}

#[test]
fn duplicate_keys_and_unknown_variants_are_refused() {
    for_each_wire!(duplicate_keys_and_unknown_variants);
}

/// Ids of any length but 32, or as an array of 32 integers, or as a text string, are refused.
#[test]
fn ids_must_be_32_byte_strings() {
    let id_request = |id: &[u8]| [&[0xa1][..], &text("pieces"), &[0xa1], &text("id"), id].concat();
    let good = id_request(&[&head(BYTES, 32)[..], &[1; 32]].concat());
    assert_eq!(
        content::Request::read(&good).unwrap(),
        content::Request::Pieces { id: Id([1; 32]) }
    );
    for len in [0usize, 1, 31, 33, 64, 1000] {
        let bad = id_request(&[&head(BYTES, len as u64)[..], &vec![1; len]].concat());
        assert!(content::Request::read(&bad).is_err(), "{len} bytes");
    }
    let array = id_request(&[&head(ARRAY, 32)[..], &[1; 32]].concat());
    assert!(
        content::Request::read(&array).is_err(),
        "an array of integers"
    );
    let as_text = id_request(&text(&"a".repeat(32)));
    assert!(content::Request::read(&as_text).is_err(), "text");
    // A typed array (tag 64: uint8 array) is not a byte string either.
    let tagged = id_request(&[&head(TAG, 64)[..], &head(BYTES, 32), &[1; 32]].concat());
    assert!(content::Request::read(&tagged).is_err(), "tagged");
    // Nor an indefinite-length byte string in chunks whose parts add up to 32? cbor4ii joins
    // them; what matters is that the length is still exactly 32.
    let chunks = id_request(
        &[
            &[0x5f][..],
            &head(BYTES, 16),
            &[1; 16],
            &head(BYTES, 17),
            &[1; 17],
            &[0xff],
        ]
        .concat(),
    );
    assert!(
        content::Request::read(&chunks).is_err(),
        "33 bytes in chunks"
    );
}

// ---------------------------------------------------------------------------------------------
// Arbitrary bytes and mutated messages.

/// Samples of every type, encoded: seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    macro_rules! add {
        ($($t:ty),*) => { $( out.extend(<$t>::samples().iter().map(Wire::write)); )* };
    }
    add!(
        peer_exchange::Announce,
        peer_exchange::Ack,
        index_sync::Request,
        index_sync::Response,
        search::Request,
        search::Response,
        content::Request,
        content::Response
    );
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    // Bytes that start interesting CBOR items: huge heads, indefinite lengths, breaks, tags.
    let interesting = prop_oneof![
        any::<u8>(),
        Just(0x1b),
        Just(0x5b),
        Just(0x7b),
        Just(0x9b),
        Just(0xbb),
        Just(0x9f),
        Just(0xbf),
        Just(0xff),
        Just(0xc6),
        Just(0xf6),
    ];
    prop_oneof![
        (any::<usize>(), interesting).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Edit::Remove(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut buf: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = buf.len().max(1);
        match edit {
            Edit::Set(i, b) => {
                if !buf.is_empty() {
                    buf[i % len] = *b;
                }
            }
            Edit::Insert(i, v) => {
                let at = i % (buf.len() + 1);
                buf.splice(at..at, v.iter().copied());
            }
            Edit::Remove(i, n) => {
                let at = i % len;
                let end = (at + n).min(buf.len());
                if at < end {
                    buf.drain(at..end);
                }
            }
            Edit::Truncate(i) => buf.truncate(i % len),
        }
    }
    buf
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            prop::sample::select(seeds),
            prop::collection::vec(edit_strategy(), 1..5)
        )
            .prop_map(|(seed, edits)| apply(seed, &edits)),
    ]
}

/// `cases` cases, and no regression files: an integration test has no `lib.rs` beside which
/// proptest could keep them (a failure prints its minimal input instead).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn decode_any<T: Wire>(bytes: &[u8]) {
    let _ = decode_bounded::<T>(bytes);
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any bytes, or a mutated valid message: every decoder answers an error or a value that
    /// re-encodes to itself, within its allocation bound.
    #[test]
    fn arbitrary_bytes_never_panic_the_cbor_decoders(bytes in any_input()) {
        for_each_wire!(decode_any, &bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips of arbitrary valid messages.

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::File), Just(Kind::Dir)]
}

/// A valid relative path: components of any characters but `/` and NUL, none `.` or `..`.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec("[^/\\x00]{1,8}", 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("no . or .. components", |p| {
            p.split('/').all(|c| c != "." && c != "..")
        })
}

fn index_entry() -> impl Strategy<Value = index_sync::Entry> {
    (path(), kind(), any::<u64>(), id()).prop_map(|(path, kind, size, id)| index_sync::Entry {
        path,
        kind,
        size,
        id,
    })
}

fn announce() -> impl Strategy<Value = peer_exchange::Announce> {
    let record = (
        any::<u8>(),
        prop::collection::vec(
            (any::<[u8; 4]>(), any::<u16>()),
            0..=peer_exchange::MAX_ADDRS,
        ),
    )
        .prop_map(|(seed, addrs)| peer_exchange::PeerRecord {
            peer_id: peer_id(seed),
            addrs: addrs
                .into_iter()
                .map(|([a, b, c, d], port)| format!("/ip4/{a}.{b}.{c}.{d}/tcp/{port}"))
                .collect(),
        });
    prop::collection::vec(record, 0..6).prop_map(|peers| peer_exchange::Announce { peers })
}

fn index_request() -> impl Strategy<Value = index_sync::Request> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
            prop::collection::vec(index_entry(), 0..6)
        )
            .prop_map(|(session, page, last, version, entries)| {
                index_sync::Request::Snapshot(index_sync::SnapshotPage {
                    collection: Default::default(),
                    session,
                    page,
                    last,
                    version,
                    entries,
                })
            }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(index_entry(), 0..6),
            prop::collection::vec(path(), 0..6)
        )
            .prop_map(|(a, b, upserted, removed)| {
                index_sync::Request::Delta(index_sync::Delta {
                    collection: Default::default(),
                    base: a.min(b),
                    version: a.max(b),
                    upserted,
                    removed,
                })
            }),
    ]
}

fn index_response() -> impl Strategy<Value = index_sync::Response> {
    prop_oneof![
        any::<u64>().prop_map(|version| index_sync::Response::Ack { version }),
        Just(index_sync::Response::NeedSnapshot),
        Just(index_sync::Response::NotLeader),
        Just(index_sync::Response::Busy),
        ".{0,100}".prop_map(|reason| index_sync::Response::Refused { reason }),
    ]
}

fn search_request() -> impl Strategy<Value = search::Request> {
    prop_oneof![
        (
            ".{0,64}",
            prop::option::of(kind()),
            any::<u32>(),
            0..=search::MAX_PAGE
        )
            .prop_map(|(text, kind, offset, limit)| {
                search::Request::Search(search::Query {
                    text,
                    kind,
                    offset,
                    limit,
                })
            }),
        ("[0-9a-fA-F]{1,64}", 0..=search::MAX_PAGE)
            .prop_map(|(prefix, max)| search::Request::Locate { prefix, max }),
    ]
}

fn search_response() -> impl Strategy<Value = search::Response> {
    let hit = (
        id(),
        kind(),
        any::<u64>(),
        path(),
        any::<i64>(),
        prop::collection::vec(any::<u8>().prop_map(peer_id), 0..4),
        any::<u32>(),
    )
        .prop_map(
            |(id, kind, size, path, score, holders, holder_count)| search::Hit {
                id,
                kind,
                size,
                path,
                score,
                holders,
                holder_count,
            },
        );
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(hit, 0..5)
        )
            .prop_map(|(total, indexed, nodes, hits)| {
                search::Response::Results(search::Results {
                    total,
                    indexed,
                    nodes,
                    hits,
                })
            }),
        Just(search::Response::NotLeader),
        Just(search::Response::Busy),
        ".{0,100}".prop_map(|reason| search::Response::Refused { reason }),
    ]
}

fn content_request() -> impl Strategy<Value = content::Request> {
    prop_oneof![
        id().prop_map(|id| content::Request::Pieces { id }),
        (id(), 0..=content::MAX_MANIFEST)
            .prop_map(|(id, offset)| content::Request::Manifest { id, offset }),
    ]
}

fn content_response() -> impl Strategy<Value = content::Response> {
    // A piece list that fits its file: a one-piece file has none, otherwise one per piece.
    let pieces = (10u32..=40, 1u64..=64, any::<u64>()).prop_map(|(shift, count, r)| {
        let piece_size = 1u64 << shift;
        let (size, hashes) = if count == 1 {
            (r % (piece_size + 1), 0)
        } else {
            (
                (count - 1) * piece_size + 1 + r % piece_size,
                count as usize,
            )
        };
        content::Response::Pieces {
            size,
            piece_size,
            pieces: Bytes(
                (0..hashes * content::PIECE_HASH_LEN)
                    .map(|i| i as u8)
                    .collect(),
            ),
        }
    });
    let manifest = (0u64..5000, any::<u64>(), 0usize..3000).prop_map(|(total, r, len)| {
        let offset = r % (total + 1);
        let len = (len as u64)
            .min(total - offset)
            .max(u64::from(offset < total));
        content::Response::Manifest {
            total,
            offset,
            bytes: Bytes(vec![0x42; len as usize]),
        }
    });
    prop_oneof![
        pieces,
        manifest,
        Just(content::Response::NotFound),
        Just(content::Response::Busy),
        ".{0,200}".prop_map(|reason| content::Response::Refused { reason }),
    ]
}

/// Encodes with the codec, decodes with it, and compares; the value passes the receiver's
/// checks; strict prefixes (a sample of cut points) are refused.
fn round_trip<T: Wire>(value: &T, cuts: &[usize]) -> Result<(), TestCaseError> {
    value
        .check()
        .map_err(|e| TestCaseError::fail(format!("{}: {value:?}: {e}", T::NAME)))?;
    let buf = value.write();
    prop_assert!(buf.len() as u64 <= T::LIMIT);
    let (back, peak) = measure(|| T::read(&buf));
    prop_assert_eq!(&back.expect("decodes"), value);
    prop_assert!(peak <= bound(T::LIMIT));
    for cut in cuts {
        let cut = cut % buf.len();
        prop_assert!(T::read(&buf[..cut]).is_err(), "{}: cut at {}", T::NAME, cut);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn announcements_round_trip(v in announce(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
        prop_assert_eq!(v.parse().unwrap().len(), v.peers.len());
    }

    #[test]
    fn index_requests_round_trip(v in index_request(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
    }

    #[test]
    fn index_responses_round_trip(v in index_response(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
    }

    #[test]
    fn search_requests_round_trip(v in search_request(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
    }

    #[test]
    fn search_responses_round_trip(v in search_response(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
    }

    #[test]
    fn content_requests_round_trip(v in content_request(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
    }

    #[test]
    fn content_responses_round_trip(v in content_response(), cuts in prop::collection::vec(any::<usize>(), 8)) {
        round_trip(&v, &cuts)?;
    }
}

/// Out-of-range values that decode but must fail the receiver's checks.
#[test]
fn values_beyond_the_limits_decode_but_fail_their_checks() {
    let long_path = "p".repeat(iwant_behaviours::wire::MAX_PATH + 1);
    let bad: Vec<Box<dyn Fn() -> Result<(), String>>> = vec![
        Box::new(|| {
            peer_exchange::Announce {
                peers: vec![
                    peer_exchange::PeerRecord {
                        peer_id: peer_id(1),
                        addrs: vec![],
                    };
                    peer_exchange::MAX_PEERS + 1
                ],
            }
            .check()
        }),
        Box::new(|| {
            index_sync::Request::Delta(index_sync::Delta {
                collection: Default::default(),
                base: 0,
                version: 1,
                upserted: vec![],
                removed: vec![long_path.clone()],
            })
            .check()
        }),
        Box::new(|| {
            search::Request::Search(search::Query {
                text: "q".repeat(search::MAX_QUERY + 1),
                kind: None,
                offset: 0,
                limit: 1,
            })
            .check()
        }),
        Box::new(|| {
            search::Request::Locate {
                prefix: "ab".into(),
                max: search::MAX_PAGE + 1,
            }
            .check()
        }),
        Box::new(|| {
            content::Request::Manifest {
                id: Id([0; 32]),
                offset: content::MAX_MANIFEST + 1,
            }
            .check()
        }),
        Box::new(|| {
            content::Response::Pieces {
                size: u64::MAX,
                piece_size: 1 << 20,
                pieces: Bytes(vec![0; 32 * (content::MAX_PIECES + 1)]),
            }
            .check()
        }),
        Box::new(|| {
            content::Response::Manifest {
                total: u64::MAX,
                offset: u64::MAX - 1,
                bytes: Bytes(vec![0; 2]),
            }
            .check()
        }),
        Box::new(|| {
            content::Response::Refused {
                reason: "r".repeat(content::MAX_REASON + 1),
            }
            .check()
        }),
    ];
    for (i, f) in bad.iter().enumerate() {
        assert!(f().is_err(), "case {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk frames.

fn read_request(bytes: &[u8]) -> io::Result<Option<chunk::Request>> {
    block_on(chunk::read_request(&mut Cursor::new(bytes)))
}

fn read_header(bytes: &[u8]) -> io::Result<chunk::Header> {
    block_on(chunk::read_header(&mut Cursor::new(bytes)))
}

proptest! {
    #![proptest_config(config(2000))]

    /// A 41-byte request decodes exactly when the spec says it is valid.
    #[test]
    fn chunk_requests_decode_exactly_when_valid(
        op in prop_oneof![Just(1u8), any::<u8>()],
        id in any::<[u8; 32]>(),
        first in prop_oneof![any::<u32>(), (u32::MAX - 70)..=u32::MAX, 0u32..100],
        count in prop_oneof![any::<u32>(), 0u32..70],
        extra in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let mut bytes = vec![op];
        bytes.extend(id);
        bytes.extend(first.to_le_bytes());
        bytes.extend(count.to_le_bytes());
        let valid = op == 1 && (1..=64).contains(&count) && first.checked_add(count).is_some();
        let (got, peak) = measure(|| read_request(&[&bytes[..], &extra].concat()));
        prop_assert!(peak <= 4096, "{peak}");
        match got {
            Ok(Some(r)) => {
                prop_assert!(valid);
                prop_assert_eq!(r, chunk::Request { id: Id(id), first, count });
                let mut out = Vec::new();
                block_on(chunk::write_request(&mut out, &r)).unwrap();
                prop_assert_eq!(&out, &bytes);
            }
            Ok(None) => prop_assert!(false, "a clean end after a whole request?"),
            Err(e) => {
                prop_assert!(!valid, "{e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
        }
        for cut in 1..bytes.len() {
            let e = read_request(&bytes[..cut]).expect_err("truncated");
            prop_assert!(matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData));
        }
        prop_assert!(read_request(&[]).unwrap().is_none());
    }

    /// A 9-byte header decodes exactly when the spec says it is valid, and reads nothing more.
    #[test]
    fn chunk_headers_decode_exactly_when_valid(
        status in prop_oneof![0u8..=5, any::<u8>()],
        index in any::<u32>(),
        len in prop_oneof![any::<u32>(), 0u32..10, (chunk::MAX_PIECE_LEN - 2)..=(chunk::MAX_PIECE_LEN + 2)],
        extra in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let mut bytes = vec![status];
        bytes.extend(index.to_le_bytes());
        bytes.extend(len.to_le_bytes());
        let valid = status <= 4 && len <= chunk::MAX_PIECE_LEN && (status == 0 || len == 0);
        let input = [&bytes[..], &extra].concat();
        let mut cursor = Cursor::new(&input[..]);
        let (got, peak) = measure(|| block_on(chunk::read_header(&mut cursor)));
        prop_assert!(peak <= 4096, "{peak}");
        prop_assert_eq!(cursor.position(), chunk::HEADER_LEN as u64);
        match got {
            Ok(h) => {
                prop_assert!(valid);
                prop_assert_eq!((h.status as u8, h.index, h.len), (status, index, len));
            }
            Err(e) => {
                prop_assert!(!valid);
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
        }
        for cut in 0..bytes.len() {
            let e = read_header(&bytes[..cut]).expect_err("truncated");
            prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    /// A piece is read only when its length is the expected one, and reading it allocates
    /// the expected length at most, however much the stream holds or claims.
    #[test]
    fn chunk_pieces_allocate_at_most_the_expected_length(
        claimed in prop_oneof![0u32..5000, any::<u32>()],
        expected in 0u32..5000,
        have in 0usize..6000,
    ) {
        let mut bytes = vec![0u8];
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(claimed.to_le_bytes());
        bytes.extend((0..have).map(|i| i as u8));
        let mut cursor = Cursor::new(&bytes[..]);
        let header = block_on(chunk::read_header(&mut cursor));
        let Ok(header) = header else {
            prop_assert!(claimed > chunk::MAX_PIECE_LEN);
            return Ok(());
        };
        let mut buf = Vec::new();
        let (got, peak) = measure(|| block_on(chunk::read_piece(&mut cursor, &header, expected, &mut buf)));
        prop_assert!(peak <= expected as usize + 1024, "{peak} for {expected}");
        match got {
            Ok(()) => {
                prop_assert_eq!(claimed, expected);
                prop_assert!(have >= expected as usize);
                prop_assert_eq!(&buf[..], &bytes[chunk::HEADER_LEN..chunk::HEADER_LEN + expected as usize]);
            }
            Err(e) if claimed != expected => {
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                prop_assert_eq!(cursor.position(), chunk::HEADER_LEN as u64, "nothing read");
            }
            Err(e) => {
                prop_assert!(have < expected as usize);
                prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            }
        }
    }

    /// Any bytes through the server's and the client's readers, frame after frame.
    #[test]
    fn arbitrary_bytes_never_panic_the_chunk_readers(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut r = Cursor::new(&bytes[..]);
        let (_, peak) = measure(|| while let Ok(Some(_)) = block_on(chunk::read_request(&mut r)) {});
        prop_assert!(peak <= 4096);
        let mut r = Cursor::new(&bytes[..]);
        let mut buf = Vec::new();
        let (_, peak) = measure(|| {
            while let Ok(h) = block_on(chunk::read_header(&mut r)) {
                let expected = h.len.min(256);
                if block_on(chunk::read_piece(&mut r, &h, expected, &mut buf)).is_err() {
                    break;
                }
            }
        });
        prop_assert!(peak <= 4096);
    }
}

/// A header claiming the largest piece, with no data behind, and a reader that expects it:
/// the reader allocates what it expects (from the checked piece list), and nothing more.
#[test]
fn a_claimed_64_mib_piece_costs_only_what_the_reader_expects() {
    let mut bytes = vec![0u8];
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(chunk::MAX_PIECE_LEN.to_le_bytes());
    let mut cursor = Cursor::new(&bytes[..]);
    let header = block_on(chunk::read_header(&mut cursor)).unwrap();
    let mut buf = Vec::new();
    let (r, peak) = measure(|| block_on(chunk::read_piece(&mut cursor, &header, 1024, &mut buf)));
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert!(peak < 1024, "{peak}");
}

// ---------------------------------------------------------------------------------------------
// Election frames.

/// What reading one election frame may allocate: the frame sits on the stack, but cbor4ii
/// reserves up to 16 KiB for a string that a frame claims (even one of 2^64 bytes), before it
/// finds that the frame holds less.
const ELECTION_BOUND: usize = 20 << 10;

fn recv(bytes: &[u8]) -> io::Result<election::Message> {
    block_on(election::recv(Cursor::new(bytes))).map(|(_, m)| m)
}

fn message() -> impl Strategy<Value = election::Message> {
    use election::Message::*;
    prop_oneof![
        any::<u64>().prop_map(|term| Heartbeat { term }),
        any::<u64>().prop_map(|term| VoteRequest { term }),
        (any::<u64>(), any::<bool>()).prop_map(|(term, granted)| VoteReply { term, granted }),
        any::<u64>().prop_map(|term| Goodbye { term }),
    ]
}

fn framed(message: election::Message) -> Vec<u8> {
    block_on(election::send(Cursor::new(Vec::new()), message))
        .unwrap()
        .into_inner()
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn election_frames_round_trip_and_truncations_are_refused(m in message()) {
        let frame = framed(m);
        prop_assert!(frame.len() <= 1 + election::MAX_MESSAGE_SIZE);
        prop_assert_eq!(frame[0] as usize, frame.len() - 1);
        prop_assert_eq!(recv(&frame).unwrap(), m);
        prop_assert_eq!(election::Message::decode(&frame[1..]).unwrap(), m);
        for cut in 0..frame.len() {
            prop_assert!(recv(&frame[..cut]).is_err());
            // The length byte promises the whole body: a short body under a right-sized
            // length byte is refused too.
            if cut > 1 {
                let mut short = vec![(cut - 1) as u8];
                short.extend_from_slice(&frame[1..cut]);
                prop_assert!(recv(&short).is_err(), "{:02x?}", short);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_election_reader(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            (message(), prop::collection::vec(edit_strategy(), 1..4))
                .prop_map(|(m, edits)| apply(framed(m), &edits)),
        ],
    ) {
        let (got, peak) = measure(|| recv(&bytes));
        prop_assert!(peak <= ELECTION_BOUND, "{peak}");
        if let Ok(m) = got {
            let n = bytes[0] as usize;
            prop_assert!((1..=election::MAX_MESSAGE_SIZE).contains(&n));
            // What decoded re-encodes to a frame that decodes to the same message.
            prop_assert_eq!(recv(&framed(m)).unwrap(), m);
        }
        if !bytes.is_empty() && (bytes[0] == 0 || bytes[0] as usize > election::MAX_MESSAGE_SIZE) {
            prop_assert!(recv(&bytes).is_err());
        }
    }
}

#[test]
fn hostile_election_frames_are_refused() {
    let term = |name: &str, extra: &[u8]| {
        let body = [
            &[0xa1][..],
            &text(name),
            &[0xa1 + u8::from(!extra.is_empty())],
            &text("term"),
            &[0x05],
            extra,
        ]
        .concat();
        [&[body.len() as u8][..], &body].concat()
    };
    assert_eq!(
        recv(&term("heartbeat", &[])).unwrap(),
        election::Message::Heartbeat { term: 5 }
    );
    // An unknown key is ignored; an unknown message, a duplicate key, a negative or too big
    // term, deep nesting and huge claims are refused.
    assert_eq!(
        recv(&term("goodbye", &[&text("x")[..], &[0xf6]].concat())).unwrap(),
        election::Message::Goodbye { term: 5 }
    );
    for bad in [
        term("hello", &[]),
        term("heartbeat", &[&text("term")[..], &[0x06]].concat()),
        {
            let body = [
                &[0xa1][..],
                &text("heartbeat"),
                &[0xa1],
                &text("term"),
                &[0x20],
            ]
            .concat();
            [&[body.len() as u8][..], &body].concat()
        },
        {
            let body = [
                &[0xa1][..],
                &text("heartbeat"),
                &[0xa1],
                &text("term"),
                &[0xc2, 0x49],
                &[1; 9],
            ]
            .concat();
            [&[body.len() as u8][..], &body].concat()
        },
        [&[64u8][..], &[0x81; 63], &[0x00]].concat(),
        [&[64u8][..], &[0x9f; 64]].concat(),
        [&[9u8][..], &wide_head(TEXT, u64::MAX)].concat(),
        [&[9u8][..], &wide_head(MAP, 1 << 63)].concat(),
        [&[10u8][..], &[0xa1], &wide_head(TEXT, 4 << 30)].concat(),
        vec![65],
        vec![255],
        vec![0],
        vec![],
    ] {
        let (r, peak) = measure(|| recv(&bad));
        assert!(r.is_err(), "{bad:02x?}");
        assert!(peak <= ELECTION_BOUND, "{bad:02x?}: {peak}");
    }
    // A frame whose 64 bytes nest as deep as they can, on a small stack.
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| {
            for nest in [0x81u8, 0x9f, 0xc6, 0xa1] {
                let frame = [&[64u8][..], &[nest; 64]].concat();
                assert!(recv(&frame).is_err());
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------

/// The worst allocation of each decoder on inputs chosen to make it allocate, printed for the
/// record (`--nocapture`) and checked against [`bound`].
#[test]
fn worst_cases_stay_within_their_bound() {
    // The most elements per input byte: empty strings (one byte each) in a string vector, and
    // empty arrays or maps elsewhere; as many as the limit allows.
    fn report<T: Wire>(name: &str, input: &[u8]) {
        let (_, peak) = peak_of::<T>(input);
        let allowed = bound(T::LIMIT);
        eprintln!(
            "{:>16} {name:<32} {:>8} input bytes, peak {:>10} bytes, {:>5.1}x the limit of {}",
            T::NAME,
            input.len(),
            peak,
            peak as f64 / T::LIMIT as f64,
            T::LIMIT
        );
        assert!(peak <= allowed, "{}: {name}: {peak} > {allowed}", T::NAME);
    }
    let many = |limit: u64, overhead: usize, item: &[u8]| (limit as usize - overhead) / item.len();
    // peers: one record with as many empty addresses as fit.
    let n = many(peer_exchange::MAX_MESSAGE, 64, &[0x60]);
    let addrs = [&head(ARRAY, n as u64)[..], &vec![0x60; n]].concat();
    let announce = [
        &[0xa1][..],
        &text("peers"),
        &[0x81, 0xa2],
        &text("peer_id"),
        &[0x60],
        &text("addrs"),
        &addrs,
    ]
    .concat();
    report::<peer_exchange::Announce>("empty addresses", &announce);
    let claim = [&[0xa1][..], &text("peers"), &wide_head(ARRAY, 1 << 40)].concat();
    report::<peer_exchange::Announce>("a claim of 2^40 peers", &claim);
    let nested = [
        &[0xa1][..],
        &text("peers"),
        &wide_head(ARRAY, 1 << 40),
        &[0xa2],
        &text("peer_id"),
        &[0x60],
        &text("addrs"),
        &wide_head(ARRAY, 1 << 40),
    ]
    .concat();
    report::<peer_exchange::Announce>("nested claims of 2^40", &nested);
    // index: a delta removing as many empty paths as fit.
    let n = many(index_sync::MAX_REQUEST, 64, &[0x60]);
    let delta = [
        &[0xa1][..],
        &text("delta"),
        &[0xa4],
        &text("base"),
        &[0],
        &text("version"),
        &[0],
        &text("upserted"),
        &[0x80],
        &text("removed"),
        &head(ARRAY, n as u64),
        &vec![0x60; n],
    ]
    .concat();
    report::<index_sync::Request>("empty removed paths", &delta);
    // search: a hit with as many empty holders as fit.
    let n = many(search::MAX_RESPONSE, 200, &[0x60]);
    let results = [
        &[0xa1][..],
        &text("results"),
        &[0xa4],
        &text("total"),
        &[0],
        &text("indexed"),
        &[0],
        &text("nodes"),
        &[0],
        &text("hits"),
        &[0x81, 0xa1],
        &text("holders"),
        &head(ARRAY, n as u64),
        &vec![0x60; n],
    ]
    .concat();
    report::<search::Response>("empty holders", &results);
    let claims = [
        &[0xa1][..],
        &text("results"),
        &[0xa1],
        &text("hits"),
        &wide_head(ARRAY, 1 << 40),
        &[0xa1],
        &text("holders"),
        &wide_head(ARRAY, 1 << 40),
    ]
    .concat();
    report::<search::Response>("nested claims of 2^40", &claims);
    // content: the largest manifest page the limit allows.
    let n = content::MAX_RESPONSE as usize - 64;
    let page = [
        &[0xa1][..],
        &text("manifest"),
        &[0xa3],
        &text("total"),
        &head(UINT, n as u64),
        &text("offset"),
        &[0],
        &text("bytes"),
        &head(BYTES, n as u64),
        &vec![1; n],
    ]
    .concat();
    report::<content::Response>("a 2 MiB byte string", &page);
}
