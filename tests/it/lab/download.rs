//! Downloads between real nodes on a real (virtual) LAN: `iwant get <id>` finds the holders
//! through the leader, pulls pieces from all of them at once, verifies every piece, and puts
//! the result in the download folder under its shared name.
//!
//! What is proved here, end to end through the CLI and checked with the real `b3sum` and
//! `diff -r`: a 256 MiB file arrives intact from one seeder; three equally fast seeders all
//! serve a share; a seeder killed mid-transfer is replaced by the others; a download with no
//! holder left waits and finishes when one returns; a downloader killed mid-transfer resumes
//! after its restart without fetching its verified pieces again; a seeder whose file changed
//! under its index is dropped and an honest one finishes; a directory tree (unicode, spaces,
//! empty directories, duplicates, 2,000 small files) arrives intact; names are never
//! overwritten and unknown ids fail clearly; a cancel removes the partial data.
//!
//! Limits are generous (a loaded 2-core machine runs debug binaries here) and never assert
//! speed: throughput belongs in the benchmarks. The tests print `<metric>=<n>` lines for them
//! and for post-mortems.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Lab, Rate};
use crate::util::run;

const MIB: u64 = 1 << 20;

/// How long cold-started nodes may take to elect a leader, hash a new file, push their indexes
/// and have the leader name every holder in a search from the downloader.
const LOCATE_LIMIT: Duration = Duration::from_secs(40);

/// The slowest an unshaped transfer is assumed to move data: a debug build does ~110 MB/s
/// between namespaces, a loaded machine much less.
const UNSHAPED_FLOOR: u64 = 8_000_000;

/// Shaped links are assumed to deliver at least this share of their rate.
const SHAPED_SHARE: f64 = 0.5;

/// What every transfer may take on top of moving its bytes: holder lookups (the leader's ask
/// deadline is 8 s), dials, the final verification, placing the result.
const TRANSFER_SLACK: Duration = Duration::from_secs(40);

/// How long a download may take to notice that every holder is gone: the fetchers' streams
/// fail, then a holder lookup (up to the 8 s ask deadline while no leader is elected).
const WAITING_LIMIT: Duration = Duration::from_secs(30);

/// How long a restarted node may take to answer with its resumed download in `status`.
const RESUME_LIMIT: Duration = Duration::from_secs(20);

/// How long a cancelled download may take to remove its partial data (the daemon itself
/// waits up to 10 s for the task).
const CANCEL_LIMIT: Duration = Duration::from_secs(15);

/// How long a CLI command that only asks its node something may take.
const CLI_LIMIT: Duration = Duration::from_secs(30);

/// Share of the file every one of three equally shaped seeders must have served.
const FAIR_SHARE: f64 = 0.15;

/// How long `limit` allows for `bytes` at `bytes_per_sec` (an expected rate), with slack.
fn transfer_limit(bytes: u64, bytes_per_sec: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / bytes_per_sec as f64) + TRANSFER_SLACK
}

/// [`transfer_limit`] for seeders whose links are shaped to `rate` each.
fn shaped_limit(bytes: u64, rate: Rate, seeders: u64) -> Duration {
    let rate = (rate.bytes_per_sec() as f64 * SHAPED_SHARE) as u64 * seeders;
    transfer_limit(bytes, rate.max(1))
}

/// The piece size of a file of `len` bytes: max(256 KiB, next_pow2(ceil(len / 2048))).
fn piece_size(len: u64) -> u64 {
    len.div_ceil(2048).next_power_of_two().max(256 * 1024)
}

/// Node `i`'s shared folder.
fn shared(lab: &Lab, i: usize) -> PathBuf {
    lab.home(i).join("shared")
}

/// Node `i`'s download folder, as its `status` says.
fn download_dir(lab: &Lab, i: usize) -> PathBuf {
    let status = lab.status(i);
    let dir = status["download_dir"]
        .as_str()
        .unwrap_or_else(|| panic!("node {i}: `status --json` has no download_dir: {status}"));
    PathBuf::from(dir)
}

