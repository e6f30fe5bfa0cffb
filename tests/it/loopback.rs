//! Several nodes in this process on 127.0.0.1, mDNS off, peers given explicitly.

use std::time::Duration;

use iwant::{
    config::Home,
    daemon::{self, NodeOptions, RunningNode},
    net::{NetStatus, PeerStatus},
};
use libp2p::{multiaddr::Protocol, Multiaddr};

use crate::util::{start_in_process, wait_for_async};

const LIMIT: Duration = Duration::from_secs(10);

struct Node {
    node: RunningNode,
    _dir: tempfile::TempDir,
}

async fn start_node(peers: Vec<Multiaddr>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in_process(dir.path(), "/ip4/127.0.0.1/tcp/0".parse().unwrap(), peers).await;
    Node { node, _dir: dir }
}

impl Node {
    async fn status(&self) -> NetStatus {
        self.node.net.status().await.unwrap()
    }

    /// The node's listen address with its `/p2p/` suffix, once it listens.
    async fn addr(&self) -> Multiaddr {
        let status = wait_for_async(LIMIT, "a listen address", || async {
            let s = self.status().await;
            (!s.listen_addrs.is_empty()).then_some(s)
        })
        .await;
        let addr: Multiaddr = status.listen_addrs[0].parse().unwrap();
        addr.with(Protocol::P2p(self.node.peer_id()))
    }

    async fn peer(&self, other: &Node) -> Option<PeerStatus> {
        let id = other.node.peer_id().to_string();
        self.status()
            .await
            .peers
            .into_iter()
            .find(|p| p.peer_id == id)
    }
}

#[tokio::test]
async fn two_nodes_connect_through_an_explicit_peer_and_identify_as_iwant() {
    let a = start_node(vec![]).await;
    let b = start_node(vec![a.addr().await]).await;
    for (x, y) in [(&a, &b), (&b, &a)] {
        let peer = wait_for_async(LIMIT, "the peer to be identified", || async {
            x.peer(y).await.filter(|p| p.agent.is_some())
        })
        .await;
        // `iwant/<version> (<name>)`, and the name read back from it.
        let agent = peer.agent.as_deref().unwrap();
        let name = peer.name.as_deref().expect("the name it announces");
        assert_eq!(
            agent,
            format!(concat!("iwant/", env!("CARGO_PKG_VERSION"), " ({})"), name)
        );
        assert_eq!(peer.connections, 1);
        assert!(
            peer.addrs[0].starts_with("/ip4/127.0.0.1/tcp/"),
            "{:?}",
            peer.addrs
        );
    }
}

#[tokio::test]
async fn simultaneous_dials_leave_exactly_one_connection() {
    for round in 0..5 {
        let a = start_node(vec![]).await;
        let b = start_node(vec![]).await;
        let (addr_a, addr_b) = (a.addr().await, b.addr().await);
        let (ra, rb) = tokio::join!(a.node.net.dial(addr_b), b.node.net.dial(addr_a));
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
        for (x, y) in [(&a, &b), (&b, &a)] {
            wait_for_async(LIMIT, &format!("round {round}: one connection"), || async {
                x.peer(y)
                    .await
                    .filter(|p| p.connections == 1 && p.agent.is_some())
            })
            .await;
        }
        // Both ends agreed on the survivor: they are still connected, once, on both sides.
        for (x, y) in [(&a, &b), (&b, &a)] {
            let p = x.peer(y).await.expect("still connected");
            assert_eq!(p.connections, 1, "round {round}");
        }
        a.node.stop().await;
        b.node.stop().await;
    }
}

