//! `peers::Behaviour` between real swarms over an in-memory transport with Noise and Yamux:
//! who dials, backoff on failed dials, dials by peer id through the book, pinned addresses, and
//! the liveness watchdog.

use std::time::{Duration, Instant};

use futures::StreamExt;
use iwant_behaviours::peers::{self, PinError, Probe, Source};
use libp2p::{
    core::{transport::MemoryTransport, upgrade::Version, ConnectedPoint, Transport},
    identity::Keypair,
    multiaddr::Protocol,
    noise,
    swarm::{Config, SwarmEvent},
    yamux, Multiaddr, PeerId, Swarm,
};

type S = Swarm<peers::Behaviour>;

/// Two keypairs, the one with the smaller peer id first.
fn ordered_keys() -> (Keypair, Keypair) {
    let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    if a.public().to_peer_id() < b.public().to_peer_id() {
        (a, b)
    } else {
        (b, a)
    }
}

fn swarm(key: Keypair) -> S {
    swarm_with(key, peers::LIVENESS_TIMEOUT)
}

/// A swarm whose behaviour closes connections without an answered probe for `liveness`.
fn swarm_with(key: Keypair, liveness: Duration) -> S {
    let peer = key.public().to_peer_id();
    let transport = MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).unwrap())
        .multiplex(yamux::Config::default())
        .boxed();
    Swarm::new(
        transport,
        peers::Behaviour::new(peer, 7).with_liveness_timeout(liveness),
        peer,
        Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

async fn listening(key: Keypair) -> (S, Multiaddr) {
    listening_with(key, peers::LIVENESS_TIMEOUT).await
}

async fn listening_with(key: Keypair, liveness: Duration) -> (S, Multiaddr) {
    let mut s = swarm_with(key, liveness);
    s.listen_on(Multiaddr::empty().with(Protocol::Memory(0)))
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            return (s, address);
        }
    }
}

/// Connections each side established in `d`, with whether it dialed them.
async fn established_for(a: &mut S, b: &mut S, d: Duration) -> (Vec<bool>, Vec<bool>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return (ea, eb),
            e = a.select_next_some() => if let SwarmEvent::ConnectionEstablished { endpoint, .. } = e {
                ea.push(matches!(endpoint, ConnectedPoint::Dialer { .. }));
            },
            e = b.select_next_some() => if let SwarmEvent::ConnectionEstablished { endpoint, .. } = e {
                eb.push(matches!(endpoint, ConnectedPoint::Dialer { .. }));
            },
        }
    }
}

#[tokio::test]
async fn of_two_nodes_that_find_each_other_only_the_smaller_dials() {
    let (ka, kb) = ordered_keys();
    let (pa, pb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    let (mut a, addr_a) = listening(ka).await;
    let (mut b, addr_b) = listening(kb).await;
    // Both learn of each other at the same moment, as from one mDNS answer.
    a.behaviour_mut().add(pb, &[addr_b], Source::Mdns);
    b.behaviour_mut().add(pa, &[addr_a], Source::Mdns);
    let (ea, eb) = established_for(&mut a, &mut b, Duration::from_secs(2)).await;
    assert_eq!(ea, [true], "the smaller dialed, once");
    assert_eq!(eb, [false], "the larger only accepted");
}

#[tokio::test]
async fn the_larger_dials_when_the_smaller_does_not() {
    let (ka, kb) = ordered_keys();
    let pa = ka.public().to_peer_id();
    let (mut a, addr_a) = listening(ka).await;
    let (mut b, _) = listening(kb).await;
    // Only the larger heard of the other: it dials after its deferral.
    let start = Instant::now();
    b.behaviour_mut().add(pa, &[addr_a], Source::Announced);
    let limit = peers::book::DEFER * 2;
    let (ea, eb) = established_for(&mut a, &mut b, limit).await;
    assert_eq!((ea, eb), (vec![false], vec![true]));
    assert!(start.elapsed() >= peers::book::DEFER);
}

#[tokio::test]
async fn an_unreachable_peer_is_dialed_again_with_growing_waits() {
    let (ka, kb) = ordered_keys();
    let pb = kb.public().to_peer_id();
    let mut a = swarm(ka);
    // Nobody listens there.
    let dead = Multiaddr::empty().with(Protocol::Memory(4_000_000_000));
    a.behaviour_mut().add(pb, &[dead], Source::Mdns);
    let mut failures = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(6));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            e = a.select_next_some() => if let SwarmEvent::OutgoingConnectionError { peer_id: Some(p), .. } = e {
                assert_eq!(p, pb);
                failures.push(Instant::now());
            },
        }
    }
    // At once, then after ~1 s, ~2 s (±25 %): three or four dials in 6 s, not one every tick.
    assert!(
        (3..=4).contains(&failures.len()),
        "{} dials",
        failures.len()
    );
    let gaps: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1] > gaps[0], "the waits grow: {gaps:?}");
}

#[tokio::test]
async fn a_dial_by_peer_id_alone_uses_the_books_addresses() {
    let (ka, kb) = ordered_keys();
    let pa: PeerId = ka.public().to_peer_id();
    let (mut a, addr_a) = listening(ka).await;
    let (mut b, _) = listening(kb).await;
    // The larger knows the smaller's address but defers; a dial by peer id alone goes at once.
    b.behaviour_mut().add(pa, &[addr_a], Source::Announced);
    b.dial(pa).unwrap();
    let (ea, eb) = established_for(&mut a, &mut b, Duration::from_secs(2)).await;
    assert_eq!((ea, eb), (vec![false], vec![true]));
}

