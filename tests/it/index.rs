//! The shared folder's index, end to end in one process: initial scan, every kind of change,
//! directory ids, restart without rehash, switching folders.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use iwant::{
    config::Home,
    daemon::RunningNode,
    share::{IndexEntry, Kind},
};

use crate::util::{start_in_process, wait_for_async};

/// Generous: the goal (one second) is measured by `benches/index.rs`, not asserted here.
const LIMIT: Duration = Duration::from_secs(10);

struct Node {
    node: RunningNode,
    home: PathBuf,
    share: PathBuf,
}

/// A node whose home is `dir/home` and whose shared folder is `dir/share` (created first, so
/// tests can fill it before the node starts).
async fn start(dir: &Path) -> Node {
    let home = dir.join("home");
    let share = dir.join("share");
    fs::create_dir_all(&share).unwrap();
    let share = share.canonicalize().unwrap();
    let h = Home::resolve(Some(home.clone())).unwrap();
    let (mut config, _) = h.load_or_create_config().unwrap();
    config.shared_dir = share.clone();
    h.save_config(&config).unwrap();
    let node = start_in_process(&home, "/ip4/127.0.0.1/tcp/0".parse().unwrap(), vec![]).await;
    Node { node, home, share }
}

impl Node {
    async fn entries(&self) -> Vec<IndexEntry> {
        self.node.index.entries().await.unwrap()
    }

    async fn entry(&self, path: &str) -> Option<IndexEntry> {
        self.entries().await.into_iter().find(|e| e.path == path)
    }

    /// Waits until `probe(entries)` holds.
    async fn wait(&self, what: &str, probe: impl Fn(&[IndexEntry]) -> bool) -> Vec<IndexEntry> {
        wait_for_async(LIMIT, what, || async {
            let entries = self.entries().await;
            probe(&entries).then_some(entries)
        })
        .await
    }

    async fn wait_file(&self, path: &str, content: &[u8]) {
        let id = blake3::hash(content);
        self.wait(&format!("{path} indexed with its content"), |es| {
            es.iter().any(|e| {
                e.path == path
                    && e.kind == Kind::File
                    && e.id == id
                    && e.size == content.len() as u64
            })
        })
        .await;
    }

    async fn wait_gone(&self, path: &str) {
        self.wait(&format!("{path} gone from the index"), |es| {
            es.iter().all(|e| e.path != path)
        })
        .await;
    }