/// Where node `i`'s test data is prepared before it is moved into the shared folder in one
/// rename (same file system, outside the shared and download folders).
fn staging(lab: &Lab, i: usize) -> PathBuf {
    let dir = lab.home(i).join("staging");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Writes `len` bytes from /dev/urandom to `path`.
fn write_urandom(path: &Path, len: u64) {
    let out = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let (code, _, err) = run(Command::new("head")
        .args(["-c", &len.to_string(), "/dev/urandom"])
        .stdout(out));
    assert_eq!(code, 0, "head -c {len} /dev/urandom failed: {err}");
    let written = fs::metadata(path).expect("the random file exists").len();
    assert_eq!(written, len, "{} has {written} bytes", path.display());
}

/// A fresh random file of `len` bytes in node 0's staging folder.
fn random_source(lab: &Lab, name: &str, len: u64) -> PathBuf {
    let path = staging(lab, 0).join(format!("{name}.source"));
    write_urandom(&path, len);
    path
}

/// Copies `source` into each of `nodes`' shared folders as `rel` (copy to staging, then one
/// rename, so no indexer sees a half-written file).
fn share_copies(lab: &Lab, nodes: &[usize], rel: &str, source: &Path) {
    for &i in nodes {
        let tmp = staging(lab, i).join("incoming");
        fs::copy(source, &tmp).unwrap_or_else(|e| panic!("copy to {}: {e}", tmp.display()));
        let target = shared(lab, i).join(rel);
        fs::create_dir_all(target.parent().expect("a path in the shared folder"))
            .unwrap_or_else(|e| panic!("create the folder of {}: {e}", target.display()));
        fs::rename(&tmp, &target)
            .unwrap_or_else(|e| panic!("rename into {}: {e}", target.display()));
    }
}

/// The BLAKE3 hash of a file, by the real `b3sum`.
fn b3sum(path: &Path) -> String {
    let (code, out, err) = run(Command::new("b3sum").arg("--no-names").arg(path));
    assert_eq!(code, 0, "b3sum {} failed: {err}", path.display());
    let hash = out.trim().to_owned();
    assert_eq!(hash.len(), 64, "b3sum printed {out:?}");
    hash
}

/// The entries of `iwant ls --json` on node `i`.
fn ls(lab: &Lab, i: usize) -> Vec<Value> {
    let (code, out, err) = run(lab.cli(i).args(["ls", "--json"]));
    assert_eq!(code, 0, "`ls --json` on node {i} failed: {err}");
    let entries: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`ls --json` on node {i} printed no JSON ({e}): {out}"));
    entries
        .as_array()
        .unwrap_or_else(|| panic!("`ls --json` on node {i} is not an array: {out}"))
        .clone()
}

/// The id node `i`'s index gives the shared entry `rel`, if it has indexed it.
fn shared_id(lab: &Lab, i: usize, rel: &str) -> Option<String> {
    ls(lab, i)
        .into_iter()
        .find(|e| e["path"] == rel)
        .and_then(|e| e["id"].as_str().map(str::to_owned))
}

/// Waits until node `i` has indexed `rel` under `id`.
fn wait_indexed(lab: &Lab, i: usize, rel: &str, id: &str) {
    lab.wait_until(
        LOCATE_LIMIT,
        &format!("node {i} indexes {rel} as {id}"),
        || (shared_id(lab, i, rel).as_deref() == Some(id)).then_some(()),
    );
}

/// Waits until a search for `words` from node `at` names exactly `holders` for `id`.
fn wait_holders(lab: &Lab, at: usize, words: &str, id: &str, holders: &[usize]) {
    let want: BTreeSet<String> = holders.iter().map(|&i| lab.peer_id(i).to_owned()).collect();
    lab.wait_until(
        LOCATE_LIMIT,
        &format!("node {at} finds {id} ({words}) held by nodes {holders:?}"),
        || {
            let (code, out, _) = run(lab
                .cli(at)
                .arg("search")
                .args(words.split_whitespace())
                .arg("--json"));
            // No leader yet (or an election): ask again.
            let reply: Value = (code == 0).then(|| serde_json::from_str(&out).ok())??;
            let hit = reply["results"]
                .as_array()?
                .iter()
                .find(|r| r["id"] == id)?;
            let got: BTreeSet<String> = hit["holders"]
                .as_array()?
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            (got == want).then_some(())
        },
    );
}

/// A child process killed when dropped (a test that gives up on it leaves nothing behind).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `iwant --home <home i> <args>` for at most `limit` and returns (exit code, stdout,
/// stderr); panics (and kills it) when it takes longer.
fn run_for(lab: &Lab, i: usize, args: &[&str], limit: Duration) -> (i32, String, String) {
    let capture = || tempfile::tempfile().expect("create a capture file");
    let (mut out, mut err) = (capture(), capture());
    let child = lab
        .cli(i)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone a capture file"))
        .stderr(err.try_clone().expect("clone a capture file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `iwant {}`: {e}", args.join(" ")));
    let mut child = KillOnDrop(child);
    let what = format!("`iwant {}` on node {i} exits", args.join(" "));
    let exit = lab.wait_until(limit, &what, || {
        child.0.try_wait().expect("wait for the CLI")
    });
    let read = |f: &mut File| {
        let mut text = String::new();
        f.seek(SeekFrom::Start(0)).expect("rewind a capture file");
        f.read_to_string(&mut text).expect("read a capture file");
        text
    };
    (exit.code().unwrap_or(-1), read(&mut out), read(&mut err))
}

/// Runs `iwant get <prefix> --json` on node `i` to its end (at most `limit`); panics unless it
/// exits 0 with a last line `done`. Returns that line.
fn get_to_the_end(lab: &Lab, i: usize, prefix: &str, limit: Duration) -> Value {
    let started = Instant::now();
    let (code, out, err) = run_for(lab, i, &["get", prefix, "--json"], limit);
    assert_eq!(
        code, 0,
        "`get {prefix} --json` on node {i} failed: {err}\n{out}"
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("`get --json` printed a line that is no JSON ({e}): {l}")
            })
        })
        .collect();
    let last = lines
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("`get --json` printed nothing"));
    assert_eq!(last["event"], "done", "the last line: {last}");
    for line in &lines[..lines.len() - 1] {
        assert_eq!(line["event"], "progress", "a line before the end: {line}");
    }
    println!(
        "get_ms={} lines={} bytes={}",
        started.elapsed().as_millis(),
        lines.len(),
        last["bytes_total"]
    );
    last
}

