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

    let started = Instant::now();
    let (mut max_fds, mut slowest_status) = (0, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(flood_secs - 2) {
        max_fds = max_fds.max(open_fds(pid));
        let asked = Instant::now();
        let (code, _, err) = run(lab.cli(0).args(["status", "--json"]));
        assert_eq!(code, 0, "status failed during the flood: {err}");
        slowest_status = slowest_status.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(250));
    }
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
