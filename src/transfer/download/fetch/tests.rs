//! The fetch phase's state machine, driven by hand (time included), and its driver, run with
//! injected holders and fetchers.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use futures::FutureExt;
use rand::{rngs::SmallRng, RngExt, SeedableRng};

use super::*;
use crate::share::Kind;

const PIECE: u64 = 256 * 1024;

fn t(ms: u64) -> Instant {
    thread_local!(static BASE: Instant = Instant::now());
    BASE.with(|b| *b + Duration::from_millis(ms))
}

/// A shape of distinct files with the given unit lengths.
fn shape(files: &[&[u64]]) -> Shape {
    let mut lens = Vec::new();
    let mut ranges = Vec::new();
    for f in files {
        let first = lens.len();
        lens.extend_from_slice(f);
        ranges.push(first..lens.len());
    }
    Shape {
        lens,
        files: ranges,
    }
}

fn fetch(files: &[&[u64]]) -> Fetch<u32> {
    let shape = shape(files);
    let done = vec![false; shape.lens.len()];
    Fetch::new(shape, &done, Path::new("/downloads/x.part"), t(0))
}

fn drain(f: &mut Fetch<u32>) -> Vec<Command<u32>> {
    std::iter::from_fn(|| f.poll_command()).collect()
}

/// Every unit `peer` gets now.
fn give(f: &mut Fetch<u32>, peer: u32, now: Instant) -> Vec<usize> {
    std::iter::from_fn(|| f.next_unit(peer, now))
        .take(10_000)
        .collect()
}

fn done(f: &mut Fetch<u32>, peer: u32, unit: usize, now: Instant) {
    f.on_event(Event::Done { peer, unit }, now);
}

/// A fetch with holders `peers` connected (commands drained).
fn connected(files: &[&[u64]], peers: &[u32]) -> Fetch<u32> {
    let mut f = fetch(files);
    assert_eq!(drain(&mut f), [Command::LookUp]);
    f.on_holders(Ok(peers.to_vec()), t(0));
    let connects: Vec<_> = peers.iter().map(|&p| Command::Connect(p)).collect();
    assert_eq!(drain(&mut f), connects);
    f
}