/// Starts `iwant get <prefix> --detach --json` on node `i`; returns the progress it prints.
fn get_detached(lab: &Lab, i: usize, prefix: &str) -> Value {
    let (code, out, err) = run_for(lab, i, &["get", prefix, "--detach", "--json"], CLI_LIMIT);
    assert_eq!(code, 0, "`get {prefix} --detach` on node {i} failed: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`get --detach --json` printed no JSON ({e}): {out}"))
}

/// The download of `id` in node `i`'s `status --json`, or `None` when node `i` is not running
/// or lists no such download.
fn progress(lab: &Lab, i: usize, id: &str) -> Option<Value> {
    let status = lab.try_status(i)?;
    status["downloads"]
        .as_array()?
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
}

fn state(p: &Value) -> &str {
    p["state"].as_str().unwrap_or("(no state)")
}

fn bytes(p: &Value, field: &str) -> u64 {
    p[field]
        .as_u64()
        .unwrap_or_else(|| panic!("a progress without numeric `{field}`: {p}"))
}

/// Waits until the download of `id` on node `i` satisfies `ready`; panics at once if it
/// fails or is cancelled first.
fn wait_progress(
    lab: &Lab,
    i: usize,
    id: &str,
    limit: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    lab.wait_until(limit, what, || {
        let p = progress(lab, i, id)?;
        if ready(&p) {
            return Some(p);
        }
        assert!(
            !matches!(state(&p), "failed" | "cancelled"),
            "while waiting until {what}, the download ended: {p}"
        );
        None
    })
}

/// Waits until node `i` has `fraction` of the download `id` verified (and not all of it).
fn wait_fraction(lab: &Lab, i: usize, id: &str, fraction: f64, limit: Duration) -> Value {
    let p = wait_progress(
        lab,
        i,
        id,
        limit,
        &format!("node {i} has {:.0}% of {id}", fraction * 100.0),
        |p| {
            let total = bytes(p, "bytes_total");
            total > 0 && bytes(p, "bytes_done") as f64 >= total as f64 * fraction
        },
    );
    assert_ne!(
        state(&p),
        "done",
        "the download finished before the test could act at {:.0}%; the links are not shaped \
         slowly enough: {p}",
        fraction * 100.0
    );
    p
}

/// Waits until the download `id` on node `i` is done; returns its last progress.
fn wait_done(lab: &Lab, i: usize, id: &str, limit: Duration) -> Value {
    wait_progress(
        lab,
        i,
        id,
        limit,
        &format!("node {i} completes {id}"),
        |p| state(p) == "done",
    )
}

