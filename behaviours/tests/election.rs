//! `election::Behaviour` between real swarms over libp2p-swarm-test's in-memory transport:
//! groups of 2, 3 and 5 agree on one leader, losing the leader starts a new term, and a peer
//! that does not speak the protocol is ignored.

use std::time::Duration;

use futures::StreamExt;
use iwant_behaviours::election::{self, Event};
use libp2p::{
    ping,
    swarm::{NetworkBehaviour, SwarmEvent},
    PeerId, Swarm,
};
use libp2p_swarm_test::SwarmExt;
use tokio::{sync::watch, task::JoinHandle};

/// How long any wait in these tests may take before the test fails (generous: CI is slow).
const LIMIT: Duration = Duration::from_secs(20);

/// The default timers, shortened so the tests run quickly.
fn config() -> election::Config {
    election::Config::default().with_startup_wait(Duration::from_millis(300))
}

fn swarm() -> Swarm<election::Behaviour> {
    Swarm::new_ephemeral_tokio(|key| election::Behaviour::new(key.public().to_peer_id(), config()))
}

/// A swarm running in its own task, publishing the leader it follows.
struct Node {
    peer: PeerId,
    view: watch::Receiver<Option<(PeerId, u64)>>,
    task: JoinHandle<()>,
}

fn run<B>(
    mut swarm: Swarm<B>,
    on_event: impl Fn(&B::ToSwarm, &watch::Sender<Option<(PeerId, u64)>>) + Send + 'static,
) -> Node
where
    B: NetworkBehaviour + Send,
    B::ToSwarm: Send,
{
    let peer = *swarm.local_peer_id();
    let (tx, view) = watch::channel(None);
    let task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(event) = swarm.select_next_some().await {
                on_event(&event, &tx);
            }
        }
    });
    Node { peer, view, task }
}

fn track(event: &Event, tx: &watch::Sender<Option<(PeerId, u64)>>) {
    match event {
        Event::LeaderElected { leader, term } => {
            tx.send_replace(Some((*leader, *term)));
        }
        Event::LeaderLost { .. } => {
            tx.send_replace(None);
        }
        Event::Left => {}
    }
}

/// `n` election swarms, all connected to each other, each running in its own task.
async fn mesh(n: usize) -> Vec<Node> {
    let mut swarms: Vec<_> = (0..n).map(|_| swarm()).collect();
    for s in &mut swarms {
        s.listen().with_memory_addr_external().await;
    }
    for i in 0..n {
        for j in i + 1..n {
            let (left, right) = swarms.split_at_mut(j);
            left[i].connect(&mut right[0]).await;
        }
    }
    swarms.into_iter().map(|s| run(s, track)).collect()
}

/// Waits until every node in `nodes` follows the same leader in the same term.
async fn agreement(nodes: &[&Node]) -> (PeerId, u64) {
    agreement_on(nodes, |_| true).await
}

/// Waits until every node in `nodes` follows the same leader in the same term, one that
/// `accept` accepts.
async fn agreement_on(nodes: &[&Node], accept: impl Fn(PeerId) -> bool) -> (PeerId, u64) {
    let wait = async {
        loop {
            let views: Vec<_> = nodes.iter().map(|n| *n.view.borrow()).collect();
            if let Some(first) = views[0] {
                if accept(first.0) && views.iter().all(|v| *v == Some(first)) {
                    return first;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(LIMIT, wait)
        .await
        .expect("the nodes did not agree on a leader in time")
}

#[tokio::test]
async fn groups_of_2_3_and_5_agree_on_one_leader() {
    for n in [2, 3, 5] {
        let nodes = mesh(n).await;
        let all: Vec<&Node> = nodes.iter().collect();
        let (leader, _) = agreement(&all).await;
        assert!(nodes.iter().any(|n| n.peer == leader), "{n} nodes");
        // And it stays that way: no second election among settled nodes.
        let before: Vec<_> = nodes.iter().map(|n| *n.view.borrow()).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<_> = nodes.iter().map(|n| *n.view.borrow()).collect();
        assert_eq!(before, after, "{n} nodes: the leader changed without cause");
        for node in nodes {
            node.task.abort();
        }
    }
}

#[tokio::test]
async fn losing_the_leader_elects_another_in_a_new_term() {
    let nodes = mesh(3).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (leader, term) = agreement(&all).await;
    let (gone, rest): (Vec<&Node>, Vec<&Node>) = nodes.iter().partition(|n| n.peer == leader);
    gone[0].task.abort();
    let (new, new_term) = agreement_on(&rest, |p| p != leader).await;
    assert_ne!(new, leader);
    assert!(new_term > term, "term {new_term} after {term}");
}

/// The two behaviours a node without the election protocol might run.
#[derive(NetworkBehaviour)]
struct Plain {
    ping: ping::Behaviour,
}

#[tokio::test]
async fn a_peer_without_the_protocol_is_ignored() {
    let mut plain = Swarm::new_ephemeral_tokio(|_| Plain {
        ping: ping::Behaviour::default(),
    });
    let mut a = swarm();
    plain.listen().with_memory_addr_external().await;
    a.listen().with_memory_addr_external().await;
    a.connect(&mut plain).await;
    // Alone with a plain peer, `a` leads: the plain peer is not counted as a voter.
    let a = run(a, track);
    let plain_peer = *plain.local_peer_id();
    let plain_node = run(plain, |_, _| {});
    let (leader, _) = agreement(&[&a]).await;
    assert_eq!(leader, a.peer);
    assert_ne!(leader, plain_peer);
    a.task.abort();
    plain_node.task.abort();

    // Two iwant nodes that both know a plain peer agree with each other.
    let mut plain = Swarm::new_ephemeral_tokio(|_| Plain {
        ping: ping::Behaviour::default(),
    });
    let (mut c, mut d) = (swarm(), swarm());
    plain.listen().with_memory_addr_external().await;
    c.listen().with_memory_addr_external().await;
    d.listen().with_memory_addr_external().await;
    c.connect(&mut plain).await;
    d.connect(&mut plain).await;
    c.connect(&mut d).await;
    let (c, d, plain) = (run(c, track), run(d, track), run(plain, |_, _| {}));
    let (leader, _) = agreement(&[&c, &d]).await;
    assert!(leader == c.peer || leader == d.peer);
    for node in [c, d, plain] {
        node.task.abort();
    }
}
