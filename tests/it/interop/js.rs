//! js-libp2p against iwant: the script in `tests/interop/js` (written from docs/protocols.md
//! alone, with a hand-written CBOR codec and a pure-JS BLAKE3) runs in one namespace of a lab,
//! an iwant node in the other. The script finds the node by mDNS, identifies and pings it,
//! searches over `/iwant/search/1.0.0`, fetches a piece list over `/iwant/content/1.0.0` and
//! pieces over `/iwant/chunk/1`, and prints what it got as one JSON object; this side checks
//! those values against what it computes itself with the `blake3` crate.
//!
//! Needs `node` (20 or later) and `npm` on PATH, and the lab's root; without them the tests print
//! `skipping interop test <name>: <reason>` and pass, except under `CI=true`, where they panic.
//! A missing `tests/interop/js/node_modules` is installed with `npm ci` (once per process).

use std::{
    collections::BTreeSet,
    fs::{self, File},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    die_with_parent, documented_protocols, find_on_path, hex, in_ci, merge, piece_hashes, strings,
    urandom, FILE_LEN, PIECE, PIECE_SIZE,
};
use crate::lab::Lab;
use crate::util::run;

/// The JS project: package.json, package-lock.json and the scripts.
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/js");

const REL_PATH: &str = "interop/jsfixture.bin";
const QUERY: &str = "jsfixture";

/// How long the node may take to hash the new file and answer a search for it as the leader.
const INDEX_LIMIT: Duration = Duration::from_secs(40);

/// The script's own deadline (it prints an error and exits 1 past it)...
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// ...and how long this side waits for its result before killing it (Node's start-up on a
/// loaded machine on top).
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

/// How long the node may take to list the connected JS peer with its agent and a ping time
/// (it pings every second).
const PEER_LIMIT: Duration = Duration::from_secs(15);

/// How long the script may take to exit once its stdin is closed.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// How long `npm ci` may take.
const NPM_LIMIT: Duration = Duration::from_secs(300);

const POLL: Duration = Duration::from_millis(50);

#[test]
fn js_selftest_blake3_cbor_and_piece_merge() {
    let test = "js_selftest_blake3_cbor_and_piece_merge";
    let Some(node) = js_tools(test) else {
        return;
    };
    // Only the script's own modules: no node_modules needed.
    let (code, out, err) = run(Command::new(node)
        .current_dir(JS_DIR)
        .args(["--test", "selftest.test.mjs"]));
    assert_eq!(
        code, 0,
        "`node --test selftest.test.mjs` failed:\n{out}\n{err}"
    );
    let count = |what: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(what)?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("the JS selftest printed no `{what}` line:\n{out}"))
    };
    assert_eq!(count("# fail"), 0, "JS selftest failures:\n{out}");
    assert!(
        count("# pass") >= 5,
        "the JS selftest ran too few tests:\n{out}"
    );
}

