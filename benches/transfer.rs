//! Transfer benchmark on loopback: prints a table; results go to docs/benchmarks.md.
//!
//! `cargo bench --bench transfer` (release build). Every row is measured in the same run as its
//! baselines, because this machine is noisy:
//!
//! - `raw TCP`: one TCP connection between two threads pumping `SIZE` bytes.
//! - `libp2p stream`: two processes (this binary re-executed as a pump), TCP + Noise + Yamux
//!   configured as iwant configures them, one stream pumping `SIZE` bytes: the ceiling for one
//!   connection.
//! - `iwant get` (P1): two `iwant node` processes on 127.0.0.1, mDNS off; the seeder shares one
//!   file of `SIZE` bytes; the time is the downloader's own (`elapsed_ms`: from the download's
//!   start to a verified file in place, piece-list fetch and final re-hash included).
//! - `iwant get dir` (P9): the same with a directory of `FILES` files of 10 KB.
//!
//! Environment: `IWANT_BENCH_MIB` (default 1024), `IWANT_BENCH_FILES` (default 10000),
//! `IWANT_BENCH_RUNS` (default 3; the table shows the median and the best).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};

const PUMP: StreamProtocol = StreamProtocol::new("/bench/pump/1");
const BLOCK: usize = 256 * 1024;

fn main() {
    if let Ok(size) = std::env::var("IWANT_BENCH_PUMP_SERVER") {
        pump_server(size.parse().expect("size"));
        return;
    }
    let mib: u64 = env("IWANT_BENCH_MIB", 1024);
    let files: usize = env("IWANT_BENCH_FILES", 10_000);
    let runs: usize = env("IWANT_BENCH_RUNS", 3);
    let size = mib * 1024 * 1024;
    let scratch = tempfile::Builder::new()
        .prefix("iwant-bench-transfer-")
        .tempdir()
        .expect("scratch dir");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_iwant"));

    println!(
        "machine: {} cores; {mib} MiB file; {files} files of 10 KB; {runs} runs",
        cores()
    );
    let mut rows: Vec<(String, Vec<f64>, &str)> = Vec::new();

    // `IWANT_BENCH_ONLY=p9`: only the small-files row (quicker when working on it).
    let only_dir = std::env::var("IWANT_BENCH_ONLY").is_ok_and(|v| v == "p9");
    let (mut tcp, mut p2p, mut iwant) = (Vec::new(), Vec::new(), Vec::new());
    let nodes = Nodes::start(&bin, scratch.path());
    if !only_dir {
        tcp = (0..runs).map(|_| raw_tcp(size)).collect();
        rows.push(("raw TCP".into(), tcp.clone(), "MB/s"));
        p2p = (0..runs).map(|_| libp2p_pump(size)).collect();
        rows.push(("libp2p stream (2 processes)".into(), p2p.clone(), "MB/s"));
        let file = nodes.seed.share.join("big.bin");
        write_random(&file, size);
        sync_disks();
        let id = b3(&file);
        nodes.wait_shared(&id);
        for _ in 0..runs {
            let ms = nodes.get(&id);
            iwant.push(size as f64 / 1e6 / (ms / 1000.0));
        }
        rows.push(("iwant get, one seeder (P1)".into(), iwant.clone(), "MB/s"));
    }

    let dir = nodes.seed.share.join("small");
    std::fs::create_dir_all(&dir).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..files {
        let mut data = vec![0u8; 10_000];
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(dir.join(format!("f{i:05}.bin")), &data).unwrap();
    }
    // The seeder's files are not freshly written in real life: flush them before timing.
    sync_disks();
    let dir_id = nodes.wait_dir("small", files);
    let (mut small, mut local) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        local.push(write_small_files(&scratch.path().join("baseline"), files));
        small.push(nodes.get(&dir_id) / 1000.0);
    }
    rows.push((
        format!("baseline: write {files} × 10 KB files here"),
        local.clone(),
        "s",
    ));
    rows.push((
        format!("iwant get, {files} × 10 KB (P9)"),
        small.clone(),
        "s",
    ));
    drop(nodes);

    println!();
    println!("| what | runs | median | best | unit |");
    println!("|---|---|---|---|---|");
    for (what, values, unit) in &rows {
        let best = if *unit == "s" {
            values.iter().cloned().fold(f64::MAX, f64::min)
        } else {
            values.iter().cloned().fold(0.0, f64::max)
        };
        println!(
            "| {what} | {} | {:.2} | {:.2} | {unit} |",
            values.len(),
            median(values),
            best
        );
    }
    println!();
    if !only_dir {
        println!(
            "P1 ratio iwant / libp2p stream (medians): {:.2} (goal ≥ 0.9); iwant / raw TCP: {:.2}",
            median(&iwant) / median(&p2p),
            median(&iwant) / median(&tcp)
        );
    }
    println!(
        "P9: {:.2} s median (goal ≤ 5 s); writing the same files locally took {:.2} s (median)",
        median(&small),
        median(&local)
    );
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}

