//! A careless user on a real LAN (issue 12): someone shares their whole home folder, with
//! hidden files on, on a node whose own home lies inside it. Another node on the LAN then finds
//! the user's documents, and none of their secrets, nor the node's key, config or database.

use std::{collections::BTreeSet, fs, path::Path, time::Duration};

use serde_json::Value;

use super::Lab;
use crate::util::run;

/// Two cold-started nodes: discovery, election, the first scan and the index push.
const FOUND_LIMIT: Duration = Duration::from_secs(30);

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// The names of `iwant search <word> --json` on node `i`, or `None` while it fails.
fn names_found(lab: &Lab, i: usize, word: &str) -> Option<BTreeSet<String>> {
    let (code, out, _) = run(lab.cli(i).args(["search", word, "--json"]));
    if code != 0 {
        return None;
    }
    let reply: Value = serde_json::from_str(&out).unwrap();
    Some(
        reply["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect(),
    )
}

#[test]
fn a_whole_home_shared_with_hidden_files_publishes_no_secret_and_nothing_of_the_node() {
    let Some(mut lab) = Lab::new(
        "a_whole_home_shared_with_hidden_files_publishes_no_secret_and_nothing_of_the_node",
        2,
    ) else {
        return;
    };
    let me = lab.scratch().join("me");
    write(
        &me,
        ".ssh/id_ed25519",
        b"-----BEGIN OPENSSH PRIVATE KEY-----",
    );
    write(&me, ".ssh/config", b"Host *");
    write(&me, "keys/deploy.pem", b"-----BEGIN PRIVATE KEY-----");
    write(&me, ".bash_history", b"mysql -p hunter2");
    write(&me, "Documents/holiday.txt", b"sun");
    write(&me, ".config/app.conf", b"theme = dark");
    let node_home = me.join(".local").join("share").join("iwant");
    lab.set_home(0, node_home.clone());
    let downloads = lab.scratch().join("n0-downloads");
    let cli = |args: &[&str]| {
        let mut cmd = crate::util::iwant(&node_home);
        cmd.env("HOME", &me).args(args);
        run(&mut cmd)
    };

    // The user's first try is refused, and says what to do.
    let me_str = me.to_str().unwrap();
    let (code, _, err) = cli(&["share", me_str]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is your whole home folder") && err.contains("pass --force"),
        "{err}"
    );
    let (code, _, err) = cli(&["download-to", "--create", downloads.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["share", "--force", me_str]);
    assert_eq!(code, 0, "{err}");
    let config = node_home.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("include_hidden = false"), "{text}");
    fs::write(
        &config,
        text.replace("include_hidden = false", "include_hidden = true"),
    )
    .unwrap();

    lab.start_all(&[]);
    lab.wait_until(FOUND_LIMIT, "node 1 finds the user's documents", || {
        let holiday = names_found(&lab, 1, "holiday")?;
        let conf = names_found(&lab, 1, "app.conf")?;
        (holiday.contains("holiday.txt") && conf.contains("app.conf")).then_some(())
    });

    // Everything node 0 shares: the documents, the hidden config, and no more.
    let (code, out, err) = cli(&["ls", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let files: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "file")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from(["Documents/holiday.txt", ".config/app.conf"]),
        "{out}"
    );
    // Nor can node 1 find any of it by name.
    for name in [
        "id_ed25519",
        "deploy.pem",
        ".bash_history",
        "identity.key",
        "iwant.db",
        "config.toml",
        "node.lock",
    ] {
        let found = names_found(&lab, 1, name).expect("search answers");
        assert!(!found.contains(name), "{name} is found: {found:?}");
    }
    // `ls --skipped` names each rule that kept something out.
    let (code, out, err) = cli(&["ls", "--skipped"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        ".ssh  (secret: SSH folder (.ssh))",
        "keys/deploy.pem  (secret: key or certificate (*.pem))",
        ".bash_history  (secret: shell or console history (.*_history))",
        ".local/share/iwant  (the node's own home (identity, config, database))",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
}