/// The bytes node `i` has served to its peers since it started.
fn served(lab: &Lab, i: usize) -> u64 {
    let status = lab.status(i);
    status["served"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("node {i}: `status --json` has no served.bytes: {status}"))
}

/// The `.iwant-part` entries in `dir`.
fn part_entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".iwant-part"))
        .collect()
}

/// Checks a finished download: where the progress says it is, `name` in `dir`, hashing to
/// `id`, with `len` bytes, and no partial data left.
fn assert_arrived(p: &Value, dir: &Path, name: &str, id: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    assert_eq!(
        p["path"].as_str().map(PathBuf::from),
        Some(path.clone()),
        "{p}"
    );
    assert_eq!(bytes(p, "bytes_total"), len, "{p}");
    assert_eq!(bytes(p, "bytes_done"), len, "{p}");
    let size = fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()))
        .len();
    assert_eq!(size, len, "{} has the wrong size", path.display());
    assert_eq!(
        b3sum(&path),
        id,
        "{} does not hash to its id",
        path.display()
    );
    assert_eq!(
        part_entries(dir),
        Vec::<String>::new(),
        "partial data is left"
    );
    path
}

/// A deterministic xorshift64 generator, for content that must differ file by file.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[test]
fn one_seeder_serves_a_256_mib_file_that_b3sums_to_its_id() {
    const NAME: &str = "bigone.bin";
    const LEN: u64 = 256 * MIB;
    let Some(mut lab) = Lab::new("one_seeder_serves_a_256_mib_file_that_b3sums_to_its_id", 2)
    else {
        return;
    };
    lab.start_all(&[]);
    let source = random_source(&lab, "bigone", LEN);
    let id = b3sum(&source);
    let target = shared(&lab, 0).join(NAME);
    fs::rename(&source, &target).expect("move the file into the shared folder");
    wait_indexed(&lab, 0, NAME, &id);
    wait_holders(&lab, 1, "bigone", &id, &[0]);

    let done = get_to_the_end(&lab, 1, &id[..12], transfer_limit(LEN, UNSHAPED_FLOOR));
    assert_eq!(done["id"], id.as_str(), "{done}");
    assert_eq!(done["name"], NAME, "{done}");
    assert_eq!(done["kind"], "file", "{done}");
    let dir = download_dir(&lab, 1);
    assert_arrived(&done, &dir, NAME, &id, LEN);
    assert_eq!(bytes(&done, "bytes_fetched"), LEN, "fetched once: {done}");
    assert!(served(&lab, 0) >= LEN, "the seeder served it all");
}

#[test]
fn three_seeders_are_all_used() {
    const NAME: &str = "trio.bin";
    const LEN: u64 = 64 * MIB;
    const RATE: Rate = Rate::mbit(100);
    let Some(mut lab) = Lab::new("three_seeders_are_all_used", 4) else {
        return;
    };
    lab.start_all(&[]);
    let seeders = [0, 1, 2];
    for i in seeders {
        lab.shape(i, RATE);
    }
    let source = random_source(&lab, "trio", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &seeders, NAME, &source);
    for i in seeders {
        wait_indexed(&lab, i, NAME, &id);
    }
    wait_holders(&lab, 3, "trio", &id, &seeders);

    let done = get_to_the_end(&lab, 3, &id[..12], shaped_limit(LEN, RATE, 3));
    assert_arrived(&done, &download_dir(&lab, 3), NAME, &id, LEN);
    let shares: Vec<u64> = seeders.iter().map(|&i| served(&lab, i)).collect();
    println!("served_bytes={shares:?}");
    for (i, share) in shares.into_iter().enumerate() {
        assert!(
            share as f64 >= LEN as f64 * FAIR_SHARE,
            "seeder {i} served {share} bytes, less than {:.0}% of {LEN}",
            FAIR_SHARE * 100.0
        );
    }
}