fn raw_tcp(size: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let block = vec![7u8; BLOCK];
        let mut left = size;
        while left > 0 {
            let n = left.min(BLOCK as u64) as usize;
            s.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    });
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    let mut buf = vec![0u8; BLOCK];
    let mut got = 0u64;
    while got < size {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "raw TCP ended early");
        got += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    server.join().unwrap();
    size as f64 / 1e6 / secs
}

fn swarm() -> libp2p::Swarm<iwant_behaviours::libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| iwant_behaviours::libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// The pump's server process: listens, prints `<peer id> <addr>`, writes `size` bytes to the
/// first stream, then exits.
fn pump_server(size: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut swarm = swarm();
        let mut incoming = swarm.behaviour().new_control().accept(PUMP).unwrap();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                break address;
            }
        };
        println!("{} {addr}", swarm.local_peer_id());
        let pump = async move {
            let (_, mut stream) = incoming.next().await.unwrap();
            let block = vec![7u8; BLOCK];
            let mut left = size;
            while left > 0 {
                let n = left.min(BLOCK as u64) as usize;
                stream.write_all(&block[..n]).await.unwrap();
                left -= n as u64;
            }
            stream.close().await.unwrap();
            // Wait for the reader's close.
            let mut b = [0u8; 1];
            let _ = stream.read(&mut b).await;
        };
        tokio::select! {
            _ = pump => {}
            _ = async { loop { swarm.select_next_some().await; } } => {}
        }
    });
}

fn libp2p_pump(size: u64) -> f64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("IWANT_BENCH_PUMP_SERVER", size.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        let out = child.stdout.as_mut().unwrap();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0] as char);
        }
    }
    let mut parts = line.split_whitespace();
    let peer: PeerId = parts.next().unwrap().parse().unwrap();
    let addr: Multiaddr = parts.next().unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secs = rt.block_on(async move {
        let mut swarm = swarm();
        let mut control = swarm.behaviour().new_control();
        swarm.dial(addr).unwrap();
        let read = async move {
            let mut stream = loop {
                match control.open_stream(peer, PUMP).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            };
            let start = Instant::now();
            let mut buf = vec![0u8; BLOCK];
            let mut got = 0u64;
            while got < size {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the pump ended early");
                got += n as u64;
            }
            let secs = start.elapsed().as_secs_f64();
            let _ = stream.close().await;
            secs
        };
        tokio::select! {
            secs = read => secs,
            _ = async { loop { swarm.select_next_some().await; } } => unreachable!(),
        }
    });
    let _ = child.wait();
    size as f64 / 1e6 / secs
}

fn write_random(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// The same-run baseline for P9: creating `files` files of 10 KB in a fresh `dir` (then removed),
/// since file creation on this machine's disk varies several-fold from run to run.
fn write_small_files(dir: &Path, files: usize) -> f64 {
    let data = vec![7u8; 10_000];
    let start = Instant::now();
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i:05}.bin")), &data).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dir).unwrap();
    sync_disks();
    secs
}

