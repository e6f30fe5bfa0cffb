//! Search across real nodes on a real (virtual) LAN: every node pushes its index to the
//! elected leader, and `iwant search` on any node asks the leader.
//!
//! What is proved here, end to end through the CLI: a file written on one node is found from
//! another (and from its own node, marked local), a second copy makes one row with two holders,
//! renames and deletes reach the searchers; searches keep answering through a leader failover
//! and while no leader is elected yet; a node that leaves takes its files with it after the
//! leader's grace period, and brings them back when it returns.
//!
//! Limits are generous (a loaded 2-core machine runs debug binaries here); the goals (a write
//! found within a second, search latency) are measured by `benches/search_e2e.sh`. The tests
//! print `<metric>_ms=<n>` lines for it and for post-mortems.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use iwant::leader::{ask::ASK_DEADLINE, service::GRACE};
use serde_json::Value;

use super::Lab;
use crate::util::{iwant, run};

/// How long three or four cold-started nodes may take to agree on a leader.
const AGREE_LIMIT: Duration = Duration::from_secs(10);

/// How long a change on one node (write, copy, rename, delete) may take to show in a search
/// from another. The goal is one second for a write (`benches/search_e2e.sh`); this is the
/// test's safety margin on a loaded machine.
const CHANGE_LIMIT: Duration = Duration::from_secs(5);

/// How long the nodes left after a kill -9 of the leader may take to agree on a new one.
const FAILOVER_LIMIT: Duration = Duration::from_secs(3);

/// How long the failover test searches, one new search every [`SEARCH_EVERY`].
const SEARCH_STREAM: Duration = Duration::from_secs(6);

/// How often the failover test starts a search (without waiting for the previous one).
const SEARCH_EVERY: Duration = Duration::from_millis(100);

/// When, in the failover test's stream of searches, the leader is killed: 5 ms after the
/// 21st search started, so that search reaches its node while the leader is gone.
const KILL_AFTER: Duration = Duration::from_millis(2_005);

/// How long after the leader's grace period the entries of a node that left may still show.
/// The leader notices the gone connection within a second or so and checks the grace every
/// second.
const DROP_SLACK: Duration = Duration::from_secs(5);

/// How long a node that comes back may take until its files are found again: discovery,
/// reconnection and its snapshot to the leader.
const REJOIN_LIMIT: Duration = Duration::from_secs(15);

/// How long a search may take when it has to wait for an election: the node's own deadline
/// plus the start of the CLI process.
const ELECTION_SEARCH_LIMIT: Duration = ASK_DEADLINE.saturating_add(Duration::from_secs(2));

/// How often the tests that watch something disappear search.
const SEARCH_POLL: Duration = Duration::from_millis(200);

/// Node `i`'s leader (a node index; `None` when it has none or the leader is not in the lab)
/// and term, or `None` when `i` is not running.
fn view(lab: &Lab, i: usize) -> Option<(Option<usize>, u64)> {
    let status = lab.try_status(i)?;
    let leader = status["leader"].as_str().and_then(|p| lab.node_of(p));
    let term = status["term"]
        .as_u64()
        .unwrap_or_else(|| panic!("node {i}: `status --json` has no numeric `term`: {status}"));
    Some((leader, term))
}

/// The leader all of `nodes` follow, in the same term, if it is one of them.
pub(super) fn agreed(lab: &Lab, nodes: &[usize]) -> Option<usize> {
    let first = view(lab, nodes[0])?;
    let leader = first.0?;
    let same = nodes[1..].iter().all(|&i| view(lab, i) == Some(first));
    (same && nodes.contains(&leader)).then_some(leader)
}

/// Node `i`'s shared folder.
fn shared(lab: &Lab, i: usize) -> PathBuf {
    lab.home(i).join("shared")
}

