//! Indexing benchmarks: prints a table; results go to docs/benchmarks.md.
//!
//! `cargo bench --bench index` (release build). Needs `b3sum` on PATH for the baselines
//! (`apt-get install b3sum`). `IWANT_BENCH_DIR` chooses where the data is written (default: the
//! system temp dir); about 1.5 GiB is needed. Each row is measured in this run, against its
//! baseline measured in the same run, with a warm page cache for both.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use iwant::share::{self, IndexDelta, IndexHandle};

struct Row {
    what: String,
    iwant: String,
    baseline: String,
    note: String,
}

fn main() {
    let base = std::env::var_os("IWANT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let has_b3sum = Command::new("b3sum").arg("--version").output().is_ok();
    if !has_b3sum {
        eprintln!("note: b3sum not found (apt-get install b3sum); baselines are skipped");
    }
    let mut rows = Vec::new();

    // 1. One 1 GiB file.
    let big = dir.path().join("big");
    fs::create_dir_all(&big).unwrap();
    write_pseudo_random(&big.join("one.bin"), 1 << 30);
    settle_disk();
    let (t, _) = cold_index(&dir.path().join("db-big"), &big);
    let b = has_b3sum.then(|| time(|| b3sum(&[big.join("one.bin")])));
    rows.push(throughput_row("cold index, one 1 GiB file", 1 << 30, t, b));

    // 2. 10,000 files of 10 KB.
    let small = dir.path().join("small");
    let mut paths = Vec::new();
    for i in 0..10_000 {
        let p = small
            .join(format!("d{}", i / 100))
            .join(format!("f{i}.bin"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pseudo_random(10_000, i as u64)).unwrap();
        paths.push(p);
    }
    settle_disk();
    let (t, _) = cold_index(&dir.path().join("db-small"), &small);
    let b = has_b3sum.then(|| time(|| b3sum(&paths)));
    rows.push(throughput_row(
        "cold index, 10,000 files of 10 KB",
        10_000 * 10_000,
        t,
        b,
    ));

    // 3. Restart with 100,000 unchanged small files.
    let many = dir.path().join("many");
    for i in 0..100_000 {
        let p = many
            .join(format!("d{}", i / 1000))
            .join(format!("f{i}.txt"));
        if i % 1000 == 0 {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        fs::write(&p, format!("file number {i}\n")).unwrap();
    }
    let db = dir.path().join("db-many");
    let (t_cold, _) = cold_index(&db, &many);
    rows.push(Row {
        what: "cold index, 100,000 files of ~20 B".into(),
        iwant: secs(t_cold),
        baseline: String::new(),
        note: String::new(),
    });
    let rchar = proc_io("rchar");
    let started = Instant::now();
    let (handle, thread) = share::spawn(
        iwant::store::Db::open(&db).unwrap(),
        many.canonicalize().unwrap(),
        Default::default(),
    )
    .unwrap();
    wait_ready(&handle);
    let t_restart = started.elapsed();
    let read = proc_io("rchar") - rchar;
    let status = handle.status();
    rows.push(Row {
        what: "restart, 100,000 unchanged files".into(),
        iwant: secs(t_restart),
        baseline: "goal ≤ 2 s".into(),
        note: format!(
            "{} files hashed, {} B of content read; {} MiB read in all (SQLite included)",
            status.hashed_files,
            status.hashed_bytes,
            read / (1 << 20)
        ),
    });

    // 4. Change latency: write a file, time until the delta naming it arrives.
    let mut deltas = handle.subscribe();
    let latency_many = change_latency(&many, &mut deltas, 20);
    handle.stop();
    thread.join().unwrap();
    let few = dir.path().join("few");
    fs::create_dir_all(&few).unwrap();
    fs::write(few.join("seed.txt"), b"seed").unwrap();
    let (handle, thread) = share::spawn(
        iwant::store::Db::open(&dir.path().join("db-few")).unwrap(),
        few.canonicalize().unwrap(),
        Default::default(),
    )
    .unwrap();
    wait_ready(&handle);
    let mut deltas = handle.subscribe();
    let latency_few = change_latency(&few, &mut deltas, 20);
    handle.stop();
    thread.join().unwrap();
    for (what, l) in [
        ("change latency, small share", latency_few),
        ("change latency, 100,000-file share", latency_many),
    ] {
        rows.push(Row {
            what: what.into(),
            iwant: format!("p50 {} ms", l.0.as_millis()),
            baseline: "goal ≤ 1 s p50".into(),
            note: format!(
                "p90 {} ms, max {} ms, 20 writes",
                l.1.as_millis(),
                l.2.as_millis()
            ),
        });
    }

    // 5. Daemon RSS with 100,000 shared files (the real binary, fresh home).
    let (rss, t) = daemon_rss(dir.path(), &many);
    rows.push(Row {
        what: "daemon RSS, 100,000 shared files".into(),
        iwant: format!("{} MB", rss / 1_000_000),
        baseline: "goal ≤ 60 MB".into(),
        note: format!("after its first scan ({})", secs(t)),
    });

    print_table(&rows);
}

/// Flushes freshly written data, so writeback does not run beside the measurement.
fn settle_disk() {
    let _ = Command::new("sync").status();
}

fn cold_index(db: &Path, root: &Path) -> (Duration, share::IndexStatus) {
    let started = Instant::now();
    let (handle, thread) = share::spawn(
        iwant::store::Db::open(db).unwrap(),
        root.canonicalize().unwrap(),
        Default::default(),
    )
    .unwrap();
    wait_ready(&handle);
    let elapsed = started.elapsed();
    let status = handle.status();
    handle.stop();
    thread.join().unwrap();
    (elapsed, status)
}

fn wait_ready(handle: &IndexHandle) {
    while !handle.status().ready {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// (p50, p90, max) of the time from writing a new file to the delta that names it.
fn change_latency(
    root: &Path,
    deltas: &mut tokio::sync::broadcast::Receiver<Arc<IndexDelta>>,
    samples: usize,
) -> (Duration, Duration, Duration) {
    let mut times = Vec::new();
    for i in 0..samples {
        let name = format!("latency-{i}.txt");
        let started = Instant::now();
        let mut f = fs::File::create(root.join(&name)).unwrap();
        f.write_all(format!("sample {i}").as_bytes()).unwrap();
        drop(f);
        loop {
            let delta = deltas.blocking_recv().expect("deltas");
            if delta.upserted.iter().any(|e| e.path == name) {
                break;
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    (
        times[samples / 2],
        times[samples * 9 / 10],
        times[samples - 1],
    )
}

fn daemon_rss(scratch: &Path, share_dir: &Path) -> (u64, Duration) {
    let bin = env!("CARGO_BIN_EXE_iwant");
    let home = scratch.join("rss-home");
    let h = iwant::config::Home::resolve(Some(home.clone())).unwrap();
    let (mut config, _) = h.load_or_create_config().unwrap();
    config.shared_dir = share_dir.canonicalize().unwrap();
    h.save_config(&config).unwrap();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("--home")
        .arg(&home)
        .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let out = Command::new(bin)
            .arg("--home")
            .arg(&home)
            .args(["status", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["index"]["ready"] == true {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = started.elapsed();
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    (rss_kb * 1000, t)
}

fn b3sum(paths: &[PathBuf]) {
    for chunk in paths.chunks(2000) {
        let out = Command::new("b3sum")
            .args(chunk)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(out.success());
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn throughput_row(what: &str, bytes: u64, iwant: Duration, b3sum: Option<Duration>) -> Row {
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    Row {
        what: what.into(),
        iwant: format!("{} ({:.0} MB/s)", secs(iwant), mbps(iwant)),
        baseline: b3sum
            .map(|b| format!("b3sum {} ({:.0} MB/s)", secs(b), mbps(b)))
            .unwrap_or_else(|| "b3sum missing".into()),
        note: b3sum
            .map(|b| {
                format!(
                    "ratio {:.2} (goal ≥ 0.8)",
                    b.as_secs_f64() / iwant.as_secs_f64()
                )
            })
            .unwrap_or_default(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn proc_io(key: &str) -> u64 {
    fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(&format!("{key}: "))
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0)
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_pseudo_random(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let block = pseudo_random(1 << 20, 7);
    let mut written = 0;
    let mut i = 0u8;
    while written < len {
        // Vary each MiB so no two pieces are equal.
        let mut b = block.clone();
        b[0] = i;
        i = i.wrapping_add(1);
        f.write_all(&b).unwrap();
        written += b.len() as u64;
    }
    f.flush().unwrap();
}

fn print_table(rows: &[Row]) {
    println!("| what | iwant | baseline (same run) | note |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} |", r.what, r.iwant, r.baseline, r.note);
    }
}
