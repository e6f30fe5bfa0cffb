//! Discovery and connection upkeep between real nodes on a real (virtual) LAN.

use std::time::{Duration, Instant};

use super::{Lab, Rate};

/// How long after the last node starts all nodes may take to find each other by mDNS.
const DISCOVERY_LIMIT: Duration = Duration::from_secs(5);

/// How long duplicate connections from simultaneous dials may live.
const DEDUP_LIMIT: Duration = Duration::from_secs(5);

/// How long a node may keep listing a peer that vanished (ping interval 1 s + timeout 2 s,
/// with room for a loaded machine).
const GONE_LIMIT: Duration = Duration::from_secs(10);

/// How long nodes may take to reconnect once they can reach each other again.
const RECONNECT_LIMIT: Duration = Duration::from_secs(10);

/// How long two nodes given each other's address may take to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn three_nodes_discover_each_other_by_mdns() {
    let Some(mut lab) = Lab::new("three_nodes_discover_each_other_by_mdns", 3) else {
        return;
    };
    lab.start_all(&[]);
    let last_start = lab.started_at(2);
    let seen_at = lab.wait_until(
        DISCOVERY_LIMIT.saturating_sub(last_start.elapsed()),
        "each node lists the two others",
        || {
            let probed_at = Instant::now();
            lab.is_mesh(&[0, 1, 2]).then_some(probed_at)
        },
    );
    println!(
        "discovery_ms={}",
        seen_at.duration_since(last_start).as_millis()
    );

    lab.wait_until(DEDUP_LIMIT, "each pair has exactly one connection", || {
        let pairs = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)];
        pairs
            .iter()
            .all(|&(i, j)| lab.connections(i, j) == 1)
            .then_some(())
    });
}

#[test]
fn killed_node_disappears_from_status() {
    let Some(mut lab) = Lab::new("killed_node_disappears_from_status", 3) else {
        return;
    };
    lab.start_all(&[]);
    lab.wait_until(DISCOVERY_LIMIT, "each node lists the two others", || {
        lab.is_mesh(&[0, 1, 2]).then_some(())
    });

    lab.kill(2);
    lab.wait_until(GONE_LIMIT, "nodes 0 and 1 drop the killed node 2", || {
        (!lab.sees(0, 2) && !lab.sees(1, 2)).then_some(())
    });
    assert!(
        lab.is_mesh(&[0, 1]),
        "nodes 0 and 1 still see each other\n{}",
        lab.describe()
    );
}

#[test]
fn nodes_without_mdns_connect_through_peer() {
    let Some(mut lab) = Lab::new("nodes_without_mdns_connect_through_peer", 2) else {
        return;
    };
    lab.start(0, &["--no-mdns"]);
    let addr = lab.tcp_addr(0);
    lab.start(1, &["--no-mdns", "--peer", &addr]);
    lab.wait_until(CONNECT_LIMIT, "both nodes list each other", || {
        lab.is_mesh(&[0, 1]).then_some(())
    });
}

#[test]
fn cut_link_drops_the_peer_and_healing_reconnects() {
    let Some(mut lab) = Lab::new("cut_link_drops_the_peer_and_healing_reconnects", 2) else {
        return;
    };
    lab.start_all(&[]);
    lab.wait_until(DISCOVERY_LIMIT, "both nodes list each other", || {
        lab.is_mesh(&[0, 1]).then_some(())
    });

    lab.cut(1);
    lab.wait_until(GONE_LIMIT, "node 0 drops the cut-off node 1", || {
        (!lab.sees(0, 1)).then_some(())
    });

    lab.heal(1);
    lab.wait_until(RECONNECT_LIMIT, "both nodes list each other again", || {
        lab.is_mesh(&[0, 1]).then_some(())
    });
}

#[test]
fn shape_installs_a_rate_limit_on_the_node_link() {
    let Some(lab) = Lab::new("shape_installs_a_rate_limit_on_the_node_link", 1) else {
        return;
    };
    lab.shape(0, Rate::mbit(200));
    let qdiscs = lab.qdiscs(0);
    assert!(
        qdiscs.contains("qdisc tbf") && qdiscs.contains("rate 200Mbit"),
        "{qdiscs}"
    );

    lab.shape(0, Rate::mbit(50));
    let qdiscs = lab.qdiscs(0);
    assert!(
        qdiscs.contains("rate 50Mbit"),
        "shaping again replaces the limit: {qdiscs}"
    );

    lab.unshape(0);
    let qdiscs = lab.qdiscs(0);
    assert!(!qdiscs.contains("tbf"), "{qdiscs}");
}
