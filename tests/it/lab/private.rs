//! Private networks on one bridge: nodes with the same `--network-key` form a network of their
//! own; a node without a key, or with another key, sees mDNS announcements of the others but
//! can neither connect, nor search their files, nor fetch them, and both sides log why.

use std::{fs, path::Path, time::Duration};

use serde_json::Value;

use super::Lab;
use crate::util::run;

/// How long discovery, a connection and an index sync may take on a loaded machine.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// How long until both sides of a refused handshake have logged it: discovery (mDNS queries),
/// redials every 2 s, and a mismatched handshake that may stall until the 10 s dial deadline.
const HINT_LIMIT: Duration = Duration::from_secs(40);

/// What the node logs for a handshake that failed (see `src/net/private.rs`).
const HINT: &str = "failed in the handshake";

/// Shares `content` as `name` on node `i`; returns its id.
fn share(lab: &Lab, i: usize, name: &str, content: &[u8]) -> String {
    super::search::write_shared(lab, i, name, content);
    blake3::hash(content).to_hex().to_string()
}

/// The ids node `i` finds by searching `words` (an empty list when the search finds nothing).
fn found(lab: &Lab, i: usize, words: &str) -> Vec<String> {
    let (code, out, err) = run(lab.cli(i).args(["search", words, "--json"]));
    assert_eq!(code, 0, "`search {words}` on node {i} failed: {err}");
    let reply: Value = serde_json::from_str(&out).expect("search --json prints JSON");
    reply["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results array: {reply}"))
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

/// The lines of node `i`'s log that report a failed handshake with node `j`'s address.
fn hints_about(lab: &Lab, i: usize, j: usize) -> Vec<String> {
    let log = fs::read_to_string(lab.stderr_path(i)).unwrap_or_default();
    let addr = format!("/ip4/{}/tcp/", lab.addr(j));
    log.lines()
        .filter(|l| l.contains(HINT) && l.contains(&addr))
        .map(str::to_owned)
        .collect()
}

fn keygen(lab: &Lab, i: usize, path: &Path) -> String {
    let (code, out, err) = run(lab
        .cli(i)
        .args(["keygen", path.to_str().unwrap(), "--json"]));
    assert_eq!(code, 0, "keygen failed: {err}");
    let reply: Value = serde_json::from_str(&out).expect("keygen --json prints JSON");
    reply["fingerprint"].as_str().unwrap().to_owned()
}

