//! A hostile peer on the LAN (issue 15): attacks measured against real nodes in namespaces.

use std::{
    fs,
    io::{BufRead, Read},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::Lab;
use crate::util::run;

/// Files node 0 shares in the flood test.
const SHARED_FILES: usize = 40;

/// Opens `count` TCP connections to `target:port` from the given source addresses, sends
/// nothing on them, and reopens every one the node closes, for `seconds`; then prints how many
/// connects succeeded and how many the node closed.
const FLOOD: &str = r#"
import resource, select, socket, sys, time
target, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sources = sys.argv[5].split(",")
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
poller = select.poll()
socks, opened, closed, failed = {}, 0, 0, 0
def connect(k):
    global opened, failed
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.bind((sources[k % len(sources)], 0))
        s.connect_ex((target, port))
    except OSError:
        failed += 1
        s.close()
        return
    socks[s.fileno()] = (k, s)
    poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    opened += 1
end = time.time() + seconds
for k in range(count):
    connect(k)
while time.time() < end:
    for fd, _ in poller.poll(200):
        k, s = socks[fd]
        try:
            gone = s.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if gone:
            closed += 1
            poller.unregister(fd)
            del socks[fd]
            s.close()
            connect(k)
print(f"opened={opened} closed_by_node={closed} failed={failed}", flush=True)
"#;

/// The number of open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// For `how_long`, asks node 0 (process `pid`) for its status every 250 ms (each must
/// succeed) and watches its open descriptors; returns the most descriptors seen and the
/// slowest `status`.
fn watch_node_0(lab: &Lab, pid: u32, how_long: Duration) -> (usize, Duration) {
    let started = Instant::now();
    let (mut max_fds, mut slowest_status) = (0, Duration::ZERO);
    while started.elapsed() < how_long {
        max_fds = max_fds.max(open_fds(pid));
        let asked = Instant::now();
        let (code, _, err) = run(lab.cli(0).args(["status", "--json"]));
        assert_eq!(code, 0, "status failed under attack: {err}");
        slowest_status = slowest_status.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(250));
    }
    (max_fds, slowest_status)
}

fn shared_files(lab: &Lab, i: usize) -> Option<usize> {
    let (code, out, _) = run(lab.cli(i).args(["ls", "--json"]));
    if code != 0 {
        return None;
    }
    let listed: Value = serde_json::from_str(&out).ok()?;
    Some(
        listed
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "file")
            .count(),
    )
}

