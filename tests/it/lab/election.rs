//! Leader election between real nodes on a real (virtual) LAN: agreement, failover after a
//! crash and after a graceful stop, a node alone, a partition and its heal, and a lossy link.
//!
//! Every limit is measured from the event (start, kill, stop, heal) to the end of the first
//! round of `iwant status --json` polls that shows the condition, so polling latency counts
//! against it. The
//! tests print `<metric>_ms=<n>` lines that `benches/election.sh` collects.

use std::time::{Duration, Instant};

use super::Lab;

/// How long five cold-started nodes may take to agree on a leader (discovery included).
const FIRST_LEADER_LIMIT: Duration = Duration::from_secs(10);

/// How long the others may take to agree on a new leader after the leader is killed.
const KILL_FAILOVER_LIMIT: Duration = Duration::from_secs(3);

/// How long the others may take to agree on a new leader after the leader's link is cut
/// (no reset: the heartbeats just stop).
const CUT_FAILOVER_LIMIT: Duration = Duration::from_secs(3);

/// How long the others may take to agree on a new leader after the leader stops gracefully.
const STOP_FAILOVER_LIMIT: Duration = Duration::from_secs(1);

/// How long a node alone may take to lead, from its start.
const ALONE_LIMIT: Duration = Duration::from_secs(2);

/// How long each side of a partition may take to have a leader (the cut links are noticed by
/// the liveness watchdog after 3 s).
const PARTITION_LIMIT: Duration = Duration::from_secs(10);

/// How long after a heal one leader may remain for all.
const HEAL_LIMIT: Duration = Duration::from_secs(3);

/// How long the lossy network is watched for leader changes.
const LOSSY_WINDOW: Duration = Duration::from_secs(30);

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
fn agreed(lab: &Lab, nodes: &[usize]) -> Option<usize> {
    let first = view(lab, nodes[0])?;
    let leader = first.0?;
    let same = nodes[1..].iter().all(|&i| view(lab, i) == Some(first));
    (same && nodes.contains(&leader)).then_some(leader)
}

/// Starts nodes 0, 1 and 2 (the honest ones of a lab whose node 3 holds foreign identities),
/// waits for them to agree on a leader, and returns their full addresses (with `/p2p/`).
fn start_honest_three(lab: &mut Lab) -> Vec<String> {
    let honest = [0, 1, 2];
    for i in honest {
        lab.spawn(i, &[]);
    }
    for i in honest {
        lab.wait_ready(i);
    }
    lab.wait_until(FIRST_LEADER_LIMIT, "3 nodes agree on a leader", || {
        agreed(lab, &honest)
    });
    honest
        .iter()
        .map(|&i| format!("{}/p2p/{}", lab.tcp_addr(i), lab.peer_id(i)))
        .collect()
}

fn all_but(n: usize, gone: usize) -> Vec<usize> {
    (0..n).filter(|&i| i != gone).collect()
}

#[test]
fn leader_reelected_after_leader_is_killed_and_after_it_stops() {
    let Some(mut lab) = Lab::new(
        "leader_reelected_after_leader_is_killed_and_after_it_stops",
        5,
    ) else {
        return;
    };
    lab.start_all(&[]);
    let first_start = lab.started_at(0);
    let all: Vec<usize> = (0..5).collect();
    let (leader, at) = lab.wait_until(FIRST_LEADER_LIMIT, "5 nodes agree on a leader", || {
        let probed = Instant::now();
        agreed(&lab, &all).map(|l| (l, probed))
    });
    println!(
        "first_leader_ms={}",
        at.duration_since(first_start).as_millis()
    );

    lab.kill(leader);
    let killed = Instant::now();
    let rest = all_but(5, leader);
    let (second, at) = lab.wait_until(
        KILL_FAILOVER_LIMIT,
        "the 4 others agree on a new leader after kill -9",
        || agreed(&lab, &rest).map(|l| (l, Instant::now())),
    );
    println!("failover_kill_ms={}", at.duration_since(killed).as_millis());

    lab.stop(second);
    let stopped = Instant::now();
    let rest: Vec<usize> = rest.into_iter().filter(|&i| i != second).collect();
    let (_, at) = lab.wait_until(
        STOP_FAILOVER_LIMIT,
        "the 3 others agree on a new leader after a graceful stop",
        || agreed(&lab, &rest).map(|l| (l, Instant::now())),
    );
    println!(
        "failover_stop_ms={}",
        at.duration_since(stopped).as_millis()
    );

    // The crashed leader comes back: it follows, it does not take over.
    let (third, term) = view(&lab, rest[0]).expect("running");
    lab.restart(leader);
    let mut back = rest.clone();
    back.push(leader);
    lab.wait_until(Duration::from_secs(5), "the restarted node follows", || {
        agreed(&lab, &back)
            .filter(|l| Some(*l) == third)
            .map(|_| ())
    });
    assert_eq!(view(&lab, rest[0]), Some((third, term)), "no new election");
}

