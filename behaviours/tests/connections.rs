//! `connections::Behaviour` between real swarms over an in-memory transport with Noise and
//! Yamux (negotiated lazily, as iwant's transport does), with a short idle timeout so keep-alive
//! is visible.

use std::time::Duration;

use futures::StreamExt;
use iwant_behaviours::connections;
use libp2p::{
    core::{transport::MemoryTransport, upgrade::Version, Transport},
    identity::Keypair,
    multiaddr::Protocol,
    noise,
    swarm::{Config, SwarmEvent},
    yamux, Multiaddr, PeerId, Swarm,
};

const IDLE: Duration = Duration::from_millis(300);

fn swarm() -> Swarm<connections::Behaviour> {
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let transport = MemoryTransport::default()
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(&key).unwrap())
        .multiplex(yamux::Config::default())
        .boxed();
    Swarm::new(
        transport,
        connections::Behaviour::new(peer),
        peer,
        Config::with_tokio_executor().with_idle_connection_timeout(IDLE),
    )
}

async fn listening() -> (Swarm<connections::Behaviour>, Multiaddr) {
    let mut s = swarm();
    s.listen_on(Multiaddr::empty().with(Protocol::Memory(0)))
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            return (s, address);
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    established: usize,
    closed: usize,
    /// Connections that failed before they were established (in the handshake).
    failed: usize,
}

/// Polls both swarms for `d`, counting connection events on each side.
async fn run_for(
    a: &mut Swarm<connections::Behaviour>,
    b: &mut Swarm<connections::Behaviour>,
    d: Duration,
) -> (Counts, Counts) {
    let (mut ca, mut cb) = (Counts::default(), Counts::default());
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return (ca, cb),
            e = a.select_next_some() => count(&mut ca, e),
            e = b.select_next_some() => count(&mut cb, e),
        }
    }
}

fn count(c: &mut Counts, e: SwarmEvent<std::convert::Infallible>) {
    match e {
        SwarmEvent::ConnectionEstablished { .. } => c.established += 1,
        SwarmEvent::ConnectionClosed { .. } => c.closed += 1,
        SwarmEvent::IncomingConnectionError { .. } | SwarmEvent::OutgoingConnectionError { .. } => {
            c.failed += 1
        }
        _ => {}
    }
}

async fn connected_pair() -> (
    Swarm<connections::Behaviour>,
    Swarm<connections::Behaviour>,
    PeerId,
    PeerId,
) {
    let (mut a, _) = listening().await;
    let (mut b, addr_b) = listening().await;
    let (pa, pb) = (*a.local_peer_id(), *b.local_peer_id());
    a.dial(addr_b).unwrap();
    let (ca, cb) = run_for(&mut a, &mut b, Duration::from_millis(100)).await;
    assert_eq!((ca.established, cb.established), (1, 1));
    (a, b, pa, pb)
}

#[tokio::test]
async fn connections_without_keep_alive_close_when_idle() {
    let (mut a, mut b, pa, pb) = connected_pair().await;
    let (ca, cb) = run_for(&mut a, &mut b, IDLE * 4).await;
    assert_eq!((ca.closed, cb.closed), (1, 1));
    assert!(!a.is_connected(&pb) && !b.is_connected(&pa));
}

#[tokio::test]
async fn kept_alive_connections_outlive_the_idle_timeout() {
    let (mut a, mut b, pa, pb) = connected_pair().await;
    a.behaviour_mut().keep_alive(pb);
    b.behaviour_mut().keep_alive(pa);
    assert!(a.behaviour().is_kept_alive(&pb));
    let (ca, cb) = run_for(&mut a, &mut b, IDLE * 5).await;
    assert_eq!((ca.closed, cb.closed), (0, 0));
    assert!(a.is_connected(&pb) && b.is_connected(&pa));
}

#[tokio::test]
async fn keep_alive_is_forgotten_with_the_last_connection() {
    let (mut a, mut b, pa, pb) = connected_pair().await;
    a.behaviour_mut().keep_alive(pb);
    b.behaviour_mut().keep_alive(pa);
    a.disconnect_peer_id(pb).unwrap();
    run_for(&mut a, &mut b, Duration::from_millis(100)).await;
    assert!(!a.behaviour().is_kept_alive(&pb));
    assert!(!b.behaviour().is_kept_alive(&pa));
}

#[tokio::test]
async fn simultaneous_dials_leave_one_connection_on_both_ends() {
    for _ in 0..10 {
        let (mut a, addr_a) = listening().await;
        let (mut b, addr_b) = listening().await;
        let (pa, pb) = (*a.local_peer_id(), *b.local_peer_id());
        a.dial(addr_b).unwrap();
        b.dial(addr_a).unwrap();
        // Keep both alive, so the only reason to close is the duplicate.
        let (ca, cb) = run_for(&mut a, &mut b, Duration::from_millis(50)).await;
        a.behaviour_mut().keep_alive(pb);
        b.behaviour_mut().keep_alive(pa);
        let (ca2, cb2) = run_for(&mut a, &mut b, IDLE * 3).await;
        assert_eq!(ca.established + ca2.established, 2);
        assert_eq!(cb.established + cb2.established, 2);
        assert_eq!(ca.closed + ca2.closed, 1, "exactly one of the two closed");
        assert_eq!(cb.closed + cb2.closed, 1);
        assert_eq!(
            (ca.failed + ca2.failed, cb.failed + cb2.failed),
            (0, 0),
            "the duplicate is closed after both ends finished the handshake"
        );
        assert!(
            a.is_connected(&pb) && b.is_connected(&pa),
            "and the other one survives"
        );
    }
}
