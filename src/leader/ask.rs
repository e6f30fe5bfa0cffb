//! Asking the leader: a search or an id lookup, from this node.
//!
//! The question goes to the current leader (this node's own service when it leads). While
//! there is no leader, or the leader goes away mid-question, it waits for the next one and asks
//! again, until [`ASK_DEADLINE`]; then it says so plainly. It never fails just because an
//! election is running.

use std::collections::HashSet;
use std::time::Duration;

use iwant_behaviours::search::{Hit, Request, Response, Results, MAX_HOLDERS, MAX_PARTIAL_HOLDERS};
use libp2p::PeerId;
use tokio::{sync::watch, time::Instant};

use super::LeaderHandle;
use crate::net::{LeaderView, NetworkClient, RequestError};

/// How long a question may wait for a leader and its answer, in all: an election (up to a
/// few seconds after a leader is cut off), a new leader collecting the nodes' indexes
/// (`service::READY_LIMIT`), a leader on a slow or lossy link. Under the CLI's 15 s.
pub const ASK_DEADLINE: Duration = Duration::from_secs(12);

/// How long to wait before asking again when the leader was busy or is not the leader any
/// more but no other was announced yet.
const RETRY: Duration = Duration::from_millis(100);

/// Why there is no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No leader was elected, or none answered, in time.
    #[error("no leader answered within {}s ({last}). The nodes elect one within about 2 seconds of meeting; check `iwant status` (peers, leader) and try again", .waited.as_secs())]
    NoLeader {
        /// How long we waited.
        waited: Duration,
        /// What happened last.
        last: String,
    },
    /// The leader refused the question.
    #[error("the leader refused the search: {0}")]
    Refused(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopped,
}

/// The leader's answer and who gave it.
#[derive(Debug)]
pub struct Answer {
    /// The results page.
    pub results: Results,
    /// The leader that answered.
    pub leader: PeerId,
}

/// Asks the leader `request` (a search or a locate), waiting at most `deadline` for a leader
/// and its answer.
pub async fn ask(
    net: &NetworkClient,
    local: &LeaderHandle,
    request: Request,
    deadline: Duration,
) -> Result<Answer, AskError> {
    match ask_any(net, local, request, deadline).await? {
        (Response::Results(results), leader) => Ok(Answer { results, leader }),
        (other, leader) => Err(AskError::Refused(format!(
            "leader {leader} answered a search with {other:?}"
        ))),
    }
}

/// The holders of one id as the leader knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding<P = PeerId> {
    /// The nodes that hold all of it.
    pub whole: Vec<P>,
    /// The nodes downloading it, each with its piece bitfield (bit `i % 8` of byte `i / 8` is
    /// piece `i`).
    pub partial: Vec<(P, Vec<u8>)>,
}

impl<P> Default for Holding<P> {
    fn default() -> Self {
        Self {
            whole: Vec::new(),
            partial: Vec::new(),
        }
    }
}

/// The holders of each of `ids` (at most [`iwant_behaviours::search::MAX_HOLDER_IDS`]) as the
/// leader knows them, whole and partial, in the order of `ids`; waits at most `deadline` for a
/// leader and its answer. Peer ids that do not parse are left out, and so are holders past the
/// protocol's bounds per id ([`iwant_behaviours::search::MAX_HOLDERS`] whole,
/// [`iwant_behaviours::search::MAX_PARTIAL_HOLDERS`] partial), which an honest leader never sends.
pub async fn holders(
    net: &NetworkClient,
    local: &LeaderHandle,
    ids: Vec<iwant_behaviours::id::Id>,
    deadline: Duration,
) -> Result<Vec<Holding>, AskError> {
    let asked = ids.len();
    match ask_any(net, local, Request::Holders { ids }, deadline).await? {
        (Response::Holders { holders, partial }, _)
            if holders.len() == asked && (partial.is_empty() || partial.len() == asked) =>
        {
            let mut partial = partial.into_iter();
            Ok(holders
                .into_iter()
                .map(|peers| Holding {
                    whole: peers
                        .iter()
                        .take(MAX_HOLDERS)
                        .filter_map(|p| p.parse().ok())
                        .collect(),
                    partial: partial
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .take(MAX_PARTIAL_HOLDERS)
                        .filter_map(|h| Some((h.peer.parse().ok()?, h.have.0)))
                        .collect(),
                })
                .collect())
        }
        (other, leader) => Err(AskError::Refused(format!(
            "leader {leader} answered a holders request with {other:?}"
        ))),
    }
}

/// Tells the leader which pieces of which files this node is downloading has (at most
/// [`iwant_behaviours::search::MAX_PARTIAL_FILES`]; replaces what it said before); waits at
/// most `deadline`.
pub async fn partial(
    net: &NetworkClient,
    local: &LeaderHandle,
    files: Vec<iwant_behaviours::search::PartialFile>,
    deadline: Duration,
) -> Result<(), AskError> {
    match ask_any(net, local, Request::Partial { files }, deadline).await? {
        (Response::Noted, _) => Ok(()),
        (other, leader) => Err(AskError::Refused(format!(
            "leader {leader} answered a partial list with {other:?}"
        ))),
    }
}