#[test]
fn the_survivor_of_a_two_node_cut_leads_within_3_s() {
    let Some(mut lab) = Lab::new("the_survivor_of_a_two_node_cut_leads_within_3_s", 2) else {
        return;
    };
    lab.start_all(&[]);
    let leader = lab.wait_until(FIRST_LEADER_LIMIT, "2 nodes agree on a leader", || {
        agreed(&lab, &[0, 1])
    });
    let survivor = 1 - leader;
    let cut = Instant::now();
    lab.cut(leader);
    let at = lab.wait_until(CUT_FAILOVER_LIMIT, "the survivor leads", || {
        (view(&lab, survivor)?.0 == Some(survivor)).then(Instant::now)
    });
    println!("two_node_cut_ms={}", at.duration_since(cut).as_millis());
}

#[test]
fn a_node_alone_becomes_leader() {
    let Some(mut lab) = Lab::new("a_node_alone_becomes_leader", 1) else {
        return;
    };
    lab.start(0, &[]);
    let started = lab.started_at(0);
    let at = lab.wait_until(
        ALONE_LIMIT.saturating_sub(started.elapsed()),
        "the node leads",
        || (agreed(&lab, &[0]) == Some(0)).then(Instant::now),
    );
    println!("alone_leader_ms={}", at.duration_since(started).as_millis());
}

#[test]
fn partition_elects_a_leader_per_side_and_heal_leaves_one() {
    let Some(mut lab) = Lab::new("partition_elects_a_leader_per_side_and_heal_leaves_one", 5)
    else {
        return;
    };
    lab.start_all(&[]);
    let all: Vec<usize> = (0..5).collect();
    let leader = lab.wait_until(FIRST_LEADER_LIMIT, "5 nodes agree on a leader", || {
        agreed(&lab, &all)
    });
    // Cut off the leader and one follower. The lab cuts each node's own link, so the two are
    // cut off from each other too: three groups, each of which must have its own leader.
    let cut = [leader, (leader + 1) % 5];
    let rest: Vec<usize> = all.iter().copied().filter(|i| !cut.contains(i)).collect();
    for i in cut {
        lab.cut(i);
    }
    let cut_at = Instant::now();
    let at = lab.wait_until(
        CUT_FAILOVER_LIMIT,
        "the 3 others agree on a new leader after the leader's link is cut",
        || agreed(&lab, &rest).map(|_| Instant::now()),
    );
    println!("failover_cut_ms={}", at.duration_since(cut_at).as_millis());
    let leaders = lab.wait_until(
        PARTITION_LIMIT,
        "each group agrees on its own leader",
        || {
            Some([
                agreed(&lab, &cut[..1])?,
                agreed(&lab, &cut[1..])?,
                agreed(&lab, &rest)?,
            ])
        },
    );
    assert_eq!(&leaders[..2], &cut[..]);

    for i in cut {
        lab.heal(i);
    }
    let healed = Instant::now();
    let (one, at) = lab.wait_until(HEAL_LIMIT, "one leader for all after the heal", || {
        agreed(&lab, &all).map(|l| (l, Instant::now()))
    });
    println!("heal_ms={}", at.duration_since(healed).as_millis());
    assert!(leaders.contains(&one));
}

