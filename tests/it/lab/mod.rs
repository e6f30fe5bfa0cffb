//! The network lab: real `iwant` binaries in Linux network namespaces joined by a bridge, so
//! mDNS, dials, link cuts and bandwidth limits are the kernel's, not a simulation.
//!
//! [`Lab::new`] builds one lab for one test:
//!
//! ```text
//!   root namespace:  bridge iwb<pid>-<lab>   (no IP address, no IPv6, no uplink)
//!                      |            |
//!                  iwv<..>-0    iwv<..>-1    host side of each node's veth pair
//!                      |            |
//!   namespace:     iwn<..>-0    iwn<..>-1    node side called `eth0`: 10.<x>.<y>.<i+1>/24,
//!                                            `lo` up, route 224.0.0.0/4 (mDNS) on `eth0`
//! ```
//!
//! The namespaces have no default route, so nothing in them reaches the machine's real network.
//! Nodes run with `ip netns exec <ns> iwant --home <dir> node ...` with mDNS on unless a test
//! says otherwise; the CLI reaches them from the root namespace through the control socket in
//! their home. Nothing runs mDNS in the root namespace.
//!
//! Every kernel object's name embeds the test process's pid and a per-process lab number (both
//! hex), so tests running in parallel threads, parallel `cargo test` runs and crashed runs never
//! collide. [`Lab::new`] first removes objects whose pid is dead (leftovers of a crashed run);
//! objects of live processes are never touched. Dropping a [`Lab`] kills its nodes (paused ones
//! too, see [`Lab::pause`]) and removes everything it created, also when the test panicked;
//! then it prints the end of each node's stderr and keeps the lab's directory (homes and logs)
//! for a post-mortem.
//!
//! Node processes get `PR_SET_PDEATHSIG = SIGKILL`: they die when the thread that started them
//! ends, so a killed test run leaves no nodes behind. Use a [`Lab`] from the thread that made it.
//!
//! The kernel's ARP table is one table for all namespaces (1,024 entries by default): a lab of
//! `n` nodes raises its limits to about n² first ([`Lab::new`]; only ever raised).
//!
//! The lab needs root and `ip` (iproute2); [`Lab::shape`] also needs `tc`, and [`Lab::lose`]
//! `nft` (nftables; tests that use it start with [`Lab::with_loss`]). Without them,
//! [`Lab::new`] prints `skipping lab test <name>: <reason>` and returns `None`, except under
//! `CI=true`, where it panics: in CI the lab tests must run. `IWANT_LAB_LOG` overrides the nodes'
//! log filter (default [`NODE_LOG`]); with `IWANT_LAB_KEEP` set, a lab keeps its nodes' homes
//! and logs (as a failed test always does) and prints where.

mod discovery;
mod download;
mod election;
mod hostile;
mod private;
mod safety;
mod scale;
mod search;
mod soak;

use std::{
    fmt::Write as _,
    fs::{self, OpenOptions},
    io::{self, Write as _},
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex, Once, PoisonError,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::util::{bin, iwant, peer_ids, run};

/// The name of each node's interface inside its namespace.
pub const NODE_IF: &str = "eth0";

/// The TCP port nodes listen on when not told otherwise.
pub const NODE_PORT: u16 = 4747;

/// The nodes' log filter, unless `IWANT_LAB_LOG` says otherwise.
pub const NODE_LOG: &str = "info,iwant=debug,iwant_behaviours=debug";

/// How long a started node may take to answer `status`.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// How long [`Lab::stop`] waits for a node to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// How often [`Lab::wait_until`] probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How many lines of each node's stderr a failed test prints.
const TAIL_LINES: usize = 40;

/// Most nodes in one lab: addresses are `.1` to `.250`, names hold two hex digits.
const MAX_NODES: usize = 250;

/// Labs made by this process so far; numbers each lab's names.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Removing the leftovers that carry this process's own pid: once, before its first lab.
static SWEEP_OWN_PID: Once = Once::new();

/// Serialises the building and removing of labs within this process: the first `ip netns add`
/// on a machine sets up `/run/netns`, and concurrent first calls can race.
static NETWORK_SETUP: Mutex<()> = Mutex::new(());

/// A link rate for [`Lab::shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    bits_per_sec: u64,
}

impl Rate {
    /// `n` kilobits (1,000 bits) per second.
    pub const fn kbit(n: u64) -> Rate {
        Rate {
            bits_per_sec: n * 1_000,
        }
    }

    /// `n` megabits (1,000,000 bits) per second.
    pub const fn mbit(n: u64) -> Rate {
        Rate {
            bits_per_sec: n * 1_000_000,
        }
    }

    /// `n` gigabits per second.
    pub const fn gbit(n: u64) -> Rate {
        Rate {
            bits_per_sec: n * 1_000_000_000,
        }
    }

    /// Bytes per second.
    pub const fn bytes_per_sec(self) -> u64 {
        self.bits_per_sec / 8
    }

    /// The token bucket size: 10 ms worth of traffic, at least 64 KiB (one GSO segment).
    fn burst_bytes(self) -> u64 {
        (self.bytes_per_sec() / 100).max(64 * 1024)
    }
}