#[tokio::test]
async fn a_stopped_node_leaves_the_peer_list() {
    let a = start_node(vec![]).await;
    let b = start_node(vec![a.addr().await]).await;
    wait_for_async(LIMIT, "connection", || async { a.peer(&b).await }).await;
    let Node { node, _dir } = b;
    let gone = node.peer_id().to_string();
    node.stop().await;
    wait_for_async(LIMIT, "the stopped node to leave", || async {
        let s = a.status().await;
        (!s.peers.iter().any(|p| p.peer_id == gone)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_configured_peer_is_redialed_after_it_restarts() {
    let dir_b = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen_b: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let b = start_in_process(dir_b.path(), listen_b.clone(), vec![]).await;
    let b_id = b.peer_id();
    let a = start_node(vec![listen_b.clone()]).await;
    let connected = || async {
        let s = a.status().await;
        s.peers
            .iter()
            .any(|p| p.peer_id == b_id.to_string())
            .then_some(())
    };
    wait_for_async(LIMIT, "first connection", connected).await;
    b.stop().await;
    wait_for_async(LIMIT, "disconnection", || async {
        connected().await.is_none().then_some(())
    })
    .await;
    let b = start_in_process(dir_b.path(), listen_b, vec![]).await;
    assert_eq!(b.peer_id(), b_id, "same home, same identity");
    wait_for_async(LIMIT, "the redial to reconnect", connected).await;
    b.stop().await;
}

#[cfg(unix)]
mod control {
    //! The control channel spoken by hand, as a foreign client would.

    use std::io::{BufRead, BufReader, Write};

    use super::*;

    fn exchange(node: &Node, raw: &[u8]) -> serde_json::Value {
        let socket = node.node.home().control_socket();
        let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        stream.write_all(raw).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_are_answered_and_bad_ones_get_typed_errors() {
        let node = start_node(vec![]).await;
        let ok = tokio::task::block_in_place(|| {
            exchange(
                &node,
                b"{\"version\":1,\"request\":{\"type\":\"status\"}}\n",
            )
        });
        assert_eq!(ok["version"], 1);
        assert_eq!(ok["ok"]["type"], "status");
        assert_eq!(ok["ok"]["peer_id"], node.node.peer_id().to_string());

        let cases: [(&[u8], &str); 4] = [
            (
                b"{\"version\":99,\"request\":{\"type\":\"status\"}}\n",
                "unsupported_version",
            ),
            (b"this is not json\n", "bad_request"),
            (
                b"{\"version\":1,\"request\":{\"type\":\"explode\"}}\n",
                "bad_request",
            ),
            (
                b"{\"version\":1,\"request\":{\"type\":\"set_shared\",\"path\":\"relative\"}}\n",
                "invalid_folders",
            ),
        ];
        for (raw, kind) in cases {
            let reply = tokio::task::block_in_place(|| exchange(&node, raw));
            assert_eq!(reply["error"]["kind"], kind, "{reply}");
            assert!(reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }

        let mut huge = vec![b' '; iwant::control::MAX_MESSAGE + 100];
        huge.push(b'\n');
        let reply = tokio::task::block_in_place(|| exchange(&node, &huge));
        assert_eq!(reply["error"]["kind"], "bad_request", "{reply}");

        // The node still serves after all that.
        let ok = tokio::task::block_in_place(|| {
            exchange(
                &node,
                b"{\"version\":1,\"request\":{\"type\":\"config\"}}\n",
            )
        });
        assert_eq!(ok["ok"]["type"], "folders");
    }
}

#[tokio::test]
async fn a_taken_default_port_falls_back_to_a_free_one() {
    // Hold the default port (if something else already holds it, it is just as taken).
    let _holder = std::net::TcpListener::bind(("0.0.0.0", iwant::config::DEFAULT_PORT)).ok();
    let dir = tempfile::tempdir().unwrap();
    let node = daemon::start(NodeOptions {
        home: Home::resolve(Some(dir.path().to_path_buf())).unwrap(),
        listen: vec![],
        peers: vec![],
        no_mdns: true,
        network_key: None,
    })
    .await
    .expect("starts despite the taken port");
    let status = wait_for_async(LIMIT, "a listen address", || async {
        let s = node.net.status().await.unwrap();
        (!s.listen_addrs.is_empty()).then_some(s)
    })
    .await;
    for addr in &status.listen_addrs {
        let addr: Multiaddr = addr.parse().unwrap();
        let port = addr.iter().find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        });
        assert!(
            matches!(port, Some(p) if p != iwant::config::DEFAULT_PORT && p != 0),
            "{addr}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn peers_of_a_peer_are_met_through_peer_exchange() {
    // B and C only know A; peer exchange must introduce them to each other.
    let a = start_node(vec![]).await;
    let b = start_node(vec![a.addr().await]).await;
    wait_for_async(LIMIT, "B identified by A", || async {
        a.peer(&b).await.filter(|p| p.agent.is_some())
    })
    .await;
    let c = start_node(vec![a.addr().await]).await;
    for (x, y) in [(&b, &c), (&c, &b)] {
        wait_for_async(LIMIT, "B and C to meet", || async { x.peer(y).await }).await;
    }
}

#[tokio::test]
async fn two_nodes_elect_one_leader_seen_in_status_and_on_the_leader_watch() {
    let a = start_node(vec![]).await;
    let b = start_node(vec![a.addr().await]).await;
    let (leader, term) = wait_for_async(LIMIT, "both nodes follow one leader", || async {
        let (sa, sb) = (a.status().await, b.status().await);
        (sa.leader.is_some() && sa.leader == sb.leader && sa.term == sb.term)
            .then(|| (sa.leader.unwrap(), sa.term))
    })
    .await;
    assert!(leader == a.node.peer_id().to_string() || leader == b.node.peer_id().to_string());
    assert!(term >= 1);
    for node in [&a, &b] {
        let view = *node.node.net.leader_watch().borrow();
        assert_eq!(view.leader.map(|p| p.to_string()), Some(leader.clone()));
        assert_eq!(view.term, term);
    }
}