/// 5 % of every node's packets lost, both ways (nftables, see [`Lab::lose`]), for
/// [`LOSSY_WINDOW`]: the leader stays. (The simulation
/// `five_percent_loss_and_50_ms_latency_do_not_make_the_leader_flap` adds 50 ms of latency,
/// which nftables cannot.)
#[test]
fn lossy_network_does_not_make_the_leader_flap() {
    let Some(mut lab) = Lab::with_loss("lossy_network_does_not_make_the_leader_flap", 5) else {
        return;
    };
    lab.start_all(&[]);
    let all: Vec<usize> = (0..5).collect();
    let leader = lab.wait_until(FIRST_LEADER_LIMIT, "5 nodes agree on a leader", || {
        agreed(&lab, &all)
    });
    for i in 0..5 {
        lab.lose(i, 5);
    }
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < LOSSY_WINDOW {
        for i in 0..5 {
            let (l, _) = view(&lab, i).expect("running");
            assert_eq!(
                l,
                Some(leader),
                "node {i} changed leader after {:?} of loss and delay\n{}",
                start.elapsed(),
                lab.describe()
            );
        }
        polls += 1;
    }
    let lost: Vec<u64> = (0..5).map(|i| lab.lost(i)).collect();
    println!("lossy_polls={polls} lost_packets={lost:?}");
    assert!(
        lost.iter().all(|&n| n > 0),
        "every node lost packets: {lost:?}"
    );
}

/// The soak of `benches/election.sh` (built only with `--features lab-soak`: it takes a minute): 10 nodes,
/// one follower restarted every 5 s for 60 s; prints how often a node that was not restarted
/// saw its leader change (`leader_changes`, the goal is 0).
#[cfg(feature = "lab-soak")]
#[test]
fn soak_ten_nodes_with_a_follower_restarting_every_5_s() {
    const NODES: usize = 10;
    const SOAK: Duration = Duration::from_secs(60);
    const EVERY: Duration = Duration::from_secs(5);
    let Some(mut lab) = Lab::new("soak_ten_nodes_with_a_follower_restarting_every_5_s", NODES)
    else {
        return;
    };
    lab.start_all(&[]);
    let all: Vec<usize> = (0..NODES).collect();
    let leader = lab.wait_until(FIRST_LEADER_LIMIT, "10 nodes agree on a leader", || {
        agreed(&lab, &all)
    });
    let mut seen: Vec<Option<usize>> = vec![Some(leader); NODES];
    let mut changes = 0;
    let mut next = leader;
    let start = Instant::now();
    while start.elapsed() < SOAK {
        // The next follower in turn restarts (stop, then start).
        next = (next + 1) % NODES;
        if seen[next].is_none_or(|l| l == next) {
            next = (next + 1) % NODES;
        }
        let cycle = Instant::now();
        lab.stop(next);
        lab.restart(next);
        seen[next] = None;
        while cycle.elapsed() < EVERY {
            for (i, seen) in seen.iter_mut().enumerate() {
                let Some((l, _)) = view(&lab, i) else {
                    continue;
                };
                if i == next && seen.is_none() {
                    // The restarted node: its first leader is no change.
                    *seen = l;
                    continue;
                }
                if l != *seen {
                    changes += 1;
                    eprintln!(
                        "after {:?}: node {i} changed leader from {seen:?} to {l:?}",
                        start.elapsed(),
                    );
                    *seen = l;
                }
            }
        }
    }
    let leaders: Vec<Option<usize>> = (0..NODES)
        .map(|i| view(&lab, i).and_then(|v| v.0))
        .collect();
    println!("leader_changes={changes}");
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && l.is_some()),
        "the nodes disagree at the end: {leaders:?}"
    );
}

