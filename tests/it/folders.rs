//! Which folders `iwant share` and `iwant download-to` accept (issue 12), with and without a
//! running node, and a node whose shared folder is missing at start. The user's home is a
//! temporary folder (`HOME` of the processes): the real one is never shared.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::util::{iwant, run, Daemon};

/// A scratch place: a fake user home `users/me`, a node home `apps/h`, and the folders in
/// force `s` (shared) and `d` (download), all created, the config saved.
struct Place {
    _dir: tempfile::TempDir,
    root: PathBuf,
    user_home: PathBuf,
    home: PathBuf,
}

impl Place {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let user_home = root.join("users").join("me");
        let home = root.join("apps").join("h");
        for d in [&user_home, &root.join("s"), &root.join("d")] {
            fs::create_dir_all(d).unwrap();
        }
        let place = Self {
            _dir: dir,
            root,
            user_home,
            home,
        };
        for (cmd, dir) in [("share", "s"), ("download-to", "d")] {
            let (code, _, err) = run(place.cli().arg(cmd).arg(place.root.join(dir)));
            assert_eq!(code, 0, "{err}");
        }
        place
    }

    /// `iwant --home <home>` with the fake user home.
    fn cli(&self) -> Command {
        let mut cmd = iwant(&self.home);
        cmd.env("HOME", &self.user_home).current_dir(&self.root);
        cmd
    }

    fn config(&self) -> String {
        fs::read_to_string(self.home.join("config.toml")).unwrap()
    }

    /// Starts a node on this place, with the fake user home.
    fn node(&self) -> Daemon {
        Daemon::start_with_env(&self.home, &[], &[("HOME", &self.user_home)])
    }
}

/// Runs `iwant <args>` and checks it is refused with a message holding every piece of
/// `says`, and that nothing changed: the config, and no folder `not_created`.
fn refused(place: &Place, args: &[&str], says: &[&str], not_created: Option<&Path>) {
    let before = place.config();
    let (code, out, err) = run(place.cli().args(args));
    assert_eq!(code, 1, "iwant {args:?} must be refused: {out}{err}");
    assert!(out.is_empty(), "iwant {args:?}: nothing on stdout: {out}");
    for piece in says {
        assert!(
            err.contains(piece),
            "iwant {args:?}: expected {piece:?} in: {err}"
        );
    }
    assert_eq!(place.config(), before, "iwant {args:?} changed the config");
    if let Some(path) = not_created {
        assert!(!path.exists(), "iwant {args:?} created {}", path.display());
    }
}

/// Every refusal, its message, and that it changes nothing; then the same folders accepted
/// with `--force` / `--create`.
fn check_refusals(place: &Place) {
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let root = &place.root;

    let deep = root.join("nonexistent").join("deep").join("folder");
    for cmd in ["share", "download-to"] {
        refused(
            place,
            &[cmd, &s(&deep)],
            &[
                "does not exist; create it first or pass --create",
                &s(&deep),
            ],
            Some(&root.join("nonexistent")),
        );
    }

    // A quoted `~` reaches iwant unexpanded.
    for typed in ["~/Public", "~", "x/~/y"] {
        for flags in [&[][..], &["--create", "--force"][..]] {
            let args: Vec<&str> = ["share"]
                .iter()
                .chain(flags)
                .copied()
                .chain([typed])
                .collect();
            refused(
                place,
                &args,
                &[
                    "literal `~`",
                    "the shell did not expand it",
                    "without quotes",
                ],
                Some(&root.join("~")),
            );
        }
    }

    let file = root.join("notes.txt");
    fs::write(&file, b"x").unwrap();
    refused(
        place,
        &["share", &s(&file)],
        &["is a file, not a folder; share the folder that holds it"],
        None,
    );
    refused(
        place,
        &["download-to", "--create", &s(&file.join("below"))],
        &[
            &format!("{} is a file, not a folder", file.display()),
            "download into the folder that holds it",
        ],
        None,
    );

    for flags in [&[][..], &["--force", "--create"][..]] {
        let args: Vec<&str> = ["share"]
            .iter()
            .chain(flags)
            .copied()
            .chain(["/"])
            .collect();
        refused(
            place,
            &args,
            &["is the root of the file system", "not even with --force"],
            None,
        );
    }
    #[cfg(all(unix, not(target_os = "macos")))]
    for (path, says) in [
        ("/proc", "is the system folder /proc"),
        ("/etc", "is the system folder /etc"),
        ("/sys/kernel", "is inside the system folder /sys"),
        ("/usr/share", "is inside the system folder /usr"),
    ] {
        for cmd in ["share", "download-to"] {
            refused(
                place,
                &[cmd, "--force", path],
                &[says, "not even with --force"],
                None,
            );
        }
    }

    let me = s(&place.user_home);
    for cmd in ["share", "download-to"] {
        refused(
            place,
            &[cmd, &me],
            &["is your whole home folder", "pass --force"],
            None,
        );
    }
    refused(
        place,
        &["share", &s(&root.join("users"))],
        &["contains your home folder", &me, "pass --force"],
        None,
    );

    for cmd in ["share", "download-to"] {
        refused(
            place,
            &[cmd, "--force", &s(&place.home)],
            &["is this node's own home", "not even with --force"],
            None,
        );
    }
    refused(
        place,
        &["share", &s(&root.join("apps"))],
        &["contains this node's home", &s(&place.home), "pass --force"],
        None,
    );

    // The same folders, allowed: home with --force, a folder containing the node's home with
    // --force, a missing one with --create, a folder inside the node's home as it is.
    let accepted = |args: &[&str], shared: &Path| {
        let (code, out, err) = run(place.cli().args(args).arg("--json"));
        assert_eq!(code, 0, "iwant {args:?}: {err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["shared_dir"], s(shared), "{args:?}");
        assert!(place.config().contains(&s(shared)), "{args:?} saved");
    };
    accepted(&["share", "--force", &me], &place.user_home);
    accepted(
        &["share", "--force", &s(&root.join("apps"))],
        &root.join("apps"),
    );
    accepted(&["share", "--create", &s(&deep)], &deep);
    assert!(deep.is_dir());
    let inside = place.home.join("shared");
    fs::create_dir_all(&inside).unwrap();
    accepted(&["share", &s(&inside)], &inside);
}

#[test]
fn refused_folders_are_named_with_what_to_do_and_change_nothing_without_a_node() {
    let place = Place::new();
    check_refusals(&place);
}

#[test]
fn refused_folders_are_named_with_what_to_do_and_change_nothing_with_a_running_node() {
    let place = Place::new();
    let node = place.node();
    check_refusals(&place);
    assert_eq!(
        node.status()["shared_dir"],
        place.home.join("shared").to_str().unwrap(),
        "the running node uses the last accepted folder"
    );
}

#[test]
fn a_refused_change_on_a_fresh_home_leaves_no_home_behind() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("fresh");
    let (code, _, err) = run(iwant(&home).args(["share", "/"]));
    assert_eq!(code, 1);
    assert!(err.contains("root of the file system"), "{err}");
    assert!(!home.exists(), "no home, no config");
}