fn saves(commands: &[Command<u32>]) -> Vec<Vec<u8>> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Save(bits) => Some(bits.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn it_looks_up_holders_first_and_gives_each_new_one_a_fetcher() {
    let mut f = fetch(&[&[PIECE; 4]]);
    assert_eq!(drain(&mut f), [Command::LookUp]);
    let p = f.progress(t(0));
    assert_eq!(p.state, DownloadState::Waiting);
    assert!(p
        .message
        .unwrap()
        .contains("no node holding it is reachable"));

    f.on_holders(Ok(vec![1, 2]), t(0));
    assert_eq!(drain(&mut f), [Command::Connect(1), Command::Connect(2)]);
    let p = f.progress(t(0));
    assert_eq!(
        (p.state, p.peers, p.message),
        (DownloadState::Fetching, 2, None)
    );

    // No lookup before it is due; then one, and only the new holder is connected.
    f.on_tick(t(REFRESH_HOLDERS.as_millis() as u64 - 1));
    assert_eq!(drain(&mut f), []);
    f.on_tick(t(REFRESH_HOLDERS.as_millis() as u64));
    assert_eq!(drain(&mut f), [Command::LookUp]);
    // While one is out, no other goes.
    f.on_tick(t(3 * REFRESH_HOLDERS.as_millis() as u64));
    assert_eq!(drain(&mut f), []);
    f.on_holders(Ok(vec![2, 3, 1]), t(5_000));
    assert_eq!(drain(&mut f), [Command::Connect(3)]);
    assert_eq!(f.progress(t(0)).peers, 3);
}

#[test]
fn with_no_holder_it_looks_again_every_second_and_says_why_it_waits() {
    let mut f = fetch(&[&[PIECE]]);
    drain(&mut f);
    f.on_holders(Err("the leader is being elected".into()), t(0));
    assert_eq!(drain(&mut f), []);
    f.on_tick(t(REFRESH_NO_HOLDERS.as_millis() as u64));
    assert_eq!(drain(&mut f), [Command::LookUp]);
    f.on_holders(Ok(vec![]), t(1_000));
    let p = f.progress(t(0));
    assert_eq!(p.state, DownloadState::Waiting);
    assert!(p.message.unwrap().contains("no node holding it"));
    assert_eq!(
        f.next_unit(1, t(1_000)),
        None,
        "an unknown peer gets nothing"
    );
}

#[test]
fn holders_of_files_and_partial_holders_get_only_what_they_have() {
    // Two files: 0..4 and 4..5.
    let mut f = fetch(&[&[PIECE; 4], &[PIECE]]);
    drain(&mut f);
    let files = [
        Holding {
            whole: vec![],
            // 2 has pieces 1 and 3 of the first file; 3's bitfield is of another layout.
            partial: vec![
                (2, units::bitfield([false, true, false, true].into_iter())),
                (3, vec![0xff, 0xff]),
            ],
        },
        Holding {
            whole: vec![4],
            partial: vec![],
        },
    ];
    f.on_lookup(Ok(vec![]), &files, t(0));
    assert_eq!(drain(&mut f), [Command::Connect(2), Command::Connect(4)]);
    assert_eq!(
        give(&mut f, 2, t(1)).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 3])
    );
    assert_eq!(give(&mut f, 4, t(1)), [4]);
    // 2 did not have piece 3 after all: not asked again, not rested, not disconnected.
    f.on_event(
        Event::Refused {
            peer: 2,
            unit: 3,
            status: Status::Unavailable,
        },
        t(2),
    );
    assert_eq!(drain(&mut f), []);
    assert!(give(&mut f, 2, t(2)).is_empty());
    done(&mut f, 2, 1, t(3));
    // Partial holders are looked up again soon: what they have grows.
    f.on_tick(t(REFRESH_SWARM.as_millis() as u64));
    assert_eq!(
        drain(&mut f),
        [
            Command::Save(units::bitfield([false, true].into_iter())),
            Command::LookUp
        ]
    );
    let grown = [
        Holding {
            whole: vec![],
            partial: vec![(2, units::bitfield([true, true, true, true].into_iter()))],
        },
        Holding::default(),
    ];
    f.on_lookup(Ok(vec![]), &grown, t(1_100));
    // Its window shrank with the refusal; it grows back as it delivers.
    let mut got = BTreeSet::new();
    for ms in 1_100..1_110 {
        for unit in give(&mut f, 2, t(ms)) {
            got.insert(unit);
            done(&mut f, 2, unit, t(ms));
        }
    }
    assert_eq!(got, BTreeSet::from([0, 2, 3]));
    assert_eq!(drain(&mut f), [Command::Close(0)]);
    // A whole holder of the download serves everything.
    f.on_lookup(Ok(vec![5]), &[], t(1_200));
    assert_eq!(drain(&mut f), [Command::Connect(5)]);
}

#[test]
fn units_go_out_in_order_files_close_when_complete_and_the_phase_ends_with_a_save() {
    let mut f = connected(&[&[PIECE, PIECE], &[5]], &[1]);
    assert_eq!(give(&mut f, 1, t(0)), [0, 1, 2]);
    done(&mut f, 1, 0, t(10));
    assert_eq!(drain(&mut f), [], "file 0 is not complete yet");
    done(&mut f, 1, 2, t(20));
    assert_eq!(drain(&mut f), [Command::Close(1)]);
    done(&mut f, 1, 1, t(30));
    assert_eq!(drain(&mut f), [Command::Close(0)]);
    // A late duplicate closes nothing twice.
    done(&mut f, 1, 1, t(40));
    assert_eq!(drain(&mut f), []);
    assert!(f.is_done());
    let p = f.progress(t(40));
    assert_eq!((p.bytes_done, p.files_done), (2 * PIECE + 5, 2));
    assert_eq!(p.bytes_fetched, 3 * PIECE + 5, "the duplicate arrived too");
    // Over 200 ms at least (the bytes came within 40 ms).
    assert!(p.rate.abs_diff((2 * PIECE + 5) * 5) <= 1, "{}", p.rate);
    // Nothing more for longer than the meter's window: the rate is 0, not the last one.
    assert_eq!(f.progress(t(40 + 3_001)).rate, 0);

    f.stop(t(50));
    assert_eq!(
        drain(&mut f),
        [
            Command::Disconnect(1),
            Command::Save(units::bitfield([true; 3].into_iter()))
        ]
    );
    assert!(f.is_stopped());
}