/// Writes `content` to `rel` in node `i`'s shared folder (creating its folders).
pub(super) fn write_shared(lab: &Lab, i: usize, rel: &str, content: &[u8]) {
    let path = shared(lab, i).join(rel);
    fs::create_dir_all(path.parent().expect("a file in the shared folder"))
        .unwrap_or_else(|e| panic!("create the folder of {}: {e}", path.display()));
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// One `iwant search ... --json` run.
struct Search {
    code: i32,
    /// The JSON document, when it exited 0.
    reply: Option<Value>,
    stderr: String,
    took: Duration,
}

impl Search {
    /// Runs `iwant --home <home> search <words> --json`.
    fn run(home: &Path, words: &str) -> Search {
        let start = Instant::now();
        let (code, out, stderr) = run(iwant(home)
            .arg("search")
            .args(words.split_whitespace())
            .arg("--json"));
        let took = start.elapsed();
        let reply = (code == 0).then(|| {
            serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("`search {words} --json` printed no JSON ({e}): {out}"))
        });
        Search {
            code,
            reply,
            stderr,
            took,
        }
    }

    /// The reply; panics with the exit code and stderr if the search failed.
    fn ok(self, words: &str) -> Value {
        match self.reply {
            Some(reply) => reply,
            None => panic!(
                "`iwant search {words} --json` exited with {}: {}",
                self.code, self.stderr
            ),
        }
    }
}

/// The reply of `iwant search <words> --json` on node `i`; panics if the search fails.
fn search(lab: &Lab, i: usize, words: &str) -> Value {
    Search::run(lab.home(i), words).ok(words)
}

/// The results of a reply.
fn results(reply: &Value) -> &[Value] {
    reply["results"]
        .as_array()
        .unwrap_or_else(|| panic!("a search reply without `results`: {reply}"))
}

/// The result named `name`, if the reply has exactly one; panics if it has several.
fn named<'a>(reply: &'a Value, name: &str) -> Option<&'a Value> {
    let mut found = results(reply).iter().filter(|r| r["name"] == name);
    let first = found.next();
    assert!(found.next().is_none(), "two results named {name}: {reply}");
    first
}

