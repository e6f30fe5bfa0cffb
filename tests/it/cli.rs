//! The real binary's commands and error paths. Every daemon here runs in the root namespace,
//! so always with `--no-mdns` on 127.0.0.1 (see `util::Daemon`).

use std::{fs, path::Path};

use crate::util::{iwant, run, Daemon};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn config_text(home: &Path) -> String {
    fs::read_to_string(home.join("config.toml")).unwrap()
}

#[test]
fn version_and_help_work_without_a_home() {
    let dir = tmp();
    let (code, out, _) = run(iwant(&dir.path().join("h")).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("iwant {}", env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(iwant(&dir.path().join("h")).arg("help"));
    assert_eq!(code, 0);
    for cmd in ["node", "status", "config", "share", "download-to"] {
        assert!(out.contains(cmd), "help lacks {cmd}: {out}");
    }
    let (code, out, _) = run(iwant(&dir.path().join("h")).args(["share", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("<PATH>"), "{out}");
    assert!(
        !dir.path().join("h").exists(),
        "help must not create a home"
    );
}

/// `iwant config --json | head -c 0`: output into a pipe nobody reads any more ends the command
/// quietly and successfully, without a panic. The pipe's read end is closed before the command
/// starts, so its first write fails for sure.
#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let dir = tmp();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = iwant(&dir.path().join("h"))
        .args(["config", "--json"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn status_without_a_node_says_it_is_not_running_and_how_to_start_it() {
    let dir = tmp();
    let home = dir.path().join("h");
    for args in [&["status"][..], &["status", "--json"][..]] {
        let (code, out, err) = run(iwant(&home).args(args));
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("not running"), "{err}");
        assert!(
            err.contains(&format!("iwant node --home {}", home.display())),
            "{err}"
        );
        if args.len() == 1 {
            assert!(out.is_empty(), "nothing on stdout: {out}");
        } else {
            // With --json the error is a JSON document on stdout too.
            let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
            assert_eq!(doc["error"]["code"], "not_running", "{doc}");
            assert!(doc["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not running"));
        }
    }
    // Any failing command with --json: a bad id.
    let node = Daemon::start(&home, &[]);
    let (code, out, _) = run(iwant(&node.home).args(["get", "zzzz", "--json"]));
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["error"]["code"], "failed", "{doc}");
}

#[cfg(unix)]
#[test]
fn a_stale_socket_from_a_crashed_node_reads_as_not_running() {
    let dir = tmp();
    let home = dir.path().join("h");
    fs::create_dir_all(&home).unwrap();
    // A socket file nobody listens on, as a `kill -9`ed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(home.join("control.sock")).unwrap());
    let (code, _, err) = run(iwant(&home).arg("status"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not running"), "{err}");
    // And a node starts over it.
    let node = Daemon::start(&home, &[]);
    assert!(node.status()["peer_id"].is_string());
}

#[test]
fn home_can_come_from_the_environment() {
    let dir = tmp();
    let home = dir.path().join("from-env");
    let (code, out, err) = run(std::process::Command::new(crate::util::bin())
        .args(["share", "--create", dir.path().join("s").to_str().unwrap()])
        .env("IWANT_HOME", &home));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("not running"), "{out}");
    assert!(config_text(&home).contains(&*dir.path().join("s").display().to_string()));
}

#[test]
fn share_without_a_node_saves_the_config_and_says_so() {
    let dir = tmp();
    let home = dir.path().join("h");
    let target = dir.path().join("my share");
    let (code, out, err) = run(iwant(&home).args(["share", "--create"]).arg(&target));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("not running"), "{out}");
    assert!(target.is_dir(), "the folder is created");
    let (code, out, _) = run(iwant(&home).args(["config", "--json"]));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["shared_dir"], target.to_str().unwrap());
    assert_eq!(json["node_running"], false);
}

#[test]
fn share_takes_a_path_relative_to_the_callers_directory() {
    let dir = tmp();
    let home = dir.path().join("h");
    let (code, _, err) = run(iwant(&home)
        .args(["download-to", "--create", "rel-dl"])
        .current_dir(dir.path()));
    assert_eq!(code, 0, "{err}");
    assert!(config_text(&home).contains(&*dir.path().join("rel-dl").display().to_string()));
}

#[test]
fn folder_rules_are_enforced_without_a_node() {
    let dir = tmp();
    let home = dir.path().join("h");
    check_folder_rules(&home, dir.path());
}

#[test]
fn folder_rules_are_enforced_by_a_running_node() {
    let dir = tmp();
    let home = dir.path().join("h");
    let _node = Daemon::start(&home, &[]);
    check_folder_rules(&home, dir.path());
}

/// Same, nested both ways and unusable folders: refused, non-zero, both paths named, and the
/// config left as it was.
fn check_folder_rules(home: &Path, scratch: &Path) {
    // Apart from the home: a folder containing the home is refused for that reason.
    let scratch = &scratch.join("folders");
    let shared = scratch.join("shared");
    let download = scratch.join("download");
    let (code, _, err) = run(iwant(home).args(["share", "--create"]).arg(&shared));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(iwant(home).args(["download-to", "--create"]).arg(&download));
    assert_eq!(code, 0, "{err}");
    let before = config_text(home);

    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        ("download-to", shared.clone(), "same folder"),
        ("share", download.clone(), "same folder"),
        ("download-to", shared.join("inner"), "may not be nested"),
        ("share", download.join("inner"), "may not be nested"),
        ("share", scratch.to_path_buf(), "may not be nested"),
    ];
    for (cmd, path, expect) in cases {
        let (code, out, err) = run(iwant(home).arg(cmd).arg(&path));
        assert_ne!(code, 0, "{cmd} {} must fail: {out}", path.display());
        assert!(err.contains(expect), "{cmd} {}: {err}", path.display());
        let other = if cmd == "share" { &download } else { &shared };
        assert!(
            err.contains(&*path.display().to_string()),
            "names the new path: {err}"
        );
        assert!(
            err.contains(&*other.display().to_string())
                || err.contains(&*scratch.display().to_string()),
            "names the other folder: {err}"
        );
        assert_eq!(
            config_text(home),
            before,
            "config unchanged after {cmd} {}",
            path.display()
        );
    }

    let file = scratch.join("a-file");
    fs::write(&file, "x").unwrap();
    for path in [file.clone(), file.join("below")] {
        let (code, _, err) = run(iwant(home).arg("share").arg(&path));
        assert_ne!(code, 0);
        assert!(
            err.contains("is a file, not a folder") && err.contains(&*path.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(config_text(home), before);
}

#[test]
fn running_node_applies_folder_changes_at_once_and_persists_them() {
    let dir = tmp();
    let home = dir.path().join("h");
    let node = Daemon::start(&home, &[]);
    let new_share = dir.path().join("new-share");
    let (code, out, err) = run(iwant(&home).args(["share", "--create"]).arg(&new_share));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("uses the new shared folder now"), "{out}");
    assert_eq!(node.status()["shared_dir"], new_share.to_str().unwrap());
    let status = node.terminate();
    assert!(status.success(), "graceful exit: {status}");
    assert!(config_text(&home).contains(&*new_share.display().to_string()));
    let node = Daemon::start(&home, &[]);
    assert_eq!(node.status()["shared_dir"], new_share.to_str().unwrap());
}

#[test]
fn first_run_creates_the_home_and_says_where_things_are() {
    let dir = tmp();
    let home = dir.path().join("fresh");
    let node = Daemon::start(&home, &[]);
    let status = node.status();
    assert_eq!(status["home"], home.to_str().unwrap());
    assert_eq!(status["shared_dir"], home.join("shared").to_str().unwrap());
    assert_eq!(
        status["download_dir"],
        home.join("downloads").to_str().unwrap()
    );
    assert!(status["listen_addrs"][0]
        .as_str()
        .unwrap()
        .starts_with("/ip4/127.0.0.1/tcp/"));
    for file in ["config.toml", "identity.key", "iwant.db", "control.sock"] {
        assert!(home.join(file).exists(), "{file} exists");
    }
    let out = fs::read_to_string(home.join("node.out")).unwrap();
    assert!(out.contains("Created a new node"), "{out}");
    assert!(
        out.contains(&*home.join("shared").display().to_string()),
        "{out}"
    );
    assert!(
        out.contains("iwant --home"),
        "says how to change folders: {out}"
    );
    // What to do next, with a command that works here: this binary is not on the PATH, so
    // its full path.
    let exe = crate::util::bin().canonicalize().unwrap();
    assert!(
        out.contains(&format!(
            "{} --home {} search <words>",
            exe.display(),
            home.display()
        )),
        "{out}"
    );
    let peer_id = status["peer_id"].as_str().unwrap().to_owned();
    assert!(node.terminate().success());
    assert!(
        !home.join("control.sock").exists(),
        "socket removed at shutdown"
    );
    // The identity survives restarts.
    let node = Daemon::start(&home, &[]);
    assert_eq!(node.status()["peer_id"], peer_id.as_str());
    let out = fs::read_to_string(home.join("node.out")).unwrap();
    assert!(!out.contains("Created a new node"), "{out}");
}

#[test]
fn a_second_node_on_the_same_home_is_refused() {
    let dir = tmp();
    let home = dir.path().join("h");
    let node = Daemon::start(&home, &[]);
    let (code, _, err) =
        run(iwant(&home).args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]));
    assert_ne!(code, 0);
    assert!(err.contains("already running"), "{err}");
    // The first one is unharmed.
    assert!(node.status()["peer_id"].is_string());
}

#[test]
fn bad_multiaddrs_are_refused() {
    let dir = tmp();
    let home = dir.path().join("h");
    for (flag, value) in [
        ("--listen", "not-an-address"),
        ("--peer", "/ip4/1.2.3/tcp/1"),
        ("--peer", "10.0.0.1"),
        ("--listen", "70000"),
    ] {
        let (code, _, err) = run(iwant(&home).args(["node", "--no-mdns", flag, value]));
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")),
            "{err}"
        );
        // Each error shows how to write one.
        assert!(err.contains(":4747`"), "{err}");
    }
    // Well-formed but unusable: not an address of this machine, or not TCP.
    for value in ["/ip4/192.0.2.1/tcp/0", "/ip4/127.0.0.1/udp/0"] {
        let (code, _, err) = run(iwant(&home).args(["node", "--no-mdns", "--listen", value]));
        assert_eq!(code, 1, "{value}: {err}");
        assert!(err.contains(&format!("cannot listen on {value}")), "{err}");
        assert!(!home.join("control.sock").exists());
    }
}

#[test]
fn a_taken_listen_address_is_an_error_naming_it() {
    let dir = tmp();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("/ip4/127.0.0.1/tcp/{}", taken.local_addr().unwrap().port());
    let (code, _, err) =
        run(iwant(&dir.path().join("h")).args(["node", "--no-mdns", "--listen", &addr]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[cfg(unix)]
mod other_users {
    //! The control channel refuses every user but the node's own. Needs root (to act as
    //! `nobody`); CI runs as root, elsewhere these skip with one line.

    use std::{os::unix::process::CommandExt, path::Path};

    use super::*;

    const NOBODY: u32 = 65534;

    fn can_run(test: &str) -> bool {
        crate::util::root_or_skip(test, "act as another user")
    }

    /// A directory that `nobody` can reach and own.
    fn world_reachable_dir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("iwant-users")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    /// A home directory below `dir` that `nobody` owns.
    fn nobody_home(dir: &Path) -> std::path::PathBuf {
        let home = dir.join("h");
        fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
        home
    }

    /// `iwant node` running as `nobody` (root namespace, so mDNS off); killed when dropped.
    struct NobodyNode(std::process::Child);

    impl NobodyNode {
        fn start(home: &Path) -> Self {
            let child = iwant(home)
                .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
                .uid(NOBODY)
                .gid(NOBODY)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            Self(child)
        }

        fn kill(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for NobodyNode {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn as_nobody(home: &Path, args: &[&str]) -> (i32, String, String) {
        let mut cmd = iwant(home);
        cmd.args(args).uid(NOBODY).gid(NOBODY);
        run(&mut cmd)
    }

    #[test]
    fn another_user_cannot_reach_the_control_socket() {
        if !can_run("another_user_cannot_reach_the_control_socket") {
            return;
        }
        let dir = world_reachable_dir();
        let home = dir.path().join("h");
        let node = Daemon::start(&home, &[]);
        let (code, out, err) = as_nobody(&home, &["status", "--json"]);
        assert_ne!(code, 0, "must be refused: {out}");
        // Only the error, as JSON: nothing of the node's status.
        let doc: serde_json::Value = serde_json::from_str(&out).expect("a JSON error");
        assert_eq!(
            doc.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["error"]
        );
        assert!(err.contains("permission denied"), "{err}");
        let (code, _, err) = as_nobody(&home, &["share", "/tmp"]);
        assert_ne!(code, 0);
        assert!(!err.is_empty());
        assert!(
            !config_text(&home).contains("shared_dir = \"/tmp\""),
            "unchanged"
        );
        assert!(node.status()["peer_id"].is_string());
    }

    #[test]
    fn unreadable_files_are_reported_and_the_rest_is_indexed() {
        use std::os::unix::fs::PermissionsExt;
        if !can_run("unreadable_files_are_reported_and_the_rest_is_indexed") {
            return;
        }
        // The node runs as `nobody`, so a root-owned file of mode 000 is really unreadable.
        let dir = world_reachable_dir();
        let home = nobody_home(dir.path());
        let share = dir.path().join("share");
        fs::create_dir(&share).unwrap();
        fs::set_permissions(&share, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(share.join("ok.txt"), b"readable").unwrap();
        fs::set_permissions(share.join("ok.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(share.join("secret.txt"), b"not for you").unwrap();
        fs::set_permissions(share.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
        let (code, _, err) = as_nobody(&home, &["share", share.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let mut child = NobodyNode::start(&home);
        let listed =
            crate::util::wait_for(std::time::Duration::from_secs(20), "the first scan", || {
                let (code, out, _) = as_nobody(&home, &["status", "--json"]);
                let status: serde_json::Value = serde_json::from_str(&out).ok()?;
                (code == 0 && status["index"]["ready"] == true).then_some(status)
            });
        let (_, errors, _) = as_nobody(&home, &["ls", "--errors", "--json"]);
        let (_, entries, _) = as_nobody(&home, &["ls", "--json"]);
        child.kill();
        assert_eq!(listed["index"]["files"], 1, "{listed}");
        assert_eq!(listed["index"]["errors"], 1, "{listed}");
        let errors: serde_json::Value = serde_json::from_str(&errors).unwrap();
        assert_eq!(errors[0]["path"], "secret.txt", "{errors}");
        assert!(
            errors[0]["reason"]
                .as_str()
                .unwrap()
                .contains("ermission denied"),
            "{errors}"
        );
        assert!(
            entries.contains("ok.txt") && !entries.contains("secret.txt"),
            "{entries}"
        );
    }

    #[test]
    fn a_node_refuses_clients_running_as_another_user() {
        if !can_run("a_node_refuses_clients_running_as_another_user") {
            return;
        }
        // The node runs as `nobody`; root can open any file, so only the server's peer
        // credential check stands between root and the node.
        let dir = world_reachable_dir();
        let home = nobody_home(dir.path());
        let mut child = NobodyNode::start(&home);
        let err = crate::util::wait_for(
            std::time::Duration::from_secs(20),
            "the nobody node to listen",
            || {
                let (code, _, err) = run(iwant(&home).args(["status"]));
                (code != 3).then_some((code, err))
            },
        );
        child.kill();
        assert_ne!(err.0, 0, "root must be refused");
        assert!(
            err.1
                .contains("only the user who runs this iwant node may control it"),
            "{}",
            err.1
        );
    }
}

#[test]
fn ls_lists_shared_files_with_the_ids_b3sum_prints() {
    let dir = tmp();
    let home = dir.path().join("h");
    let node = Daemon::start(&home, &[]);
    let share = home.join("shared");
    fs::create_dir_all(share.join("docs")).unwrap();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(share.join("docs/report.bin"), &data).unwrap();
    let entries = crate::util::wait_for(
        std::time::Duration::from_secs(10),
        "the file in `ls`",
        || {
            let (code, out, _) = run(iwant(&home).args(["ls", "--json"]));
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let has = v.as_array()?.iter().any(|e| e["path"] == "docs/report.bin");
            (code == 0 && has).then_some(v)
        },
    );
    let file = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "docs/report.bin")
        .unwrap();
    assert_eq!(file["kind"], "file");
    assert_eq!(file["size"], 700_000);
    let id = file["id"].as_str().unwrap();
    assert_eq!(id, blake3::hash(&data).to_hex().as_str());
    match std::process::Command::new("b3sum")
        .arg(share.join("docs/report.bin"))
        .output()
    {
        Ok(out) => {
            let printed = String::from_utf8_lossy(&out.stdout);
            assert_eq!(printed.split_whitespace().next(), Some(id), "b3sum agrees");
        }
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => panic!("b3sum is missing in CI"),
        Err(_) => eprintln!("skipping the b3sum comparison: b3sum is not installed"),
    }
    let dirs: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dir")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["", "docs"]);

    let (code, out, _) = run(iwant(&home).arg("ls"));
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("file   683.6 KiB  {}  docs/report.bin", &id[..16])),
        "{out}"
    );
    let (code, out, _) = run(iwant(&home).args(["ls", "--errors"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("Every entry of the shared folder is indexed"),
        "{out}"
    );
    // One folder of the share (not the share itself, "").
    for path in ["docs", "docs/", "./docs"] {
        let (code, out, err) = run(iwant(&home).args(["ls", path, "--json"]));
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let paths: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["docs", "docs/report.bin"], "{path}");
    }
    let (code, _, err) = run(iwant(&home).args(["ls", "doc"]));
    assert_eq!(code, 1);
    assert!(err.contains("nothing shared at \"doc\""), "{err}");
    let status = node.status();
    assert_eq!(status["index"]["files"], 1);
    assert_eq!(status["index"]["ready"], true);
    let (_, out, _) = run(iwant(&home).arg("status"));
    assert!(
        out.contains("Index:            1 file, 2 directories, 683.6 KiB"),
        "{out}"
    );
}

#[test]
fn ls_without_a_node_says_it_is_not_running() {
    let dir = tmp();
    let (code, _, err) = run(iwant(&dir.path().join("h")).arg("ls"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not running"), "{err}");
}

mod private_network {
    //! `iwant keygen` and `--network-key` on loopback; the lab test
    //! (`lab::private`) runs the same with real mDNS and four nodes.

    use std::time::Duration;

    use super::*;
    use crate::util::wait_for;

    const LIMIT: Duration = Duration::from_secs(30);

    fn log(home: &Path) -> String {
        fs::read_to_string(home.join("node.err")).unwrap_or_default()
    }

    #[test]
    fn keygen_refuses_to_overwrite_and_the_node_refuses_a_bad_key_file() {
        let dir = tmp();
        let home = dir.path().join("h");
        let key = dir.path().join("k").join("net.key");
        let (code, out, err) = run(iwant(&home).args(["keygen", key.to_str().unwrap()]));
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("Fingerprint:") && out.contains("--network-key"),
            "{out}"
        );
        let before = fs::read(&key).unwrap();
        let (code, _, err) = run(iwant(&home).args(["keygen", key.to_str().unwrap()]));
        assert_eq!(code, 1);
        assert!(
            err.contains("exists already") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(fs::read(&key).unwrap(), before, "not overwritten");
        let (code, _, err) = run(iwant(&home).args(["keygen", key.to_str().unwrap(), "--force"]));
        assert_eq!(code, 0, "{err}");
        assert_ne!(fs::read(&key).unwrap(), before, "replaced with --force");

        let bad = dir.path().join("bad.key");
        fs::write(&bad, "not a key\n").unwrap();
        for (file, says) in [
            (bad.as_path(), "is not a network key file"),
            (
                &dir.path().join("missing.key"),
                "cannot read the network key",
            ),
        ] {
            let (code, _, err) = run(iwant(&home).args([
                "node",
                "--no-mdns",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--network-key",
                file.to_str().unwrap(),
            ]));
            assert_eq!(code, 1, "{err}");
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn nodes_with_the_same_key_connect_and_a_node_without_it_cannot() {
        let dir = tmp();
        let key = dir.path().join("net.key");
        let (code, _, err) =
            run(iwant(&dir.path().join("k")).args(["keygen", key.to_str().unwrap()]));
        assert_eq!(code, 0, "{err}");
        let key = key.to_str().unwrap();
        let a = Daemon::start(&dir.path().join("a"), &["--network-key", key]);
        let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
        let b = Daemon::start(
            &dir.path().join("b"),
            &["--network-key", key, "--peer", &addr],
        );
        let open = Daemon::start(&dir.path().join("open"), &["--peer", &addr]);
        let a_id = a.status()["peer_id"].as_str().unwrap().to_owned();
        wait_for(LIMIT, "the keyed nodes connect", || {
            let peers = crate::util::peer_ids(&b.status());
            (peers == [a_id.clone()]).then_some(())
        });
        wait_for(LIMIT, "both sides log the failed handshake", || {
            (log(&open.home).contains("this node needs the same key file")
                && log(&a.home).contains("this node runs a private network"))
            .then_some(())
        });
        assert!(crate::util::peer_ids(&open.status()).is_empty());
        let b_id = b.status()["peer_id"].as_str().unwrap().to_owned();
        assert_eq!(crate::util::peer_ids(&a.status()), vec![b_id]);
        let fingerprint = a.status()["network_key"].as_str().unwrap().to_owned();
        assert_eq!(
            b.status()["network_key"].as_str(),
            Some(fingerprint.as_str())
        );
        assert!(open.status()["network_key"].is_null());
    }
}

/// `--peer ip:port` and `--listen ip:port` work as the multiaddrs they stand for; the nodes
/// show each other by name (set with `iwant name` before and while running).
#[test]
fn peers_by_ip_and_port_connect_and_show_each_others_names() {
    let dir = tmp();
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    let (code, out, err) = run(iwant(&home_a).args(["name", "  alice\u{1b}[31m  "]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Saved: this node is called alice[31m from its next start"),
        "{out}"
    );
    let (_, out, _) = run(iwant(&home_b).args(["name", "bob"]));
    assert!(out.contains("called bob"), "{out}");
    let first = Daemon::start(&home_a, &[]);
    let addr = first.status()["listen_addrs"][0]
        .as_str()
        .expect("the node listens")
        .to_owned();
    let port = addr.rsplit('/').next().unwrap();
    let second = Daemon::start(
        &home_b,
        &[
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ],
    );
    assert_eq!(second.status()["listen_addrs"].as_array().unwrap().len(), 2);
    let (_, out, _) = run(iwant(&home_a).arg("name"));
    assert_eq!(out.trim(), "alice[31m");
    // Each shows the other's name, in --json and in the text.
    crate::util::wait_for(
        std::time::Duration::from_secs(20),
        "each node to know the other's name",
        || {
            let (a, b) = (first.status(), second.status());
            (a["peers"][0]["name"] == "bob" && b["peers"][0]["name"] == "alice[31m").then_some(())
        },
    );
    let (_, text, _) = run(iwant(&home_a).arg("status"));
    assert!(text.contains("Name:             alice[31m"), "{text}");
    assert!(text.contains("\n  bob  127.0.0.1  rtt "), "{text}");
    // A new name while running is saved; peers see it after a restart.
    let (code, out, err) = run(iwant(&home_b).args(["name", "bob-laptop"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("now called bob-laptop; peers see the new name once the node restarts (until then: bob)"), "{out}");
    assert!(config_text(&home_b).contains("name = \"bob-laptop\""));
    assert_eq!(second.status()["next_name"], "bob-laptop");
    let (_, text, _) = run(iwant(&home_b).arg("status"));
    assert!(
        text.contains("Name:             bob (bob-laptop from the node's next start)"),
        "{text}"
    );
    let (code, _, err) = run(iwant(&home_b).args(["name", " \t "]));
    assert_eq!(code, 1);
    assert!(err.contains("at least one visible character"), "{err}");
    drop(second);
    let second = Daemon::start(&home_b, &["--peer", &format!("127.0.0.1:{port}")]);
    assert_eq!(second.status()["name"], "bob-laptop");
    assert!(second.status()["next_name"].is_null());
    crate::util::wait_for(
        std::time::Duration::from_secs(20),
        "the first node to see the new name",
        || (first.status()["peers"][0]["name"] == "bob-laptop").then_some(()),
    );
}

/// Shell completions and the manual page come from the binary itself, without a home.
#[test]
fn completions_and_the_manual_page_generate_without_a_home() {
    let dir = tmp();
    let home = dir.path().join("h");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef iwant"),
        ("fish", "complete -c iwant"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, out, err) = run(iwant(&home).args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        // Subcommands are completed.
        assert!(out.contains("download-to"), "{shell}");
    }
    let (code, _, err) = run(iwant(&home).args(["completions", "tcsh"]));
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run(iwant(&home).arg("man"));
    assert_eq!(code, 0);
    assert!(out.starts_with(".ie") || out.contains(".TH iwant"), "{out}");
    assert!(out.contains("download\\-to"), "{out}");
    let pages = dir.path().join("man1");
    let (code, _, err) = run(iwant(&home).args(["man", "--dir"]).arg(&pages));
    assert_eq!(code, 0, "{err}");
    for page in ["iwant.1", "iwant-get.1", "iwant-search.1"] {
        assert!(pages.join(page).is_file(), "{page}");
    }
    assert!(!home.exists(), "completions and man must not create a home");
}

/// The file you picked: a download is named as the row `iwant search` showed (not as another
/// holder names the same content), `get <words>` offers the matches, content this node has is
/// not fetched again unless `--again`, and `--as`/`-o` name and place it. Then, in a real
/// terminal (tmux), what a person sees of a `get` that stalls: the bar, 0 B/s, who it fetches
/// from; and the line at the end.
#[cfg(unix)]
#[test]
fn a_download_is_named_as_picked_and_a_terminal_shows_honest_progress() {
    use std::time::Duration;

    use crate::util::{configured_home, wait_for};

    let dir = tmp();
    let (home_a, share_a, _) = configured_home(&dir.path().join("a"));
    let (home_b, share_b, _) = configured_home(&dir.path().join("b"));
    let (home_c, share_c, downloads_c) = configured_home(&dir.path().join("c"));
    for (home, name) in [(&home_a, "alice"), (&home_b, "bob"), (&home_c, "carol")] {
        assert_eq!(run(iwant(home).args(["name", name])).0, 0);
    }
    let movie: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let id = blake3::hash(&movie).to_hex().to_string();
    fs::write(share_a.join("Spirited Away (2001) 1080p.mkv"), &movie).unwrap();
    fs::write(share_b.join("spirited_away.mkv"), &movie).unwrap();
    // A big file only alice has, for the terminal part.
    let big: Vec<u8> = (0..(96u32 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let big_id = blake3::hash(&big).to_hex().to_string();
    fs::write(share_a.join("big game.iso"), &big).unwrap();
    drop(big);

    let a = Daemon::start(&home_a, &[]);
    let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
    let _b = Daemon::start(&home_b, &["--peer", &addr]);
    let c = Daemon::start(&home_c, &["--peer", &addr]);
    let limit = Duration::from_secs(30);
    let search = |words: &str| {
        let (code, out, _) = run(iwant(&home_c).args(["search", words, "--json"]));
        (code == 0).then(|| serde_json::from_str::<serde_json::Value>(&out).unwrap())
    };
    let shown = wait_for(limit, "carol to find both holders by name", || {
        let r = search("spirited")?;
        let row = &r["results"][0];
        let names = row["holder_names"].as_array()?.clone();
        (row["holder_count"] == 2 && names.len() == 2 && !names[0].as_str()?.starts_with('…'))
            .then(|| row["name"].as_str().unwrap().to_owned())
    });
    wait_for(limit, "carol to find the big file", || {
        search("game").filter(|r| r["results"][0]["id"] == big_id.as_str())
    });
    // The name the search showed, whatever the other holder calls it.
    let (code, out, err) = run(iwant(&home_c).args(["get", &id[..12], "--json"]));
    assert_eq!(code, 0, "{err}");
    let done: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        done["path"],
        downloads_c.join(&shown).to_str().unwrap(),
        "{out}"
    );
    // Words: the matches, and how to get one (no terminal here).
    let (code, _, err) = run(iwant(&home_c).args(["get", "spirited", "away"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("\"spirited away\" is not an id; it matches 1 entry"),
        "{err}"
    );
    assert!(
        err.contains(&id[..12]) && err.contains("iwant get <ID>"),
        "{err}"
    );
    // A word that is also hex and starts no id is searched for too (`get cafe` finds
    // `Café Müller.txt`); here nothing matches either way.
    let (code, _, err) = run(iwant(&home_c).args(["get", "cafe"]));
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "no node shares anything with an id starting with cafe, and no name matches it"
        ),
        "{err}"
    );
    // Carol has it now: nothing is fetched.
    let (code, out, err) = run(iwant(&home_c).args(["get", &id[..12]]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "You have it already: {}",
            downloads_c.join(&shown).display()
        )),
        "{out}"
    );
    // --again, under a name and in a folder of the user's choice.
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let (code, _, err) = run(iwant(&home_c)
        .args(["get", &id[..12], "--again", "--as", "my copy.mkv", "-o"])
        .arg(&elsewhere));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(elsewhere.join("my copy.mkv")).unwrap(), movie);
    // Not into the shared folder, and not a path as a name.
    let (code, _, err) = run(iwant(&home_c)
        .args(["get", &id[..12], "--again", "-o"])
        .arg(&share_c));
    assert_eq!(code, 1);
    assert!(err.contains("shared folder"), "{err}");
    let (code, _, err) = run(iwant(&home_c).args(["get", &id[..12], "--again", "--as", "../x"]));
    assert_eq!(code, 1);
    assert!(err.contains("cannot be a file name"), "{err}");

    // In a terminal: alice stops answering (SIGSTOP) once the big download runs.
    let has_tmux = std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tmux {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have tmux (.ci/run installs it)"
        );
        println!("skipping the terminal part of this test: no tmux");
        return;
    }
    let session = format!("iwant-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .output()
            .expect("tmux runs")
    };
    struct KillSession<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for KillSession<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let _cleanup = KillSession(&tmux);
    let command = format!(
        "{} --home {} get {}; echo EXIT=$?; sleep 60",
        crate::util::bin().display(),
        home_c.display(),
        &big_id[..12]
    );
    let started = tmux(&["new-session", "-d", "-x", "160", "-y", "10", &command]);
    assert!(started.status.success(), "{started:?}");
    let progress = |p: &serde_json::Value| p["bytes_done"].as_u64().unwrap_or(0);
    wait_for(limit, "the big download to start arriving", || {
        let s = c.status();
        let d = s["downloads"]
            .as_array()?
            .iter()
            .find(|d| d["id"] == big_id.as_str())?
            .clone();
        (progress(&d) > 0).then_some(())
    });
    unsafe {
        libc::kill(a.pid() as i32, libc::SIGSTOP);
    }
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            unsafe {
                libc::kill(self.0 as i32, libc::SIGCONT);
            }
        }
    }
    let resume = Resume(a.pid());
    let pane = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let screen = wait_for(limit, "the bar to show the stall", || {
        let s = pane();
        // Some bytes arrived, and none for a while.
        (s.contains("/96.00 MiB 0 B/s") && !s.contains(" 0 B/96.00 MiB")).then_some(s)
    });
    // A bar is drawn (its head is at the start while under 1/30 has arrived).
    assert!(
        screen.contains("big game.iso [") && (screen.contains("=>") || screen.contains("[>")),
        "{screen}"
    );
    assert!(!screen.contains("EXIT="), "{screen}");
    drop(resume);
    let screen = wait_for(limit, "the download to end in the terminal", || {
        let s = pane();
        s.contains("EXIT=").then_some(s)
    });
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains(&format!(
            "Downloaded big game.iso (96.0 MiB) to {}",
            downloads_c.join("big game.iso").display()
        )),
        "{screen}"
    );
}

/// Two nodes on loopback: `a` shares a 256 MiB file, `b` downloads it; `a` is stopped
/// (SIGSTOP) once some bytes arrived and `b`'s node says 0 B/s. The returned guard lets `a` go
/// on when dropped.
#[cfg(unix)]
struct Stalled {
    _dir: tempfile::TempDir,
    a: Daemon,
    b: Daemon,
    home_b: std::path::PathBuf,
    file: std::path::PathBuf,
    id: String,
    total: u64,
    /// What `b`'s node showed once stalled.
    progress: serde_json::Value,
}

#[cfg(unix)]
impl Stalled {
    fn start() -> Stalled {
        use std::{
            io::{BufRead, Write},
            process::Stdio,
            time::Duration,
        };

        use crate::util::{configured_home, wait_for};

        let dir = tmp();
        let (home_a, share_a, _) = configured_home(&dir.path().join("a"));
        let (home_b, _, _) = configured_home(&dir.path().join("b"));
        let file = share_a.join("big.bin");
        let total: u64 = 256 << 20;
        let mut hasher = blake3::Hasher::new();
        let mut out = std::io::BufWriter::new(fs::File::create(&file).unwrap());
        for chunk in 0..(total >> 20) as u32 {
            let bytes: Vec<u8> = (0..(1u32 << 18))
                .flat_map(|i| {
                    (i ^ chunk.wrapping_mul(0x9e37_79b9))
                        .wrapping_mul(2_654_435_761)
                        .to_le_bytes()
                })
                .collect();
            hasher.update(&bytes);
            out.write_all(&bytes).unwrap();
        }
        out.into_inner().unwrap().sync_all().unwrap();
        let id = hasher.finalize().to_hex().to_string();
        let a = Daemon::start(&home_a, &[]);
        let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
        let b = Daemon::start(&home_b, &["--peer", &addr]);
        let limit = Duration::from_secs(60);
        wait_for(limit, "b to find the file", || {
            let (code, out, _) = run(iwant(&home_b).args(["search", "big", "--json"]));
            (code == 0 && out.contains(&id)).then_some(())
        });
        // Follow the download, and stop `a` at the first line that shows bytes.
        let mut follower = iwant(&home_b)
            .args(["get", &id, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = std::io::BufReader::new(follower.stdout.take().unwrap()).lines();
        for line in lines {
            let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            assert_ne!(
                line["event"], "done",
                "the download ended before it could be stalled"
            );
            if line["bytes_done"].as_u64().unwrap_or(0) > 0 {
                break;
            }
        }
        unsafe {
            libc::kill(a.pid() as i32, libc::SIGSTOP);
        }
        let _ = follower.kill();
        let _ = follower.wait();
        let progress = wait_for(limit, "b's node to show the stall", || {
            let s = b.status();
            let d = s["downloads"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == id.as_str())?
                .clone();
            (d["rate"] == 0 && d["bytes_done"].as_u64()? > 0).then_some(d)
        });
        assert!(
            progress["bytes_done"].as_u64().unwrap() < total,
            "{progress}"
        );
        assert!(progress["eta_ms"].is_null(), "{progress}");
        Stalled {
            _dir: dir,
            a,
            b,
            home_b,
            file,
            id,
            total,
            progress,
        }
    }

    /// Lets `a` go on.
    fn resume(&self) {
        unsafe {
            libc::kill(self.a.pid() as i32, libc::SIGCONT);
        }
    }
}

#[cfg(unix)]
impl Drop for Stalled {
    fn drop(&mut self) {
        self.resume();
    }
}

/// Re-attaching to a running download shows the node's numbers (what arrived, 0 B/s while
/// stalled), and its end tells the node's time for the download, not the time it was watched.
#[cfg(unix)]
#[test]
fn reattaching_to_a_download_shows_the_nodes_numbers() {
    use std::io::BufRead;
    use std::process::Stdio;

    let stalled = Stalled::start();
    let stalled_since = std::time::Instant::now();
    // Let the stall last, so the node's time and a watcher's differ by seconds.
    let mut watcher = iwant(&stalled.home_b)
        .args(["get", &stalled.id[..16], "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "progress", "{first}");
    assert_eq!(
        first["bytes_done"], stalled.progress["bytes_done"],
        "{first}"
    );
    assert_eq!(first["bytes_total"], stalled.total, "{first}");
    assert_eq!(first["rate"], 0, "{first}");
    assert!(first["eta_ms"].is_null(), "{first}");
    let stalled_for = stalled_since.elapsed();
    let reattached = std::time::Instant::now();
    stalled.resume();
    let mut last = first;
    for line in lines {
        last = serde_json::from_str(&line.unwrap()).unwrap();
    }
    let watched = reattached.elapsed();
    assert!(watcher.wait().unwrap().success());
    assert_eq!(last["event"], "done", "{last}");
    // The node's elapsed time covers the stall before the watcher came.
    let elapsed = std::time::Duration::from_millis(last["elapsed_ms"].as_u64().unwrap());
    assert!(
        elapsed >= watched + stalled_for,
        "node: {elapsed:?}, watched {watched:?} after a stall of {stalled_for:?}"
    );
    assert_eq!(
        blake3::hash(&fs::read(last["path"].as_str().unwrap()).unwrap())
            .to_hex()
            .as_str(),
        stalled.id
    );
}

/// A download whose content changed at its only holder ends, once the holder said it no
/// longer has it and nobody else does, with "no longer shared by anyone; search again".
#[cfg(unix)]
#[test]
fn a_download_whose_source_changed_ends_saying_so() {
    use std::io::{Seek, Write};

    use crate::util::wait_for;

    let stalled = Stalled::start();
    // The holder's file changes while it is stopped: one byte in the middle.
    let mut f = fs::File::options().write(true).open(&stalled.file).unwrap();
    f.seek(std::io::SeekFrom::Start(stalled.total / 2)).unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let started = std::time::Instant::now();
    stalled.resume();
    let ended = wait_for(
        std::time::Duration::from_secs(90),
        "the download to end",
        || {
            let s = stalled.b.status();
            let d = s["downloads"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == stalled.id.as_str())?
                .clone();
            (d["state"] == "failed").then_some(d)
        },
    );
    let message = ended["message"].as_str().unwrap();
    assert!(
        message.contains("no longer shared by anyone") && message.contains("search again"),
        "{ended}"
    );
    // Not before every holder said so and the documented wait passed.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // `cancel` agrees that it ended, and how.
    let (code, _, err) = run(iwant(&stalled.home_b).args(["cancel", &stalled.id[..16]]));
    assert_eq!(code, 1);
    assert!(err.contains("no longer shared"), "{err}");
}

/// In a desktop session, a node tells of a finished download with `notify-send` (here a
/// script that writes down its arguments).
#[cfg(target_os = "linux")]
#[test]
fn a_finished_download_is_announced_on_the_desktop() {
    use std::{os::unix::fs::PermissionsExt, time::Duration};

    use crate::util::{configured_home, wait_for};

    let dir = tmp();
    let (home_a, share_a, _) = configured_home(&dir.path().join("a"));
    let (home_b, _, downloads_b) = configured_home(&dir.path().join("b"));
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let said = dir.path().join("notified");
    let script = bin.join("notify-send");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}'\n",
            said.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(share_a.join("song <1>.mp3"), b"la la").unwrap();
    let a = Daemon::start(&home_a, &[]);
    let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
    let path = std::env::join_paths(
        std::iter::once(bin.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let _b = Daemon::start_with_env(
        &home_b,
        &["--peer", &addr],
        &[
            ("PATH", std::path::Path::new(&path)),
            (
                "DBUS_SESSION_BUS_ADDRESS",
                std::path::Path::new("unix:path=/nowhere"),
            ),
        ],
    );
    let id = blake3::hash(b"la la").to_hex().to_string();
    wait_for(Duration::from_secs(30), "b to find the song", || {
        let (code, out, _) = run(iwant(&home_b).args(["search", "song", "--json"]));
        (code == 0 && out.contains(&id)).then_some(())
    });
    let (code, _, err) = run(iwant(&home_b).args(["get", &id]));
    assert_eq!(code, 0, "{err}");
    let text = wait_for(Duration::from_secs(10), "the notification", || {
        fs::read_to_string(&said)
            .ok()
            .filter(|t| t.lines().count() >= 5)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "--app-name=iwant",
            "--icon=folder-download",
            "--",
            "iwant: Download complete",
            &format!("song &lt;1&gt;.mp3 (5 B) is in {}", downloads_b.display()),
        ]
    );
}

/// `iwant ls --peer NODE [PATH]` lists what another node shares, found by its name or the end
/// of its id; a name nobody has lists who is there.
#[test]
fn another_nodes_share_is_listed_by_its_name() {
    use std::time::Duration;

    use crate::util::{configured_home, wait_for};

    let dir = tmp();
    let (home_a, share_a, _) = configured_home(&dir.path().join("a"));
    let (home_b, _, _) = configured_home(&dir.path().join("b"));
    assert_eq!(run(iwant(&home_a).args(["name", "alice"])).0, 0);
    fs::create_dir_all(share_a.join("music/album")).unwrap();
    fs::create_dir_all(share_a.join("docs")).unwrap();
    fs::write(share_a.join("music/album/01 intro.mp3"), b"la la").unwrap();
    fs::write(share_a.join("docs/plan.txt"), b"the plan").unwrap();
    let a = Daemon::start(&home_a, &[]);
    let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
    let alice_id = a.status()["peer_id"].as_str().unwrap().to_owned();
    let _b = Daemon::start(&home_b, &["--peer", &addr]);
    let limit = Duration::from_secs(30);
    let listing = wait_for(limit, "bob to list alice's files", || {
        let (code, out, _) = run(iwant(&home_b).args(["ls", "--peer", "ALICE", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (code == 0 && v["total"] == 6).then_some(v)
    });
    assert_eq!(listing["name"], "alice");
    assert_eq!(listing["peer"], alice_id.as_str());
    let paths: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "",
            "docs",
            "docs/plan.txt",
            "music",
            "music/album",
            "music/album/01 intro.mp3"
        ]
    );
    let plan = &listing["entries"][2];
    assert_eq!(plan["kind"], "file");
    assert_eq!(plan["size"], 8);
    assert_eq!(plan["id"], blake3::hash(b"the plan").to_hex().as_str());

    // One folder, by the end of alice's id, as a table.
    let end = &alice_id[alice_id.len() - 6..];
    let (code, out, err) = run(iwant(&home_b).args(["ls", "--peer", end, "music/"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("music/album/01 intro.mp3"), "{out}");
    assert!(!out.contains("plan.txt"), "{out}");

    let (code, _, err) = run(iwant(&home_b).args(["ls", "--peer", "alice", "films"]));
    assert_eq!(code, 1);
    assert!(err.contains("alice shares nothing at \"films\""), "{err}");
    let (code, _, err) = run(iwant(&home_b).args(["ls", "--peer", "carol"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("no connected node is called \"carol\"; connected: alice (…"),
        "{err}"
    );
}

/// The executable bit and the modification time travel with a file and with each file of a
/// folder (copies of the same content each keep their own), without changing any id.
#[cfg(unix)]
#[test]
fn the_executable_bit_and_file_times_travel_with_the_content() {
    use std::{
        os::unix::fs::PermissionsExt,
        time::{Duration, SystemTime, UNIX_EPOCH},
    };

    use crate::util::{configured_home, wait_for};

    let dir = tmp();
    let (home_a, share_a, _) = configured_home(&dir.path().join("a"));
    let (home_b, _, downloads_b) = configured_home(&dir.path().join("b"));
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let put = |rel: &str, bytes: &[u8], mode: u32, time: SystemTime| {
        let path = share_a.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    };
    put("run.sh", b"#!/bin/sh\necho hi\n", 0o755, at(978_307_200)); // 2001-01-01
    put(
        "tools/build.sh",
        b"#!/bin/sh\nmake\n",
        0o750,
        at(1_262_304_000),
    ); // 2010
    put("tools/notes.txt", b"same words", 0o644, at(1_104_537_600)); // 2005
    put("tools/copy.txt", b"same words", 0o600, at(1_136_073_600)); // 2006
    let a = Daemon::start(&home_a, &[]);
    let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
    let _b = Daemon::start(&home_b, &["--peer", &addr]);
    let limit = Duration::from_secs(30);
    let ids = wait_for(limit, "the files in `ls`", || {
        let (_, out, _) = run(iwant(&home_a).args(["ls", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let id = |path: &str| -> Option<String> {
            let e = v.as_array()?.iter().find(|e| e["path"] == path)?;
            Some(e["id"].as_str()?.to_owned())
        };
        Some((id("run.sh")?, id("tools")?, id("tools/copy.txt")?))
    });
    wait_for(limit, "bob to find the folder", || {
        let (code, out, _) = run(iwant(&home_b).args(["search", "tools", "--json"]));
        (code == 0 && out.contains(&ids.1)).then_some(())
    });
    for id in [&ids.0, &ids.1] {
        let (code, _, err) = run(iwant(&home_b).args(["get", id]));
        assert_eq!(code, 0, "{err}");
    }
    let check = |rel: &str, executable: bool, time: SystemTime| {
        let meta = fs::metadata(downloads_b.join(rel)).unwrap();
        let mode = meta.permissions().mode();
        assert_eq!(mode & 0o100 != 0, executable, "{rel}: mode {mode:o}");
        assert_eq!(mode & 0o7000, 0, "{rel}: no set-id bits, mode {mode:o}");
        assert_eq!(meta.modified().unwrap(), time, "{rel}");
    };
    check("run.sh", true, at(978_307_200));
    check("tools/build.sh", true, at(1_262_304_000));
    check("tools/notes.txt", false, at(1_104_537_600));
    check("tools/copy.txt", false, at(1_136_073_600));
    // The content, and so its id, is the same.
    assert_eq!(
        blake3::hash(&fs::read(downloads_b.join("tools/copy.txt")).unwrap())
            .to_hex()
            .as_str(),
        ids.2
    );
}

/// `iwant service install` writes a systemd user unit that runs this binary's node on this
/// home; where systemd is absent it says so (here: a PATH without `systemctl`); `uninstall`
/// removes it.
#[cfg(target_os = "linux")]
#[test]
fn service_install_writes_the_unit_and_says_when_systemd_is_absent() {
    let dir = tmp();
    let home = dir.path().join("h");
    let config = dir.path().join("config");
    let empty = dir.path().join("no-tools");
    fs::create_dir(&empty).unwrap();
    let service = |action: &str| {
        run(iwant(&home)
            .args(["service", action])
            .env("XDG_CONFIG_HOME", &config)
            .env("PATH", &empty))
    };
    let (code, out, err) = service("install");
    assert_eq!(code, 0, "{err}");
    let unit_path = config.join("systemd/user/iwant.service");
    assert!(
        out.contains(&format!(
            "Wrote the systemd user unit {}",
            unit_path.display()
        )),
        "{out}"
    );
    assert!(out.contains("systemd is not available here"), "{out}");
    let unit = fs::read_to_string(&unit_path).unwrap();
    let exe = crate::util::bin().canonicalize().unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart={} --home {} node\n",
            exe.display(),
            home.display()
        )),
        "{unit}"
    );
    assert!(
        unit.contains("\n[Install]\nWantedBy=default.target\n"),
        "{unit}"
    );
    let (code, out, _) = service("uninstall");
    assert_eq!(code, 0);
    assert!(out.contains("no longer starts at login"), "{out}");
    assert!(!unit_path.exists());
    let (_, out, _) = service("uninstall");
    assert!(out.contains("No service was installed"), "{out}");
}

/// `iwant node --detach` runs the node in the background (its own session, output in the
/// home's node.log) and returns once it answers; `iwant stop` stops it.
#[cfg(unix)]
#[test]
fn a_detached_node_runs_in_the_background_until_stop() {
    struct KillPid(i32);
    impl Drop for KillPid {
        fn drop(&mut self) {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let dir = tmp();
    let home = dir.path().join("h");
    let (code, out, err) =
        run(iwant(&home).args(["node", "--detach", "--no-mdns", "--listen", "127.0.0.1:0"]));
    assert_eq!(code, 0, "{err}");
    let pid: i32 = out
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out}"));
    let _guard = KillPid(pid);
    assert!(
        out.contains(&format!("its log is {}", home.join("node.log").display())),
        "{out}"
    );
    assert!(out.contains("stop"), "{out}");
    // It answers, in a session of its own (not the test's: a closed terminal does not end it).
    let (code, status, _) = run(iwant(&home).args(["status", "--json"]));
    assert_eq!(code, 0);
    assert!(status.contains("\"peer_id\""));
    assert_eq!(
        unsafe { libc::getsid(pid) },
        pid,
        "the node leads its own session"
    );
    let log = fs::read_to_string(home.join("node.log")).unwrap();
    assert!(
        log.contains("iwant node") && log.contains("is running"),
        "{log}"
    );
    let (code, out, err) = run(iwant(&home).arg("stop"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("Stopped the node (pid {pid})."));
    let (code, _, _) = run(iwant(&home).arg("status"));
    assert_eq!(code, 3, "the node is gone");
    crate::util::wait_for(
        std::time::Duration::from_secs(10),
        "the process to end",
        || {
            // A zombie until its parent (init) reaps it: gone or zombie both count.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        },
    );
    let (code, out, _) = run(iwant(&home).arg("stop"));
    assert_eq!(code, 0);
    assert!(out.contains("No node is running"), "{out}");
}