#[test]
fn a_resumed_download_counts_what_is_done_and_a_complete_one_needs_no_lookup() {
    let s = shape(&[&[PIECE, PIECE], &[7]]);
    let mut f: Fetch<u32> = Fetch::new(s.clone(), &[true, false, true], Path::new("p"), t(0));
    let p = f.progress(t(0));
    assert_eq!((p.bytes_done, p.files_done), (PIECE + 7, 1));
    f.on_holders(Ok(vec![1]), t(0));
    drain(&mut f);
    assert_eq!(give(&mut f, 1, t(0)), [1], "only the missing unit goes out");

    let mut f: Fetch<u32> = Fetch::new(s, &[true; 3], Path::new("p"), t(0));
    assert!(f.is_done());
    assert_eq!(drain(&mut f), []);
    f.on_tick(t(60_000));
    assert_eq!(drain(&mut f), [], "no lookup for a complete download");
}

#[test]
fn a_holder_that_sends_bad_data_is_dropped_for_the_rest_of_the_download() {
    let mut f = connected(&[&[PIECE; 8]], &[1, 2]);
    let of_1 = give(&mut f, 1, t(0));
    assert!(!of_1.is_empty());
    f.on_event(
        Event::Bad {
            peer: 1,
            unit: of_1[0],
        },
        t(10),
    );
    assert_eq!(drain(&mut f), [Command::Disconnect(1)]);
    assert_eq!(f.progress(t(0)).peers, 1);
    // Its units go to the other holder.
    let of_2 = give(&mut f, 2, t(10));
    assert!(
        of_1.iter().all(|u| of_2.contains(u)),
        "{of_1:?} -> {of_2:?}"
    );
    // Its late data counts for nothing, and it is never connected again.
    done(&mut f, 1, of_1[1], t(20));
    assert_eq!(f.progress(t(0)).bytes_done, 0);
    f.on_tick(t(5_000));
    assert_eq!(drain(&mut f), [Command::LookUp]);
    f.on_holders(Ok(vec![1, 2]), t(5_000));
    assert_eq!(drain(&mut f), []);
}

#[test]
fn a_holder_that_cannot_serve_rests_and_comes_back_but_a_busy_one_stays() {
    let mut f = connected(&[&[PIECE; 8]], &[1, 2]);
    let of_2 = give(&mut f, 2, t(0));
    // Busy: that unit goes back, the holder stays.
    f.on_event(
        Event::Refused {
            peer: 2,
            unit: of_2[0],
            status: Status::Busy,
        },
        t(5),
    );
    assert_eq!(drain(&mut f), []);
    assert_eq!(f.progress(t(0)).peers, 2);
    let of_1 = give(&mut f, 1, t(5));
    f.on_event(
        Event::Refused {
            peer: 1,
            unit: of_1[0],
            status: Status::NotFound,
        },
        t(10),
    );
    assert_eq!(drain(&mut f), [Command::Disconnect(1)]);
    // Its units go to holder 2 once that one has room again.
    for &u in &of_2[1..] {
        done(&mut f, 2, u, t(10));
    }
    assert!(give(&mut f, 2, t(10)).contains(&of_1[0]));
    // Named again while it rests: left alone. After the rest: back.
    f.on_holders(Ok(vec![1, 2]), t(1_000));
    assert_eq!(drain(&mut f), []);
    f.on_holders(Ok(vec![1, 2]), t(10 + REST_REFUSED.as_millis() as u64));
    assert_eq!(drain(&mut f), [Command::Connect(1)]);
}