#[test]
fn a_seeder_killed_mid_transfer_is_replaced_by_the_others() {
    const NAME: &str = "relay.bin";
    const LEN: u64 = 48 * MIB;
    // 3 × 2.5 MB/s: about 6.7 s for the whole file.
    const RATE: Rate = Rate::mbit(20);
    let Some(mut lab) = Lab::new("a_seeder_killed_mid_transfer_is_replaced_by_the_others", 4)
    else {
        return;
    };
    lab.start_all(&[]);
    let seeders = [0, 1, 2];
    for i in seeders {
        lab.shape(i, RATE);
    }
    let source = random_source(&lab, "relay", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &seeders, NAME, &source);
    for i in seeders {
        wait_indexed(&lab, i, NAME, &id);
    }
    wait_holders(&lab, 3, "relay", &id, &seeders);

    let started = Instant::now();
    get_detached(&lab, 3, &id[..12]);
    let at = wait_fraction(&lab, 3, &id, 0.4, shaped_limit(LEN, RATE, 3));
    let shares: Vec<u64> = seeders.iter().map(|&i| served(&lab, i)).collect();
    let victim = (0..3).max_by_key(|&i| shares[i]).expect("three seeders");
    assert!(shares[victim] > 0, "no seeder has served anything: {at}");
    let survivors: Vec<usize> = seeders.into_iter().filter(|&i| i != victim).collect();
    let before: u64 = survivors.iter().map(|&i| served(&lab, i)).sum();
    lab.kill(victim);
    let after_kill = progress(&lab, 3, &id).expect("the download is listed");
    println!(
        "killed seeder {victim} at bytes_done={} (served {shares:?})",
        bytes(&after_kill, "bytes_done")
    );

    let done = wait_done(&lab, 3, &id, shaped_limit(LEN, RATE, 2));
    println!("download_ms={}", started.elapsed().as_millis());
    assert_arrived(&done, &download_dir(&lab, 3), NAME, &id, LEN);
    // What was missing after the kill came from the survivors (less what the victim had
    // already delivered and the downloader was still verifying: two seconds of its link).
    let grown = survivors.iter().map(|&i| served(&lab, i)).sum::<u64>() - before;
    let missing = LEN - bytes(&after_kill, "bytes_done");
    let slack = 2 * RATE.bytes_per_sec() + 4 * piece_size(LEN);
    println!("survivors_served_after_kill={grown} missing_at_kill={missing}");
    assert!(
        grown + slack >= missing,
        "the survivors served {grown} bytes after the kill, {missing} were missing"
    );
}

