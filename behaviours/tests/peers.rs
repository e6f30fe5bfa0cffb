//! `peers::Behaviour` between real swarms over an in-memory transport with Noise and Yamux:
//! who dials, backoff on failed dials, and dials by peer id through the book.

use std::time::{Duration, Instant};

use futures::StreamExt;
use iwant_behaviours::peers::{self, Source};
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
    let peer = key.public().to_peer_id();
    let transport = MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).unwrap())
        .multiplex(yamux::Config::default())
        .boxed();
    Swarm::new(
        transport,
        peers::Behaviour::new(peer, 7),
        peer,
        Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

async fn listening(key: Keypair) -> (S, Multiaddr) {
    let mut s = swarm(key);
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