#[test]
fn a_lost_stream_brings_the_next_lookup_forward_and_the_holder_back_after_a_short_rest() {
    let mut f = connected(&[&[PIECE; 4]], &[1]);
    let units = give(&mut f, 1, t(0));
    f.on_event(
        Event::Gone {
            peer: 1,
            error: "connection reset".into(),
        },
        t(100),
    );
    assert_eq!(drain(&mut f), [Command::Disconnect(1)]);
    let p = f.progress(t(0));
    assert_eq!((p.state, p.peers), (DownloadState::Waiting, 0));
    assert!(p
        .message
        .unwrap()
        .contains("its holders cannot serve it now"));
    // The lookup was due after REFRESH_HOLDERS; now it is due after RETRY_PEER.
    let retry = 100 + RETRY_PEER.as_millis() as u64;
    f.on_tick(t(retry - 1));
    assert_eq!(drain(&mut f), []);
    f.on_tick(t(retry));
    assert_eq!(drain(&mut f), [Command::LookUp]);
    f.on_holders(Ok(vec![1]), t(retry));
    assert_eq!(drain(&mut f), [Command::Connect(1)]);
    assert_eq!(
        give(&mut f, 1, t(retry)),
        units,
        "its units went back to the queue"
    );
}

#[test]
fn a_stalled_holder_loses_its_units_to_the_others() {
    // 16 units of 256 KiB: a 1 MiB window each at first.
    let mut f = connected(&[&[PIECE; 16]], &[1, 2]);
    let of_1 = give(&mut f, 1, t(0));
    let of_2 = give(&mut f, 2, t(0));
    assert!(!of_1.is_empty() && !of_2.is_empty());
    // Holder 1 keeps delivering; holder 2 goes quiet.
    for (i, &u) in of_1.iter().enumerate() {
        done(&mut f, 1, u, t(100 * (i as u64 + 1)));
    }
    drain(&mut f);
    let stall = scheduler::Config::default().stall_timeout.as_millis() as u64;
    f.on_tick(t(stall - 1));
    assert_eq!(f.planner.in_flight(2), of_2.len(), "not stalled yet");
    f.on_tick(t(stall));
    assert_eq!(
        f.planner.in_flight(2),
        0,
        "stalled: its units are taken away"
    );
    let next = give(&mut f, 1, t(stall));
    assert_eq!(
        next[0], of_2[0],
        "the stalled units go out first, lowest first"
    );
}

#[test]
fn a_failed_write_pauses_every_request_and_the_download_goes_on_after_the_pause() {
    let mut f = connected(&[&[PIECE; 4]], &[1, 2]);
    let units = give(&mut f, 1, t(0));
    done(&mut f, 1, units[0], t(10));
    f.on_event(
        Event::WriteFailed {
            peer: 1,
            unit: units[1],
            error: std::io::Error::other("No space left on device"),
        },
        t(20),
    );
    let p = f.progress(t(0));
    assert_eq!(p.state, DownloadState::Waiting);
    let why = p.write_error.expect("a write error is shown");
    assert!(
        why.contains("/downloads/x.part") && why.contains("No space left"),
        "{why}"
    );
    assert_eq!(p.message.as_deref(), Some(why.as_str()));
    assert_eq!(p.bytes_done, PIECE, "what was fetched is kept");
    assert_eq!(f.next_unit(2, t(20)), None, "every request pauses");
    let over = 20 + WRITE_PAUSE.as_millis() as u64;
    f.on_tick(t(over - 1));
    assert_eq!(f.next_unit(2, t(over - 1)), None);
    f.on_tick(t(over));
    assert_eq!(f.progress(t(0)).state, DownloadState::Fetching);
    assert_eq!(f.progress(t(0)).write_error, None);
    assert_eq!(
        f.next_unit(2, t(over)),
        Some(units[1]),
        "the failed unit goes again"
    );
}

#[test]
fn a_unit_its_fetcher_could_not_take_goes_back_to_the_queue() {
    let mut f = connected(&[&[PIECE; 2]], &[1]);
    let u = f.next_unit(1, t(0)).unwrap();
    f.unsent(1, u);
    assert_eq!(f.next_unit(1, t(1)), Some(u));
}

