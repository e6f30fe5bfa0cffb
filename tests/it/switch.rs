//! A shared folder's life, as its owner lives it: switched for another in the middle of a long
//! scan, missing at start and coming back, and a node stopped in the middle of hashing.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};
// For the tests of a daemon process (signals, a second daemon, FIFOs): Unix only.
#[cfg(unix)]
use std::{io::Read, process::Stdio};

use iwant::control::{Request, Response};

#[cfg(unix)]
use crate::util::{iwant, wait_for, Daemon, KillOnDrop};
use crate::util::{wait_for_async, LocalNode as Node};

/// Generous bound for what the issue does not bound more tightly.
const LIMIT: Duration = Duration::from_secs(20);

/// Files big enough that hashing them takes many seconds on any machine, yet cost no disk:
/// sparse files read as zeros.
const SPARSE_FILES: u64 = 16;
const SPARSE_LEN: u64 = 2 << 30;

fn sparse_files(dir: &Path, count: u64, len: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let f = fs::File::create(dir.join(format!("disk-image-{i}.img"))).unwrap();
        f.set_len(len).unwrap();
    }
}

/// The issue: "A new shared folder cancels the running scan of the old one at once; the old
/// folder's entries leave the network within 1 s."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shared_folder_stops_the_old_scan_and_its_entries_leave_the_network_at_once() {
    let a = Node::start(vec![]).await;
    let b = Node::start(vec![a.addr().await]).await;
    a.write("old-report.txt", b"last year's numbers");
    wait_for_async(LIMIT, "b to find a's old-report.txt", || async {
        let found = b.search_paths("old-report").await?;
        found.iter().any(|p| p == "old-report.txt").then_some(())
    })
    .await;

    // A long scan of the old folder starts.
    sparse_files(&a.share.join("images"), SPARSE_FILES, SPARSE_LEN);
    wait_for_async(LIMIT, "a to hash the disk images", || async {
        a.node.index.status().hashing.is_some().then_some(())
    })
    .await;

    let new = a.dir.path().join("new-share");
    fs::create_dir_all(&new).unwrap();
    fs::write(new.join("new-notes.txt"), b"this year's notes").unwrap();
    let switched = Instant::now();
    let answer = a
        .client()
        .request(Request::SetShared {
            path: new.clone(),
            force: false,
            create: false,
        })
        .await
        .expect("the switch is accepted");
    assert!(matches!(answer, Response::Folders(_)), "{answer:?}");

    wait_for_async(
        Duration::from_secs(1),
        "old-report.txt to leave b's search",
        || async {
            let found = b.search_paths("old-report").await?;
            found.is_empty().then_some(())
        },
    )
    .await;
    let left = switched.elapsed();

    wait_for_async(LIMIT, "b to find a's new-notes.txt", || async {
        let found = b.search_paths("new-notes").await?;
        found.iter().any(|p| p == "new-notes.txt").then_some(())
    })
    .await;
    // The old scan was dropped, not finished: far fewer bytes were read than it had to hash.
    let hashed = a.node.index.status().hashed_bytes;
    assert!(
        hashed < SPARSE_FILES * SPARSE_LEN / 2,
        "the old folder's scan ran on: {hashed} bytes hashed"
    );
    assert!(a.node.index.status().ready);
    eprintln!("old entries left the network {left:?} after the switch");
    a.node.stop().await;
    b.node.stop().await;
}

/// The issue: "A shared folder missing at start: the node runs, shares nothing, says so in its
/// log and in `status`, and shares it as soon as it appears." A folder that goes away while the
/// node runs is withdrawn the same way, and comes back without being hashed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_shared_folder_shares_nothing_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let (home, share, _) = crate::util::configured_home(dir.path());
    fs::remove_dir(&share).unwrap();
    let node =
        crate::util::start_in_process(&home, "/ip4/127.0.0.1/tcp/0".parse().unwrap(), vec![]).await;
    let index = node.index.clone();
    wait_for_async(LIMIT, "the index to say the folder is missing", || async {
        let s = index.status();
        (s.root_missing && s.ready).then_some(())
    })
    .await;
    assert!(
        !share.exists(),
        "the node must not create a missing shared folder"
    );
    assert!(index.entries().await.unwrap().is_empty());
    assert!(index.snapshot().await.unwrap().1.is_empty());

    // The disk is mounted again.
    fs::create_dir_all(share.join("photos")).unwrap();
    fs::write(share.join("photos/beach.jpg"), b"sand and sea").unwrap();
    let entries = wait_for_async(LIMIT, "the folder to be shared once it exists", || async {
        let entries = index.entries().await.ok()?;
        entries
            .iter()
            .any(|e| e.path == "photos/beach.jpg")
            .then_some(entries)
    })
    .await;
    assert!(!index.status().root_missing);
    assert_eq!(index.snapshot().await.unwrap().1, entries);
    let hashed = index.status().hashed_files;

    // Gone again (unmounted): withdrawn, not hashed again when it returns.
    let away = dir.path().join("away");
    fs::rename(&share, &away).unwrap();
    wait_for_async(LIMIT, "the index to notice the folder left", || async {
        index.status().root_missing.then_some(())
    })
    .await;
    assert!(index.snapshot().await.unwrap().1.is_empty());
    fs::rename(&away, &share).unwrap();
    wait_for_async(LIMIT, "the folder to be shared again", || async {
        let s = index.status();
        (!s.root_missing && s.ready && s.files == 1).then_some(())
    })
    .await;
    assert_eq!(
        index.status().hashed_files,
        hashed,
        "nothing was hashed again"
    );
    node.stop().await;
}