/// The holders of a result, as node indexes (panics on a peer that is not in the lab).
fn holders(lab: &Lab, result: &Value) -> BTreeSet<usize> {
    result["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("a result without `holders`: {result}"))
        .iter()
        .map(|p| {
            let p = p.as_str().expect("holders are peer id strings");
            lab.node_of(p)
                .unwrap_or_else(|| panic!("holder {p} is no node of the lab"))
        })
        .collect()
}

/// Starts `n` nodes and waits until they agree on a leader; returns the leader.
fn start_and_agree(lab: &mut Lab) -> usize {
    lab.start_all(&[]);
    let all: Vec<usize> = (0..lab.len()).collect();
    lab.wait_until(AGREE_LIMIT, "the nodes agree on a leader", || {
        agreed(lab, &all)
    })
}

#[test]
fn a_file_created_on_one_node_is_found_from_another_then_renamed_and_deleted() {
    const REPORT: &str = "Quarterly Report 2026.pdf";
    const RENAMED: &str = "Annual Summary 2026.pdf";
    let Some(mut lab) = Lab::new(
        "a_file_created_on_one_node_is_found_from_another_then_renamed_and_deleted",
        3,
    ) else {
        return;
    };
    let leader = start_and_agree(&mut lab);
    let content = b"revenue up, costs down\n".repeat(100);
    let id = blake3::hash(&content).to_hex().to_string();
    let path = format!("reports/{REPORT}");

    // Written on node 0, found from node 2.
    write_shared(&lab, 0, &path, &content);
    let written = Instant::now();
    let reply = lab.wait_until(CHANGE_LIMIT, "node 2 finds the report", || {
        let reply = search(&lab, 2, "quarterly report");
        named(&reply, REPORT).is_some().then_some(reply)
    });
    println!("write_to_hit_ms={}", written.elapsed().as_millis());
    assert_eq!(reply["leader"], lab.peer_id(leader), "{reply}");
    assert_eq!(reply["query"], "quarterly report", "{reply}");
    let hit = named(&reply, REPORT).expect("found");
    assert_eq!(hit["path"], path.as_str(), "{hit}");
    assert_eq!(hit["kind"], "file", "{hit}");
    assert_eq!(hit["size"], content.len() as u64, "{hit}");
    assert_eq!(
        hit["id"],
        id.as_str(),
        "the id is the BLAKE3 hash of the content: {hit}"
    );
    assert_eq!(hit["holders"], serde_json::json!([lab.peer_id(0)]), "{hit}");
    assert_eq!(hit["holder_count"], 1, "{hit}");
    assert_eq!(hit["local"], false, "node 2 does not hold it: {hit}");
    assert!(reply["total"].as_u64() >= Some(1), "{reply}");
    assert!(
        reply["indexed"].as_u64() >= Some(2),
        "the report and its folder: {reply}"
    );

    // From the node that holds it, it is local.
    let reply = search(&lab, 0, "quarterly report");
    let hit = named(&reply, REPORT).unwrap_or_else(|| panic!("node 0 finds its own file: {reply}"));
    assert_eq!(hit["local"], true, "{hit}");

    // A typo still finds it; another number does not.
    let reply = search(&lab, 2, "quartrely");
    assert!(
        named(&reply, REPORT).is_some(),
        "the typo `quartrely` finds it: {reply}"
    );
    let reply = search(&lab, 2, "2025");
    assert_eq!(
        results(&reply),
        &[] as &[Value],
        "`2025` matches nothing: {reply}"
    );

    // An identical copy on node 1, in another folder: one row, two holders.
    let copy = format!("inbox/{REPORT}");
    write_shared(&lab, 1, &copy, &content);
    let hit = lab.wait_until(CHANGE_LIMIT, "node 2 sees two holders", || {
        let reply = search(&lab, 2, "quarterly report");
        let rows = results(&reply)
            .iter()
            .filter(|r| r["id"] == id.as_str())
            .count();
        assert!(rows <= 1, "one row per content, not {rows}: {reply}");
        named(&reply, REPORT)
            .filter(|h| h["holder_count"] == 2)
            .cloned()
    });
    assert_eq!(holders(&lab, &hit), BTreeSet::from([0, 1]), "{hit}");
    assert_eq!(hit["local"], false, "{hit}");
    let reply = search(&lab, 1, "quarterly report");
    assert_eq!(
        named(&reply, REPORT).map(|h| &h["local"]),
        Some(&Value::Bool(true)),
        "{reply}"
    );

    // The copy goes: node 0 holds it alone again.
    fs::remove_file(shared(&lab, 1).join(&copy)).expect("delete the copy");
    lab.wait_until(
        CHANGE_LIMIT,
        "node 2 sees node 0 as the only holder",
        || {
            let reply = search(&lab, 2, "quarterly report");
            named(&reply, REPORT)
                .filter(|h| h["holder_count"] == 1 && holders(&lab, h) == BTreeSet::from([0]))
                .map(|_| ())
        },
    );

    // Renamed on node 0: the new name is found, the old one is gone.
    let new_path = format!("reports/{RENAMED}");
    fs::rename(shared(&lab, 0).join(&path), shared(&lab, 0).join(&new_path)).expect("rename");
    let hit = lab.wait_until(CHANGE_LIMIT, "node 2 finds the new name only", || {
        let old = search(&lab, 2, "quarterly report");
        let new = search(&lab, 2, "annual summary");
        let gone = results(&old).iter().all(|r| r["id"] != id.as_str());
        named(&new, RENAMED).filter(|_| gone).cloned()
    });
    assert_eq!(hit["path"], new_path.as_str(), "{hit}");
    assert_eq!(hit["id"], id.as_str(), "same content, same id: {hit}");
    assert_eq!(holders(&lab, &hit), BTreeSet::from([0]), "{hit}");

    // Deleted: nothing is found.
    fs::remove_file(shared(&lab, 0).join(&new_path)).expect("delete");
    lab.wait_until(CHANGE_LIMIT, "node 2 finds nothing", || {
        let reply = search(&lab, 2, "annual summary");
        results(&reply).is_empty().then_some(())
    });
    let reply = search(&lab, 2, "quarterly report");
    assert_eq!(results(&reply), &[] as &[Value], "{reply}");
}

#[test]
fn searches_succeed_through_a_leader_failover() {
    const CLIP: &str = "failover check.mkv";
    let Some(mut lab) = Lab::new("searches_succeed_through_a_leader_failover", 3) else {
        return;
    };
    let leader = start_and_agree(&mut lab);
    let (holder, searcher) = ((leader + 1) % 3, (leader + 2) % 3);
    write_shared(&lab, holder, &format!("clips/{CLIP}"), b"frames");
    lab.wait_until(CHANGE_LIMIT, "the searcher finds the clip", || {
        named(&search(&lab, searcher, "failover check"), CLIP).map(|_| ())
    });

    // One search every 100 ms from the searcher, each its own CLI process, none waiting for
    // the one before; the leader is killed in the middle.
    let home = lab.home(searcher).to_path_buf();
    let (done_tx, done) = mpsc::channel();
    let stream_start = Instant::now();
    let (killed, new_leader_at) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut next = Instant::now();
            while next.duration_since(stream_start) < SEARCH_STREAM {
                let (home, done_tx) = (home.clone(), done_tx.clone());
                scope.spawn(move || {
                    let started = Instant::now();
                    let search = Search::run(&home, "failover check");
                    let found = search
                        .reply
                        .as_ref()
                        .is_some_and(|r| named(r, CLIP).is_some());
                    done_tx
                        .send((started, search, found))
                        .expect("the test collects");
                });
                next += SEARCH_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        std::thread::sleep(KILL_AFTER);
        lab.kill(leader);
        let killed = Instant::now();
        let at = lab.wait_until(
            FAILOVER_LIMIT,
            "the two others agree on a new leader",
            || agreed(&lab, &[holder, searcher]).map(|_| Instant::now()),
        );
        (killed, at)
    });
    drop(done_tx);
    let mut searches: Vec<(Instant, Search, bool)> = done.into_iter().collect();
    searches.sort_by_key(|s| s.0);
    println!(
        "new_leader_ms={} searches={}",
        new_leader_at.duration_since(killed).as_millis(),
        searches.len()
    );
    let at = |t: Instant| t.saturating_duration_since(stream_start).as_millis();
    for (started, s, found) in &searches {
        assert_eq!(
            s.code,
            0,
            "the search started at {} ms (leader killed at {} ms) failed after {:?}: {}",
            at(*started),
            at(killed),
            s.took,
            s.stderr
        );
        if *started >= new_leader_at {
            assert!(
                found,
                "the search started at {} ms, after the new leader was agreed at {} ms, did \
                 not find the clip: {}",
                at(*started),
                at(new_leader_at),
                s.reply.as_ref().expect("exit 0 has a reply")
            );
        }
    }
    for (started, s, _) in &searches {
        if started.saturating_duration_since(killed) < Duration::from_millis(300)
            && killed.saturating_duration_since(*started) < Duration::from_millis(300)
        {
            println!(
                "search started at {} ms (kill at {} ms) took {} ms",
                at(*started),
                at(killed),
                s.took.as_millis()
            );
        }
    }
    let slowest = searches
        .iter()
        .map(|s| s.1.took)
        .max()
        .expect("searches ran");
    println!("failover_search_ms={}", slowest.as_millis());
    let missed = searches.iter().filter(|s| !s.2).count();
    println!("failover_searches_without_the_clip={missed}");
}