#[test]
fn saves_come_at_most_once_a_second_and_only_after_a_change() {
    let mut f = connected(&[&[PIECE; 4]], &[1]);
    let units = give(&mut f, 1, t(0));
    f.on_tick(t(900));
    assert_eq!(
        saves(&drain(&mut f)),
        Vec::<Vec<u8>>::new(),
        "nothing changed"
    );
    done(&mut f, 1, units[0], t(1_000));
    f.on_tick(t(1_100));
    let first = saves(&drain(&mut f));
    assert_eq!(
        first,
        [units::bitfield([true, false, false, false].into_iter())]
    );
    done(&mut f, 1, units[1], t(1_200));
    f.on_tick(t(1_400));
    assert_eq!(
        saves(&drain(&mut f)).len(),
        0,
        "less than a second since the last save"
    );
    f.on_tick(t(2_100));
    assert_eq!(
        saves(&drain(&mut f)),
        [units::bitfield([true, true, false, false].into_iter())]
    );
    f.on_tick(t(3_200));
    assert_eq!(saves(&drain(&mut f)).len(), 0, "nothing changed since");
}

#[test]
fn cancel_saves_what_is_done_stops_every_fetcher_and_then_nothing_happens() {
    let mut f = connected(&[&[PIECE; 4]], &[1, 2]);
    let of_1 = give(&mut f, 1, t(0));
    done(&mut f, 1, of_1[0], t(10));
    f.stop(t(20));
    let commands = drain(&mut f);
    assert_eq!(
        commands,
        [
            Command::Disconnect(1),
            Command::Disconnect(2),
            Command::Save(units::bitfield([true, false, false, false].into_iter()))
        ]
    );
    assert!(f.is_stopped() && !f.is_done());
    // After the stop: no unit, no lookup, no connect, no save.
    assert_eq!(f.next_unit(2, t(30)), None);
    done(&mut f, 1, of_1[1], t(30));
    f.on_holders(Ok(vec![3]), t(30));
    f.on_tick(t(60_000));
    f.stop(t(60_000));
    assert_eq!(drain(&mut f), []);
    assert_eq!(f.progress(t(0)).bytes_done, PIECE);
}

#[test]
fn a_download_walks_through_every_state_of_the_fetch_phase() {
    let mut f = fetch(&[&[PIECE; 2]]);
    drain(&mut f);
    let state = |f: &Fetch<u32>| f.progress(t(0)).state;
    assert_eq!(state(&f), DownloadState::Waiting, "no holder known yet");
    f.on_holders(Ok(vec![1]), t(0));
    assert_eq!(state(&f), DownloadState::Fetching, "a holder joined");
    let units = give(&mut f, 1, t(0));
    f.on_event(
        Event::Gone {
            peer: 1,
            error: "reset".into(),
        },
        t(10),
    );
    assert_eq!(state(&f), DownloadState::Waiting, "its only holder left");
    f.on_holders(Ok(vec![2]), t(20));
    assert_eq!(state(&f), DownloadState::Fetching, "another one came");
    assert_eq!(give(&mut f, 2, t(20)), units);
    f.on_event(
        Event::WriteFailed {
            peer: 2,
            unit: units[0],
            error: std::io::Error::other("disk full"),
        },
        t(30),
    );
    assert_eq!(state(&f), DownloadState::Waiting, "the disk is full");
    f.on_tick(t(30 + WRITE_PAUSE.as_millis() as u64));
    assert_eq!(state(&f), DownloadState::Fetching, "the pause is over");
    let now = t(40 + WRITE_PAUSE.as_millis() as u64);
    done(&mut f, 2, units[1], now);
    for _ in 0..units.len() {
        for u in give(&mut f, 2, now) {
            done(&mut f, 2, u, now);
        }
    }
    assert!(f.is_done());
    f.stop(now);
    assert!(f.is_stopped());
    assert_eq!(
        state(&f),
        DownloadState::Fetching,
        "the verify phase takes over"
    );
}

