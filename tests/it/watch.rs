//! The watcher of a shared folder with a folder it cannot watch (issue 12): one unreadable
//! folder no longer turns the watcher off for the whole share, and `status` says what is not
//! watched. The rescan is set to an hour, so only the watcher can find the changes in time.
//!
//! inotify needs read access to watch a folder, and root reads everything: under root (as in
//! CI) the node runs as `nobody`, so that the folder is unreadable to it.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::util::{run, wait_for, KillOnDrop};

const LIMIT: Duration = Duration::from_secs(20);

/// Who the node and its CLI run as: `nobody` under root, else the current user.
#[derive(Clone, Copy)]
struct User(Option<(u32, u32)>);

impl User {
    fn unprivileged() -> Self {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Self(None);
        }
        // SAFETY: getpwnam with a valid C string; the record is read before any other call.
        let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
        assert!(!pw.is_null(), "running as root needs a `nobody` user");
        // SAFETY: `pw` is a valid record.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Self(Some((uid, gid)))
    }

    fn own(self, path: &Path) {
        if let Some((uid, gid)) = self.0 {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn command(self, bin: &Path, home: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--home")
            .arg(home)
            .env_remove("IWANT_HOME")
            .env_remove("RUST_LOG")
            .env("IWANT_LOG", "info")
            .env("HOME", home);
        if let Some((uid, gid)) = self.0 {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

/// A scratch folder for a node that runs as a [`User`]: the binary linked in (the test
/// binary's folders may be closed to `nobody`) and a configured home whose `config.toml` ends
/// with `config_extra`.
struct Scratch {
    dir: tempfile::TempDir,
    bin: PathBuf,
    home: PathBuf,
    share: PathBuf,
}

impl Scratch {
    fn new(config_extra: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("iwant");
        fs::hard_link(crate::util::bin(), &bin)
            .or_else(|_| fs::copy(crate::util::bin(), &bin).map(drop))
            .unwrap();
        let (home, share, _) = crate::util::configured_home(dir.path());
        let config = home.join("config.toml");
        let mut text = fs::read_to_string(&config).unwrap();
        text.push_str(config_extra);
        fs::write(&config, text).unwrap();
        Scratch {
            dir,
            bin,
            home,
            share,
        }
    }

    /// Starts `iwant node` as `user` (loopback, mDNS off); its stderr goes to `node.err`.
    fn node(&self, user: User) -> KillOnDrop {
        let node = user
            .command(&self.bin, &self.home)
            .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.path().join("node.err")).unwrap())
            .spawn()
            .unwrap();
        KillOnDrop(node)
    }
}

#[test]
fn an_unreadable_folder_leaves_the_rest_of_the_share_watched() {
    let user = User::unprivileged();
    let scratch = Scratch::new("rescan_interval_secs = 3600\n");
    let (dir, bin, home, share) = (&scratch.dir, &scratch.bin, &scratch.home, &scratch.share);
    fs::create_dir_all(share.join("open")).unwrap();
    fs::write(share.join("open/old.txt"), b"old").unwrap();
    fs::create_dir_all(share.join("locked/inner")).unwrap();
    user.own(dir.path());
    fs::set_permissions(share.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

    let mut node = scratch.node(user);
    let status = || -> Option<Value> {
        let (code, out, _) = run(user.command(bin, home).args(["status", "--json"]));
        (code == 0).then(|| serde_json::from_str(&out).unwrap())
    };
    let watch = wait_for(LIMIT, "the first scan and the watcher", || {
        assert!(node.0.try_wait().unwrap().is_none(), "the node exited");
        status().filter(|s| s["index"]["ready"] == true && s["index"]["watch"]["state"] != "off")
    })["index"]["watch"]
        .clone();
    assert_eq!(
        watch,
        serde_json::json!({"state": "partial", "unwatched": 1}),
        "one folder is not watched, the rest is"
    );
    let (code, out, _) = run(user.command(bin, home).arg("status"));
    assert_eq!(code, 0);
    assert!(
        out.contains("Watching:         all but 1 folder (unreadable?)"),
        "{out}"
    );

    let listed = |path: &str| {
        let (code, out, _) = run(user.command(bin, home).args(["ls", "--json"]));
        code == 0 && out.contains(&format!("\"{path}\""))
    };
    // A change in a watched folder, and in a folder made after the start (watched on its own
    // once it appears), are indexed without waiting for the hourly rescan.
    fs::write(share.join("open/new.txt"), b"new").unwrap();
    wait_for(LIMIT, "open/new.txt to be indexed", || {
        listed("open/new.txt").then_some(())
    });
    fs::create_dir(share.join("open/later")).unwrap();
    user.own(&share.join("open/later"));
    wait_for(LIMIT, "open/later to be indexed", || {
        listed("open/later").then_some(())
    });
    fs::write(share.join("open/later/deep.txt"), b"deep").unwrap();
    wait_for(LIMIT, "open/later/deep.txt to be indexed", || {
        listed("open/later/deep.txt").then_some(())
    });
    fs::set_permissions(share.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_folder_that_cannot_be_listed_keeps_its_files_in_the_index() {
    let user = User::unprivileged();
    // A rescan every second: the failed listing comes soon after the folder closes.
    let scratch = Scratch::new("rescan_interval_secs = 1\n");
    let (dir, bin, home, share) = (&scratch.dir, &scratch.bin, &scratch.home, &scratch.share);
    fs::create_dir_all(share.join("closing/inner")).unwrap();
    fs::write(share.join("closing/a.txt"), b"a").unwrap();
    fs::write(share.join("closing/inner/b.txt"), b"b").unwrap();
    fs::write(share.join("open.txt"), b"open").unwrap();
    user.own(dir.path());

    let mut node = scratch.node(user);
    let ls = |args: &[&str]| -> Option<String> {
        let (code, out, _) = run(user.command(bin, home).args(["ls", "--json"]).args(args));
        (code == 0).then_some(out)
    };
    let everything = ["closing/a.txt", "closing/inner/b.txt", "open.txt"];
    wait_for(LIMIT, "the first scan", || {
        assert!(node.0.try_wait().unwrap().is_none(), "the node exited");
        let out = ls(&[])?;
        everything
            .iter()
            .all(|p| out.contains(&format!("\"{p}\"")))
            .then_some(())
    });

    // The folder can no longer be listed (a permission here; no file descriptor left, an I/O
    // error elsewhere). A rescan records why, and must not take its files for deleted.
    fs::set_permissions(share.join("closing"), fs::Permissions::from_mode(0o000)).unwrap();
    // The errors and the rows of one walk are written in one transaction: once the error shows,
    // so would the deletions.
    wait_for(LIMIT, "a rescan to fail to list the folder", || {
        ls(&["--errors"])?.contains("\"closing\"").then_some(())
    });
    let out = ls(&[]).expect("the node answers");
    for p in everything {
        assert!(out.contains(&format!("\"{p}\"")), "{p} was dropped: {out}");
    }
    fs::set_permissions(share.join("closing"), fs::Permissions::from_mode(0o755)).unwrap();
}