#[test]
fn js_libp2p_finds_identifies_pings_searches_and_fetches_a_piece() {
    let test = "js_libp2p_finds_identifies_pings_searches_and_fetches_a_piece";
    let Some(node_bin) = js_tools(test) else {
        return;
    };
    let Some(mut lab) = Lab::new(test, 2) else {
        return;
    };
    npm_install();

    // Node 0 runs iwant with mDNS (the default); namespace 1 only runs the script.
    lab.start(0, &[]);
    let node_peer = lab.peer_id(0).to_owned();
    let status = lab.status(0);
    let shared = PathBuf::from(
        status["shared_dir"]
            .as_str()
            .expect("status has a shared_dir"),
    );

    let data = urandom(FILE_LEN);
    let id = blake3::hash(&data);
    let id_hex = id.to_hex().to_string();
    let pieces = piece_hashes(&data, PIECE_SIZE);
    assert_eq!(
        pieces.len(),
        3,
        "bug in the test: 700,000 bytes are 3 pieces"
    );
    assert_eq!(
        merge(&pieces, PIECE_SIZE, FILE_LEN),
        *id.as_bytes(),
        "bug in the test: its own piece hashes do not merge into the id"
    );
    let pieces_hex: Vec<String> = pieces.iter().map(hex).collect();
    share(&lab, &shared, REL_PATH, &data);
    wait_searchable(&lab, &id_hex);

    let started = Instant::now();
    let mut script = Script::spawn(
        lab.in_netns(1, node_bin),
        &[
            "--peer",
            &node_peer,
            "--query",
            QUERY,
            "--path",
            REL_PATH,
            "--piece",
            &PIECE.to_string(),
            "--timeout-ms",
            &SCRIPT_DEADLINE.as_millis().to_string(),
            "--hold",
        ],
    );
    let r = script.result(SCRIPT_LIMIT);
    println!(
        "js_interop_result_ms={} js_elapsed_ms={} js_discovery_ms={}",
        started.elapsed().as_millis(),
        r["elapsed_ms"],
        r["discovery"]["after_ms"]
    );
    println!("js result: {r}");

    // While the script holds its connection: the node lists the JS peer, identified (its agent)
    // and answering the node's pings (a ping time).
    let js_peer = r["self_peer_id"].as_str().expect("self_peer_id").to_owned();
    let entry = lab.wait_until(
        PEER_LIMIT,
        &format!("node 0 lists the JS peer {js_peer} with its agent and a ping time"),
        || {
            let status = lab.status(0);
            let entry = crate::lab::peer_entry(&status, &js_peer)?.clone();
            (entry["agent"].is_string() && entry["rtt_us"].is_u64()).then_some(entry)
        },
    );
    assert!(
        entry["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("js-libp2p/")),
        "node 0 lists the JS peer with agent {}",
        entry["agent"]
    );
    assert_eq!(entry["connections"], 1, "one connection to the JS peer");
    let exit = script.finish(EXIT_LIMIT);
    assert_eq!(
        exit,
        Some(0),
        "the script exited with {exit:?} after its stdin closed; stderr:\n{}",
        script.stderr()
    );

    // 1. Found by mDNS, dialled on the node's lab address.
    let tcp = lab.tcp_addr(0);
    assert_eq!(r["discovery"]["method"], "mdns");
    assert_eq!(r["discovery"]["peer_id"], node_peer.as_str());
    assert!(
        strings(&r["discovery"]["multiaddrs"]).contains(&tcp),
        "mDNS gave {} without {tcp}",
        r["discovery"]["multiaddrs"]
    );
    assert_eq!(r["connection"]["remote_peer"], node_peer.as_str());
    assert_eq!(
        r["connection"]["remote_addr"],
        format!("{tcp}/p2p/{node_peer}")
    );

    // 2. Identify: the documented versions, and exactly the documented protocols.
    let ident = &r["identify"];
    let agent = ident["agent_version"].as_str().expect("agent_version");
    assert!(agent.starts_with("iwant/"), "agentVersion {agent}");
    assert_eq!(ident["protocol_version"], "/iwant/1");
    let protocols: BTreeSet<String> = strings(&ident["protocols"]).into_iter().collect();
    for p in [
        "/iwant/search/1.0.0",
        "/iwant/content/1.0.0",
        "/iwant/chunk/1",
        "/ipfs/ping/1.0.0",
        "/ipfs/id/1.0.0",
    ] {
        assert!(protocols.contains(p), "identify lacks {p}: {protocols:?}");
    }
    let documented = documented_protocols();
    assert_eq!(
        protocols, documented,
        "the protocols the node advertises differ from the table in docs/protocols.md"
    );
    assert!(
        strings(&ident["listen_addrs"]).contains(&tcp),
        "identify listen addrs {} lack {tcp}",
        ident["listen_addrs"]
    );

    // 3. Ping: three round trips measured.
    let rtts = r["ping"]["rtt_ms"].as_array().expect("rtt_ms");
    let wall = r["ping"]["wall_ms"].as_array().expect("wall_ms");
    assert_eq!(rtts.len(), 3, "three pings: {}", r["ping"]);
    assert!(
        rtts.iter()
            .all(|t| t.as_f64().is_some_and(|t| (0.0..10_000.0).contains(&t))),
        "ping rtts {}",
        r["ping"]
    );
    assert!(
        wall.iter()
            .all(|t| t.as_f64().is_some_and(|t| t > 0.0 && t < 10_000.0)),
        "ping wall times {}",
        r["ping"]
    );

    // 4. Search: the hand-encoded request, and the decoded hit.
    let search = &r["search"];
    let request = search["request_hex"].as_str().expect("request_hex");
    assert!(
        request.starts_with("a166736561726368a4"),
        "the search request is not {{\"search\": {{4 fields}}}}: {request}"
    );
    assert_eq!(search["nodes"], 1, "one node's index at the leader");
    let hits = search["hits"].as_array().expect("hits");
    let hit = hits
        .iter()
        .find(|h| h["path"] == REL_PATH)
        .unwrap_or_else(|| panic!("no hit for {REL_PATH}: {search}"));
    assert_eq!(hit["id"], id_hex.as_str(), "the hit's id");
    assert_eq!(hit["size"], FILE_LEN as u64);
    assert_eq!(hit["kind"], "file");
    assert_eq!(hit["holders"], serde_json::json!([node_peer]));
    assert_eq!(hit["holder_count"], 1);
    assert!(hit["score"].is_i64(), "score {}", hit["score"]);
    assert!(
        search["total"].as_u64() >= Some(1),
        "total {}",
        search["total"]
    );
    let located = r["locate"]["hits"].as_array().expect("locate hits");
    assert!(
        located
            .iter()
            .any(|h| h["id"] == id_hex.as_str() && h["size"] == FILE_LEN as u64),
        "locate {} did not find {id_hex}",
        r["locate"]
    );

    // 5. The piece list: the values this side computed, merging into the id.
    let list = &r["pieces"];
    assert_eq!(
        list["request_hex"],
        format!("a166706965636573a16269645820{id_hex}"),
        "the pieces request differs from the docs' example encoding"
    );
    assert_eq!(list["size"], FILE_LEN as u64);
    assert_eq!(list["piece_size"], PIECE_SIZE as u64);
    assert_eq!(list["piece_size_by_rule"], PIECE_SIZE as u64);
    assert_eq!(list["count"], 3);
    assert_eq!(strings(&list["hashes"]), pieces_hex, "the piece list");
    assert_eq!(list["merged_root"], id_hex.as_str(), "the merged root");
    assert_eq!(list["merged_root_is_id"], true);

    // 6. Chunks: piece 1; the last piece then out_of_range; not_found for an unknown id.
    let answers = r["chunk"]["answers"].as_array().expect("chunk answers");
    assert_eq!(answers.len(), 3, "three answers: {}", r["chunk"]);
    let ok_frame = |index: usize| {
        let len = PIECE_SIZE.min(FILE_LEN - index * PIECE_SIZE);
        serde_json::json!({
            "status": 0, "index": index, "len": len, "hash": pieces_hex[index],
            "list_entry": pieces_hex[index], "matches_list": true,
        })
    };
    assert_eq!(answers[0]["frames"], serde_json::json!([ok_frame(PIECE)]));
    assert_eq!(answers[0]["first"], PIECE);
    assert_eq!(
        answers[1]["frames"],
        serde_json::json!([ok_frame(2), {"status": 2, "index": 3, "len": 0}]),
        "the last piece, then out_of_range at the piece count"
    );
    assert_eq!(
        answers[2]["frames"],
        serde_json::json!([{"status": 1, "index": 5, "len": 0}]),
        "not_found for an unknown id, at its first piece"
    );
    assert_eq!(
        r["chunk"]["clean_end"], true,
        "the server closes after the answers"
    );
    assert_eq!(
        fs::read(shared.join(REL_PATH)).expect("the shared file"),
        data,
        "the shared file is unchanged"
    );
}

/// The path of `node` when `node` and `npm` are on PATH. Otherwise prints the skip line and
/// returns `None`, or panics under `CI=true`.
fn js_tools(test: &str) -> Option<PathBuf> {
    let reason = match (find_on_path("node"), find_on_path("npm")) {
        (Some(node), Some(_)) => return Some(node),
        (None, _) => "`node` is not on PATH",
        (_, None) => "`npm` is not on PATH",
    };
    if in_ci() {
        panic!("interop test {test} cannot run, and under CI=true it must: {reason}");
    }
    eprintln!("skipping interop test {test}: {reason}");
    None
}

/// Runs `npm ci` in the JS folder if its node_modules is missing (once per process).
fn npm_install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = Path::new(JS_DIR);
        if dir.join("node_modules/libp2p/package.json").is_file() {
            return;
        }
        let start = Instant::now();
        let capture = || tempfile::tempfile().expect("create a capture file");
        let (out, err) = (capture(), capture());
        let mut child = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone a capture file"))
            .stderr(err.try_clone().expect("clone a capture file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `npm ci` in {JS_DIR}: {e}"));
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("wait for npm") {
                break exit;
            }
            if start.elapsed() > NPM_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`npm ci` in {JS_DIR} did not finish within {NPM_LIMIT:?}; killed it; stderr:\n{}",
                    read_capture(&err)
                );
            }
            std::thread::sleep(POLL);
        };
        let (out, err) = (read_capture(&out), read_capture(&err));
        assert!(
            exit.success(),
            "`npm ci` in {JS_DIR} failed with {exit} (the npm registry must be reachable; \
             `npm ci --prefix tests/interop/js` installs by hand):\n{out}\n{err}"
        );
        eprintln!("js interop: npm ci took {:?}", start.elapsed());
    });
}