#[test]
fn only_nodes_with_the_same_key_connect_search_and_fetch() {
    let Some(mut lab) = Lab::new("only_nodes_with_the_same_key_connect_search_and_fetch", 4) else {
        return;
    };
    // Nodes 0 and 1 share key A, node 2 has none, node 3 has key B.
    let key_a = lab.home(0).join("network.key");
    let key_b = lab.home(3).join("network.key");
    let fingerprint_a = keygen(&lab, 0, &key_a);
    let fingerprint_b = keygen(&lab, 3, &key_b);
    assert_ne!(fingerprint_a, fingerprint_b);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key_a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "keygen writes an owner-only file");
    }
    // Node 1 gets key A through its config file, the others by flag.
    fs::create_dir_all(lab.home(1)).unwrap();
    fs::copy(&key_a, lab.home(1).join("copied.key")).unwrap();
    lab.start(1, &[]);
    lab.stop(1);
    let config = lab.home(1).join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}network_key = \"copied.key\"\n")).unwrap();

    let (a, b) = (key_a.to_str().unwrap(), key_b.to_str().unwrap());
    lab.spawn(0, &["--network-key", a]);
    lab.spawn(1, &[]);
    lab.spawn(2, &[]);
    lab.spawn(3, &["--network-key", b]);
    for i in 0..4 {
        lab.wait_ready(i);
    }
    for (i, fingerprint) in [
        (0, Some(&fingerprint_a)),
        (1, Some(&fingerprint_a)),
        (2, None),
        (3, Some(&fingerprint_b)),
    ] {
        assert_eq!(
            lab.status(i)["network_key"].as_str(),
            fingerprint.map(String::as_str),
            "node {i}'s status names its network key"
        );
    }

    let alpha = share(&lab, 0, "alpha-keyed.bin", &b"alpha ".repeat(5000));
    let bravo = share(&lab, 2, "bravo-open.bin", &b"bravo ".repeat(5000));
    let charlie = share(&lab, 3, "charlie-other.bin", &b"charlie ".repeat(5000));

    // The keyed pair finds each other and each other's files.
    lab.wait_until(CONNECT_LIMIT, "nodes 0 and 1 connect", || {
        lab.is_mesh(&[0, 1]).then_some(())
    });
    lab.wait_until(CONNECT_LIMIT, "node 1 finds node 0's file", || {
        found(&lab, 1, "alpha").contains(&alpha).then_some(())
    });

    // Every pair with different keys logs the refused handshake on both sides.
    for (i, j) in [
        (0, 2),
        (2, 0),
        (1, 2),
        (2, 1),
        (0, 3),
        (3, 0),
        (2, 3),
        (3, 2),
    ] {
        let lines = lab.wait_until(
            HINT_LIMIT,
            &format!("node {i} logs a failed handshake with node {j}"),
            || Some(hints_about(&lab, i, j)).filter(|l| !l.is_empty()),
        );
        let keyed = i != 2;
        let advice = if keyed {
            "this node runs a private network"
        } else {
            "this node needs the same key file"
        };
        assert!(
            lines.iter().any(|l| l.contains(advice)),
            "node {i}'s log about node {j} lacks {advice:?}: {lines:#?}"
        );
    }

    // Nobody else is connected to anybody.
    let peers = |i: usize| {
        let mut p = lab.peers(i);
        p.sort();
        p
    };
    assert_eq!(peers(0), vec![lab.peer_id(1).to_owned()]);
    assert_eq!(peers(1), vec![lab.peer_id(0).to_owned()]);
    assert!(
        peers(2).is_empty(),
        "the unkeyed node connected: {:?}",
        peers(2)
    );
    assert!(
        peers(3).is_empty(),
        "the node with key B connected: {:?}",
        peers(3)
    );

    // Searches see only their own network.
    assert!(found(&lab, 1, "bravo").is_empty());
    assert!(found(&lab, 1, "charlie").is_empty());
    assert!(found(&lab, 2, "alpha").is_empty());
    assert_eq!(found(&lab, 2, "bravo"), vec![bravo]);
    assert!(found(&lab, 3, "alpha").is_empty());
    assert_eq!(found(&lab, 3, "charlie"), vec![charlie]);

    // Fetching: the unkeyed node cannot get key A's file; node 1 can.
    let (code, _, err) = run(lab.cli(2).args(["get", &alpha, "--json"]));
    assert_ne!(code, 0, "the unkeyed node fetched a private file");
    assert!(
        err.contains("not found") || err.contains("no node"),
        "{err}"
    );
    let (code, out, err) = run(lab.cli(1).args(["get", &alpha, "--json"]));
    assert_eq!(code, 0, "node 1 could not fetch from node 0: {err}\n{out}");
    let downloads = lab.status(1)["download_dir"].as_str().unwrap().to_owned();
    let arrived = Path::new(&downloads).join("alpha-keyed.bin");
    let bytes = fs::read(&arrived).unwrap_or_else(|e| panic!("read {}: {e}", arrived.display()));
    assert_eq!(blake3::hash(&bytes).to_hex().to_string(), alpha);
}

/// Connects to `target:4747` from node `from`'s namespace `times` times; each connection sends
/// `send` (maybe nothing) and closes: a port scanner, or a connection closed in its handshake.
fn poke(lab: &Lab, from: usize, target: usize, send: &[u8], times: usize) {
    let script = format!(
        "import socket, time\nfor _ in range({times}):\n    s = socket.create_connection(('{}', 4747), timeout=5)\n    s.sendall(bytes.fromhex('{}'))\n    time.sleep(0.05)\n    s.close()\n",
        lab.addr(target),
        send.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let out = lab
        .in_netns(from, "python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the poke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_open_lan_logs_no_key_warning_for_handshakes_that_fail_for_other_reasons() {
    let Some(mut lab) = Lab::new(
        "an_open_lan_logs_no_key_warning_for_handshakes_that_fail_for_other_reasons",
        5,
    ) else {
        return;
    };
    // Five open nodes, started together (simultaneous dials, duplicates closed in their
    // handshake). Handshake failures go to the debug log: the test waits for them there.
    lab.set_log("info,iwant::net::private=debug");
    lab.start_all(&[]);
    let all: Vec<usize> = (0..5).collect();
    lab.wait_until(CONNECT_LIMIT, "the 5 nodes form a mesh", || {
        lab.is_mesh(&all).then_some(())
    });
    // Handshakes that fail for reasons other than keys: a scanner that connects and closes,
    // and a connection cut off in the middle of multistream-select's header.
    poke(&lab, 4, 0, b"", 3);
    poke(&lab, 4, 0, b"\x13/multi", 3);
    let poker = format!("/ip4/{}/tcp/", lab.addr(4));
    lab.wait_until(
        CONNECT_LIMIT,
        "node 0 logs the 6 failed connections",
        || {
            let log = fs::read_to_string(lab.stderr_path(0)).unwrap_or_default();
            let failed = log
                .lines()
                .filter(|l| l.contains(&poker) && l.contains("failed"))
                .count();
            (failed >= 6).then_some(())
        },
    );
    // No node may have told its user about keys.
    for i in all {
        let log = fs::read_to_string(lab.stderr_path(i)).unwrap_or_default();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains(HINT)).collect();
        assert!(
            warnings.is_empty(),
            "node {i} warned about keys on an open LAN: {warnings:#?}"
        );
    }
}