#[test]
fn a_download_waits_when_every_seeder_is_gone_and_finishes_when_one_returns() {
    const NAME: &str = "pause.bin";
    const LEN: u64 = 32 * MIB;
    // 2 × 5 MB/s: about 3.4 s for the whole file.
    const RATE: Rate = Rate::mbit(40);
    let Some(mut lab) = Lab::new(
        "a_download_waits_when_every_seeder_is_gone_and_finishes_when_one_returns",
        3,
    ) else {
        return;
    };
    lab.start_all(&[]);
    let seeders = [0, 1];
    for i in seeders {
        lab.shape(i, RATE);
    }
    let source = random_source(&lab, "pause", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &seeders, NAME, &source);
    for i in seeders {
        wait_indexed(&lab, i, NAME, &id);
    }
    wait_holders(&lab, 2, "pause", &id, &seeders);

    get_detached(&lab, 2, &id[..12]);
    wait_fraction(&lab, 2, &id, 0.3, shaped_limit(LEN, RATE, 2));
    for i in seeders {
        lab.kill(i);
    }
    let waiting = wait_progress(
        &lab,
        2,
        &id,
        WAITING_LIMIT,
        "the download waits for a holder",
        |p| state(p) == "waiting",
    );
    println!("waiting: {waiting}");
    assert!(
        bytes(&waiting, "bytes_done") < LEN,
        "waiting with everything: {waiting}"
    );
    assert!(
        waiting["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a waiting download says why: {waiting}"
    );
    // With no holder anywhere, it stays unfinished (and does not give up).
    let still = progress(&lab, 2, &id).expect("the download is listed");
    assert!(
        matches!(state(&still), "waiting" | "fetching") && bytes(&still, "bytes_done") < LEN,
        "with every holder gone: {still}"
    );

    lab.restart(0);
    let remaining = LEN - bytes(&still, "bytes_done");
    let done = wait_done(
        &lab,
        2,
        &id,
        LOCATE_LIMIT + shaped_limit(remaining, RATE, 1),
    );
    assert_arrived(&done, &download_dir(&lab, 2), NAME, &id, LEN);
}

#[test]
fn a_downloader_killed_at_60_percent_resumes_without_refetching_verified_pieces() {
    const NAME: &str = "resume.bin";
    const LEN: u64 = 32 * MIB;
    // 5 MB/s: about 6.7 s for the whole file.
    const RATE: Rate = Rate::mbit(40);
    let Some(mut lab) = Lab::new(
        "a_downloader_killed_at_60_percent_resumes_without_refetching_verified_pieces",
        2,
    ) else {
        return;
    };
    lab.start_all(&[]);
    lab.shape(0, RATE);
    let source = random_source(&lab, "resume", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &[0], NAME, &source);
    wait_indexed(&lab, 0, NAME, &id);
    wait_holders(&lab, 1, "resume", &id, &[0]);

    get_detached(&lab, 1, &id[..12]);
    let at = wait_fraction(&lab, 1, &id, 0.6, shaped_limit(LEN, RATE, 1));
    let recorded = bytes(&at, "bytes_done");
    lab.kill(1);
    lab.restart(1);
    // It comes back by itself: no new `get`.
    let resumed = lab.wait_until(
        RESUME_LIMIT,
        "the restarted node lists the download",
        || progress(&lab, 1, &id),
    );
    println!("resumed: {resumed}");
    let done = wait_done(&lab, 1, &id, LOCATE_LIMIT + shaped_limit(LEN, RATE, 1));
    assert_arrived(&done, &download_dir(&lab, 1), NAME, &id, LEN);

    let total = bytes(&done, "bytes_total");
    let kept = bytes(&done, "bytes_resumed");
    let fetched = bytes(&done, "bytes_fetched");
    let piece = piece_size(LEN);
    println!(
        "resume: bytes_total={total} done_before_kill={recorded} bytes_resumed={kept} \
         bytes_fetched={fetched} piece={piece} lost_verified_bytes={} refetched_bytes={}",
        recorded.saturating_sub(kept),
        (fetched + kept).saturating_sub(total)
    );
    assert!(
        kept >= recorded,
        "verified before the kill: {recorded} bytes; found on disk after the restart: {kept}"
    );
    assert!(
        fetched <= total - kept + piece,
        "the resumed run fetched {fetched} bytes; only {} were missing (+ one piece of {piece})",
        total - kept
    );
}

#[test]
fn a_seeder_whose_file_changed_in_place_is_dropped_and_an_honest_one_finishes() {
    const NAME: &str = "tampered.bin";
    const LEN: u64 = 32 * MIB;
    const RATE: Rate = Rate::mbit(100);
    let Some(mut lab) = Lab::new(
        "a_seeder_whose_file_changed_in_place_is_dropped_and_an_honest_one_finishes",
        3,
    ) else {
        return;
    };
    lab.start_all(&[]);
    let (honest, liar) = (0, 1);
    // Equal links, so the liar gets its share of the pieces, the changed ones included.
    lab.shape(honest, RATE);
    lab.shape(liar, RATE);
    let source = random_source(&lab, "tampered", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &[honest, liar], NAME, &source);
    wait_indexed(&lab, honest, NAME, &id);
    wait_indexed(&lab, liar, NAME, &id);

    // The liar's copy changes in place: the middle half of the file, same size, same mtime.
    let path = shared(&lab, liar).join(NAME);
    let mtime = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let garbage = XorShift::new(6).bytes((LEN / 2) as usize);
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the liar's copy");
        file.seek(SeekFrom::Start(LEN / 4)).expect("seek");
        file.write_all(&garbage).expect("overwrite the middle");
        file.set_modified(mtime).expect("restore the mtime");
    }
    let meta = fs::metadata(&path).expect("the liar's copy");
    assert_eq!(meta.len(), LEN);
    assert_eq!(meta.modified().expect("mtime"), mtime);
    assert_ne!(b3sum(&path), id, "the liar's copy changed");
    assert_eq!(
        shared_id(&lab, liar, NAME).as_deref(),
        Some(id.as_str()),
        "the liar's index still claims the old id"
    );
    wait_holders(&lab, 2, "tampered", &id, &[honest, liar]);

    let done = get_to_the_end(&lab, 2, &id[..12], shaped_limit(LEN, RATE, 1));
    assert_arrived(&done, &download_dir(&lab, 2), NAME, &id, LEN);
    let log = lab.stderr_tail(2, usize::MAX);
    let dropped = log
        .lines()
        .find(|l| l.contains("does not verify") && l.contains(lab.peer_id(liar)));
    assert!(
        dropped.is_some(),
        "node 2's log does not say that the liar ({}) sent data that does not verify",
        lab.peer_id(liar)
    );
    let (from_honest, from_liar) = (served(&lab, honest), served(&lab, liar));
    println!("served honest={from_honest} liar={from_liar}");
    assert!(
        from_honest >= LEN / 2,
        "the honest seeder served only {from_honest} bytes; the changed half must be its"
    );
}