/// Puts `data` into `shared` as `rel` in one rename (no half-written file is ever indexed).
fn share(lab: &Lab, shared: &Path, rel: &str, data: &[u8]) {
    let staging = lab.home(0).join("staging");
    fs::create_dir_all(&staging).expect("create the staging folder");
    let tmp = staging.join("incoming");
    fs::write(&tmp, data).expect("write the test file");
    let target = shared.join(rel);
    fs::create_dir_all(target.parent().expect("a folder")).expect("create the folder in share");
    fs::rename(&tmp, &target).expect("move the test file into the share");
}

/// Waits until node 0 has indexed the file and, as the leader, finds it by searching.
fn wait_searchable(lab: &Lab, id: &str) {
    lab.wait_until(
        INDEX_LIMIT,
        &format!("node 0 finds {REL_PATH} ({id}) by searching {QUERY}"),
        || {
            let (code, out, _) = run(lab.cli(0).args(["search", QUERY, "--json"]));
            let reply: Value = (code == 0).then(|| serde_json::from_str(&out).ok())??;
            reply["results"]
                .as_array()?
                .iter()
                .any(|h| h["id"] == id && h["path"] == REL_PATH)
                .then_some(())
        },
    );
}

/// The JS script running in the lab, its stdout and stderr in files readable while it runs;
/// killed (and reaped) when dropped. It also dies with the thread that spawned it.
struct Script {
    child: Child,
    out: File,
    err: File,
}