#[test]
fn out_of_range_units_and_unknown_peers_change_nothing() {
    let mut f = connected(&[&[PIECE; 2]], &[1]);
    done(&mut f, 1, 99, t(1));
    done(&mut f, 7, 0, t(1));
    f.on_event(
        Event::Refused {
            peer: 7,
            unit: 99,
            status: Status::OutOfRange,
        },
        t(1),
    );
    f.on_event(
        Event::Gone {
            peer: 7,
            error: "?".into(),
        },
        t(1),
    );
    assert_eq!(drain(&mut f), []);
    let p = f.progress(t(0));
    assert_eq!((p.bytes_done, p.peers), (0, 1));
}

/// What the commands say about the fetchers, checked against the machine.
#[derive(Default)]
struct Seen {
    connected: BTreeSet<u32>,
    closed: BTreeSet<usize>,
}

impl Seen {
    fn apply(&mut self, f: &mut Fetch<u32>) {
        for c in drain(f) {
            match c {
                Command::Connect(p) => {
                    assert!(self.connected.insert(p), "{p} connected twice");
                    assert!(!f.banned.contains(&p), "banned {p} connected");
                }
                Command::Disconnect(p) => assert!(self.connected.remove(&p), "{p} not connected"),
                Command::Close(file) => assert!(self.closed.insert(file), "{file} closed twice"),
                Command::LookUp | Command::Save(_) => {}
            }
        }
        assert_eq!(self.connected, f.fetchers, "the commands keep the fetchers");
        let complete: BTreeSet<usize> = (0..f.shape.files.len())
            .filter(|&i| f.shape.files[i].clone().all(|u| f.planner.is_done_unit(u)))
            .collect();
        assert_eq!(
            self.closed, complete,
            "exactly the complete files are closed"
        );
        assert_eq!(f.progress(t(0)).files_done, complete.len() as u64);
        let bytes: u64 = (0..f.shape.lens.len())
            .filter(|&u| f.planner.is_done_unit(u))
            .map(|u| f.shape.lens[u])
            .sum();
        assert_eq!(f.progress(t(0)).bytes_done, bytes);
    }
}

