//! The network index and search on loopback: nodes in this process (mDNS off, explicit peers),
//! asked through the control channel exactly as `iwant search` asks; and hostile peers that
//! speak the index and search protocols by hand.

use std::{fs, future::Future, time::Duration};

use futures::StreamExt;
use iwant::{
    config::Home,
    control::{Client, ClientError, ErrorKind, Request, Response, SearchReply},
};
use iwant_behaviours::{
    index_sync::{self, Delta, Entry, SnapshotPage},
    search,
    wire::{Id, Kind},
};
use libp2p::{request_response, swarm::SwarmEvent, Multiaddr, PeerId, Swarm};

use crate::util::{wait_for_async, LocalNode as Node};

/// Generous: the one-second goal is measured by the benchmarks, not asserted here.
const LIMIT: Duration = Duration::from_secs(10);

impl Node {
    async fn search(&self, text: &str) -> Result<SearchReply, ClientError> {
        let client = Client::new(Home::resolve(Some(self.home.clone())).unwrap());
        let request = Request::Search {
            text: text.into(),
            kind: None,
            limit: 20,
            offset: 0,
        };
        match client.request(request).await? {
            Response::SearchResults(reply) => Ok(reply),
            other => panic!("a search answered {other:?}"),
        }
    }

    /// Searches until `probe` holds for the reply.
    async fn wait_search(
        &self,
        text: &str,
        what: &str,
        probe: impl Fn(&SearchReply) -> bool,
    ) -> SearchReply {
        wait_for_async(LIMIT, what, || async {
            let reply = self.search(text).await.ok()?;
            probe(&reply).then_some(reply)
        })
        .await
    }

    async fn leader(&self) -> Option<PeerId> {
        self.node.net.leader_watch().borrow().leader
    }
}

fn paths(reply: &SearchReply) -> Vec<&str> {
    reply.results.iter().map(|r| r.hit.path.as_str()).collect()
}