/// One lab: a bridge, `n` namespaces and the nodes running in them. See the [module docs](self).
pub struct Lab {
    test: String,
    names: Names,
    /// Homes and logs; `None` once kept for a post-mortem.
    dir: Option<tempfile::TempDir>,
    bridge_created: bool,
    nodes: Vec<Node>,
    /// The nodes' log filter, when the test sets one ([`Lab::set_log`]).
    log: Option<String>,
}

/// One node's place in the lab, and its process when running.
struct Node {
    netns: String,
    veth: String,
    addr: Ipv4Addr,
    home: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    netns_created: bool,
    veth_created: bool,
    /// The arguments after `node` of the last start.
    args: Vec<String>,
    child: Option<Child>,
    /// Whether [`Lab::pause`] stopped the process (and no [`Lab::resume`] followed yet).
    paused: bool,
    /// When the last start spawned the process.
    started_at: Option<Instant>,
    starts: u32,
    peer_id: Option<String>,
    /// The open-file limit (soft and hard) its process starts with, if the test set one.
    open_files: Option<u64>,
}

/// Why a lab cannot be built on this machine.
struct Unavailable(String);

impl Lab {
    /// Builds a lab of `n` namespaces for the test `test` (no node is started yet).
    ///
    /// Returns `None`, after printing one `skipping lab test <test>: <reason>` line to stderr,
    /// when this machine cannot run the lab (not root, no `ip`, namespaces not permitted).
    /// Under `CI=true` it panics with the reason instead. Any later failure panics.
    pub fn new(test: &str, n: usize) -> Option<Lab> {
        assert!(
            (1..=MAX_NODES).contains(&n),
            "bug in the test: a lab has 1 to {MAX_NODES} nodes, not {n}"
        );
        match Lab::build(test, n) {
            Ok(lab) => Some(lab),
            Err(Unavailable(reason)) if in_ci() => {
                panic!("lab test {test} cannot run, and under CI=true it must: {reason}")
            }
            Err(Unavailable(reason)) => {
                eprintln!("skipping lab test {test}: {reason}");
                None
            }
        }
    }

    /// Like [`Lab::new`], for a test that also makes links lossy ([`Lab::lose`]): needs `nft`.
    pub fn with_loss(test: &str, n: usize) -> Option<Lab> {
        if find_on_path("nft").is_none() {
            let reason = "`nft` (nftables) is not on PATH";
            assert!(
                !in_ci(),
                "lab test {test} cannot run, and under CI=true it must: {reason}"
            );
            eprintln!("skipping lab test {test}: {reason}");
            return None;
        }
        Lab::new(test, n)
    }