#[test]
fn a_node_whose_shared_folder_is_missing_starts_and_does_not_create_it() {
    let place = Place::new();
    let disk = place.root.join("disk").join("share");
    let downloads = place.root.join("new-downloads");
    let config = place
        .config()
        .replace(
            &format!("{:?}", place.root.join("s").to_str().unwrap()),
            &format!("{:?}", disk.to_str().unwrap()),
        )
        .replace(
            &format!("{:?}", place.root.join("d").to_str().unwrap()),
            &format!("{:?}", downloads.to_str().unwrap()),
        );
    fs::write(place.home.join("config.toml"), &config).unwrap();
    let node = place.node();
    let status = node.status();
    assert_eq!(status["shared_dir"], disk.to_str().unwrap());
    assert!(
        !place.root.join("disk").exists(),
        "the shared folder is not created"
    );
    assert!(downloads.is_dir(), "the download folder is");
    let log = fs::read_to_string(place.home.join("node.err")).unwrap();
    assert!(
        log.contains(&format!(
            "the shared folder {} does not exist (an unmounted disk?); nothing is shared until it exists",
            disk.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "the download folder {} did not exist; created it",
            downloads.display()
        )),
        "{log}"
    );
    // Changing the download folder does not trip over the missing shared folder.
    let other = place.root.join("d");
    let (code, _, err) = run(place.cli().arg("download-to").arg(&other));
    assert_eq!(code, 0, "{err}");
    assert!(!place.root.join("disk").exists());
}

/// `status` says the shared folder is missing.
#[test]
fn status_says_the_shared_folder_is_missing() {
    let place = Place::new();
    let disk = place.root.join("disk").join("share");
    let config = place.config().replace(
        &format!("{:?}", place.root.join("s").to_str().unwrap()),
        &format!("{:?}", disk.to_str().unwrap()),
    );
    fs::write(place.home.join("config.toml"), &config).unwrap();
    let node = place.node();
    let status = crate::util::wait_for(
        std::time::Duration::from_secs(20),
        "status to say the shared folder is missing",
        || {
            let status = node.status();
            (status["index"]["root_missing"] == true).then_some(status)
        },
    );
    assert_eq!(status["shared_dir"], disk.to_str().unwrap());
    let (code, out, _) = run(place.cli().arg("status"));
    assert_eq!(code, 0);
    assert!(out.contains("does not exist: an unmounted disk?"), "{out}");
    assert!(!disk.exists());
}

#[test]
fn a_node_whose_config_names_a_never_allowed_folder_refuses_to_start() {
    let place = Place::new();
    let d = place.root.join("d");
    let cases: Vec<(PathBuf, &str)> = vec![
        (place.home.clone(), "is this node's own home"),
        (PathBuf::from("/"), "is the root of the file system"),
        #[cfg(all(unix, not(target_os = "macos")))]
        (PathBuf::from("/proc"), "is the system folder /proc"),
    ];
    let original = place.config();
    for (bad, says) in cases {
        let config = original.replace(
            &format!("{:?}", place.root.join("s").to_str().unwrap()),
            &format!("{:?}", bad.to_str().unwrap()),
        );
        assert_ne!(config, original);
        fs::write(place.home.join("config.toml"), &config).unwrap();
        let (code, _, err) =
            run(place
                .cli()
                .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]));
        assert_eq!(code, 1, "{}: {err}", bad.display());
        assert!(
            err.contains("cannot start the node") && err.contains(says),
            "{err}"
        );
        assert!(!place.home.join("control.sock").exists());
    }
    // What --force allowed stays allowed at start: the user's home.
    let config = original.replace(
        &format!("{:?}", place.root.join("s").to_str().unwrap()),
        &format!("{:?}", place.user_home.to_str().unwrap()),
    );
    fs::write(place.home.join("config.toml"), &config).unwrap();
    let node = place.node();
    assert_eq!(
        node.status()["shared_dir"],
        place.user_home.to_str().unwrap()
    );
    assert_eq!(node.status()["download_dir"], d.to_str().unwrap());
}