    async fn wait_idle(&self) {
        wait_for_async(LIMIT, "the initial scan", || async {
            let s = self.node.index.status();
            s.ready.then_some(())
        })
        .await;
    }
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_scan_indexes_every_file_by_its_blake3_hash_and_every_directory() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", vec![]),
        ("one.txt", b"x".to_vec()),
        ("docs/a.txt", content(1025, 1)),
        ("docs/deep/b.bin", content(700_000, 2)), // several pieces
        ("other/c.bin", content(262_144, 3)),
    ];
    for (p, data) in &files {
        write(&share.join(p), data);
    }
    fs::create_dir_all(share.join("empty-dir")).unwrap();
    let node = start(dir.path()).await;
    node.wait_idle().await;
    let entries = node.entries().await;
    for (p, data) in &files {
        let e = entries
            .iter()
            .find(|e| e.path == *p)
            .unwrap_or_else(|| panic!("{p} missing"));
        assert_eq!(e.id, blake3::hash(data), "{p}: the id is what b3sum prints");
        assert_eq!(e.size, data.len() as u64);
        assert_eq!(e.kind, Kind::File);
    }
    let dirs: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(dirs, ["", "docs", "docs/deep", "empty-dir", "other"]);
    let root = node.entry("").await.unwrap();
    assert_eq!(
        root.size,
        files.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    );
    let status = node.node.index.status();
    assert_eq!((status.files, status.dirs, status.errors), (5, 5, 0));
    assert_eq!(status.hashed_files, 5);
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_change_reaches_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let node = start(dir.path()).await;
    node.wait_idle().await;
    let mut deltas = node.node.index.subscribe();
    let s = node.share.clone();

    // Created.
    write(&s.join("new.txt"), b"hello");
    node.wait_file("new.txt", b"hello").await;
    // Modified, same size.
    write(&s.join("new.txt"), b"jello");
    node.wait_file("new.txt", b"jello").await;
    // Renamed.
    fs::rename(s.join("new.txt"), s.join("renamed.txt")).unwrap();
    node.wait_file("renamed.txt", b"jello").await;
    node.wait_gone("new.txt").await;
    // Moved in from outside, and out again.
    write(&outside.join("in.txt"), b"from outside");
    fs::rename(outside.join("in.txt"), s.join("in.txt")).unwrap();
    node.wait_file("in.txt", b"from outside").await;
    fs::rename(s.join("in.txt"), outside.join("in.txt")).unwrap();
    node.wait_gone("in.txt").await;
    // Deleted.
    fs::remove_file(s.join("renamed.txt")).unwrap();
    node.wait_gone("renamed.txt").await;
    // A directory created (empty), filled, renamed, removed.
    fs::create_dir(s.join("d")).unwrap();
    node.wait("empty directory d", |es| {
        es.iter().any(|e| e.path == "d" && e.kind == Kind::Dir)
    })
    .await;
    write(&s.join("d/sub/f.txt"), b"inside");
    node.wait_file("d/sub/f.txt", b"inside").await;
    fs::rename(s.join("d"), s.join("e")).unwrap();
    node.wait_file("e/sub/f.txt", b"inside").await;
    node.wait("old directory gone", |es| {
        es.iter()
            .all(|e| e.path != "d" && !e.path.starts_with("d/"))
    })
    .await;
    fs::remove_dir_all(s.join("e")).unwrap();
    node.wait("directory removed", |es| {
        es.iter().all(|e| !e.path.starts_with('e'))
    })
    .await;
    // A directory moved in from outside with content.
    write(&outside.join("pack/x.bin"), &content(300_000, 9));
    fs::rename(outside.join("pack"), s.join("pack")).unwrap();
    node.wait_file("pack/x.bin", &content(300_000, 9)).await;

    // Every change produced a delta, versions strictly consecutive.
    let mut last = None;
    let mut seen = 0;
    while let Ok(delta) = deltas.try_recv() {
        if let Some(prev) = last {
            assert_eq!(delta.version, prev + 1);
        }
        assert!(!delta.reset);
        last = Some(delta.version);
        seen += 1;
    }
    assert!(seen >= 10, "one delta per change at least, saw {seen}");
    assert_eq!(node.node.index.status().version, last.unwrap());
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_directory_id_changes_with_any_file_below() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("share/a/b/c.txt"), b"one");
    let node = start(dir.path()).await;
    node.wait_idle().await;
    let before = node.entries().await;
    write(&node.share.join("a/b/c.txt"), b"two");
    node.wait_file("a/b/c.txt", b"two").await;
    let after = node.entries().await;
    for d in ["", "a", "a/b"] {
        let id = |es: &[IndexEntry]| es.iter().find(|e| e.path == d).unwrap().id;
        assert_ne!(
            id(&before),
            id(&after),
            "directory {d:?} id follows its content"
        );
    }
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_tree_has_the_same_directory_ids_on_two_nodes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (i, d) in [&d1, &d2].into_iter().enumerate() {
        let s = d.path().join("share");
        write(&s.join("music/a.mp3"), &content(5000, 1));
        write(&s.join("music/live/b.mp3"), &content(600_000, 2));
        fs::create_dir_all(s.join("music/empty")).unwrap();
        write(&s.join("readme"), b"same");
        // Different times must not matter.
        if i == 1 {
            std::thread::sleep(Duration::from_millis(20));
            write(&s.join("readme"), b"same");
        }
    }
    let (n1, n2) = (start(d1.path()).await, start(d2.path()).await);
    n1.wait_idle().await;
    n2.wait_idle().await;
    let (e1, e2) = (n1.entries().await, n2.entries().await);
    assert_eq!(e1, e2, "identical trees, identical index");
    assert_ne!(n1.share, n2.share);
    n1.node.stop().await;
    n2.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_does_not_read_unchanged_files_again() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(
            &dir.path().join(format!("share/f{i}.bin")),
            &content(10_000 + i, i as u8),
        );
    }
    let node = start(dir.path()).await;
    node.wait_idle().await;
    assert_eq!(node.node.index.status().hashed_files, 50);
    let before = node.entries().await;
    node.node.stop().await;

    // Changed while the node was down: one file rewritten, one added.
    write(&dir.path().join("share/f0.bin"), b"changed");
    write(&dir.path().join("share/added.bin"), b"added");
    let node = start(dir.path()).await;
    node.wait_file("added.bin", b"added").await;
    node.wait_file("f0.bin", b"changed").await;
    let status = node.node.index.status();
    assert_eq!(
        status.hashed_files, 2,
        "only the changed and the new file are read"
    );
    assert_eq!(status.hashed_bytes, 12);
    let after = node.entries().await;
    assert_eq!(after.len(), before.len() + 1);
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_the_shared_folder_reuses_hashes_and_resets_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("share/a.bin"), &content(400_000, 1));
    write(&dir.path().join("other/b.bin"), b"b");
    let node = start(dir.path()).await;
    node.wait_idle().await;
    let mut deltas = node.node.index.subscribe();
    assert_eq!(node.node.index.status().hashed_files, 1);

    // The parent of both: a.bin is the same file (inode, size, mtime) and is not read again.
    let parent = dir.path().canonicalize().unwrap().join("both");
    fs::create_dir_all(&parent).unwrap();
    fs::rename(dir.path().join("share"), parent.join("share")).unwrap();
    fs::rename(dir.path().join("other"), parent.join("other")).unwrap();
    let client = iwant::control::Client::new(Home::resolve(Some(node.home.clone())).unwrap());
    client
        .request(iwant::control::Request::SetShared {
            path: parent.clone(),
            force: false,
            create: false,
        })
        .await
        .unwrap();
    node.wait_file("share/a.bin", &content(400_000, 1)).await;
    node.wait_file("other/b.bin", b"b").await;
    assert_eq!(
        node.node.index.status().hashed_files,
        2,
        "a.bin's hashes were reused"
    );
    let resets = tokio::time::timeout(LIMIT, async {
        let mut resets = Vec::new();
        loop {
            let delta = deltas.recv().await.expect("deltas flow");
            if delta.reset {
                let done = delta.upserted.iter().any(|e| e.path == "share/a.bin");
                resets.push(delta);
                if done {
                    return resets;
                }
            }
        }
    })
    .await
    .expect("subscribers start over after a switch");
    // First the old folder's entries are withdrawn (an empty index), then the new one follows.
    assert_eq!(resets.len(), 2, "{resets:?}");
    assert!(resets[0].upserted.is_empty());
    node.node.stop().await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn unindexable_entries_are_reported_and_the_rest_is_indexed() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write(&share.join("fine.txt"), b"fine");
    write(
        &share.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name")),
        b"x",
    );
    // A fifo is skipped silently, and must not block the scan.
    crate::util::mkfifo(&share.join("pipe"));
    let node = start(dir.path()).await;
    node.wait_file("fine.txt", b"fine").await;
    node.wait_idle().await;
    let status = node.node.index.status();
    assert_eq!((status.files, status.errors), (1, 1));
    let errors = node.node.index.errors().await.unwrap();
    assert!(
        errors[0].path.starts_with("bad-") && errors[0].reason.contains("UTF-8"),
        "{errors:?}"
    );
    node.node.stop().await;
}

/// Rewrites `path` in place with `data` (same size), then puts its old modification time back,
/// as `cp --preserve`, `rsync -t` or an editor that restores times would.
fn edit_in_place_keeping_mtime(path: &Path, data: &[u8]) {
    use std::io::Write;
    let before = fs::metadata(path).unwrap();
    assert_eq!(before.len(), data.len() as u64, "same size");
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(data).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = fs::metadata(path).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(after.len(), before.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_edited_in_place_with_its_mtime_restored_gets_its_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (content(300_000, 1), content(300_000, 2));
    write(&dir.path().join("share/doc.bin"), &old);
    let node = start(dir.path()).await;
    node.wait_file("doc.bin", &old).await;

    // While the node runs: the watcher reports it, the change time tells it changed.
    let path = node.share.join("doc.bin");
    edit_in_place_keeping_mtime(&path, &new);
    node.wait_file("doc.bin", &new).await;

    // While the node is stopped: found at the next start.
    node.node.stop().await;
    edit_in_place_keeping_mtime(&path, &old);
    let node = start(dir.path()).await;
    node.wait_idle().await;
    node.wait_file("doc.bin", &old).await;
    node.node.stop().await;
}