/// Asks the leader `request`; returns its answer (results or holders) and who gave it.
async fn ask_any(
    net: &NetworkClient,
    local: &LeaderHandle,
    request: Request,
    deadline: Duration,
) -> Result<(Response, PeerId), AskError> {
    let start = Instant::now();
    let until = start + deadline;
    let mut leader = net.leader_watch();
    let mut last = String::from("no leader elected yet");
    loop {
        if Instant::now() >= until {
            return Err(AskError::NoLeader {
                waited: start.elapsed(),
                last,
            });
        }
        let view =
            match tokio::time::timeout_at(until, leader.wait_for(|v| v.leader.is_some())).await {
                Ok(Ok(view)) => *view,
                Ok(Err(_)) => return Err(AskError::Stopped),
                Err(_) => {
                    return Err(AskError::NoLeader {
                        waited: start.elapsed(),
                        last,
                    })
                }
            };
        let target = view.leader.expect("bug: waited for a leader");
        leader.mark_unchanged();
        let asked = async {
            if target == net.local_peer_id() {
                local
                    .search(request.clone())
                    .await
                    .ok_or(RequestError::Stopped)
            } else {
                net.search(target, request.clone()).await
            }
        };
        // Give up on this leader as soon as another one is elected.
        let outcome = tokio::select! {
            outcome = tokio::time::timeout_at(until, asked) => outcome,
            _ = leader_moves(&mut leader, target) => {
                last = format!("leader {target} was replaced while answering");
                continue;
            }
        };
        match outcome {
            Err(_) => {
                last = format!("leader {target} did not answer");
                continue;
            }
            Ok(Ok(
                answer @ (Response::Results(_) | Response::Holders { .. } | Response::Noted),
            )) => {
                return Ok((answer, target));
            }
            Ok(Ok(Response::Refused { reason })) => return Err(AskError::Refused(reason)),
            Ok(Ok(Response::NotLeader)) => last = format!("{target} is no longer the leader"),
            Ok(Ok(Response::Busy)) => last = format!("leader {target} is busy"),
            Ok(Err(RequestError::Stopped)) => return Err(AskError::Stopped),
            Ok(Err(RequestError::Failed(e))) => last = format!("leader {target}: {e}"),
        }
        tracing::debug!(reason = %last, "asking the leader again");
        // Wait for a new leader, or a moment if the same one stays.
        let _ = tokio::time::timeout_at(
            until.min(Instant::now() + RETRY),
            leader_moves(&mut leader, target),
        )
        .await;
    }
}

/// The hits of a leader's answer as far as this node can check them: holders it does not know
/// (`known`: the peers it was connected to since it started, and itself) are left out, and so is a hit left
/// without holders; `holder_count` drops by as many. A leader can name only peers on the LAN,
/// not invent them; whether a holder really has the id is checked when it is fetched (every
/// piece against the id).
pub fn known_holders_only(hits: Vec<Hit>, known: &HashSet<String>) -> Vec<Hit> {
    hits.into_iter()
        .filter_map(|mut hit| {
            let listed = hit.holders.len();
            hit.holders.retain(|h| known.contains(h));
            if hit.holders.is_empty() {
                return None;
            }
            let dropped = u32::try_from(listed - hit.holders.len()).unwrap_or(u32::MAX);
            let kept = u32::try_from(hit.holders.len()).unwrap_or(u32::MAX);
            hit.holder_count = hit.holder_count.saturating_sub(dropped).max(kept);
            Some(hit)
        })
        .collect()
}

/// Returns when the leader is no longer `target`.
async fn leader_moves(leader: &mut watch::Receiver<LeaderView>, target: PeerId) {
    if leader.wait_for(|v| v.leader != Some(target)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use iwant_behaviours::{id::Id, wire::Kind};

    use super::*;

    fn hit(byte: u8, holders: &[&str], count: u32) -> Hit {
        Hit {
            id: Id::from([byte; 32]),
            kind: Kind::File,
            size: 1,
            path: format!("f{byte}"),
            score: 0,
            holders: holders.iter().map(|h| h.to_string()).collect(),
            holder_count: count,
        }
    }

    #[test]
    fn holders_this_node_does_not_know_are_left_out() {
        let known: HashSet<String> = ["me", "a", "b"].map(String::from).into();
        let hits = vec![
            hit(1, &["a", "ghost"], 2),
            hit(2, &["ghost", "phantom"], 2),
            hit(3, &["me", "b"], 5),
        ];
        let kept = known_holders_only(hits, &known);
        assert_eq!(kept.len(), 2, "the hit held only by invented peers is gone");
        assert_eq!(kept[0].holders, ["a"]);
        assert_eq!(kept[0].holder_count, 1);
        // Holders beyond the listed ones cannot be checked: the count stays the leader's.
        assert_eq!(kept[1].holders, ["me", "b"]);
        assert_eq!(kept[1].holder_count, 5);
    }
}