/// The issue: "Ctrl-C during any scan stops the node within 2 s", and "the control socket goes
/// only when the process really ends, so a second daemon can never start beside a living one".
#[cfg(unix)]
#[test]
fn ctrl_c_in_the_middle_of_hashing_stops_the_node_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (home, share, _) = crate::util::configured_home(dir.path());
    // Two files of 16 GiB: hashing either takes several seconds, so a node that only stops
    // between files cannot pass.
    sparse_files(&share, 2, 16 << 30);
    let daemon = Daemon::start(&home, &[]);
    wait_for(LIMIT, "the node to hash the disk images", || {
        let status = daemon.status();
        (!status["index"]["hashing"].is_null()).then_some(())
    });

    // Even with its control socket removed, the running node keeps its home: its lock refuses
    // a second daemon.
    fs::remove_file(home.join("control.sock")).unwrap();
    let second = iwant(&home)
        .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = KillOnDrop(second);
    let status = wait_for(LIMIT, "the second daemon to give up", || {
        second.0.try_wait().unwrap()
    });
    let mut err = String::new();
    second
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("already running"), "{err}");

    let (stopped, status) = daemon.interrupt();
    assert!(status.success() || status.code() == Some(0), "{status:?}");
    assert!(
        stopped <= Duration::from_secs(2),
        "the node took {stopped:?} to stop in the middle of hashing"
    );
}

/// `iwant node 2>&1 | tee node.log`, then Ctrl-C: the terminal's Ctrl-C kills `tee` too, so
/// the node's stdout and stderr are closed pipes from then on. The node still stops on the
/// first signal (SIGINT or SIGTERM), writing its last log lines into nothing.
#[cfg(unix)]
#[test]
fn a_node_whose_output_pipe_is_gone_still_stops_on_the_first_signal() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let (home, _, _) = crate::util::configured_home(dir.path());
        let child = iwant(&home)
            .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .env("IWANT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut node = KillOnDrop(child);
        wait_for(LIMIT, "the node to answer `status`", || {
            let (code, _, _) = crate::util::run(iwant(&home).arg("status"));
            (code == 0).then_some(())
        });
        // `tee` is gone: the read ends close.
        drop(node.0.stdout.take());
        drop(node.0.stderr.take());
        // SAFETY: kill with a valid pid and signal has no memory effects.
        unsafe {
            libc::kill(node.0.id() as i32, signal);
        }
        let status = wait_for(LIMIT, "the node to stop after one signal", || {
            node.0.try_wait().unwrap()
        });
        assert_eq!(status.code(), Some(0), "signal {signal}: {status:?}");
        assert!(
            !home.join("control.sock").exists(),
            "signal {signal}: the control socket is removed"
        );
    }
}

/// FIFOs swapped in for files of a scan in progress (a batch being hashed): refused without
/// blocking a hash thread, the scan finishes, and the node still stops within two seconds.
#[cfg(unix)]
#[test]
fn fifos_swapped_in_during_a_scan_are_refused_and_the_scan_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (home, share, _) = crate::util::configured_home(dir.path());
    // Big enough that the small files wait behind them for seconds; cost no disk.
    sparse_files(&share, 2, 4 << 30);
    let smalls: Vec<String> = (0..20).map(|i| format!("small-{i:02}.txt")).collect();
    for name in &smalls {
        fs::write(share.join(name), name.as_bytes()).unwrap();
    }
    let daemon = Daemon::start(&home, &[]);
    wait_for(LIMIT, "the node to hash the disk images", || {
        let status = daemon.status();
        (!status["index"]["hashing"].is_null()).then_some(())
    });
    for name in &smalls {
        fs::remove_file(share.join(name)).unwrap();
        crate::util::mkfifo(&share.join(name));
    }
    wait_for(Duration::from_secs(120), "the first scan to finish", || {
        (daemon.status()["index"]["ready"] == true).then_some(())
    });
    wait_for(LIMIT, "no FIFO indexed as a file", || {
        let (code, out, _) = crate::util::run(iwant(&home).args(["ls", "--json"]));
        (code == 0 && !out.contains("small-") && out.contains("disk-image-1.img")).then_some(())
    });
    let (stopped, status) = daemon.interrupt();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        stopped <= Duration::from_secs(2),
        "the node took {stopped:?} to stop"
    );
}