#[test]
fn a_node_that_leaves_takes_its_files_with_it() {
    let Some(mut lab) = Lab::new("a_node_that_leaves_takes_its_files_with_it", 4) else {
        return;
    };
    // Two followers leave at once, one stopped (SIGTERM), one killed (SIGKILL), so both ways
    // of leaving share one grace period; a third follower searches.
    let leader = start_and_agree(&mut lab);
    let followers: Vec<usize> = (0..4).filter(|&i| i != leader).collect();
    let (stopped, killed, searcher) = (followers[0], followers[1], followers[2]);
    let name = |i: usize| format!("departure of node {i}.txt");
    for i in [stopped, killed] {
        write_shared(&lab, i, &format!("leaving/{}", name(i)), name(i).as_bytes());
    }
    let found = |lab: &Lab, at: usize, i: usize| {
        let reply = search(lab, at, "departure");
        named(&reply, &name(i)).is_some_and(|h| holders(lab, h) == BTreeSet::from([i]))
    };
    lab.wait_until(CHANGE_LIMIT, "both files are found from the others", || {
        [searcher, leader]
            .iter()
            .all(|&at| found(&lab, at, stopped) && found(&lab, at, killed))
            .then_some(())
    });

    // Each grace is counted from the moment its node began to leave: a stopping node closes
    // its connections at once, before its process has exited and `stop` returns.
    let stopping = Instant::now();
    assert!(lab.stop(stopped).success(), "SIGTERM is a clean exit");
    let killing = Instant::now();
    lab.kill(killed);
    let left = Instant::now();
    for i in [stopped, killed] {
        assert!(
            found(&lab, searcher, i),
            "node {i}'s file is still found right after it left (grace)"
        );
    }
    let mut gone: [Option<Duration>; 2] = [None, None];
    while gone.iter().any(Option::is_none) {
        let since = left.elapsed();
        assert!(
            since <= GRACE + DROP_SLACK,
            "after {since:?}, still found: stopped node {stopped}: {}, killed node {killed}: {}",
            gone[0].is_none(),
            gone[1].is_none()
        );
        for (slot, (i, began)) in [(stopped, stopping), (killed, killing)]
            .into_iter()
            .enumerate()
        {
            if gone[slot].is_none() && !found(&lab, searcher, i) {
                gone[slot] = Some(began.elapsed());
            }
        }
        std::thread::sleep(SEARCH_POLL);
    }
    for (slot, how) in ["stop", "kill"].into_iter().enumerate() {
        let after = gone[slot].expect("gone");
        println!("gone_after_{how}_ms={}", after.as_millis());
        assert!(
            after >= GRACE,
            "the leader dropped the files of the node that left ({how}) after {after:?}, \
             before its grace period of {GRACE:?}"
        );
    }

    let back = Instant::now();
    lab.restart(stopped);
    lab.restart(killed);
    lab.wait_until(REJOIN_LIMIT, "both files are found again", || {
        (found(&lab, searcher, stopped) && found(&lab, searcher, killed)).then_some(())
    });
    println!("found_again_ms={}", back.elapsed().as_millis());
}