#[test]
fn four_silent_voters_do_not_stop_the_election_after_the_leader_is_killed() {
    let test = "four_silent_voters_do_not_stop_the_election_after_the_leader_is_killed";
    let Some(python) = crate::interop::py::venv_python(test) else {
        return;
    };
    // Nodes 0-2 are honest; node 3's namespace holds four py-libp2p identities that accept
    // `/iwant/election/1` from every node and never send a byte on it.
    let Some(mut lab) = Lab::new(test, 4) else {
        return;
    };
    let honest = [0, 1, 2];
    // The election logs each participant it counts: how the test knows the voters count.
    lab.set_log("info,iwant_behaviours::election::behaviour=debug");
    let addrs = start_honest_three(&mut lab);
    let voters = lab
        .in_netns(3, &python)
        .current_dir(crate::interop::py::PY_DIR)
        .args([
            "misbehave.py",
            "--scenario",
            "silent-voters",
            "--count",
            "4",
        ])
        .args(["--hold", "60", "--timeout", "90", "--addrs"])
        .arg(addrs.join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the silent voters");
    let _voters = crate::util::KillOnDrop(voters);
    // Every honest node counts its two honest peers and the four identities as participants.
    let participants = |i: usize| {
        std::fs::read_to_string(lab.stderr_path(i))
            .unwrap_or_default()
            .matches("election participant connected")
            .count()
    };
    lab.wait_until(
        Duration::from_secs(30),
        "every node counts the 4 voters as participants",
        || honest.iter().all(|&i| participants(i) >= 6).then_some(()),
    );
    let leader = agreed(&lab, &honest).expect("the leader stayed");
    let (_, term) = view(&lab, leader).expect("running");

    lab.kill(leader);
    let killed = Instant::now();
    let rest = all_but(3, leader);
    let (second, at) = lab.wait_until(
        KILL_FAILOVER_LIMIT,
        "the 2 others agree on a new leader despite the 4 silent voters",
        || agreed(&lab, &rest).map(|l| (l, Instant::now())),
    );
    let (_, new_term) = view(&lab, second).expect("running");
    println!(
        "silent_voters_failover_ms={} term {term} -> {new_term}",
        at.duration_since(killed).as_millis()
    );
    assert!(
        new_term <= term + 3,
        "an election, not a storm: {term} -> {new_term}"
    );
}

/// A py-libp2p identity claims the lead with a higher term (the nodes follow it) and then
/// serves nothing: index pushes and searches go unanswered. Each node deposes it once its
/// pushes went unserved for `publish::SERVICE_LIMIT` (20 s), and the honest nodes elect one of
/// themselves; searches work again, while the identity keeps heartbeating.
#[test]
fn a_leader_that_does_not_serve_is_deposed() {
    let test = "a_leader_that_does_not_serve_is_deposed";
    let Some(python) = crate::interop::py::venv_python(test) else {
        return;
    };
    let Some(mut lab) = Lab::new(test, 4) else {
        return;
    };
    let honest = [0, 1, 2];
    crate::lab::search::write_shared(&lab, 1, "served-by-an-honest-leader.txt", b"yes");
    let addrs = start_honest_three(&mut lab);
    let (_, term) = view(&lab, 0).expect("running");
    let hijacker = lab
        .in_netns(3, &python)
        .current_dir(crate::interop::py::PY_DIR)
        .args(["misbehave.py", "--scenario", "mute-leader"])
        .args(["--term", &(term + 1).to_string()])
        .args(["--hold", "90", "--timeout", "120", "--addrs"])
        .arg(addrs.join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the mute leader");
    let mut hijacker = crate::util::KillOnDrop(hijacker);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hijacker.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .expect("read the mute leader's id");
    let mute: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let mute = mute["leader"].as_str().expect("its peer id").to_owned();
    let follows_mute = |i: usize| {
        lab.try_status(i)
            .is_some_and(|s| s["leader"].as_str() == Some(mute.as_str()))
    };
    lab.wait_until(
        Duration::from_secs(10),
        "the nodes follow the mute leader",
        || honest.iter().all(|&i| follows_mute(i)).then_some(()),
    );
    let hijacked = Instant::now();
    let (code, _, err) = crate::util::run(lab.cli(2).args(["search", "served-by", "--json"]));
    assert_ne!(code, 0, "a search under the mute leader fails: {err}");

    let (leader, at) = lab.wait_until(
        Duration::from_secs(45),
        "the nodes depose the mute leader and agree on one of themselves",
        || agreed(&lab, &honest).map(|l| (l, Instant::now())),
    );
    let (_, new_term) = view(&lab, leader).expect("running");
    println!(
        "mute_leader_deposed_ms={} term {term} -> {} (mute) -> {new_term}",
        at.duration_since(hijacked).as_millis(),
        term + 1
    );
    let log = std::fs::read_to_string(lab.stderr_path(0)).unwrap_or_default();
    assert!(
        log.contains("does not answer this node's index pushes"),
        "node 0 says why it left its leader"
    );
    lab.wait_until(
        Duration::from_secs(20),
        "a search finds node 1's file",
        || {
            let (code, out, _) =
                crate::util::run(lab.cli(2).args(["search", "served-by", "--json"]));
            (code == 0 && out.contains("served-by-an-honest-leader.txt")).then_some(())
        },
    );
    // The mute identity is still there, still heartbeating: nobody follows it again.
    assert!(
        honest.iter().all(|&i| !follows_mute(i)),
        "a node went back to the mute leader"
    );
    assert!(
        matches!(hijacker.0.try_wait(), Ok(None)),
        "the mute leader is still running"
    );
}