#[test]
fn a_flood_of_half_open_connections_leaves_the_index_and_the_cli_working() {
    let Some(mut lab) = Lab::new("half_open_flood", 2) else {
        return;
    };
    // The node gets the usual soft limit as its hard limit too: it cannot raise it, and has
    // to hold the flood with the connection limits alone.
    lab.set_open_files(0, 1_024);
    lab.start(0, &[]);
    lab.stop(0);
    let config = lab.home(0).join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    // A rescan every 2 s: several run while the flood holds.
    fs::write(&config, format!("{text}rescan_interval_secs = 2\n")).unwrap();
    let shared = lab.home(0).join("shared");
    fs::create_dir_all(&shared).unwrap();
    for k in 0..SHARED_FILES {
        fs::write(shared.join(format!("file-{k}.txt")), format!("file {k}\n")).unwrap();
    }
    lab.start(0, &[]);
    lab.wait_until(Duration::from_secs(20), "node 0 indexes its files", || {
        (shared_files(&lab, 0)? == SHARED_FILES).then_some(())
    });
    let pid = lab.pid(0).expect("node 0 runs");
    let fds_before = open_fds(pid);

    // 1,100 connections that never start a handshake, from four addresses of node 1's
    // namespace, each reopened as soon as the node closes it.
    let sources: Vec<String> = (0..4)
        .map(|k| lab.add_addr(1, 200 + k).to_string())
        .collect();
    let flood_secs = 12;
    let flooder = lab
        .in_netns(1, "python3")
        .args(["-c", FLOOD])
        .arg(lab.addr(0).to_string())
        .arg("4747")
        .arg("1100")
        .arg(flood_secs.to_string())
        .arg(sources.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut flooder = crate::util::KillOnDrop(flooder);

    let (max_fds, slowest_status) = watch_node_0(&lab, pid, Duration::from_secs(flood_secs - 2));
    let status = flooder.0.wait().expect("wait for the flooder");
    let (mut report, mut err) = (String::new(), String::new());
    flooder
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    flooder
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "the flooder failed: {err}");
    let report = report.trim();
    let opened: usize = report
        .split_whitespace()
        .find_map(|w| w.strip_prefix("opened="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "flood: {report}; node 0 open files {fds_before} before, at most {max_fds} during; slowest status {slowest_status:?}"
    );
    assert!(opened >= 1_100, "the flood ran: {report}");
    assert!(
        max_fds < 512,
        "the flood held {max_fds} of 1,024 descriptors"
    );
    assert!(
        slowest_status < Duration::from_secs(2),
        "status took {slowest_status:?} during the flood"
    );
    // Several rescans ran during the flood: nothing was taken for deleted.
    assert_eq!(shared_files(&lab, 0), Some(SHARED_FILES));
    let (code, errors, _) = run(lab.cli(0).args(["ls", "--errors", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(errors.trim(), "[]", "no listing failed");
}

#[test]
fn a_node_filling_the_leaders_index_cannot_push_a_small_node_out() {
    let test = "a_node_filling_the_leaders_index_cannot_push_a_small_node_out";
    let Some(python) = crate::interop::py::venv_python(test) else {
        return;
    };
    // Node 0 leads (it starts first, alone); node 1 shares a few files; node 2's namespace
    // holds two py-libp2p identities that fill node 0's index (a cap of 20,000 entries here,
    // set in its config) with 9,999 made-up entries each (with node 0's own root: 19,999).
    let Some(mut lab) = Lab::new(test, 3) else {
        return;
    };
    lab.start(0, &[]);
    lab.stop(0);
    let config = lab.home(0).join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}leader_index_entries = 20000\n")).unwrap();
    lab.start(0, &[]);
    lab.wait_until(Duration::from_secs(10), "node 0 leads", || {
        (lab.status(0)["leader"].as_str() == Some(lab.peer_id(0))).then_some(())
    });
    let flood = lab
        .in_netns(2, &python)
        .current_dir(crate::interop::py::PY_DIR)
        .args(["misbehave.py", "--scenario", "index-flood", "--count", "2"])
        .args([
            "--entries",
            "9999",
            "--hold",
            "60",
            "--timeout",
            "90",
            "--addr",
        ])
        .arg(format!("{}/p2p/{}", lab.tcp_addr(0), lab.peer_id(0)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the index flood");
    let mut flood = crate::util::KillOnDrop(flood);
    let mut line = String::new();
    std::io::BufReader::new(flood.0.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the flood's report");
    let pushed: Value = serde_json::from_str(&line).expect("the flood reports JSON");
    assert_eq!(
        pushed["pushed"],
        serde_json::json!([{"ack": {"version": 1}}, {"ack": {"version": 1}}]),
        "both identities filled the index"
    );
    // The honest node joins with its files: the index is full, so the largest node makes
    // room.
    for k in 0..10 {
        super::search::write_shared(
            &lab,
            1,
            &format!("honest-{k}.txt"),
            format!("{k}").as_bytes(),
        );
    }
    lab.start(1, &[]);
    lab.wait_until(
        Duration::from_secs(30),
        "node 1's files are searchable at the full leader",
        || {
            let (code, out, _) = run(lab.cli(1).args(["search", "honest", "--json"]));
            (code == 0 && out.matches("honest-").count() >= 10).then_some(())
        },
    );
    let log = fs::read_to_string(lab.stderr_path(0)).unwrap_or_default();
    assert!(
        log.contains("to make room"),
        "the leader says whom it dropped"
    );
    // A third identity as large as the remaining one cannot push anyone out: refused.
    let again = lab
        .in_netns(2, &python)
        .current_dir(crate::interop::py::PY_DIR)
        .args(["misbehave.py", "--scenario", "index-flood", "--count", "1"])
        .args([
            "--entries",
            "9999",
            "--hold",
            "0",
            "--timeout",
            "60",
            "--addr",
        ])
        .arg(format!("{}/p2p/{}", lab.tcp_addr(0), lab.peer_id(0)))
        .output()
        .expect("run the second flood");
    let report = String::from_utf8_lossy(&again.stdout);
    let pushed: Value = serde_json::from_str(report.lines().next().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("the second flood reports JSON ({e}): {report}"));
    assert!(
        pushed["pushed"][0].get("refused").is_some(),
        "a third identity is refused: {report}"
    );
    let (code, out, _) = run(lab.cli(0).args(["search", "honest", "--json"]));
    assert_eq!(code, 0);
    assert!(
        out.matches("honest-").count() >= 10,
        "node 1's files stay: {out}"
    );
}

/// Accepts TCP connections on `port` for `seconds`, holds each open (silent) for 2 s or until
/// its peer closes it, and prints per source IP how many arrived and how many were open at
/// once, as JSON.
const VICTIM: &str = r#"
import json, select, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", port))
server.listen(1024)
poller = select.poll()
poller.register(server, select.POLLIN)
conns, stats = {}, {}
end = time.time() + seconds
while time.time() < end:
    for fd, _ in poller.poll(100):
        if fd == server.fileno():
            s, (ip, _) = server.accept()
            st = stats.setdefault(ip, {"total": 0, "open": 0, "max_open": 0})
            st["total"] += 1
            st["open"] += 1
            st["max_open"] = max(st["max_open"], st["open"])
            conns[s.fileno()] = (s, ip, time.time() + 2)
            poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
        else:
            s, ip, _ = conns[fd]
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                conns[fd] = (s, ip, 0)
    for fd, (s, ip, until) in list(conns.items()):
        if until < time.time():
            poller.unregister(fd)
            del conns[fd]
            stats[ip]["open"] -= 1
            s.close()
print(json.dumps(stats), flush=True)
"#;

/// Forges mDNS: `peers` made-up peer ids announced with TTL 3600 at `victim:port` in
/// datagrams whose source address is forged to be the victim's (raw sockets), then the same
/// from the script's own address (the source rule drops those), then a flood of `queries`
/// queries over 5 s, counting the answers each node sends in that time. Prints JSON.
const FORGE: &str = r#"
import json, os, random, socket, struct, sys, time
victim, port, peers, queries, me = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
def b58(b):
    n, out = int.from_bytes(b, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + out
def peer_id():
    # An ed25519 key's identity multihash: any 32 bytes parse as a peer id.
    return b58(bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + os.urandom(32))
def name(s):
    return b"".join(bytes([len(l)]) + l.encode() for l in s.split(".")) + b"\0"
def answer(group):
    out = struct.pack(">6H", 0, 0x8400, 0, len(group), 0, len(group))
    for i, _ in enumerate(group):
        target = name(f"forged{i}x{random.randrange(1 << 30)}")
        group[i] = (group[i], target)
        out += name("_p2p._udp.local") + struct.pack(">HHIH", 12, 1, 3600, len(target)) + target
    for pid, target in group:
        text = f"dnsaddr=/ip4/{victim}/tcp/{port}/p2p/{pid}".encode()
        out += target + struct.pack(">HHIH", 16, 0x8001, 3600, len(text) + 1) + bytes([len(text)]) + text
    return out
def checksum(b):
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
def ip_packet(src, payload):
    udp = struct.pack(">4H", 5353, 5353, 8 + len(payload), 0) + payload
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), random.randrange(65536), 0, 255, 17, 0,
                       socket.inet_aton(src), socket.inet_aton("224.0.0.251"))
    head = head[:10] + struct.pack(">H", checksum(head)) + head[12:]
    return head + udp
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
ids = [peer_id() for _ in range(peers)]
forged = 0
for src in (victim, me):
    # 8 peers a datagram: one Ethernet frame (a raw packet is not fragmented).
    for k in range(0, peers, 8):
        raw.sendto(ip_packet(src, answer(list(ids[k:k + 8]))), ("224.0.0.251", 0))
        forged += 1
listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
listen.bind(("0.0.0.0", 5353))
listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("224.0.0.251") + socket.inet_aton(me))
listen.setblocking(False)
send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
send.bind((me, 0))
send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(me))
query = struct.pack(">6H", 0, 0, 1, 0, 0, 0) + name("_p2p._udp.local") + struct.pack(">HH", 12, 1)
answers, start = {}, time.time()
for k in range(queries):
    send.sendto(query, ("224.0.0.251", 5353))
    deadline = start + 5 * (k + 1) / queries
    while time.time() < deadline:
        try:
            data, (ip, _) = listen.recvfrom(9000)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        if len(data) > 3 and data[2] & 0x80 and ip != me:
            answers[ip] = answers.get(ip, 0) + 1
print(json.dumps({"forged_datagrams": forged, "answers": answers, "seconds": time.time() - start}), flush=True)
"#;

#[test]
fn forged_mdns_answers_cannot_aim_the_nodes_at_a_host() {
    // Nodes 0 and 1 run; namespace 2 forges mDNS; namespace 3 is the host it aims at.
    let Some(mut lab) = Lab::new("forged_mdns", 4) else {
        return;
    };
    lab.start(0, &[]);
    lab.start(1, &[]);
    lab.wait_until(Duration::from_secs(20), "nodes 0 and 1 connect", || {
        lab.sees(0, 1).then_some(())
    });
    let seconds = 20;
    let victim = lab
        .in_netns(3, "python3")
        .args(["-c", VICTIM, "4747", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut victim = crate::util::KillOnDrop(victim);
    // The victim listens before the forgery goes out.
    lab.wait_until(Duration::from_secs(10), "the victim listens", || {
        let probe = "import socket, sys; socket.create_connection((sys.argv[1], 4747), 1).close()";
        let (code, _, _) = run(lab
            .in_netns(2, "python3")
            .args(["-c", probe])
            .arg(lab.addr(3).to_string()));
        (code == 0).then_some(())
    });
    let forger = lab
        .in_netns(2, "python3")
        .args(["-c", FORGE])
        .arg(lab.addr(3).to_string())
        .args(["4747", "1024", "500"])
        .arg(lab.addr(2).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut forger = crate::util::KillOnDrop(forger);

    let pid = lab.pid(0).expect("node 0 runs");
    let (max_fds, slowest_status) = watch_node_0(&lab, pid, Duration::from_secs(seconds - 2));
    let forged = output_json(&mut forger.0, "the forger");
    let hits = output_json(&mut victim.0, "the victim");
    eprintln!(
        "forged mDNS: {forged}; the victim saw {hits}; node 0 open files at most {max_fds}, slowest status {slowest_status:?}"
    );
    assert_eq!(forged["forged_datagrams"], 256, "the forgery went out");
    for i in 0..2 {
        let seen = &hits[lab.addr(i).to_string()];
        let (total, max_open) = (
            seen["total"].as_u64().unwrap_or(0),
            seen["max_open"].as_u64().unwrap_or(0),
        );
        // One address per forged peer and at most MAX_PEERS_PER_IP peers taken from one IP:
        // at most 8 at once, each dialed again only after 0.75 s, 1.5 s, 3 s, ... (at most 5
        // dials each in 20 s).
        let per_ip = iwant_behaviours::mdns::MAX_PEERS_PER_IP as u64;
        assert!(
            max_open <= per_ip,
            "node {i} held {max_open} connections to the victim at once"
        );
        assert!(
            total <= per_ip * 6,
            "node {i} connected to the victim {total} times in {seconds} s"
        );
        // Answers to the 500 queries in 5 s: at most one a second (and the ones its own
        // startup queries caused).
        let answered = forged["answers"][lab.addr(i).to_string()]
            .as_u64()
            .unwrap_or(0);
        assert!(
            (1..=8).contains(&answered),
            "node {i} answered {answered} of 500 queries in 5 s"
        );
    }
    assert!(
        slowest_status < Duration::from_secs(2),
        "status took {slowest_status:?}"
    );
    assert!(lab.sees(0, 1), "nodes 0 and 1 stay connected");
}

/// Waits for a script and reads the JSON line it printed.
fn output_json(child: &mut std::process::Child, what: &str) -> Value {
    let status = child.wait().expect("wait for the script");
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{what} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{what} printed {out:?}: {e}"))
}
