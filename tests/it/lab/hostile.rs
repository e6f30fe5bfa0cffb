//! A hostile peer on the LAN (issue 15): attacks measured against real nodes in namespaces.

use std::{
    fs,
    io::Read,
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