/// Three nodes that all follow the same leader.
async fn three_nodes() -> [Node; 3] {
    let a = Node::start(vec![]).await;
    let b = Node::start(vec![a.addr().await]).await;
    let c = Node::start(vec![a.addr().await]).await;
    wait_for_async(LIMIT, "one leader for all three nodes", || async {
        let l = a.leader().await?;
        (b.leader().await == Some(l) && c.leader().await == Some(l)).then_some(())
    })
    .await;
    [a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_found_from_every_node_and_follow_renames_and_deletes() {
    let [a, b, c] = three_nodes().await;
    a.write("reports/Quarterly Report 2026.pdf", b"q4 numbers");
    let id = blake3::hash(b"q4 numbers");
    let reply = c
        .wait_search("quarterly report", "C to find A's report", |r| {
            paths(r).contains(&"reports/Quarterly Report 2026.pdf")
        })
        .await;
    let hit = &reply.results[0];
    assert_eq!(hit.name, "Quarterly Report 2026.pdf");
    assert_eq!(hit.hit.id, id);
    assert_eq!(hit.hit.size, 10);
    assert_eq!(hit.hit.holders, [a.node.peer_id().to_string()]);
    assert!(!hit.local);
    let own = a.search("quarterly").await.unwrap();
    assert!(
        own.results[0].local,
        "A's own file is marked local: {own:?}"
    );

    // The same content on B too: one row, two holders.
    b.write("copy of the report.pdf", b"q4 numbers");
    let reply = c
        .wait_search("report", "two holders of the report", |r| {
            r.results
                .iter()
                .any(|h| h.hit.id == id && h.hit.holder_count == 2)
        })
        .await;
    assert_eq!(
        reply.results.iter().filter(|h| h.hit.id == id).count(),
        1,
        "one row per id: {reply:?}"
    );

    // Typos still find it; another year does not.
    let typo = c.search("quartrely").await.unwrap();
    assert!(typo.results.iter().any(|h| h.hit.id == id), "{typo:?}");
    let year = c.search("2025").await.unwrap();
    assert!(year.results.iter().all(|h| h.hit.id != id), "{year:?}");

    // Renamed on A.
    fs::rename(
        a.share.join("reports/Quarterly Report 2026.pdf"),
        a.share.join("reports/Annual Summary.pdf"),
    )
    .unwrap();
    c.wait_search("annual summary", "the new name", |r| {
        paths(r).contains(&"reports/Annual Summary.pdf")
    })
    .await;
    c.wait_search("quarterly", "the old name to go", |r| {
        !paths(r).contains(&"reports/Quarterly Report 2026.pdf")
    })
    .await;

    // Deleted everywhere.
    fs::remove_file(a.share.join("reports/Annual Summary.pdf")).unwrap();
    fs::remove_file(b.share.join("copy of the report.pdf")).unwrap();
    c.wait_search("report", "every copy to go", |r| {
        r.results.iter().all(|h| h.hit.id != id)
    })
    .await;
    for n in [a, b, c] {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_right_after_start_waits_for_the_election() {
    let a = Node::start(vec![]).await;
    a.write("alone.txt", b"alone");
    // No leader yet: the search waits for one instead of failing.
    assert!(a.leader().await.is_none());
    let reply = a
        .search("alone")
        .await
        .expect("the search waits for a leader");
    assert_eq!(reply.leader, a.node.peer_id().to_string());
    a.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_takes_its_files_after_the_grace_period() {
    let [a, b, c] = three_nodes().await;
    let leader = a.leader().await.unwrap();
    let mut nodes: Vec<Node> = vec![a, b, c];
    let i = nodes
        .iter()
        .position(|n| n.node.peer_id() != leader)
        .unwrap();
    let leaving = nodes.remove(i);
    let asker = nodes.iter().find(|n| n.node.peer_id() != leader).unwrap();
    leaving.write("leaving/soon.bin", b"bye");
    asker
        .wait_search("soon", "the leaving node's file", |r| {
            paths(r).contains(&"leaving/soon.bin")
        })
        .await;
    // Timed from the start of the stop: the leader's grace starts when it sees the connection
    // close, which happens during the stop, not after it returns.
    let stopped = std::time::Instant::now();
    leaving.node.stop().await;
    let reply = asker.search("soon").await.unwrap();
    if stopped.elapsed() < iwant::leader::service::GRACE / 2 {
        assert!(
            paths(&reply).contains(&"leaving/soon.bin"),
            "a blip does not empty the index: {reply:?}"
        );
    }
    wait_for_async(
        iwant::leader::service::GRACE + LIMIT,
        "the file to go after the grace period",
        || async {
            let reply = asker.search("soon").await.ok()?;
            (!paths(&reply).contains(&"leaving/soon.bin")).then_some(())
        },
    )
    .await;
    // The grace is the leader's: a new leader (an election under a loaded machine) starts from
    // the indexes of the nodes connected to it, without the one that left.
    let leader_now = asker.leader().await;
    if leader_now == Some(leader) {
        assert!(
            stopped.elapsed() >= iwant::leader::service::GRACE,
            "the file went {:?} after its node left, before the grace",
            stopped.elapsed()
        );
    } else {
        eprintln!("the leader changed ({leader} -> {leader_now:?}): the grace was not checked");
    }
    for n in nodes {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_searches_get_clear_errors() {
    let a = Node::start(vec![]).await;
    let client = Client::new(Home::resolve(Some(a.home.clone())).unwrap());
    for (text, limit, expected) in [
        ("   ", 10, "nothing to search for"),
        (&*"x".repeat(search::MAX_QUERY + 1), 10, "at most 256"),
        ("ok", 0, "limit of 0"),
        ("ok", 1000, "at most 200"),
    ] {
        let request = Request::Search {
            text: text.into(),
            kind: None,
            limit,
            offset: 0,
        };
        match client.request(request).await {
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.kind, ErrorKind::BadRequest);
                assert!(e.message.contains(expected), "{e}");
            }
            other => panic!("{text:?} / {limit}: {other:?}"),
        }
    }
    a.node.stop().await;
}

/// A libp2p peer that speaks iwant's index and search protocols by hand, with request caps far
/// above the node's, to send what a well-behaved node never would.
mod hostile {
    use super::*;

    #[derive(libp2p::swarm::NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    pub struct Behaviour {
        pub index: index_sync::Behaviour,
        pub search: search::Behaviour,
    }

    pub fn swarm() -> Swarm<Behaviour> {
        let big = 64 * 1024 * 1024;
        let config =
            request_response::Config::default().with_request_timeout(Duration::from_secs(10));
        let index = request_response::cbor::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(big)
                .set_response_size_maximum(big),
            [(
                index_sync::PROTOCOL,
                request_response::ProtocolSupport::Full,
            )],
            config.clone(),
        );
        let search = request_response::cbor::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(big)
                .set_response_size_maximum(big),
            [(search::PROTOCOL, request_response::ProtocolSupport::Full)],
            config,
        );
        crate::util::bare_swarm(Behaviour { index, search })
    }

    /// What became of one request.
    #[derive(Debug)]
    pub enum Outcome<T> {
        Answered(T),
        Failed(String),
    }

    pub async fn index(
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        request: index_sync::Request,
    ) -> Outcome<index_sync::Response> {
        let id = swarm.behaviour_mut().index.send_request(&peer, request);
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Index(event)) =
                swarm.select_next_some().await
            {
                match event {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } if request_id == id => return Outcome::Answered(response),
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } if request_id == id => return Outcome::Failed(error.to_string()),
                    _ => {}
                }
            }
        }
    }

    pub async fn search(
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        request: search::Request,
    ) -> Outcome<search::Response> {
        let id = swarm.behaviour_mut().search.send_request(&peer, request);
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Search(event)) =
                swarm.select_next_some().await
            {
                match event {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } if request_id == id => return Outcome::Answered(response),
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } if request_id == id => return Outcome::Failed(error.to_string()),
                    _ => {}
                }
            }
        }
    }

    pub async fn connect(swarm: &mut Swarm<Behaviour>, addr: Multiaddr) -> PeerId {
        swarm.dial(addr).unwrap();
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                swarm.select_next_some().await
            {
                return peer_id;
            }
        }
    }

    /// Awaits `fut` while driving the swarm (so its connection answers the node's pings).
    pub async fn driving<T>(swarm: &mut Swarm<Behaviour>, fut: impl Future<Output = T>) -> T {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                v = &mut fut => return v,
                _ = swarm.select_next_some() => {}
            }
        }
    }

    pub fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: 1,
            id: Id([1; 32]),
        }
    }

    pub fn snapshot(entries: Vec<Entry>) -> index_sync::Request {
        index_sync::Request::Snapshot(SnapshotPage {
            collection: Default::default(),
            session: 1,
            page: 0,
            last: true,
            version: 1,
            entries,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_cannot_touch_others_entries_and_are_cut_off() {
    use hostile::Outcome::{Answered, Failed};
    let node = Node::start(vec![]).await;
    node.write("secret plans.txt", b"plans");
    let plans = blake3::hash(b"plans");
    node.wait_search("secret plans", "the node's own file", |r| {
        r.results.iter().any(|h| h.hit.id == plans)
    })
    .await;

    let mut evil = hostile::swarm();
    let target = hostile::connect(&mut evil, node.addr().await).await;

    // A delta before any snapshot: the leader asks for a snapshot.
    let delta = index_sync::Request::Delta(Delta {
        collection: Default::default(),
        base: 0,
        version: 1,
        upserted: vec![],
        removed: vec!["secret plans.txt".into()],
    });
    let r = hostile::index(&mut evil, target, delta).await;
    assert!(
        matches!(r, Answered(index_sync::Response::NeedSnapshot)),
        "{r:?}"
    );

    // Entries at the same path are the hostile peer's own; removing them leaves the node's.
    let r = hostile::index(
        &mut evil,
        target,
        hostile::snapshot(vec![hostile::entry("secret plans.txt")]),
    )
    .await;
    assert!(
        matches!(r, Answered(index_sync::Response::Ack { version: 1 })),
        "{r:?}"
    );
    let reply = hostile::driving(
        &mut evil,
        node.wait_search("secret plans", "both holders", |r| r.results.len() == 2),
    )
    .await;
    assert!(reply
        .results
        .iter()
        .any(|h| h.hit.id == plans && h.hit.holder_count == 1));
    let remove = index_sync::Request::Delta(Delta {
        collection: Default::default(),
        base: 1,
        version: 2,
        upserted: vec![],
        removed: vec!["secret plans.txt".into()],
    });
    let r = hostile::index(&mut evil, target, remove).await;
    assert!(
        matches!(r, Answered(index_sync::Response::Ack { version: 2 })),
        "{r:?}"
    );
    let reply = hostile::driving(&mut evil, node.search("secret plans"))
        .await
        .unwrap();
    assert_eq!(reply.results.len(), 1, "{reply:?}");
    assert_eq!(reply.results[0].hit.id, plans);
    assert_eq!(
        reply.results[0].hit.holders,
        [node.node.peer_id().to_string()]
    );

    // Bad searches are refused, not crashed on.
    let long = search::Request::Search(search::Query {
        text: "x".repeat(search::MAX_QUERY + 1),
        kind: None,
        offset: 0,
        limit: 10,
    });
    let r = hostile::search(&mut evil, target, long).await;
    assert!(
        matches!(r, Answered(search::Response::Refused { .. })),
        "{r:?}"
    );
    let locate = search::Request::Locate {
        prefix: plans.to_hex()[..6].to_string(),
        max: 5,
    };
    match hostile::search(&mut evil, target, locate).await {
        Answered(search::Response::Results(results)) => {
            assert!(results.hits.iter().any(|h| h.id.0 == *plans.as_bytes()));
        }
        other => panic!("locate: {other:?}"),
    }

    // A message beyond the codec's cap fails to decode; the node carries on.
    let huge: Vec<Entry> = (0..3000)
        .map(|i| hostile::entry(&format!("{}/{i}", "d".repeat(1000))))
        .collect();
    match hostile::index(&mut evil, target, hostile::snapshot(huge)).await {
        Failed(error) => assert!(!error.is_empty()),
        other => panic!("a message over the cap was answered: {other:?}"),
    }

    // Too many entries in one message: refused, entries dropped, connection closed. From a
    // fresh peer: the connection of the one above may be closing (the node resets what it
    // cannot decode), and a request on it would race that.
    let mut evil = hostile::swarm();
    let target = hostile::connect(&mut evil, node.addr().await).await;
    let many: Vec<Entry> = (0..index_sync::MAX_ENTRIES + 1)
        .map(|i| hostile::entry(&format!("f{i}")))
        .collect();
    let r = hostile::index(&mut evil, target, hostile::snapshot(many)).await;
    assert!(
        matches!(&r, Answered(index_sync::Response::Refused { reason }) if reason.contains("entries")),
        "{r:?}"
    );
    let closed = tokio::time::timeout(LIMIT, async {
        loop {
            if let SwarmEvent::ConnectionClosed { peer_id, .. } = evil.select_next_some().await {
                if peer_id == target {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the node closes the connection of a peer that broke a bound"
    );

    // The node is fine and its own file is still found.
    let reply = node.search("plans").await.unwrap();
    assert_eq!(reply.results[0].hit.id, plans);
    node.node.stop().await;
}