fn sync_disks() {
    let _ = Command::new("sync").status();
}

fn b3(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize().to_hex().to_string()
}

struct NodeProc {
    home: PathBuf,
    share: PathBuf,
    downloads: PathBuf,
    child: Child,
}

struct Nodes {
    bin: PathBuf,
    seed: NodeProc,
    leech: NodeProc,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in [&mut self.seed.child, &mut self.leech.child] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nodes {
    fn start(bin: &Path, dir: &Path) -> Nodes {
        let start = |name: &str, port: u16, peer: Option<u16>| -> NodeProc {
            let home = dir.join(name);
            let share = dir.join(format!("{name}-share"));
            let downloads = dir.join(format!("{name}-downloads"));
            std::fs::create_dir_all(&share).unwrap();
            std::fs::create_dir_all(&downloads).unwrap();
            let run = |args: &[&str]| {
                let ok = Command::new(bin)
                    .arg("--home")
                    .arg(&home)
                    .args(args)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "iwant {args:?}");
            };
            run(&["share", share.to_str().unwrap()]);
            run(&["download-to", downloads.to_str().unwrap()]);
            let mut cmd = Command::new(bin);
            cmd.arg("--home")
                .arg(&home)
                .args(["node", "--no-mdns", "--listen"])
                .arg(format!("/ip4/127.0.0.1/tcp/{port}"));
            if let Some(p) = peer {
                cmd.arg("--peer").arg(format!("/ip4/127.0.0.1/tcp/{p}"));
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
                .spawn()
                .unwrap();
            NodeProc {
                home,
                share,
                downloads,
                child,
            }
        };
        let (p1, p2) = (free_port(), free_port());
        let seed = start("seed", p1, None);
        let leech = start("leech", p2, Some(p1));
        Nodes {
            bin: bin.to_path_buf(),
            seed,
            leech,
        }
    }

    fn cli(&self, node: &NodeProc, args: &[&str]) -> Option<serde_json::Value> {
        let out = Command::new(&self.bin)
            .arg("--home")
            .arg(&node.home)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until the leecher can see the seeder's `id` through the leader.
    fn wait_shared(&self, id: &str) {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            let found = self
                .cli(&self.leech, &["search", "big", "--json"])
                .is_some_and(|v| v.to_string().contains(id));
            if found {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the leecher never saw {id}");
    }

    /// Waits until the seeder has indexed `files` files under `dir`; returns the dir's id once
    /// the leecher sees it.
    fn wait_dir(&self, dir: &str, files: usize) -> String {
        let until = Instant::now() + Duration::from_secs(300);
        while Instant::now() < until {
            if let Some(v) = self.cli(&self.seed, &["ls", "--json"]) {
                let entries = v.as_array().cloned().unwrap_or_default();
                let n = entries
                    .iter()
                    .filter(|e| {
                        e["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(&format!("{dir}/")))
                    })
                    .count();
                if n == files {
                    let id = entries
                        .iter()
                        .find(|e| e["path"] == dir)
                        .and_then(|e| e["id"].as_str())
                        .unwrap()
                        .to_string();
                    let seen = self
                        .cli(&self.leech, &["search", dir, "--json"])
                        .is_some_and(|v| v.to_string().contains(&id));
                    if seen {
                        return id;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the directory was never indexed and seen");
    }

    /// Downloads `id` on the leecher; returns the download's own elapsed milliseconds. The
    /// result is removed afterwards.
    fn get(&self, id: &str) -> f64 {
        let out = Command::new(&self.bin)
            .arg("--home")
            .arg(&self.leech.home)
            .args(["get", id, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iwant get failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert_eq!(v["event"], "done", "{v}");
        let path = PathBuf::from(v["path"].as_str().unwrap());
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        assert!(path.starts_with(&self.leech.downloads));
        // Let the removal settle so that it does not slow the next run's file creation.
        sync_disks();
        let ms = v["elapsed_ms"].as_f64().unwrap();
        eprintln!("  {id:.12}: {ms} ms");
        ms
    }
}