/// What happened to connections while both swarms ran.
#[derive(Debug, Default)]
struct Seen {
    /// Per swarm: its established connections, by id.
    established: [Vec<libp2p::swarm::ConnectionId>; 2],
    /// Per swarm: when each of its connections closed.
    closed: [Vec<Instant>; 2],
}

/// Polls both swarms until `done` (checked after every event and every 50 ms) or `limit`.
async fn run_until(a: &mut S, b: &mut S, limit: Duration, done: impl Fn(&Seen) -> bool) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !done(&seen) {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tick.tick() => {}
            e = a.select_next_some() => record(&mut seen, 0, e),
            e = b.select_next_some() => record(&mut seen, 1, e),
        }
    }
    seen
}

fn record(seen: &mut Seen, side: usize, e: SwarmEvent<std::convert::Infallible>) {
    match e {
        SwarmEvent::ConnectionEstablished { connection_id, .. } => {
            seen.established[side].push(connection_id)
        }
        SwarmEvent::ConnectionClosed { .. } => seen.closed[side].push(Instant::now()),
        _ => {}
    }
}

const LIVENESS: Duration = Duration::from_millis(400);

/// `a` (liveness timeout [`LIVENESS`]) connected to `b` (a timeout it never reaches), and the
/// connection's id on `a`.
async fn watched_pair() -> (S, S, libp2p::swarm::ConnectionId) {
    let (ka, kb) = ordered_keys();
    let (mut a, _) = listening_with(ka, LIVENESS).await;
    let (mut b, addr_b) = listening_with(kb, Duration::from_secs(60)).await;
    a.dial(addr_b).unwrap();
    let up = run_until(&mut a, &mut b, Duration::from_secs(2), |s| {
        !s.established[0].is_empty()
    })
    .await;
    let conn = *up.established[0].first().expect("connected");
    (a, b, conn)
}

#[tokio::test]
async fn a_connection_without_answered_probes_is_closed_after_the_liveness_timeout() {
    let (mut a, mut b, _) = watched_pair().await;
    let start = Instant::now();
    let seen = run_until(&mut a, &mut b, Duration::from_secs(5), |s| {
        !s.closed[0].is_empty()
    })
    .await;
    let closed = seen.closed[0]
        .first()
        .expect("the silent connection was closed");
    assert!(
        *closed - start >= LIVENESS / 2,
        "closed after {:?}, before its timeout",
        *closed - start
    );
}

#[tokio::test]
async fn answered_probes_keep_a_connection_open_and_a_failed_one_closes_it() {
    let (mut a, mut b, conn) = watched_pair().await;
    // Answers every 100 ms, for five liveness timeouts.
    for _ in 0..20 {
        a.behaviour_mut().probed(conn, Probe::Answered);
        let seen = run_until(&mut a, &mut b, Duration::from_millis(100), |s| {
            !s.closed[0].is_empty()
        })
        .await;
        assert!(seen.closed[0].is_empty(), "closed although it answered");
    }
    a.behaviour_mut().probed(conn, Probe::Failed);
    let seen = run_until(&mut a, &mut b, LIVENESS / 2, |s| !s.closed[0].is_empty()).await;
    assert_eq!(seen.closed[0].len(), 1, "a failed probe closes it at once");
}

#[tokio::test]
async fn a_peer_without_the_probe_protocol_is_not_judged_by_it() {
    let (mut a, mut b, conn) = watched_pair().await;
    a.behaviour_mut().probed(conn, Probe::Unsupported);
    let seen = run_until(&mut a, &mut b, LIVENESS * 4, |s| !s.closed[0].is_empty()).await;
    assert!(seen.closed[0].is_empty());
}

#[tokio::test]
async fn a_pinned_address_is_dialed_again_when_its_connection_closes() {
    let (ka, kb) = ordered_keys();
    let (pa, pb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    let (mut a, addr_a) = listening(ka).await;
    let (mut b, addr_b) = listening(kb).await;
    // Pinned without a peer id, as `--peer /ip4/.../tcp/4747` is.
    a.behaviour_mut().pin(addr_b.clone()).unwrap();
    a.behaviour_mut().pin(addr_b).unwrap();
    let up = run_until(&mut a, &mut b, Duration::from_secs(2), |s| {
        !s.established[0].is_empty() && !s.established[1].is_empty()
    })
    .await;
    assert_eq!(
        up.established[0].len(),
        1,
        "dialed once, though pinned twice"
    );
    b.disconnect_peer_id(pa).unwrap();
    let again = run_until(&mut a, &mut b, peers::PIN_REDIAL * 3, |s| {
        !s.established[0].is_empty()
    })
    .await;
    assert_eq!(again.established[0].len(), 1, "redialed");
    assert!(a.is_connected(&pb));
    // Its own address is refused.
    let own = addr_a.with(Protocol::P2p(pa));
    assert!(matches!(
        a.behaviour_mut().pin(own),
        Err(PinError::OwnAddress(_))
    ));
}
