//! A download into a folder that runs out of space: `iwant get` says so and what to do, the
//! pieces already written stay, and the download finishes by itself once there is room.
//!
//! The download folder is a small tmpfs, which needs root (to mount); CI runs as root,
//! elsewhere the test skips with one line. Both daemons run in the root namespace on
//! 127.0.0.1 with mDNS off.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::util::{configured_home, root_or_skip, run, wait_for, Daemon};

/// The file: 3 MiB, 12 pieces of 256 KiB.
const FILE_LEN: usize = 3 << 20;
/// The tmpfs first holds 1 MiB (4 pieces), then is grown to this.
const ROOMY: &str = "size=16m";

const LIMIT: Duration = Duration::from_secs(30);

/// A tmpfs mounted at a path, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let (code, _, err) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "iwant-test"])
            .arg(path));
        assert_eq!(code, 0, "mount tmpfs at {}: {err}", path.display());
        Tmpfs(path.to_path_buf())
    }

    fn remount(&self, options: &str) {
        let (code, _, err) = run(Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0));
        assert_eq!(code, 0, "remount {}: {err}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The download of `id` in `node`'s status, if listed.
fn download(node: &Daemon, id: &str) -> Option<Value> {
    node.status()["downloads"]
        .as_array()?
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
}

fn part_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".iwant-part"))
        .collect()
}

#[test]
fn a_full_disk_pauses_the_download_keeps_its_pieces_and_it_resumes_when_space_is_freed() {
    if !root_or_skip("a_full_disk_pauses_the_download", "mount a tmpfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (seed_home, seed_share, _) = configured_home(&dir.path().join("seeder"));
    let seeder = Daemon::start(&seed_home, &[]);
    let addr = seeder.status()["listen_addrs"][0]
        .as_str()
        .expect("the seeder listens")
        .to_owned();

    let tmpfs = Tmpfs::mount(&dir.path().join("small"), "size=1m");
    let leech_dir = dir.path().join("leech");
    let (leech_home, _, _) = configured_home(&leech_dir);
    let h = iwant::config::Home::resolve(Some(leech_home.clone())).unwrap();
    let (mut config, _) = h.load_or_create_config().unwrap();
    config.download_dir = tmpfs.0.canonicalize().unwrap();
    h.save_config(&config).unwrap();
    let leech = Daemon::start(&leech_home, &["--peer", &addr]);

    let content: Vec<u8> = (0..FILE_LEN as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let id = blake3::hash(&content).to_hex().to_string();
    fs::write(seed_share.join("big.bin"), &content).unwrap();
    wait_for(LIMIT, "the leech finds the file", || {
        let (code, out, _) = run(crate::util::iwant(&leech_home).args(["search", "big", "--json"]));
        (code == 0 && out.contains(&id)).then_some(())
    });

    // The attached get stops with the reason and the way out; the download stays.
    let (code, out, err) = run(crate::util::iwant(&leech_home).args(["get", &id, "--json"]));
    assert_eq!(code, 1, "get must fail on a full disk: {out}\n{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("goes on by itself"), "{err}");
    assert!(err.contains("iwant cancel"), "{err}");
    let paused = download(&leech, &id).expect("the download is still listed");
    assert_eq!(paused["state"], "waiting", "{paused}");
    assert!(paused["write_error"].as_str().is_some(), "{paused}");
    // The pieces that fitted stay on disk, in the partial file.
    let parts = part_files(&tmpfs.0);
    assert_eq!(parts.len(), 1, "one partial file: {parts:?}");
    wait_for(LIMIT, "the fitting pieces to be counted as done", || {
        let done = download(&leech, &id)?["bytes_done"].as_u64()?;
        (done >= 2 * 256 * 1024).then_some(())
    });

    // Room again: it goes on by itself, and the file is whole.
    tmpfs.remount(ROOMY);
    let done = wait_for(LIMIT, "the download to finish once space is freed", || {
        download(&leech, &id).filter(|d| d["state"] == "done")
    });
    assert!(done["write_error"].is_null(), "{done}");
    let placed = tmpfs.0.join("big.bin");
    let bytes = fs::read(&placed).unwrap_or_else(|e| panic!("read {}: {e}", placed.display()));
    assert_eq!(blake3::hash(&bytes).to_hex().to_string(), id);
    assert!(part_files(&tmpfs.0).is_empty(), "the partial file is gone");
    drop(leech);
    drop(seeder);
}