#[test]
fn a_directory_tree_with_2000_small_files_arrives_intact() {
    const ROOT: &str = "Holiday Album";
    const SMALL_FILES: u64 = 2_000;
    const EMPTY_DIRS: [&str; 2] = ["empty", "deep/er/still/deeper/empty too"];
    let Some(mut lab) = Lab::new("a_directory_tree_with_2000_small_files_arrives_intact", 2) else {
        return;
    };
    lab.start_all(&[]);

    // The tree, built in staging and moved into the shared folder in one rename.
    let tree = staging(&lab, 0).join(ROOT);
    let put = |rel: &str, content: &[u8]| {
        let path = tree.join(rel);
        fs::create_dir_all(path.parent().expect("a path in the tree")).expect("create a folder");
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    put(
        "naïve café/日本語.txt",
        "こんにちは, café crème\n".as_bytes(),
    );
    put("with spaces/a file with spaces.txt", b"spaces in names\n");
    put("zero bytes.txt", b"");
    let duplicate = XorShift::new(1).bytes(64 * 1024);
    put("dup/first copy.bin", &duplicate);
    put("other place/second copy.bin", &duplicate);
    put(
        "big/five mib.bin",
        &XorShift::new(2).bytes(5 * MIB as usize),
    );
    let mut rng = XorShift::new(3);
    let mut bytes_small = 0;
    for n in 0..SMALL_FILES {
        let len = 1_000 + (rng.next() % 19_001) as usize;
        bytes_small += len;
        let mut content = XorShift::new(1_000 + n).bytes(len);
        // Distinct content even if two generators met: the file number is in it.
        content[..8].copy_from_slice(&n.to_le_bytes());
        put(&format!("small/d{:02}/f{n:04}.dat", n % 20), &content);
    }
    for d in EMPTY_DIRS {
        fs::create_dir_all(tree.join(d)).expect("create an empty folder");
    }
    println!(
        "tree: {SMALL_FILES} small files of {bytes_small} bytes; 5 MiB, a duplicate pair, an \
         empty file, two text files; two empty folders"
    );
    let source = shared(&lab, 0).join(ROOT);
    fs::rename(&tree, &source).expect("move the tree into the shared folder");

    let id = lab.wait_until(LOCATE_LIMIT, "node 0 indexes the tree", || {
        let entries = ls(&lab, 0);
        let files_below = entries
            .iter()
            .filter(|e| {
                e["kind"] == "file" && e["path"].as_str().is_some_and(|p| p.starts_with(ROOT))
            })
            .count() as u64;
        let root = entries.iter().find(|e| e["path"] == ROOT)?;
        (files_below == SMALL_FILES + 6)
            .then(|| root["id"].as_str().map(str::to_owned))
            .flatten()
    });
    wait_holders(&lab, 1, "holiday album", &id, &[0]);

    let total = bytes_small as u64 + 5 * MIB + 64 * 1024;
    let done = get_to_the_end(
        &lab,
        1,
        &id[..12],
        transfer_limit(total, UNSHAPED_FLOOR / 4),
    );
    assert_eq!(done["kind"], "dir", "{done}");
    assert_eq!(done["files_done"], done["files_total"], "{done}");
    let dir = download_dir(&lab, 1);
    let result = dir.join(ROOT);
    assert_eq!(
        done["path"].as_str().map(PathBuf::from),
        Some(result.clone()),
        "{done}"
    );
    let (code, out, err) = run(Command::new("diff").arg("-r").arg(&source).arg(&result));
    assert_eq!(
        code,
        0,
        "diff -r {} {}:\n{out}{err}",
        source.display(),
        result.display()
    );
    for d in EMPTY_DIRS {
        assert!(result.join(d).is_dir(), "the empty folder {d} is missing");
    }
    assert_eq!(
        part_entries(&dir),
        Vec::<String>::new(),
        "partial data is left"
    );
}

#[test]
fn a_name_that_exists_is_never_overwritten() {
    const NAME: &str = "twice.bin";
    const SECOND: &str = "twice (1).bin";
    const LEN: u64 = 2 * MIB;
    let Some(mut lab) = Lab::new("a_name_that_exists_is_never_overwritten", 2) else {
        return;
    };
    lab.start_all(&[]);
    let source = random_source(&lab, "twice", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &[0], NAME, &source);
    wait_indexed(&lab, 0, NAME, &id);
    wait_holders(&lab, 1, "twice", &id, &[0]);

    let dir = download_dir(&lab, 1);
    let limit = transfer_limit(LEN, UNSHAPED_FLOOR);
    let first = get_to_the_end(&lab, 1, &id[..12], limit);
    let first = assert_arrived(&first, &dir, NAME, &id, LEN);
    let mtime = fs::metadata(&first)
        .and_then(|m| m.modified())
        .expect("mtime");
    let second = get_to_the_end(&lab, 1, &id, limit);
    assert_arrived(&second, &dir, SECOND, &id, LEN);
    assert_eq!(b3sum(&first), id, "the first copy is untouched");
    assert_eq!(
        fs::metadata(&first)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime,
        "the first copy was not rewritten"
    );

    // A full id that nobody shares.
    let unknown = blake3::hash(b"no node shares this").to_hex().to_string();
    let (code, _, err) = run_for(&lab, 1, &["get", &unknown], CLI_LIMIT);
    assert_ne!(code, 0, "`get` of an unknown id succeeded");
    assert!(
        err.contains("no node shares") && err.contains(&unknown),
        "`get {unknown}` says: {err}"
    );
    // A 4-digit prefix of no id on the network.
    let ids: Vec<String> = (0..2)
        .flat_map(|i| ls(&lab, i))
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let prefix = (0..0x1_0000)
        .map(|n| format!("{n:04x}"))
        .find(|p| !ids.iter().any(|id| id.starts_with(p.as_str())))
        .expect("a free prefix");
    let (code, _, err) = run_for(&lab, 1, &["get", &prefix], CLI_LIMIT);
    assert_ne!(code, 0, "`get {prefix}` succeeded");
    assert!(
        err.contains("no node shares") && err.contains(&prefix),
        "`get {prefix}` says: {err}"
    );
    // Not an id at all.
    let (code, _, err) = run_for(&lab, 1, &["get", "holiday"], CLI_LIMIT);
    assert_ne!(code, 0, "`get holiday` succeeded");
    assert!(err.contains("is not an id"), "`get holiday` says: {err}");
    assert_eq!(
        part_entries(&dir),
        Vec::<String>::new(),
        "partial data is left"
    );
}

#[test]
fn cancel_removes_partial_data() {
    const NAME: &str = "cancelme.bin";
    const LEN: u64 = 16 * MIB;
    // 1 MB/s: about 17 s for the whole file, far more than the test needs.
    const RATE: Rate = Rate::mbit(8);
    let Some(mut lab) = Lab::new("cancel_removes_partial_data", 2) else {
        return;
    };
    lab.start_all(&[]);
    lab.shape(0, RATE);
    let source = random_source(&lab, "cancelme", LEN);
    let id = b3sum(&source);
    share_copies(&lab, &[0], NAME, &source);
    wait_indexed(&lab, 0, NAME, &id);
    wait_holders(&lab, 1, "cancelme", &id, &[0]);

    let dir = download_dir(&lab, 1);
    get_detached(&lab, 1, &id[..12]);
    let part = lab.wait_until(
        shaped_limit(LEN, RATE, 1),
        "the download has verified data in its partial file",
        || {
            let p = progress(&lab, 1, &id)?;
            let parts = part_entries(&dir);
            (bytes(&p, "bytes_done") > 0 && !parts.is_empty()).then_some(parts)
        },
    );
    assert_eq!(part, vec![format!(".{NAME}.{}.iwant-part", &id[..12])]);

    let (code, out, err) = run_for(&lab, 1, &["cancel", &id[..12]], CLI_LIMIT);
    assert_eq!(code, 0, "`cancel` failed: {err}");
    println!("cancel: {}", out.trim());
    lab.wait_until(CANCEL_LIMIT, "the partial data is gone", || {
        part_entries(&dir).is_empty().then_some(())
    });
    let p = progress(&lab, 1, &id).expect("the cancelled download is listed");
    assert_eq!(state(&p), "cancelled", "{p}");
    assert!(!dir.join(NAME).exists(), "a cancelled download was placed");
}