#[test]
fn search_waits_for_an_election_instead_of_failing() {
    const MINE: &str = "survivor notes.txt";
    let Some(mut lab) = Lab::new("search_waits_for_an_election_instead_of_failing", 2) else {
        return;
    };
    // A node alone, searched as soon as it answers: no leader yet, so the search waits.
    lab.start(0, &[]);
    let had_leader = !lab.status(0)["leader"].is_null();
    let first = Search::run(lab.home(0), "x");
    println!(
        "first_search_ms={} (leader before: {had_leader})",
        first.took.as_millis()
    );
    assert!(first.took <= ELECTION_SEARCH_LIMIT, "took {:?}", first.took);
    let reply = first.ok("x");
    assert_eq!(reply["leader"], lab.peer_id(0), "alone, it leads: {reply}");

    // Two nodes; the leader's link is cut and the other searches at once.
    lab.start(1, &[]);
    let leader = lab.wait_until(AGREE_LIMIT, "the two nodes agree on a leader", || {
        agreed(&lab, &[0, 1])
    });
    let survivor = 1 - leader;
    write_shared(&lab, survivor, MINE, b"still here");
    lab.wait_until(CHANGE_LIMIT, "the survivor finds its file", || {
        named(&search(&lab, survivor, "survivor notes"), MINE).map(|_| ())
    });
    lab.cut(leader);
    let cut = Search::run(lab.home(survivor), "survivor notes");
    println!("cut_search_ms={}", cut.took.as_millis());
    assert!(cut.took <= ELECTION_SEARCH_LIMIT, "took {:?}", cut.took);
    let reply = cut.ok("survivor notes");
    assert_eq!(
        reply["leader"],
        lab.peer_id(survivor),
        "the survivor answered: {reply}"
    );
    let hit = named(&reply, MINE).unwrap_or_else(|| panic!("its own file: {reply}"));
    assert_eq!(hit["local"], true, "{hit}");
}