impl Script {
    fn spawn(mut cmd: Command, args: &[&str]) -> Script {
        let capture = || tempfile::tempfile().expect("create a capture file");
        let (out, err) = (capture(), capture());
        cmd.current_dir(JS_DIR)
            .args(["--import", "./polyfill.mjs", "interop.mjs"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("clone a capture file"))
            .stderr(err.try_clone().expect("clone a capture file"));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn the JS script");
        Script { child, out, err }
    }

    fn stdout(&self) -> String {
        read_capture(&self.out)
    }

    fn stderr(&self) -> String {
        read_capture(&self.err)
    }

    /// The JSON object of the script's first stdout line, within `limit`. Panics, with its
    /// output, if it exits without one, prints an error, or takes longer.
    fn result(&mut self, limit: Duration) -> Value {
        let start = Instant::now();
        let line = loop {
            let out = self.stdout();
            if let Some((line, _)) = out.split_once('\n') {
                break line.to_owned();
            }
            if let Some(exit) = self.child.try_wait().expect("wait for the script") {
                panic!(
                    "the JS script exited with {exit} without a result; stdout:\n{out}\nstderr:\n{}",
                    self.stderr()
                );
            }
            if start.elapsed() > limit {
                panic!(
                    "the JS script printed no result within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(POLL);
        };
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "the JS script printed no JSON ({e}): {line}\nstderr:\n{}",
                self.stderr()
            )
        });
        if let Some(error) = value.get("error") {
            panic!(
                "the JS script failed: {}\nwhat it had: {}\nstderr:\n{}",
                error.as_str().unwrap_or_default(),
                value["partial"],
                self.stderr()
            );
        }
        value
    }

    /// Closes the script's stdin (it then stops holding its connection) and returns its exit
    /// code (`None` when a signal ended it). Panics if it takes longer than `limit`.
    fn finish(&mut self, limit: Duration) -> Option<i32> {
        drop(self.child.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait for the script") {
                return exit.code();
            }
            assert!(
                start.elapsed() < limit,
                "the JS script did not exit within {limit:?} of its stdin closing; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All of a capture file, read without moving the offset the writing child shares with it.
fn read_capture(file: &File) -> String {
    let len = file.metadata().expect("stat a capture file").len();
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .expect("read a capture file");
    String::from_utf8_lossy(&bytes).into_owned()
}
