//! Listen ports: a node's port is its own (no `SO_REUSEPORT`), a taken explicit port fails the
//! start naming it, and a taken default port falls back to a free one and says which.

use std::{process::Stdio, time::Duration};

use libp2p::{multiaddr::Protocol, Multiaddr};

use crate::util::{configured_home, iwant, wait_for, KillOnDrop, LocalNode};

/// How long a start that must fail may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// The TCP port of `addr`.
fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{addr} has no TCP port"))
}

async fn listen_port(node: &LocalNode) -> u16 {
    port_of(&node.addr().await)
}

#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
#[tokio::test]
async fn a_nodes_listen_port_cannot_be_shared_with_so_reuseport() {
    use socket2::{Domain, Socket, Type};
    let node = LocalNode::start(vec![]).await;
    let port = listen_port(&node).await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(true).unwrap();
    let bound = socket.bind(&addr.into());
    assert_eq!(
        bound.as_ref().map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse),
        "a second SO_REUSEPORT socket could bind the node's port {port}"
    );
}

#[tokio::test]
async fn a_taken_explicit_port_fails_the_start_and_names_the_port() {
    let first = LocalNode::start(vec![]).await;
    let port = listen_port(&first).await;
    let dir = tempfile::tempdir().unwrap();
    let (home, _, _) = configured_home(dir.path());
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let started = iwant::daemon::start(iwant::daemon::NodeOptions {
        home: iwant::config::Home::resolve(Some(home)).unwrap(),
        listen: vec![addr.clone()],
        peers: vec![],
        no_mdns: true,
        network_key: None,
    })
    .await;
    let error = match started {
        Ok(node) => {
            node.stop().await;
            panic!("a second node started on the taken port {port}");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains(&addr.to_string()) && error.contains(&format!("port {port} ")),
        "{error}"
    );
    assert!(error.contains("--listen"), "{error}");
}

#[test]
fn the_cli_reports_a_taken_listen_port_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let first = crate::util::Daemon::start(&dir.path().join("a"), &[]);
    let addrs = first.status()["listen_addrs"].clone();
    let addr: Multiaddr = addrs[0].as_str().unwrap().parse().unwrap();
    let port = port_of(&addr);
    let home = dir.path().join("b");
    std::fs::create_dir_all(&home).unwrap();
    let err_path = home.join("node.err");
    let mut child = KillOnDrop(
        iwant(&home)
            .args(["node", "--no-mdns", "--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = wait_for(EXIT_LIMIT, "the second node to exit", || {
        child.0.try_wait().ok().flatten()
    });
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "error: cannot start the node: cannot listen on {addr}: port {port} is already in use"
        )),
        "{err}"
    );
}

/// Two nodes with the default listen address in one network namespace: the first gets 4747,
/// the second falls back to a free port and logs it, and a dial to 4747 reaches the first.
#[cfg(target_os = "linux")]
#[test]
fn a_taken_default_port_falls_back_and_dials_reach_the_first_node() {
    use crate::lab::{die_with_parent, Lab, NODE_PORT};
    let test = "a_taken_default_port_falls_back_and_dials_reach_the_first_node";
    let Some(mut lab) = Lab::new(test, 2) else {
        return;
    };
    lab.start(0, &["--no-mdns"]);
    // The second node, in node 0's namespace.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("second");
    std::fs::create_dir_all(&home).unwrap();
    let err_path = home.join("node.err");
    let mut cmd = lab.in_netns(0, crate::util::bin());
    cmd.arg("--home")
        .arg(&home)
        .args(["node", "--no-mdns"])
        .env_remove("IWANT_HOME")
        .env_remove("RUST_LOG")
        .env("IWANT_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    die_with_parent(&mut cmd);
    let mut second = KillOnDrop(cmd.spawn().unwrap());
    let status = wait_for(Duration::from_secs(20), "the second node to answer", || {
        if let Ok(Some(exit)) = second.0.try_wait() {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("the second node exited with {exit}: {err}");
        }
        let (code, out, _) = crate::util::run(iwant(&home).args(["status", "--json"]));
        (code == 0)
            .then(|| serde_json::from_str::<serde_json::Value>(&out).ok())
            .flatten()
    });
    let ports = |status: &serde_json::Value| -> Vec<u16> {
        status["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| port_of(&a.as_str().unwrap().parse().unwrap()))
            .collect()
    };
    let first_ports = ports(&lab.status(0));
    assert!(
        !first_ports.is_empty() && first_ports.iter().all(|p| *p == NODE_PORT),
        "{first_ports:?}"
    );
    let second_ports = ports(&status);
    let fallback = second_ports[0];
    assert!(
        fallback != NODE_PORT && second_ports.iter().all(|p| *p == fallback),
        "{second_ports:?}"
    );
    let said = format!(
        "port {NODE_PORT} is taken (another iwant node?); listening on port {fallback} instead"
    );
    wait_for(Duration::from_secs(10), "the fallback warning", || {
        std::fs::read_to_string(&err_path)
            .ok()
            .filter(|err| err.contains(&said))
    });
    // A dial to 4747 (node 1, in its own namespace) reaches node 0, never the second node.
    let second_id = status["peer_id"].as_str().unwrap().to_owned();
    let target = lab.tcp_addr(0);
    lab.start(1, &["--no-mdns", "--peer", &target]);
    lab.wait_until(Duration::from_secs(10), "node 1 connects to node 0", || {
        lab.sees(1, 0).then_some(())
    });
    assert!(
        !lab.peers(1).contains(&second_id),
        "a dial to {target} reached the second node"
    );
    drop(second);
}