#[test]
fn random_joins_leaves_lies_refusals_stalls_and_full_disks_keep_the_books_and_finish() {
    for seed in 0..40 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let files: Vec<Vec<u64>> = (0..1 + rng.random_range(0..5))
            .map(|_| {
                let n = 1 + rng.random_range(0..6);
                (0..n)
                    .map(|i| {
                        if i + 1 == n {
                            1 + rng.random_range(0..PIECE)
                        } else {
                            PIECE
                        }
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u64]> = files.iter().map(Vec::as_slice).collect();
        let mut f = fetch(&refs);
        let mut seen = Seen::default();
        let mut now = 0u64;
        let liar = 9;
        for _ in 0..20_000 {
            if f.is_done() {
                break;
            }
            now += rng.random_range(0..300);
            let at = t(now);
            match rng.random_range(0..100) {
                0..=4 => {
                    let holders: Vec<u32> = (1..=4)
                        .chain([liar])
                        .filter(|_| rng.random_bool(0.6))
                        .collect();
                    f.on_holders(Ok(holders), at);
                }
                5..=6 => f.on_holders(Err("no leader".into()), at),
                7..=9 => {
                    if let Some(&p) = seen.connected.iter().next() {
                        f.on_event(
                            Event::Gone {
                                peer: p,
                                error: "reset".into(),
                            },
                            at,
                        );
                    }
                }
                10..=11 => {
                    let peer = 1 + rng.random_range(0..4);
                    if let Some(u) = f.next_unit(peer, at) {
                        let status = [Status::NotFound, Status::Busy, Status::Unavailable]
                            [rng.random_range(0..3)];
                        f.on_event(
                            Event::Refused {
                                peer,
                                unit: u,
                                status,
                            },
                            at,
                        );
                    }
                }
                12 => {
                    let peer = 1 + rng.random_range(0..4);
                    if let Some(u) = f.next_unit(peer, at) {
                        let error = std::io::Error::other("full");
                        f.on_event(
                            Event::WriteFailed {
                                peer,
                                unit: u,
                                error,
                            },
                            at,
                        );
                    }
                }
                13..=39 => f.on_tick(at),
                _ => {
                    // A connected holder delivers what it got; the liar lies.
                    let peers: Vec<u32> = seen.connected.iter().copied().collect();
                    if peers.is_empty() {
                        f.on_tick(at);
                    } else {
                        let peer = peers[rng.random_range(0..peers.len())];
                        if let Some(u) = f.next_unit(peer, at) {
                            if peer == liar {
                                f.on_event(Event::Bad { peer, unit: u }, at);
                            } else {
                                done(&mut f, peer, u, at);
                            }
                        }
                    }
                }
            }
            seen.apply(&mut f);
        }
        assert!(f.is_done(), "seed {seed}: not done");
        f.stop(t(now));
        let last = drain(&mut f);
        let total = f.shape.lens.len();
        assert_eq!(
            saves(&last),
            [units::bitfield(std::iter::repeat_n(true, total))],
            "seed {seed}"
        );
    }
}

/// The driver's world in a test: holders from a list, fetchers that deliver (or lie, or stay
/// silent) at once, saves and closes recorded.
#[derive(Default)]
struct Lab {
    holders: Mutex<Vec<u32>>,
    /// How many lookups were made.
    lookups: watch::Sender<usize>,
    liars: Vec<u32>,
    silent: Vec<u32>,
    connects: Mutex<Vec<u32>>,
    closes: Mutex<Vec<usize>>,
    saves: Mutex<Vec<Vec<u8>>>,
}

impl Holders<u32> for Arc<Lab> {
    fn find(&self, _id: Id) -> futures::future::BoxFuture<'static, Result<Vec<u32>, String>> {
        let found = self.holders.lock().unwrap().clone();
        self.lookups.send_modify(|n| *n += 1);
        async move { Ok(found) }.boxed()
    }
}

impl FetchIo<u32> for Arc<Lab> {
    fn connect(&self, peer: u32, mut jobs: mpsc::Receiver<Job>, events: mpsc::Sender<Event<u32>>) {
        self.connects.lock().unwrap().push(peer);
        let (liar, silent) = (self.liars.contains(&peer), self.silent.contains(&peer));
        tokio::spawn(async move {
            while let Some(Job { unit }) = jobs.recv().await {
                let event = match (liar, silent) {
                    (_, true) => continue,
                    (true, _) => Event::Bad { peer, unit },
                    _ => Event::Done { peer, unit },
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
    }

    fn close(&self, file: usize) {
        self.closes.lock().unwrap().push(file);
    }

    async fn save(&self, bits: Vec<u8>) {
        self.saves.lock().unwrap().push(bits);
    }
}

fn start_progress(bytes_total: u64) -> watch::Sender<Progress> {
    let mut p = super::super::Start::New(super::super::Target {
        id: Id([7; 32]),
        kind: Kind::Dir,
        name: "x".into(),
        size: bytes_total,
        dest: PathBuf::from("d"),
    })
    .initial_progress();
    p.bytes_fetched = 5;
    watch::channel(p).0
}

#[tokio::test]
async fn the_driver_fetches_from_injected_holders_drops_a_liar_and_finishes() {
    let files: &[&[u64]] = &[&[PIECE; 6], &[10], &[PIECE, 3]];
    let lab = Arc::new(Lab {
        holders: Mutex::new(vec![1, 2, 3]),
        liars: vec![2],
        ..Default::default()
    });
    let progress = start_progress(0);
    let cancel = CancellationToken::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            fetch(files),
            Id([7; 32]),
            &[],
            &lab,
            &lab,
            &progress,
            &cancel,
        ),
    )
    .await
    .expect("the fetch phase ends");
    assert!(outcome.is_ok());
    assert_eq!(*lab.connects.lock().unwrap(), [1, 2, 3]);
    let mut closes = lab.closes.lock().unwrap().clone();
    closes.sort();
    assert_eq!(closes, [0, 1, 2]);
    let saved = lab.saves.lock().unwrap();
    assert_eq!(
        saved.last().unwrap(),
        &units::bitfield([true; 9].into_iter())
    );
    let p = progress.borrow();
    assert_eq!(p.bytes_done, 7 * PIECE + 13);
    assert_eq!(p.files_done, 3);
    assert!(
        p.bytes_fetched >= 5 + 7 * PIECE + 13,
        "earlier rounds count too"
    );
}

#[tokio::test]
async fn the_driver_waits_for_holders_and_stops_with_a_save_when_cancelled() {
    let lab = Arc::new(Lab {
        silent: vec![4],
        ..Default::default()
    });
    let progress = Arc::new(start_progress(0));
    let cancel = CancellationToken::new();
    let task = {
        let (lab, cancel, progress) = (lab.clone(), cancel.clone(), progress.clone());
        tokio::spawn(async move {
            let f = fetch(&[&[PIECE; 3]]);
            run(f, Id([7; 32]), &[], &lab, &lab, &progress, &cancel).await
        })
    };
    let mut lookups = lab.lookups.subscribe();
    tokio::time::timeout(Duration::from_secs(20), lookups.wait_for(|n| *n >= 2))
        .await
        .expect("with no holder it asks again")
        .unwrap();
    let p = progress.borrow().clone();
    assert_eq!((p.state, p.peers), (DownloadState::Waiting, 0));
    // A holder that never answers comes.
    *lab.holders.lock().unwrap() = vec![4];
    let mut follow = progress.subscribe();
    tokio::time::timeout(Duration::from_secs(20), follow.wait_for(|p| p.peers == 1))
        .await
        .expect("the holder is found")
        .unwrap();
    cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("cancel ends the phase")
        .unwrap();
    assert!(matches!(outcome, Err(Stop::Interrupted)));
    assert_eq!(*lab.connects.lock().unwrap(), [4]);
    assert_eq!(
        lab.saves.lock().unwrap().last().unwrap(),
        &units::bitfield([false; 3].into_iter()),
        "the stop saves"
    );
}

/// The changed-source end: the holder says it does not have the content any more and the
/// leader knows nobody else; after [`GIVE_UP_ORPHANED`] of that (and not before, nor while
/// the leader cannot be asked) the phase ends as no longer shared. A holder that shares it
/// again in time keeps it going.
#[test]
fn a_download_whose_holders_no_longer_have_it_ends_after_a_bounded_wait() {
    let mut f = connected(&[&[PIECE; 2]], &[1]);
    assert_eq!(give(&mut f, 1, t(0)), [0, 1]);
    f.on_event(
        Event::Refused {
            peer: 1,
            unit: 0,
            status: Status::NotFound,
        },
        t(10),
    );
    drain(&mut f);
    // The leader cannot be asked: no clock starts.
    f.on_holders(Err("no leader".into()), t(20));
    f.on_tick(t(30_000));
    assert!(!f.is_stopped());
    // It knows nobody: the clock starts, and the user is told.
    f.on_holders(Ok(vec![]), t(30_000));
    let p = f.progress(t(31_000));
    assert!(p.message.unwrap().contains("no longer have this version"));
    f.on_tick(t(30_000 + GIVE_UP_ORPHANED.as_millis() as u64 - 1));
    assert!(!f.is_stopped());
    // Someone shares it again: the clock stops.
    f.on_holders(Ok(vec![2]), t(45_000));
    drain(&mut f);
    f.on_event(
        Event::Refused {
            peer: 2,
            unit: 1,
            status: Status::Unavailable,
        },
        t(45_001),
    );
    f.on_tick(t(30_000 + GIVE_UP_ORPHANED.as_millis() as u64 + 1));
    assert!(!f.is_stopped());
    // Gone again, for good.
    f.on_holders(Ok(vec![]), t(50_000));
    f.on_tick(t(50_000 + GIVE_UP_ORPHANED.as_millis() as u64));
    assert!(f.is_stopped());
    assert_eq!(f.gave_up(), Some(NO_LONGER_SHARED));
}