    fn build(test: &str, n: usize) -> Result<Lab, Unavailable> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Unavailable("needs root (effective uid 0)".into()));
        }
        if find_on_path("ip").is_none() {
            return Err(Unavailable("`ip` (iproute2) is not on PATH".into()));
        }
        SWEEP_OWN_PID.call_once(|| sweep(true));
        sweep(false);

        let names = Names {
            pid: std::process::id(),
            lab: NEXT_LAB.fetch_add(1, Ordering::Relaxed) % 0x100,
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("iwant-lab-{}-", names.pid))
            .tempdir()
            .expect("create the lab's temp dir");
        let nodes = (0..n)
            .map(|i| {
                let root = dir.path();
                Node {
                    netns: names.netns(i),
                    veth: names.veth(i),
                    addr: names.addr(i),
                    home: root.join(format!("n{i}")),
                    stdout: root.join(format!("n{i}.out")),
                    stderr: root.join(format!("n{i}.err")),
                    netns_created: false,
                    veth_created: false,
                    args: Vec::new(),
                    child: None,
                    paused: false,
                    started_at: None,
                    starts: 0,
                    peer_id: None,
                    open_files: None,
                }
            })
            .collect();
        let mut lab = Lab {
            test: test.to_owned(),
            names,
            dir: Some(dir),
            bridge_created: false,
            nodes,
            log: None,
        };
        // On any error below, dropping `lab` removes what was created so far.
        let _guard = NETWORK_SETUP.lock().unwrap_or_else(PoisonError::into_inner);

        // The probe: whether this machine lets us make namespaces and bridges at all.
        ip(&format!("netns add {}", lab.nodes[0].netns))
            .map_err(|e| Unavailable(format!("cannot create a network namespace: {e}")))?;
        lab.nodes[0].netns_created = true;
        let bridge = lab.names.bridge();
        ip(&format!("link add {bridge} type bridge mcast_snooping 0"))
            .map_err(|e| Unavailable(format!("cannot create a bridge: {e}")))?;
        lab.bridge_created = true;

        // From here on a failure is a bug, not a missing capability.
        make_room_for_neighbours(n);
        disable_ipv6(&bridge);
        ip_or_panic(&format!("link set {bridge} up"));
        for node in &mut lab.nodes {
            let (ns, veth, addr) = (&node.netns, &node.veth, node.addr);
            if !node.netns_created {
                ip_or_panic(&format!("netns add {ns}"));
                node.netns_created = true;
            }
            ip_or_panic(&format!(
                "link add {veth} type veth peer name {NODE_IF} netns {ns}"
            ));
            node.veth_created = true;
            disable_ipv6(veth);
            ip_or_panic(&format!("link set {veth} master {bridge}"));
            ip_or_panic(&format!("link set {veth} up"));
            ip_or_panic(&format!("-n {ns} addr add {addr}/24 dev {NODE_IF}"));
            ip_or_panic(&format!("-n {ns} link set {NODE_IF} up"));
            ip_or_panic(&format!("-n {ns} link set lo up"));
            ip_or_panic(&format!("-n {ns} route add 224.0.0.0/4 dev {NODE_IF}"));
        }
        Ok(lab)
    }

    /// How many nodes the lab has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Starts node `i` (`iwant --home <home i> node <args>`) and waits until it answers
    /// `status`. Panics if it is already running or exits during start-up.
    pub fn start(&mut self, i: usize, args: &[&str]) {
        self.spawn(i, args);
        self.wait_ready(i);
    }

    /// Starts every node with the same `args`, all processes first, then waits until each
    /// answers `status`.
    pub fn start_all(&mut self, args: &[&str]) {
        for i in 0..self.len() {
            self.spawn(i, args);
        }
        for i in 0..self.len() {
            self.wait_ready(i);
        }
    }

    /// Starts node `i` again with the home and arguments of its last start (its identity and
    /// database survive) and waits until it answers `status`.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.nodes[i].starts > 0,
            "bug in the test: node {i} was never started"
        );
        self.spawn_process(i);
        self.wait_ready(i);
    }

    /// Spawns node `i` without waiting for it; pair with [`Lab::wait_ready`].
    pub fn spawn(&mut self, i: usize, args: &[&str]) {
        self.nodes[i].args = args.iter().map(|a| a.to_string()).collect();
        self.spawn_process(i);
    }

    fn spawn_process(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "bug in the test: node {i} is already running"
        );
        let filter = std::env::var("IWANT_LAB_LOG")
            .ok()
            .or_else(|| self.log.clone())
            .unwrap_or_else(|| NODE_LOG.to_owned());
        let node = &mut self.nodes[i];
        node.starts += 1;
        let header = format!(
            "--- lab: start {} of node {i} in {}: iwant node {} ---\n",
            node.starts,
            node.netns,
            node.args.join(" ")
        );
        let log = |path: &Path| {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open the log {}: {e}", path.display()));
            file.write_all(header.as_bytes())
                .expect("write a log header");
            file
        };
        let (stdout, stderr) = (log(&node.stdout), log(&node.stderr));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.netns])
            .arg(bin())
            .arg("--home")
            .arg(&node.home)
            .arg("node")
            .args(&node.args)
            .env_remove("IWANT_HOME")
            .env_remove("RUST_LOG")
            .env("IWANT_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        die_with_parent(&mut cmd);
        if let Some(limit) = node.open_files {
            let limit = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe; the closure does not allocate.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        node.started_at = Some(Instant::now());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {i}: {e}"));
        node.child = Some(child);
    }

    /// Waits until node `i` answers `status` and learns its peer id. Panics, with the end of
    /// its stderr, if it exits first or takes longer than 20 s.
    pub fn wait_ready(&mut self, i: usize) {
        let start = Instant::now();
        let status = loop {
            if let Some(exit) = self.try_wait(i) {
                panic!(
                    "node {i} exited during start-up with {exit}; its stderr ends with:\n{}",
                    self.stderr_tail(i, TAIL_LINES)
                );
            }
            if let Some(status) = self.try_status(i) {
                break status;
            }
            if start.elapsed() > READY_LIMIT {
                panic!(
                    "node {i} did not answer `status` within {READY_LIMIT:?}; its stderr ends with:\n{}",
                    self.stderr_tail(i, TAIL_LINES)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let peer_id = status["peer_id"]
            .as_str()
            .expect("status has a peer_id")
            .to_owned();
        self.nodes[i].peer_id = Some(peer_id);
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].child.is_some() && self.try_wait(i).is_none()
    }

    /// The exit status of node `i` if its process has ended (and is then forgotten).
    fn try_wait(&mut self, i: usize) -> Option<ExitStatus> {
        let child = self.nodes[i].child.as_mut()?;
        match child.try_wait() {
            Ok(Some(exit)) => {
                self.nodes[i].child = None;
                Some(exit)
            }
            Ok(None) => None,
            Err(e) => panic!("wait for node {i}: {e}"),
        }
    }

    fn take_child(&mut self, i: usize, verb: &str) -> Child {
        let child = self.nodes[i].child.take().unwrap_or_else(|| {
            panic!("bug in the test: cannot {verb} node {i}: it is not running")
        });
        // A stopped process would leave SIGTERM pending forever.
        if std::mem::take(&mut self.nodes[i].paused) {
            signal(&child, libc::SIGCONT);
        }
        child
    }

    /// Freezes node `i` with SIGSTOP, like a hung process or a machine that stops scheduling
    /// it: its sockets stay open and the kernel still accepts and acknowledges what its peers
    /// send, but it reads, writes and answers nothing (not even `status`: do not ask a paused
    /// node). Returns once the kernel reports it stopped. Undo with [`Lab::resume`]; stopping,
    /// killing or dropping the lab resumes it first.
    pub fn pause(&mut self, i: usize) {
        assert!(
            self.is_running(i),
            "bug in the test: cannot pause node {i}: it is not running"
        );
        assert!(
            !self.nodes[i].paused,
            "bug in the test: node {i} is already paused"
        );
        let child = self.nodes[i].child.as_ref().expect("bug: checked running");
        let pid = child.id();
        signal(child, libc::SIGSTOP);
        self.nodes[i].paused = true;
        let stat = format!("/proc/{pid}/stat");
        let stopped = || {
            // `<pid> (<comm>) <state> ...`; the name may hold spaces and parentheses.
            fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        };
        let start = Instant::now();
        while !stopped() {
            assert!(
                start.elapsed() < STOP_LIMIT,
                "node {i} (pid {pid}) did not stop within {STOP_LIMIT:?} of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets node `i` run again after [`Lab::pause`] (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        assert!(
            self.nodes[i].paused,
            "bug in the test: cannot resume node {i}: it is not paused"
        );
        let child = self.nodes[i]
            .child
            .as_ref()
            .expect("bug: a paused node has a process");
        signal(child, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// The log filter of the nodes started from now on (instead of [`NODE_LOG`]; `IWANT_LAB_LOG`
    /// still wins). Large labs log less, so that logging does not load the machine.
    pub fn set_log(&mut self, filter: &str) {
        self.log = Some(filter.to_owned());
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The host side of node `i`'s veth pair (in the root namespace): its counters are the
    /// node's traffic.
    pub fn host_veth(&self, i: usize) -> &str {
        &self.nodes[i].veth
    }

    /// Whether node `i` is paused by [`Lab::pause`].
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Kills node `i` with SIGKILL, like a crash or a power cut: no goodbye to its peers.
    pub fn kill(&mut self, i: usize) -> ExitStatus {
        let mut child = self.take_child(i, "kill");
        let _ = child.kill();
        child
            .wait()
            .unwrap_or_else(|e| panic!("wait for node {i}: {e}"))
    }

    /// Stops node `i` with SIGTERM (a graceful shutdown) and returns its exit status. Panics
    /// if it has not exited within 10 s (and kills it).
    pub fn stop(&mut self, i: usize) -> ExitStatus {
        let mut child = self.take_child(i, "stop");
        // SAFETY: kill(2) on the pid of a child that has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(exit)) => return exit,
                Ok(None) if start.elapsed() > STOP_LIMIT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("node {i} did not exit within {STOP_LIMIT:?} of SIGTERM; killed it");
                }
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(e) => panic!("wait for node {i}: {e}"),
            }
        }
    }

    /// Cuts node `i` off the network: its link goes down on the bridge side, so its packets
    /// vanish without any reset (its own interface only loses carrier).
    pub fn cut(&self, i: usize) {
        ip_or_panic(&format!("link set {} down", self.nodes[i].veth));
    }

    /// Undoes [`Lab::cut`].
    pub fn heal(&self, i: usize) {
        ip_or_panic(&format!("link set {} up", self.nodes[i].veth));
    }

    /// Limits what node `i` sends to `rate` (a `tbf` qdisc on its interface; replaces any
    /// earlier shaping). What it receives is limited by its peers' shaping.
    pub fn shape(&self, i: usize, rate: Rate) {
        let (bits, burst) = (rate.bits_per_sec, rate.burst_bytes());
        self.tc(
            i,
            &format!(
                "qdisc replace dev {NODE_IF} root tbf rate {bits}bit burst {burst} latency 50ms"
            ),
        );
    }

    /// Removes the shaping of node `i`; panics if it was not shaped.
    pub fn unshape(&self, i: usize) {
        self.tc(i, &format!("qdisc del dev {NODE_IF} root"));
    }

    /// Drops `percent` % of the packets node `i` sends and of those it receives, at random:
    /// nftables `numgen random` rules on the ingress and egress hooks of its interface, in its
    /// own namespace (this kernel has no `netem`; `tc` shaping is independent and stays).
    /// Replaces any earlier loss.
    pub fn lose(&self, i: usize, percent: u32) {
        let rule = format!("numgen random mod 100 < {percent} counter drop");
        self.nft(
            i,
            &format!(
                "table netdev iwant_loss {{\n\
                 chain ingress {{ type filter hook ingress device \"{NODE_IF}\" priority 0; {rule}; }}\n\
                 chain egress {{ type filter hook egress device \"{NODE_IF}\" priority 0; {rule}; }}\n\
                 }}\n"
            ),
        );
    }

    /// How many packets node `i`'s loss rules have dropped so far (0 without loss).
    pub fn lost(&self, i: usize) -> u64 {
        let nft = find_on_path("nft").expect("`nft` is not on PATH");
        let (code, out, _) =
            run(self
                .in_netns(i, nft)
                .args(["list", "table", "netdev", "iwant_loss"]));
        if code != 0 {
            return 0;
        }
        out.split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Ends node `i`'s packet loss, if any.
    pub fn clear_loss(&self, i: usize) {
        self.nft(i, "");
    }

    /// Replaces node `i`'s `iwant_loss` table with `table` (nftables syntax; empty: none).
    fn nft(&self, i: usize, table: &str) {
        use std::io::Write;
        let nft = find_on_path("nft")
            .expect("`nft` is not on PATH: install nftables (Debian: `apt-get install nftables`)");
        // Adding the table first makes deleting it work whether it existed or not.
        let script =
            format!("add table netdev iwant_loss\ndelete table netdev iwant_loss\n{table}");
        let mut child = self
            .in_netns(i, nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .expect("write the nft script");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft in node {i}'s namespace failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The queueing disciplines on node `i`'s interface, as `tc qdisc show` prints them.
    pub fn qdiscs(&self, i: usize) -> String {
        self.tc(i, &format!("qdisc show dev {NODE_IF}"))
    }

    /// Runs `tc <command>` in node `i`'s namespace and returns its stdout.
    fn tc(&self, i: usize, command: &str) -> String {
        let tc = find_on_path("tc").expect("`tc` (iproute2) is not on PATH; Lab::shape needs it");
        let mut cmd = self.in_netns(i, tc);
        let (code, out, err) = run(cmd.args(command.split_whitespace()));
        assert_eq!(
            code, 0,
            "`tc {command}` in node {i}'s namespace failed: {err}"
        );
        out
    }

    /// A command that runs `program` inside node `i`'s namespace (add its arguments).
    pub fn in_netns(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.nodes[i].netns])
            .arg(program);
        cmd
    }

    /// Starts node `i` from now on with `limit` open files, soft and hard (so the node cannot
    /// raise it).
    pub fn set_open_files(&mut self, i: usize, limit: u64) {
        self.nodes[i].open_files = Some(limit);
    }

    /// Gives node `i`'s namespace one more IPv4 address in the lab's subnet, with `host` as its
    /// last byte (above the nodes' own, e.g. 200), and returns it. Removed with the namespace.
    pub fn add_addr(&self, i: usize, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.addr(0).octets();
        let extra = Ipv4Addr::new(a, b, c, host);
        assert!(
            self.nodes.iter().all(|n| n.addr != extra),
            "bug in the test: {extra} is a node's address"
        );
        ip_or_panic(&format!(
            "-n {} addr add {extra}/24 dev {NODE_IF}",
            self.nodes[i].netns
        ));
        extra
    }

    /// Node `i`'s IPv4 address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].addr
    }

    /// Node `i`'s default TCP listen address, `/ip4/<addr>/tcp/4747`.
    pub fn tcp_addr(&self, i: usize) -> String {
        format!("/ip4/{}/tcp/{NODE_PORT}", self.addr(i))
    }

    /// The lab's scratch folder, removed with the lab: room for what a test lays out.
    pub fn scratch(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the lab's folder lives as long as the lab")
            .path()
    }

    /// Moves node `i`'s home to `home` (for example inside a user folder the test lays out in
    /// [`Lab::scratch`]). Only before its first start.
    pub fn set_home(&mut self, i: usize, home: PathBuf) {
        assert_eq!(
            self.nodes[i].starts, 0,
            "bug in the test: node {i} has started"
        );
        self.nodes[i].home = home;
    }

    /// Node `i`'s home directory.
    pub fn home(&self, i: usize) -> &Path {
        &self.nodes[i].home
    }

    /// `iwant --home <home i>` run from the root namespace (add the command and arguments).
    pub fn cli(&self, i: usize) -> Command {
        iwant(self.home(i))
    }

    /// When node `i` was last spawned. Panics if it never was.
    pub fn started_at(&self, i: usize) -> Instant {
        self.nodes[i]
            .started_at
            .unwrap_or_else(|| panic!("bug in the test: node {i} was never started"))
    }

    /// Node `i`'s peer id (known once it has answered `status`).
    pub fn peer_id(&self, i: usize) -> &str {
        self.nodes[i]
            .peer_id
            .as_deref()
            .unwrap_or_else(|| panic!("bug in the test: node {i} was never started"))
    }

    /// `iwant status --json` of node `i`. Panics if it is not running.
    pub fn status(&self, i: usize) -> Value {
        self.try_status(i)
            .unwrap_or_else(|| panic!("node {i} is not running: `iwant status` exited with 3"))
    }

    /// `iwant status --json` of node `i`, or `None` if it is not running (exit code 3).
    /// Panics on any other failure.
    pub fn try_status(&self, i: usize) -> Option<Value> {
        self.query_status(i).unwrap_or_else(|e| panic!("{e}"))
    }

    fn query_status(&self, i: usize) -> Result<Option<Value>, String> {
        let (code, out, err) = run(self.cli(i).args(["status", "--json"]));
        match code {
            0 => serde_json::from_str(&out)
                .map(Some)
                .map_err(|e| format!("`status --json` of node {i} printed no JSON ({e}): {out}")),
            3 => Ok(None),
            _ => Err(format!(
                "`status --json` of node {i} failed with exit code {code}: {err}"
            )),
        }
    }

    /// The peer ids node `i` lists as connected.
    pub fn peers(&self, i: usize) -> Vec<String> {
        peer_ids(&self.status(i))
    }

    /// Whether node `i` lists node `j` as connected.
    pub fn sees(&self, i: usize, j: usize) -> bool {
        self.peers(i).iter().any(|p| p == self.peer_id(j))
    }

    /// How many connections node `i` reports to node `j` (0 when it does not list it).
    pub fn connections(&self, i: usize, j: usize) -> u64 {
        peer_entry(&self.status(i), self.peer_id(j))
            .and_then(|p| p["connections"].as_u64())
            .unwrap_or(0)
    }

    /// Whether each of `nodes` lists all the others as connected.
    pub fn is_mesh(&self, nodes: &[usize]) -> bool {
        nodes.iter().all(|&i| {
            let peers = self.peers(i);
            nodes
                .iter()
                .filter(|&&j| j != i)
                .all(|&j| peers.iter().any(|p| p == self.peer_id(j)))
        })
    }

    /// Polls `probe` every 50 ms until it returns `Some`, and returns that. After `limit`, it
    /// panics naming `what`, with what every running node sees at that moment.
    pub fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting until {what}\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// One line per node: whether it runs and the nodes it sees, with their connection counts.
    pub fn describe(&self) -> String {
        let mut out = String::from("lab state:\n");
        for i in 0..self.len() {
            let _ = write!(out, "  node {i} ({}): ", self.addr(i));
            if self.is_paused(i) {
                // It would not answer: each query would wait for the CLI's reply timeout.
                out.push_str("paused\n");
                continue;
            }
            match self.query_status(i) {
                Ok(None) => out.push_str("not running"),
                Err(e) => out.push_str(&e),
                Ok(Some(status)) => {
                    let peers = status["peers"].as_array().cloned().unwrap_or_default();
                    let _ = write!(out, "{} peer(s)", peers.len());
                    for p in &peers {
                        let id = p["peer_id"].as_str().unwrap_or("?");
                        let who = self
                            .node_of(id)
                            .map_or_else(|| format!("peer {id}"), |j| format!("node {j}"));
                        let _ = write!(
                            out,
                            "; {who} ({} conn, addrs {})",
                            p["connections"], p["addrs"]
                        );
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// The node whose peer id is `peer_id`.
    pub fn node_of(&self, peer_id: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.peer_id.as_deref() == Some(peer_id))
    }

    /// The file node `i`'s stderr goes to (all its starts, each after a header).
    pub fn stderr_path(&self, i: usize) -> &Path {
        &self.nodes[i].stderr
    }

    /// The last `lines` lines of node `i`'s stderr (all its starts, each after a header).
    pub fn stderr_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.nodes[i].stderr).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The names of the kernel objects this lab created: bridge, then each node's host-side
    /// veth and namespace.
    pub fn kernel_objects(&self) -> Vec<String> {
        let mut names = vec![self.names.bridge()];
        for node in &self.nodes {
            names.push(node.veth.clone());
            names.push(node.netns.clone());
        }
        names
    }

    fn post_mortem(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let id = node.peer_id.as_deref().unwrap_or("never answered");
            eprintln!(
                "----- lab {}: node {i} ({}, {}, {id}): last {TAIL_LINES} lines of {} -----",
                self.test,
                node.netns,
                node.addr,
                node.stderr.display()
            );
            eprintln!("{}", self.stderr_tail(i, TAIL_LINES));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL ends a stopped process too; SIGCONT first all the same, so nothing
                // depends on that.
                if std::mem::take(&mut node.paused) {
                    signal(&child, libc::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if failed {
            self.post_mortem();
        }
        let mut errors = Vec::new();
        {
            let _guard = NETWORK_SETUP.lock().unwrap_or_else(PoisonError::into_inner);
            for node in &self.nodes {
                // Deleting one end of a veth pair deletes both.
                if node.veth_created {
                    errors.extend(ip(&format!("link del {}", node.veth)).err());
                }
                if node.netns_created {
                    errors.extend(ip(&format!("netns del {}", node.netns)).err());
                }
            }
            if self.bridge_created {
                errors.extend(ip(&format!("link del {}", self.names.bridge())).err());
            }
        }
        if failed || std::env::var_os("IWANT_LAB_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "lab {}: homes and logs kept in {}",
                    self.test,
                    dir.keep().display()
                );
            }
        }
        if !errors.is_empty() {
            let message = format!("lab {}: cleanup failed: {}", self.test, errors.join("; "));
            if failed {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// The status entry of `peer_id` in a `status --json` document.
pub fn peer_entry<'a>(status: &'a Value, peer_id: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peer_id"] == peer_id)
}

/// The names of one lab's kernel objects, all `iw<kind><pid>-<lab>[-<node>]` in hex: the bridge
/// `iwb`, each node's host-side veth `iwv` and namespace `iwn`. The longest, a veth of node 249
/// in lab 255 of pid 0x400000 (Linux's largest), has 15 characters: Linux's limit.
#[derive(Debug, Clone, Copy)]
struct Names {
    pid: u32,
    lab: u32,
}

impl Names {
    fn bridge(self) -> String {
        format!("iwb{:x}-{:x}", self.pid, self.lab)
    }

    fn veth(self, i: usize) -> String {
        let name = format!("iwv{:x}-{:x}-{i:x}", self.pid, self.lab);
        assert!(name.len() <= 15, "bug: interface name {name} is too long");
        name
    }

    fn netns(self, i: usize) -> String {
        format!("iwn{:x}-{:x}-{i:x}", self.pid, self.lab)
    }

    /// Node `i`'s address: `10.<x>.<lab>.<i+1>`, with x from the pid. Labs never share a bridge,
    /// so equal addresses in two labs would not meet anyway.
    fn addr(self, i: usize) -> Ipv4Addr {
        let x = 100 + (self.pid % 100) as u8;
        Ipv4Addr::new(10, x, self.lab as u8, i as u8 + 1)
    }
}

/// The pid embedded in a name made by [`Names`], or `None` if the name is not one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("iwb")
        .map(|r| (r, 2))
        .or_else(|| name.strip_prefix("iwv").map(|r| (r, 3)))
        .or_else(|| name.strip_prefix("iwn").map(|r| (r, 3)));
    let (rest, parts) = rest?;
    let fields: Vec<&str> = rest.split('-').collect();
    let hex = |s: &str| !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if fields.len() != parts || !fields.iter().all(|f| hex(f)) {
        return None;
    }
    let pid = u32::from_str_radix(fields[0], 16).ok()?;
    (pid > 1).then_some(pid)
}

/// Removes the kernel objects left by crashed test runs: those whose pid is dead, and with
/// `own_pid` also those carrying this process's pid (a dead process that had the same pid).
fn sweep(own_pid: bool) {
    let me = std::process::id();
    let leftover = |name: &str| {
        owner_pid(name).is_some_and(|pid| if pid == me { own_pid } else { !is_alive(pid) })
    };
    let _guard = NETWORK_SETUP.lock().unwrap_or_else(PoisonError::into_inner);
    let mut removed = Vec::new();
    let netns = ip("netns list").unwrap_or_default();
    let links = ip("-o link show").unwrap_or_default();
    // `ip -o link` lines look like `12: iwv1f2a-0-1@if11: <BROADCAST,...`.
    let link_names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default())
        .collect();
    for name in link_names
        .iter()
        .filter(|n| n.starts_with("iwv") && leftover(n))
    {
        if ip(&format!("link del {name}")).is_ok() {
            removed.push(name.to_string());
        }
    }
    for name in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if !leftover(name) {
            continue;
        }
        // Nodes whose test process died before it could kill them.
        for pid in ip(&format!("netns pids {name}"))
            .unwrap_or_default()
            .split_whitespace()
        {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if ip(&format!("netns del {name}")).is_ok() {
            removed.push(name.to_owned());
        }
    }
    for name in link_names
        .iter()
        .filter(|n| n.starts_with("iwb") && leftover(n))
    {
        if ip(&format!("link del {name}")).is_ok() {
            removed.push(name.to_string());
        }
    }
    if !removed.is_empty() {
        eprintln!(
            "lab: removed leftovers of crashed runs: {}",
            removed.join(" ")
        );
    }
}

/// Sends `signal` to a child that has not been reaped yet.
fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("bug: a pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is an unreaped child's, so
    // it cannot have been reused.
    unsafe { libc::kill(pid, signal) };
}

/// Whether a process with this pid exists.
fn is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe {
        libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Runs `ip <command>` (its words split at whitespace) and returns its stdout; the error holds
/// the command and its stderr on one line.
fn ip(command: &str) -> Result<String, String> {
    let output = Command::new("ip")
        .args(command.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(format!("`ip {command}` failed: {stderr}"))
}

fn ip_or_panic(command: &str) {
    if let Err(e) = ip(command) {
        panic!("{e}");
    }
}

/// Turns IPv6 off on a root-namespace interface before it goes up, so the root namespace gets
/// no address at all (not even link-local) on the lab's network.
/// Makes room in the kernel's ARP table for a lab of `n` nodes.
///
/// The IPv4 neighbour table is one table for the whole kernel, shared by every network
/// namespace, with a hard limit (`gc_thresh3`, 1,024 entries by default). A full mesh of `n`
/// nodes needs about n² entries (each node's view of each other node, plus a multicast entry
/// each): past 32 nodes the table overflows ("neighbour table overflow" in the kernel log),
/// and sends fail with ENOBUFS, mDNS queries and answers included, so late nodes never find
/// anyone. A real LAN has a table per machine; this is the lab's own limit. The thresholds
/// are only ever raised, never lowered.
fn make_room_for_neighbours(n: usize) {
    let need = (n * n + 256) as u64;
    for (knob, want) in [("gc_thresh2", need), ("gc_thresh3", 2 * need)] {
        let path = Path::new("/proc/sys/net/ipv4/neigh/default").join(knob);
        let now: u64 = fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if now < want {
            fs::write(&path, want.to_string())
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }
}

fn disable_ipv6(interface: &str) {
    let knob = Path::new("/proc/sys/net/ipv6/conf")
        .join(interface)
        .join("disable_ipv6");
    if knob.exists() {
        fs::write(&knob, "1").unwrap_or_else(|e| panic!("write {}: {e}", knob.display()));
    }
}

/// Makes the child get SIGKILL when the thread that spawned it ends (the test is over or the
/// test process died), and not start at all if that already happened.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe system calls and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The path of `program` in one of PATH's directories.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether this is a CI run (`CI=true`), where lab tests must run rather than skip.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// Tests of the harness itself.
mod selftest {
    use super::*;

    #[test]
    fn names_fit_linux_interface_names_and_parse_back() {
        let names = Names {
            pid: 0x40_0000,
            lab: 0xff,
        };
        assert_eq!(names.veth(MAX_NODES - 1), "iwv400000-ff-f9");
        assert_eq!(names.veth(MAX_NODES - 1).len(), 15);
        assert!(names.bridge().len() <= 15);
        for name in [names.bridge(), names.veth(3), names.netns(3)] {
            assert_eq!(owner_pid(&name), Some(0x40_0000), "{name}");
        }
        for other in [
            "iwb",
            "iwb12",
            "iwb12-3-4",
            "iwv12-3",
            "iwnxyz-1-2",
            "iwb1-0",
            "eth0",
            "iwlan0",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn rates_give_a_burst_of_ten_milliseconds_and_at_least_64_kib() {
        assert_eq!(Rate::kbit(800).bytes_per_sec(), 100_000);
        assert_eq!(Rate::kbit(800).burst_bytes(), 64 * 1024);
        assert_eq!(Rate::mbit(200).burst_bytes(), 250_000);
        assert_eq!(Rate::gbit(1).burst_bytes(), 1_250_000);
    }

    /// Kernel objects that exist now.
    fn existing_objects() -> (String, String) {
        let netns = ip("netns list").unwrap_or_default();
        let links = ip("-o link show").unwrap_or_default();
        (netns, links)
    }

    fn exists(name: &str) -> bool {
        let (netns, links) = existing_objects();
        netns
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
            || links.lines().any(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|n| n.trim().split('@').next() == Some(name))
            })
    }

    #[test]
    fn dropping_a_lab_removes_everything_it_created() {
        let Some(mut lab) = Lab::new("dropping_a_lab_removes_everything_it_created", 2) else {
            return;
        };
        lab.start(0, &["--no-mdns"]);
        let objects = lab.kernel_objects();
        for name in &objects {
            assert!(exists(name), "{name} should exist while the lab does");
        }
        let node_pid = lab.nodes[0].child.as_ref().expect("node 0 runs").id();
        drop(lab);
        for name in &objects {
            assert!(!exists(name), "{name} is left behind");
        }
        assert!(!is_alive(node_pid), "node 0 (pid {node_pid}) still runs");
    }

    #[test]
    fn a_paused_node_is_stopped_until_resumed_and_a_dropped_lab_reaps_it_paused() {
        let Some(mut lab) = Lab::new(
            "a_paused_node_is_stopped_until_resumed_and_a_dropped_lab_reaps_it_paused",
            1,
        ) else {
            return;
        };
        lab.start(0, &["--no-mdns"]);
        let pid = lab.nodes[0].child.as_ref().expect("node 0 runs").id();
        let state = || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read its stat");
            let (_, rest) = stat.rsplit_once(')').expect("a stat line");
            rest.trim_start().chars().next().expect("a state")
        };
        lab.pause(0);
        assert_eq!(state(), 'T', "a paused node is stopped");
        assert!(lab.is_running(0), "a paused node has not exited");
        lab.resume(0);
        assert_ne!(state(), 'T', "a resumed node runs");
        assert_eq!(
            lab.status(0)["peer_id"],
            lab.peer_id(0),
            "a resumed node answers"
        );
        lab.pause(0);
        drop(lab);
        assert!(
            !is_alive(pid),
            "the paused node 0 (pid {pid}) was not killed and reaped"
        );
    }

    #[test]
    fn stopped_node_restarts_with_its_identity() {
        let Some(mut lab) = Lab::new("stopped_node_restarts_with_its_identity", 1) else {
            return;
        };
        lab.start(0, &["--no-mdns"]);
        let id = lab.peer_id(0).to_owned();
        assert!(lab.stop(0).success(), "SIGTERM is a clean exit");
        assert_eq!(lab.try_status(0), None, "a stopped node answers no status");
        lab.restart(0);
        assert_eq!(lab.peer_id(0), id);
        assert_eq!(lab.status(0)["peer_id"], id);
        assert!(lab.is_running(0));
        assert!(!lab.kill(0).success());
        assert!(!lab.is_running(0));
    }

    /// Deletes the named objects when dropped, for objects a test makes by hand.
    struct Objects(Vec<String>);

    impl Drop for Objects {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = ip(&format!("link del {name}"));
                let _ = ip(&format!("netns del {name}"));
            }
        }
    }

    use crate::util::KillOnDrop;

    #[test]
    fn new_lab_sweeps_leftovers_of_dead_runs_only() {
        if unsafe { libc::geteuid() } != 0 || find_on_path("ip").is_none() {
            // Lab::new prints the skip line (or panics under CI).
            assert!(Lab::new("new_lab_sweeps_leftovers_of_dead_runs_only", 1).is_none());
            return;
        }
        // A pid that was just alive and is now dead; and one that lives during the test.
        let mut gone = Command::new("true").spawn().expect("spawn true");
        let dead_pid = gone.id();
        gone.wait().expect("wait for true");
        let live = KillOnDrop(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep"),
        );
        let live_pid = live.0.id();
        let dead = Names {
            pid: dead_pid,
            lab: 0xfe,
        };
        let alive = Names {
            pid: live_pid,
            lab: 0xfe,
        };
        let _cleanup = Objects(vec![
            dead.veth(0),
            dead.netns(0),
            dead.bridge(),
            alive.bridge(),
        ]);
        if ip(&format!("netns add {}", dead.netns(0))).is_err() {
            assert!(Lab::new("new_lab_sweeps_leftovers_of_dead_runs_only", 1).is_none());
            return;
        }
        ip_or_panic(&format!("link add {} type bridge", dead.bridge()));
        ip_or_panic(&format!(
            "link add {} type veth peer name {NODE_IF} netns {}",
            dead.veth(0),
            dead.netns(0)
        ));
        ip_or_panic(&format!("link add {} type bridge", alive.bridge()));

        let lab = Lab::new("new_lab_sweeps_leftovers_of_dead_runs_only", 1);
        assert!(lab.is_some(), "root with namespaces can build a lab");
        for name in [dead.veth(0), dead.netns(0), dead.bridge()] {
            assert!(
                !exists(&name),
                "the leftover {name} of dead pid {dead_pid} is still there"
            );
        }
        assert!(
            exists(&alive.bridge()),
            "the sweep removed {} of a live process",
            alive.bridge()
        );
    }
}
