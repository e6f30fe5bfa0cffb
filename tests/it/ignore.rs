//! What is never shared, end to end in one process: hidden files, secrets, the node's own home,
//! `.iwantignore` files changed at runtime and `include_hidden`.

use std::{fs, path::Path, time::Duration};

use iwant::{
    config::Home,
    control::{Client, Request, Response},
    daemon::RunningNode,
    share::IndexEntry,
};

use crate::util::{start_in_process, wait_for_async};

/// Generous: a scan of a handful of files takes milliseconds.
const LIMIT: Duration = Duration::from_secs(10);

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// Starts a node with home `home` sharing `share`, after `edit` changed its config.
async fn start(
    home: &Path,
    share: &Path,
    edit: impl FnOnce(&mut iwant::config::Config),
) -> RunningNode {
    let h = Home::resolve(Some(home.to_path_buf())).unwrap();
    let (mut config, _) = h.load_or_create_config().unwrap();
    config.shared_dir = share.to_path_buf();
    edit(&mut config);
    h.save_config(&config).unwrap();
    start_in_process(home, "/ip4/127.0.0.1/tcp/0".parse().unwrap(), vec![]).await
}

async fn ready_entries(node: &RunningNode) -> Vec<IndexEntry> {
    wait_for_async(LIMIT, "the first scan", || async {
        node.index.status().ready.then_some(())
    })
    .await;
    node.index.entries().await.unwrap()
}

fn files(entries: &[IndexEntry]) -> Vec<&str> {
    let mut v: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == iwant::share::Kind::File)
        .map(|e| e.path.as_str())
        .collect();
    v.sort();
    v
}

async fn skipped(home: &Path) -> Vec<(String, String)> {
    let client = Client::new(Home::resolve(Some(home.to_path_buf())).unwrap());
    match client
        .request(Request::List {
            errors: false,
            skipped: true,
        })
        .await
        .unwrap()
    {
        Response::Skipped { skipped, .. } => {
            skipped.into_iter().map(|s| (s.path, s.reason)).collect()
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn secrets_hidden_files_and_the_node_home_are_never_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().canonicalize().unwrap().join("share");
    // The node's home is inside its own share: configured explicitly.
    let home = share.join("node-home");
    write(&share, ".ssh/id_ed25519", b"PRIVATE KEY");
    write(&share, ".bash_history", b"history");
    write(&share, ".profile", b"PATH=...");
    write(&share, "notes.pem", b"pem");
    write(&share, ".env", b"TOKEN=1");
    write(&share, "wallet.dat", b"coins");
    write(&share, ".mozilla/firefox/profile/cookies.sqlite", b"c");
    write(&share, "music/song.mp3", b"la la");
    let downloads = dir.path().canonicalize().unwrap().join("downloads");
    let node = start(&home, &share, |c| c.download_dir = downloads).await;

    let entries = ready_entries(&node).await;
    assert_eq!(files(&entries), ["music/song.mp3"], "{entries:?}");

    let listed = skipped(&home).await;
    let reason = |p: &str| {
        listed
            .iter()
            .find(|(path, _)| path == p)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{p} is not listed as skipped: {listed:?}"))
    };
    assert_eq!(reason(".ssh"), "secret: SSH folder (.ssh)");
    assert_eq!(
        reason(".bash_history"),
        "secret: shell or console history (.*_history)"
    );
    assert_eq!(reason(".profile"), "hidden");
    assert_eq!(reason("notes.pem"), "secret: key or certificate (*.pem)");
    assert_eq!(reason(".env"), "secret: environment secrets (.env)");
    assert_eq!(
        reason("wallet.dat"),
        "secret: cryptocurrency wallet (wallet.dat)"
    );
    assert_eq!(reason(".mozilla"), "secret: browser profile (.mozilla)");
    assert_eq!(
        reason("node-home"),
        "the node's own home (identity, config, database)"
    );
    assert!(
        node.index.status().skipped >= 7,
        "{:?}",
        node.index.status()
    );

    // The node's own database writes do not change the index: each new hidden file is
    // recorded as skipped (a database write), and the version stays put.
    let version = node.index.status().version;
    for i in 0..3 {
        let name = format!(".trigger-{i}");
        write(&share, &name, b"t");
        wait_for_async(LIMIT, "the hidden file recorded as skipped", || async {
            skipped(&home)
                .await
                .iter()
                .any(|(p, _)| *p == name)
                .then_some(())
        })
        .await;
    }
    assert!(home.join("iwant.db").exists());
    assert_eq!(node.index.status().version, version);
    assert_eq!(
        files(&node.index.entries().await.unwrap()),
        ["music/song.mp3"]
    );
    node.stop().await;
}

#[tokio::test]
async fn an_iwantignore_added_at_runtime_removes_matching_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let share = root.join("share");
    write(&share, "docs/draft.tmp", b"draft");
    write(&share, "docs/final.txt", b"final");
    let home = root.join("home");
    let node = start(&home, &share, |_| {}).await;
    let entries = ready_entries(&node).await;
    assert_eq!(files(&entries), ["docs/draft.tmp", "docs/final.txt"]);

    write(&share, "docs/.iwantignore", b"# drafts stay here\n*.tmp\n");
    wait_for_async(LIMIT, "the ignored file gone from the index", || async {
        let entries = node.index.entries().await.unwrap();
        (files(&entries) == ["docs/final.txt"]).then_some(())
    })
    .await;
    let listed = skipped(&home).await;
    assert!(
        listed.contains(&(
            "docs/draft.tmp".into(),
            "docs/.iwantignore line 2: *.tmp".into()
        )),
        "{listed:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn include_hidden_shares_dot_files_but_never_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let share = root.join("share");
    write(&share, ".config/app.conf", b"conf");
    write(&share, ".ssh/id_ed25519", b"PRIVATE KEY");
    write(&share, "big.iso", b"iso");
    let home = root.join("home");
    let node = start(&home, &share, |c| {
        c.include_hidden = true;
        c.ignore = vec!["*.iso".into()];
    })
    .await;
    let entries = ready_entries(&node).await;
    assert_eq!(files(&entries), [".config/app.conf"], "{entries:?}");
    let listed = skipped(&home).await;
    assert!(listed.contains(&(".ssh".into(), "secret: SSH folder (.ssh)".into())));
    assert!(listed.contains(&("big.iso".into(), "config ignore: *.iso".into())));
    node.stop().await;
}
