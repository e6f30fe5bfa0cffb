//! The election as a pure state machine: inputs and `now` in, [`Action`]s out.
//!
//! [`ElectionState`] does no I/O and owns no timer. Its owner (the [`Behaviour`](super::Behaviour))
//! feeds it [`Input`]s with the current time, carries out the returned actions (send a message,
//! report a leader change) and calls [`ElectionState::handle`] with [`Input::Tick`] once
//! [`ElectionState::next_deadline`] has passed. The algorithm is written down in `docs/election.md`.
//!
//! Randomness (the jitter of election timeouts) comes from a small generator seeded by the
//! owner, so tests are deterministic.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use rand::{rngs::SmallRng, RngExt, SeedableRng};

use super::{
    protocol::{Message, MAX_TERM_JUMP},
    Config,
};

/// How many unanswered rounds in a row mute a participant when nobody answered at all.
const MUTE_AFTER_ROUNDS: u32 = 3;

/// How many found-but-not-connected peers a starting node waits for, at most (peer exchange
/// and mDNS come from the network: bounded).
const MAX_EXPECTED: usize = 1024;

/// How long a deposed leader goes unheard the first time ([`Input::Depose`]); each further
/// deposition of the same peer doubles it, up to [`MAX_DISTRUST`].
pub const DISTRUST: Duration = Duration::from_secs(10 * 60);

/// The longest a deposed peer goes unheard.
pub const MAX_DISTRUST: Duration = Duration::from_secs(4 * 60 * 60);

/// How many deposed peers are remembered (the oldest is forgotten first).
const MAX_DISTRUSTED: usize = 64;

/// How long after deposing its leader a node that found no other leader since gives in and
/// trusts that leader again: the room still has it, so the fault is more likely this node's
/// own (its link, its view). Long enough for the others to find a leader that does not serve
/// on their own (each checks at least every 15 s, and deposes after 20 s).
pub const FORGIVE_AFTER: Duration = Duration::from_secs(45);

/// Something that happened, for [`ElectionState::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A peer that speaks the election protocol is connected.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer was found (mDNS, peer exchange) but is not connected yet. Until this node has
    /// known a leader, it holds back from standing while peers it found have not arrived
    /// (at most [`Config::max_settle`]): a node that starts into a busy network waits for them
    /// instead of leading alone and then merging (each merge costs a term).
    PeerDiscovered(PeerId),
    /// A message arrived from an authenticated peer.
    Received {
        /// The sender, as Noise authenticated it.
        from: PeerId,
        /// What it said.
        message: Message,
    },
    /// This node's leader does not serve (its index pushes go unanswered): stop following
    /// it, and ignore it (its heartbeats, its votes, its candidacies) for [`DISTRUST`], twice
    /// as long for each further time, up to [`MAX_DISTRUST`]. The other followers find the
    /// same on their own and elect another leader among themselves.
    Depose(PeerId),
    /// Time passed: [`ElectionState::next_deadline`] may have been reached.
    Tick,
    /// This node is shutting down: a leader says goodbye, then the machine stops.
    Leave,
}

/// What the owner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `message` to `to`.
    Send {
        /// The peer.
        to: PeerId,
        /// The message.
        message: Message,
    },
    /// This node now follows `leader` (which may be this node) in `term`.
    LeaderElected {
        /// The leader.
        leader: PeerId,
        /// Its term.
        term: u64,
    },
    /// This node no longer follows anyone; `term` was the term of the lost leader.
    LeaderLost {
        /// The term of the leader that was lost.
        term: u64,
    },
}

/// Where this node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Follows `leader`, or waits for one.
    Follower {
        /// The leader, once known.
        leader: Option<PeerId>,
        /// When the leader was last heard (a heartbeat).
        last_heard: Option<Instant>,
        /// When to stand as a candidate unless the leader is heard again.
        deadline: Instant,
    },
    /// Asks for votes in the current term.
    Candidate {
        /// Who granted their vote, this node included.
        votes: BTreeSet<PeerId>,
        /// Whether a peer answered in this term (granted or not). A round nobody answered is
        /// repeated in the same term; only a contested round moves to the next term.
        contested: bool,
        /// The participants that answered in this term (granted or not).
        answered: BTreeSet<PeerId>,
        /// When this round ends without a majority and the next one starts.
        deadline: Instant,
        /// The leader whose silence started this election, while its connection is still open:
        /// it is not counted among the voters (it would never answer), so two nodes whose link
        /// is cut do not wait for the liveness watchdog to close the dead connection.
        silent_leader: Option<PeerId>,
    },
    /// Leads the current term.
    Leader {
        /// When the next heartbeat is due.
        next_heartbeat: Instant,
    },
    /// Shut down: ignores everything.
    Left,
}

/// A deposed peer ([`Input::Depose`]).
#[derive(Debug, Clone)]
struct Distrust {
    /// Ignored until then.
    until: Instant,
    /// Deposed (last) at.
    since: Instant,
    times: u32,
}

/// The election state of one node. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ElectionState {
    local: PeerId,
    config: Config,
    term: u64,
    /// The candidate this node voted for in `term`.
    voted_for: Option<PeerId>,
    role: Role,
    /// Connected peers that speak the protocol and have not said goodbye.
    peers: BTreeSet<PeerId>,
    /// Still in the start-up wait: the first deadline adds the ranked election delay before
    /// standing, once the node knows its peers.
    starting: bool,
    /// When the last new participant arrived.
    last_joined: Option<Instant>,
    /// Since when this node has held back from standing because participants keep arriving
    /// ([`Config::settle`]).
    holding_since: Option<Instant>,
    /// Whether this node has followed or led anyone yet (see [`Input::PeerDiscovered`]).
    seen_leader: bool,
    /// Peers found but not connected yet, while this node has not seen a leader; at most
    /// [`MAX_EXPECTED`].
    expected: BTreeSet<PeerId>,
    /// Per participant, how many of this node's rounds in a row it left unanswered (reset by
    /// any message from it).
    unanswered: BTreeMap<PeerId, u32>,
    /// Participants that left a round unanswered while others answered it, or
    /// [`MUTE_AFTER_ROUNDS`] rounds in a row. They do not count among the voters until they send
    /// something, so identities that join the election and never vote cannot stall it.
    mute: BTreeSet<PeerId>,
    /// Deposed peers: until when each is ignored, and how often it was deposed; at most
    /// [`MAX_DISTRUSTED`].
    distrusted: BTreeMap<PeerId, Distrust>,
    /// Connected participants set aside while distrusted: they count again when it ends.
    sidelined: BTreeSet<PeerId>,
    /// The jitter's generator, seeded by the caller (tests replay a seed).
    rng: SmallRng,
}

impl ElectionState {
    /// A node that has just started: a follower without a leader that waits
    /// [`Config::startup_wait`] for one before it stands.
    pub fn new(local: PeerId, config: Config, seed: u64, now: Instant) -> Self {
        let mut state = Self {
            local,
            config,
            term: 0,
            voted_for: None,
            role: Role::Left,
            peers: BTreeSet::new(),
            starting: true,
            last_joined: None,
            holding_since: None,
            seen_leader: false,
            expected: BTreeSet::new(),
            unanswered: BTreeMap::new(),
            mute: BTreeSet::new(),
            distrusted: BTreeMap::new(),
            sidelined: BTreeSet::new(),
            rng: SmallRng::seed_from_u64(seed),
        };
        let wait = state.config.startup_wait + state.jitter();
        state.role = Role::Follower {
            leader: None,
            last_heard: None,
            deadline: now + wait,
        };
        state
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The leader this node follows (itself when it leads).
    pub fn leader(&self) -> Option<PeerId> {
        match &self.role {
            Role::Follower { leader, .. } => *leader,
            Role::Leader { .. } => Some(self.local),
            Role::Candidate { .. } | Role::Left => None,
        }
    }

    /// Where this node stands.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The participants this node counts, itself excluded.
    pub fn peers(&self) -> &BTreeSet<PeerId> {
        &self.peers
    }

    /// When [`Input::Tick`] is next needed; `None` after [`Input::Leave`].
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.role {
            Role::Follower { deadline, .. } | Role::Candidate { deadline, .. } => Some(*deadline),
            Role::Leader { next_heartbeat } => Some(*next_heartbeat),
            Role::Left => None,
        }
    }

    /// Applies `input` at `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if self.role == Role::Left {
            return out;
        }
        self.restore_trust(now, &mut out);
        match &input {
            Input::Received { from, .. } if self.is_distrusted(from, now) => return out,
            Input::PeerConnected(peer) if self.is_distrusted(peer, now) => {
                self.sidelined.insert(*peer);
                // Not heard, but told who leads (see `heartbeat_all`).
                if matches!(self.role, Role::Leader { .. }) {
                    send(&mut out, *peer, Message::Heartbeat { term: self.term });
                }
                return out;
            }
            Input::PeerDisconnected(peer) => {
                self.sidelined.remove(peer);
            }
            _ => {}
        }
        if let Input::Received { from, message } = &input {
            // A term far ahead of ours comes from no honest node (terms grow by one per
            // election): ignored, so a peer cannot push the term to where it overflows.
            if message.term() > self.term.saturating_add(MAX_TERM_JUMP) {
                return out;
            }
            // A participant that speaks counts as a voter again.
            if self.peers.contains(from) {
                self.unanswered.remove(from);
                self.mute.remove(from);
            }
        }
        match input {
            Input::PeerConnected(peer) => self.on_connected(now, peer, &mut out),
            Input::PeerDisconnected(peer) => self.on_gone(now, peer, &mut out),
            Input::PeerDiscovered(peer) => {
                if !self.seen_leader
                    && peer != self.local
                    && !self.peers.contains(&peer)
                    && self.expected.len() < MAX_EXPECTED
                {
                    self.expected.insert(peer);
                }
            }
            Input::Received { from, message } => match message {
                Message::Heartbeat { term } => self.on_heartbeat(now, from, term, &mut out),
                Message::VoteRequest { term } => self.on_vote_request(now, from, term, &mut out),
                Message::VoteReply { term, granted } => {
                    self.on_vote_reply(now, from, term, granted, &mut out)
                }
                Message::Goodbye { term } => {
                    if term >= self.term {
                        self.on_gone(now, from, &mut out)
                    } else {
                        // A stale goodbye still means the sender is leaving.
                        self.peers.remove(&from);
                        self.unanswered.remove(&from);
                        self.mute.remove(&from);
                    }
                }
            },
            Input::Depose(peer) => self.depose(now, peer, &mut out),
            Input::Tick => self.on_tick(now, &mut out),
            Input::Leave => {
                if matches!(self.role, Role::Leader { .. }) {
                    self.broadcast(Message::Goodbye { term: self.term }, &mut out);
                }
                self.role = Role::Left;
            }
        }
        out
    }

    fn is_distrusted(&self, peer: &PeerId, now: Instant) -> bool {
        self.distrusted.get(peer).is_some_and(|d| d.until > now)
    }

    fn depose(&mut self, now: Instant, peer: PeerId, out: &mut Vec<Action>) {
        if peer == self.local {
            return;
        }
        if !self.distrusted.contains_key(&peer) && self.distrusted.len() >= MAX_DISTRUSTED {
            let oldest = self
                .distrusted
                .iter()
                .min_by_key(|(_, d)| d.until)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.distrusted.remove(&oldest);
                self.sidelined.remove(&oldest);
            }
        }
        let entry = self.distrusted.entry(peer).or_insert(Distrust {
            until: now,
            since: now,
            times: 0,
        });
        entry.since = now;
        entry.times = entry.times.saturating_add(1);
        let factor = 1u32 << entry.times.saturating_sub(1).min(16);
        entry.until = now + DISTRUST.saturating_mul(factor).min(MAX_DISTRUST);
        if self.peers.contains(&peer) {
            self.sidelined.insert(peer);
            // As if it had left: a leader is lost at once, a candidate re-counts its voters.
            self.on_gone(now, peer, out);
        }
    }

    /// A node that deposed a peer [`FORGIVE_AFTER`] ago or longer and has found no leader
    /// since trusts that peer again: had the others deposed it too, they would have elected
    /// another leader by now, so the room still follows it and the fault is more likely this
    /// node's own. The peer counts as a participant again (a candidate asks it for its vote;
    /// a leader answers with its heartbeat, which this node follows).
    fn forgive(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.sidelined.is_empty() || self.leader().is_some() {
            return;
        }
        let mut any = false;
        for peer in &self.sidelined {
            if let Some(d) = self.distrusted.get_mut(peer) {
                if now.saturating_duration_since(d.since) >= FORGIVE_AFTER {
                    d.until = now;
                    any = true;
                }
            }
        }
        if any {
            self.restore_trust(now, out);
        }
    }

    /// Distrusted peers whose time is up count again (if still connected).
    fn restore_trust(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.sidelined.is_empty() {
            return;
        }
        let back: Vec<PeerId> = self
            .sidelined
            .iter()
            .filter(|p| !self.is_distrusted(p, now))
            .copied()
            .collect();
        for peer in back {
            self.sidelined.remove(&peer);
            self.on_connected(now, peer, out);
        }
    }

    fn on_connected(&mut self, now: Instant, peer: PeerId, out: &mut Vec<Action>) {
        if peer == self.local || !self.peers.insert(peer) {
            return;
        }
        self.expected.remove(&peer);
        self.last_joined = Some(now);
        let term = self.term;
        match &self.role {
            Role::Leader { .. } => send(out, peer, Message::Heartbeat { term }),
            Role::Candidate { .. } => send(out, peer, Message::VoteRequest { term }),
            Role::Follower { .. } | Role::Left => {}
        }
    }

    /// `peer` disconnected or said goodbye.
    fn on_gone(&mut self, now: Instant, peer: PeerId, out: &mut Vec<Action>) {
        self.peers.remove(&peer);
        self.unanswered.remove(&peer);
        self.mute.remove(&peer);
        match &self.role {
            Role::Follower {
                leader: Some(leader),
                ..
            } if *leader == peer => {
                out.push(Action::LeaderLost { term: self.term });
                let deadline = now + self.election_delay();
                self.role = Role::Follower {
                    leader: None,
                    last_heard: None,
                    deadline,
                };
            }
            Role::Candidate { .. } => self.check_majority(now, out),
            _ => {}
        }
    }

    fn on_heartbeat(&mut self, now: Instant, from: PeerId, term: u64, out: &mut Vec<Action>) {
        if term < self.term || from == self.local {
            return;
        }
        let follow = match &self.role {
            Role::Leader { .. } => term > self.term || from < self.local,
            Role::Candidate { .. } => true,
            Role::Follower { leader, .. } => match leader {
                _ if term > self.term => true,
                None => true,
                Some(current) => *current == from || from < *current,
            },
            Role::Left => false,
        };
        if follow {
            self.follow(now, from, term, out);
        }
    }

    /// Follows `leader` in `term` (`term` ≥ the current term), heard at `now`.
    fn follow(&mut self, now: Instant, leader: PeerId, term: u64, out: &mut Vec<Action>) {
        let changed = self.leader() != Some(leader) || self.term != term;
        self.starting = false;
        self.holding_since = None;
        self.seen_leader = true;
        self.expected.clear();
        if term > self.term {
            self.voted_for = None;
        }
        self.term = term;
        let deadline = now + self.config.leader_timeout + self.election_delay();
        self.role = Role::Follower {
            leader: Some(leader),
            last_heard: Some(now),
            deadline,
        };
        if changed {
            out.push(Action::LeaderElected { leader, term });
        }
    }

    fn on_vote_request(&mut self, now: Instant, from: PeerId, term: u64, out: &mut Vec<Action>) {
        if from == self.local {
            return;
        }
        let deny = |out: &mut Vec<Action>, term| {
            send(
                out,
                from,
                Message::VoteReply {
                    term,
                    granted: false,
                },
            )
        };
        if term < self.term {
            return deny(out, self.term);
        }
        match &self.role {
            Role::Leader { .. } => {
                // A working leader stays: it takes the candidate's term if higher and tells
                // everyone at once, which turns the candidate into a follower.
                if term > self.term {
                    self.term = term;
                    self.voted_for = None;
                    out.push(Action::LeaderElected {
                        leader: self.local,
                        term,
                    });
                    self.heartbeat_all(out);
                    self.role = Role::Leader {
                        next_heartbeat: now + self.config.heartbeat_interval,
                    };
                } else {
                    send(out, from, Message::Heartbeat { term: self.term });
                }
                deny(out, self.term);
            }
            Role::Follower {
                leader: Some(_),
                last_heard: Some(heard),
                ..
            } if now.saturating_duration_since(*heard) < self.config.leader_lease => {
                // Leader stickiness: a leader heard recently is not abandoned.
                deny(out, self.term);
            }
            _ => {
                if term > self.term {
                    if let Some(_leader) = self.leader() {
                        out.push(Action::LeaderLost { term: self.term });
                    }
                    self.term = term;
                    self.voted_for = None;
                    let deadline = now + self.config.round_timeout + self.election_delay();
                    self.role = Role::Follower {
                        leader: None,
                        last_heard: None,
                        deadline,
                    };
                }
                let free = self.voted_for.is_none() || self.voted_for == Some(from);
                if free && matches!(self.role, Role::Follower { leader: None, .. }) {
                    self.voted_for = Some(from);
                    // Give the candidate time to win before standing ourselves.
                    let until = now + self.config.round_timeout + self.election_delay();
                    if let Role::Follower { deadline, .. } = &mut self.role {
                        *deadline = until;
                    }
                    send(
                        out,
                        from,
                        Message::VoteReply {
                            term,
                            granted: true,
                        },
                    );
                } else {
                    deny(out, self.term);
                }
            }
        }
    }

    fn on_vote_reply(
        &mut self,
        now: Instant,
        from: PeerId,
        term: u64,
        granted: bool,
        out: &mut Vec<Action>,
    ) {
        if term > self.term {
            if let Some(_leader) = self.leader() {
                out.push(Action::LeaderLost { term: self.term });
            }
            // A network ahead of this node, so probably with a leader: wait for its heartbeat
            // as a follower does, rather than stand again at once in a term above it.
            self.term = term;
            self.voted_for = None;
            let deadline = now + self.config.leader_timeout + self.election_delay();
            self.role = Role::Follower {
                leader: None,
                last_heard: None,
                deadline,
            };
            return;
        }
        if term < self.term {
            return;
        }
        if let Role::Candidate {
            votes,
            contested,
            answered,
            ..
        } = &mut self.role
        {
            *contested = true;
            answered.insert(from);
            if granted && self.peers.contains(&from) {
                votes.insert(from);
            }
            self.check_majority(now, out);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.forgive(now, out);
        if self.starting && self.next_deadline().is_some_and(|d| now >= d) {
            self.starting = false;
            if let Role::Follower { leader: None, .. } = self.role {
                let until = now + self.election_delay();
                if let Role::Follower { deadline, .. } = &mut self.role {
                    *deadline = until;
                }
                return;
            }
        }
        if self.mute_the_silent(now) {
            self.check_majority(now, out);
            if matches!(self.role, Role::Leader { .. }) {
                return;
            }
        }
        match &self.role {
            Role::Candidate {
                deadline,
                contested: false,
                ..
            } if now >= *deadline => {
                // Nobody answered in this term (unreachable peers): ask again in the same
                // term, so that a cut-off node does not inflate its term.
                let term = self.term;
                let until = now + self.config.round_timeout + self.jitter();
                if let Role::Candidate { deadline, .. } = &mut self.role {
                    *deadline = until;
                }
                self.broadcast(Message::VoteRequest { term }, out);
            }
            // A leaderless follower due to stand, or a contested round without a majority:
            // while participants keep arriving, the next term waits for them (a majority of a
            // growing network is out of reach, and every new term costs one).
            Role::Follower {
                leader: None,
                deadline,
                ..
            }
            | Role::Candidate { deadline, .. }
                if now >= *deadline =>
            {
                if let Some(until) = self.hold_back(now) {
                    if let Role::Follower { deadline, .. } | Role::Candidate { deadline, .. } =
                        &mut self.role
                    {
                        *deadline = until;
                    }
                    return;
                }
                self.stand(now, out)
            }
            Role::Follower { deadline, .. } if now >= *deadline => self.stand(now, out),
            Role::Leader { next_heartbeat } if now >= *next_heartbeat => {
                self.heartbeat_all(out);
                self.role = Role::Leader {
                    next_heartbeat: now + self.config.heartbeat_interval,
                };
            }
            _ => {}
        }
    }

    /// At the end of a candidate's round, mutes the participants that did not answer: at once
    /// if others answered the round, or after [`MUTE_AFTER_ROUNDS`] unanswered rounds in a row
    /// (a node whose links are cut hears nobody; it asks a few times before it counts its
    /// peers out, and the term does not grow meanwhile). Whether any was muted.
    fn mute_the_silent(&mut self, now: Instant) -> bool {
        let Role::Candidate {
            deadline,
            contested,
            answered,
            ..
        } = &self.role
        else {
            return false;
        };
        if now < *deadline {
            return false;
        }
        let mut muted = false;
        for peer in &self.peers {
            if answered.contains(peer) || self.mute.contains(peer) {
                continue;
            }
            let rounds = self.unanswered.entry(*peer).or_default();
            *rounds += 1;
            if *contested || *rounds >= MUTE_AFTER_ROUNDS {
                self.mute.insert(*peer);
                muted = true;
            }
        }
        muted
    }

    /// When a leaderless node that is due to stand should look again instead, because a
    /// participant arrived within [`Config::settle`] or peers it found have not arrived yet
    /// (and it has not held back for [`Config::max_settle`] yet); `None` when it should stand
    /// now.
    fn hold_back(&mut self, now: Instant) -> Option<Instant> {
        let waiting = !self.expected.is_empty();
        if self.last_joined.is_none() && !waiting {
            return None;
        }
        let since = *self.holding_since.get_or_insert(now);
        let arrived_lately = self
            .last_joined
            .is_some_and(|joined| now.saturating_duration_since(joined) < self.config.settle);
        let settled = !waiting && !arrived_lately;
        if settled || now.saturating_duration_since(since) >= self.config.max_settle {
            self.holding_since = None;
            return None;
        }
        // Then the ranked delay again, so that the smallest id still stands first.
        let from = match self.last_joined {
            Some(joined) if arrived_lately => joined,
            _ => now,
        };
        Some(from + self.config.settle + self.election_delay())
    }

    /// Starts a new term as a candidate.
    fn stand(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Only reached by a deadline: a followed leader here has gone silent.
        let silent_leader = match &self.role {
            Role::Candidate { silent_leader, .. } => *silent_leader,
            _ => self.leader(),
        };
        if let Some(_leader) = self.leader() {
            out.push(Action::LeaderLost { term: self.term });
        }
        self.term = self.term.saturating_add(1);
        self.voted_for = Some(self.local);
        let deadline = now + self.config.round_timeout + self.jitter();
        self.role = Role::Candidate {
            votes: BTreeSet::from([self.local]),
            contested: false,
            answered: BTreeSet::new(),
            deadline,
            silent_leader,
        };
        self.broadcast(Message::VoteRequest { term: self.term }, out);
        self.check_majority(now, out);
    }

    /// Becomes leader if the votes are a majority of the participants this node sees.
    fn check_majority(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Role::Candidate {
            votes,
            silent_leader,
            ..
        } = &self.role
        else {
            return;
        };
        let counted = votes
            .iter()
            .filter(|v| **v == self.local || self.peers.contains(v))
            .count();
        let silent =
            silent_leader.is_some_and(|l| self.peers.contains(&l) && !self.mute.contains(&l));
        let muted = self.peers.iter().filter(|p| self.mute.contains(p)).count();
        let voters = self.peers.len() + 1 - usize::from(silent) - muted;
        if counted * 2 > voters {
            let term = self.term;
            self.seen_leader = true;
            self.expected.clear();
            self.role = Role::Leader {
                next_heartbeat: now + self.config.heartbeat_interval,
            };
            out.push(Action::LeaderElected {
                leader: self.local,
                term,
            });
            self.heartbeat_all(out);
        }
    }

    fn broadcast(&self, message: Message, out: &mut Vec<Action>) {
        for peer in &self.peers {
            send(out, *peer, message);
        }
    }

    /// A leader's heartbeat to every participant, and to the connected peers it distrusts:
    /// those are not heard (not followed, their votes not counted), but a deposed leader that
    /// was only cut off for a while learns this way that the room moved on and follows, instead
    /// of leading on its own for the whole distrust time.
    fn heartbeat_all(&self, out: &mut Vec<Action>) {
        let message = Message::Heartbeat { term: self.term };
        self.broadcast(message, out);
        for peer in self.sidelined.difference(&self.peers) {
            send(out, *peer, message);
        }
    }

    /// How long to wait before standing once the leader is gone: one
    /// [`Config::election_step`] per participant with a smaller peer id, plus jitter, so the
    /// smallest id usually stands first and alone.
    fn election_delay(&mut self) -> Duration {
        let rank = self.peers.iter().filter(|p| **p < self.local).count() as u32;
        self.config.election_step * rank + self.jitter()
    }

    /// A random duration in `[0, Config::election_jitter)`.
    fn jitter(&mut self) -> Duration {
        let max = self.config.election_jitter.as_micros() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.random_range(0..max))
    }
}

fn send(out: &mut Vec<Action>, to: PeerId, message: Message) {
    out.push(Action::Send { to, message });
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// `n` peer ids in ascending order.
    fn ids(n: usize) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        ids.sort();
        ids
    }

    fn quiet() -> Config {
        Config::default().with_election_jitter(Duration::ZERO)
    }

    fn hb(term: u64) -> Message {
        Message::Heartbeat { term }
    }

    fn sends(actions: &[Action]) -> Vec<(PeerId, Message)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, message } => Some((*to, *message)),
                _ => None,
            })
            .collect()
    }

    /// A node `local` following `leader` in `term`, with `others` connected, at `t0`.
    fn follower(
        local: PeerId,
        leader: PeerId,
        term: u64,
        others: &[PeerId],
        t0: Instant,
    ) -> ElectionState {
        let mut s = ElectionState::new(local, quiet(), 1, t0);
        s.handle(t0, Input::PeerConnected(leader));
        for p in others {
            s.handle(t0, Input::PeerConnected(*p));
        }
        s.handle(
            t0,
            Input::Received {
                from: leader,
                message: hb(term),
            },
        );
        assert_eq!((s.leader(), s.term()), (Some(leader), term));
        s
    }

    #[test]
    fn a_term_far_ahead_is_ignored_and_terms_never_overflow() {
        let t0 = Instant::now();
        let [liar, me]: [PeerId; 2] = ids(2).try_into().unwrap();
        let mut s = ElectionState::new(me, quiet(), 1, t0);
        s.handle(t0, Input::PeerConnected(liar));
        for term in [u64::MAX, MAX_TERM_JUMP + 1] {
            for message in [
                hb(term),
                Message::VoteRequest { term },
                Message::Goodbye { term },
            ] {
                let out = s.handle(
                    t0,
                    Input::Received {
                        from: liar,
                        message,
                    },
                );
                assert!(out.is_empty(), "{message:?} gave {out:?}");
            }
        }
        assert_eq!((s.leader(), s.term()), (None, 0));
        // Within the jump it follows. A liar that walked the term up to the very end (2^32
        // heartbeats; here the term is set close to it) makes the next election stay at
        // u64::MAX instead of overflowing.
        let from_liar = |term| Input::Received {
            from: liar,
            message: hb(term),
        };
        s.handle(t0, from_liar(MAX_TERM_JUMP));
        assert_eq!((s.leader(), s.term()), (Some(liar), MAX_TERM_JUMP));
        s.term = u64::MAX - 1;
        s.handle(t0, from_liar(u64::MAX));
        assert_eq!((s.leader(), s.term()), (Some(liar), u64::MAX));
        s.handle(t0, Input::PeerDisconnected(liar));
        while s.leader() != Some(me) {
            let now = s.next_deadline().unwrap();
            s.handle(now, Input::Tick);
            assert!(now - t0 < Duration::from_secs(5), "not leader in time");
        }
        assert_eq!(s.term(), u64::MAX);
    }

    #[test]
    fn a_node_alone_leads_after_the_startup_wait() {
        let t0 = Instant::now();
        let me = PeerId::random();
        let mut s = ElectionState::new(me, quiet(), 1, t0);
        assert!(s.handle(t0 + 500 * MS, Input::Tick).is_empty());
        let mut now = t0;
        while s.leader().is_none() {
            now = s.next_deadline().unwrap();
            s.handle(now, Input::Tick);
            assert!(now - t0 < Duration::from_secs(2), "not leader in time");
        }
        assert_eq!((s.leader(), s.term()), (Some(me), 1));
        assert_eq!(now - t0, quiet().startup_wait);
    }

    /// Single-node cases: a follower of `leader` (term 5, `other` also connected) gets one
    /// message; what does it follow afterwards, and what does it answer?
    #[test]
    fn follower_table() {
        let [leader, other, me, stranger]: [PeerId; 4] = ids(4).try_into().unwrap();
        let deny = |term| Message::VoteReply {
            term,
            granted: false,
        };
        let grant = |term| Message::VoteReply {
            term,
            granted: true,
        };
        // (name, ms after the last heartbeat, from, message, expected leader, term, replies)
        type Case = (
            &'static str,
            u64,
            PeerId,
            Message,
            Option<PeerId>,
            u64,
            Vec<(PeerId, Message)>,
        );
        let cases: Vec<Case> = vec![
            (
                "stale heartbeat is ignored",
                10,
                other,
                hb(4),
                Some(leader),
                5,
                vec![],
            ),
            (
                "heartbeat of the same leader refreshes",
                10,
                leader,
                hb(5),
                Some(leader),
                5,
                vec![],
            ),
            (
                "higher term from another leader wins",
                10,
                other,
                hb(6),
                Some(other),
                6,
                vec![],
            ),
            // `leader` has the smallest id: a same-term rival with a bigger id is ignored.
            (
                "same term, bigger id is ignored",
                10,
                other,
                hb(5),
                Some(leader),
                5,
                vec![],
            ),
            (
                "stale vote request is denied with our term",
                10,
                other,
                Message::VoteRequest { term: 3 },
                Some(leader),
                5,
                vec![(other, deny(5))],
            ),
            (
                "vote request while the leader is fresh is denied",
                100,
                other,
                Message::VoteRequest { term: 6 },
                Some(leader),
                5,
                vec![(other, deny(5))],
            ),
            (
                "vote request after the lease is granted",
                800,
                other,
                Message::VoteRequest { term: 6 },
                None,
                6,
                vec![(other, grant(6))],
            ),
            (
                "stale goodbye keeps the leader",
                10,
                leader,
                Message::Goodbye { term: 4 },
                Some(leader),
                5,
                vec![],
            ),
            (
                "goodbye of the leader loses it",
                10,
                leader,
                Message::Goodbye { term: 5 },
                None,
                5,
                vec![],
            ),
            (
                "stale vote reply is ignored",
                10,
                other,
                grant(2),
                Some(leader),
                5,
                vec![],
            ),
            (
                "heartbeat from an unknown sender at a higher term still counts",
                10,
                stranger,
                hb(9),
                Some(stranger),
                9,
                vec![],
            ),
        ];
        for (name, after, from, message, leader_after, term_after, replies) in cases {
            let t0 = Instant::now();
            let mut s = follower(me, leader, 5, &[other], t0);
            let actions = s.handle(
                t0 + Duration::from_millis(after),
                Input::Received { from, message },
            );
            assert_eq!(s.leader(), leader_after, "{name}: leader");
            assert_eq!(s.term(), term_after, "{name}: term");
            assert_eq!(sends(&actions), replies, "{name}: replies");
        }
    }

    #[test]
    fn a_candidate_grants_no_second_vote_in_its_term() {
        let [a, b, c]: [PeerId; 3] = ids(3).try_into().unwrap();
        let t0 = Instant::now();
        let mut s = ElectionState::new(c, quiet(), 1, t0);
        s.handle(t0, Input::PeerConnected(a));
        s.handle(t0, Input::PeerConnected(b));
        let first = s.handle(
            t0 + 2000 * MS,
            Input::Received {
                from: a,
                message: Message::VoteRequest { term: 1 },
            },
        );
        let second = s.handle(
            t0 + 2001 * MS,
            Input::Received {
                from: b,
                message: Message::VoteRequest { term: 1 },
            },
        );
        assert_eq!(
            sends(&first),
            vec![(
                a,
                Message::VoteReply {
                    term: 1,
                    granted: true
                }
            )]
        );
        assert_eq!(
            sends(&second),
            vec![(
                b,
                Message::VoteReply {
                    term: 1,
                    granted: false
                }
            )]
        );
        // The same candidate asking again (a lost reply) gets the vote again.
        let again = s.handle(
            t0 + 2002 * MS,
            Input::Received {
                from: a,
                message: Message::VoteRequest { term: 1 },
            },
        );
        assert_eq!(
            sends(&again),
            vec![(
                a,
                Message::VoteReply {
                    term: 1,
                    granted: true
                }
            )]
        );
    }

    #[test]
    fn a_leader_keeps_leading_when_a_candidate_asks_with_a_higher_term() {
        let [l, f, newcomer]: [PeerId; 3] = ids(3).try_into().unwrap();
        let mut sim = Sim::new(&[l, f], quiet());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (leader, term) = sim.agreed().unwrap();
        // A node with a higher term (a partitioned follower coming back) asks for votes.
        let i = sim.nodes.iter().position(|n| n.local == leader).unwrap();
        let now = sim.now;
        let actions = sim.nodes[i].handle(now, Input::PeerConnected(newcomer));
        assert_eq!(
            sends(&actions),
            vec![(newcomer, hb(term))],
            "a new participant hears at once"
        );
        let actions = sim.nodes[i].handle(
            now,
            Input::Received {
                from: newcomer,
                message: Message::VoteRequest { term: term + 3 },
            },
        );
        assert_eq!(sim.nodes[i].leader(), Some(leader), "the leader stays");
        assert_eq!(sim.nodes[i].term(), term + 3, "at the candidate's term");
        assert!(sends(&actions).contains(&(newcomer, hb(term + 3))));
        assert!(sends(&actions).contains(&(
            newcomer,
            Message::VoteReply {
                term: term + 3,
                granted: false
            }
        )));
    }

    /// Whether the message from node `.0` to node `.1` is lost.
    type DropRule = Box<dyn FnMut(usize, usize, &Message) -> bool>;

    /// A tiny network of state machines: messages are delivered at once, in order, along the
    /// links that are up, unless `drop` says otherwise; time moves in 10 ms steps.
    struct Sim {
        now: Instant,
        nodes: Vec<ElectionState>,
        links: BTreeSet<(usize, usize)>,
        /// Messages in flight, with when they arrive.
        queue: VecDeque<(Instant, usize, usize, Message)>,
        /// How long every message takes.
        latency: Duration,
        drop: DropRule,
        /// Every (node, leader) change reported, in order.
        changes: Vec<(usize, Option<PeerId>)>,
    }

    impl Sim {
        fn new(ids: &[PeerId], config: Config) -> Sim {
            let now = Instant::now();
            let nodes = ids
                .iter()
                .enumerate()
                .map(|(i, id)| ElectionState::new(*id, config.clone(), i as u64 + 7, now))
                .collect();
            Sim {
                now,
                nodes,
                links: BTreeSet::new(),
                queue: VecDeque::new(),
                latency: Duration::ZERO,
                drop: Box::new(|_, _, _| false),
                changes: Vec::new(),
            }
        }

        fn index(&self, peer: PeerId) -> usize {
            self.nodes.iter().position(|n| n.local == peer).unwrap()
        }

        fn apply(&mut self, i: usize, actions: Vec<Action>) {
            for action in actions {
                match action {
                    Action::Send { to, message } => {
                        let j = self.index(to);
                        if self.links.contains(&(i.min(j), i.max(j)))
                            && !(self.drop)(i, j, &message)
                        {
                            self.queue
                                .push_back((self.now + self.latency, i, j, message));
                        }
                    }
                    Action::LeaderElected { leader, .. } => self.changes.push((i, Some(leader))),
                    Action::LeaderLost { .. } => self.changes.push((i, None)),
                }
            }
        }

        fn input(&mut self, i: usize, input: Input) {
            let actions = self.nodes[i].handle(self.now, input);
            self.apply(i, actions);
        }

        fn connect(&mut self, i: usize, j: usize) {
            if self.links.insert((i.min(j), i.max(j))) {
                let (pi, pj) = (self.nodes[i].local, self.nodes[j].local);
                self.input(i, Input::PeerConnected(pj));
                self.input(j, Input::PeerConnected(pi));
            }
        }

        fn disconnect(&mut self, i: usize, j: usize) {
            if self.links.remove(&(i.min(j), i.max(j))) {
                let (pi, pj) = (self.nodes[i].local, self.nodes[j].local);
                self.input(i, Input::PeerDisconnected(pj));
                self.input(j, Input::PeerDisconnected(pi));
            }
        }

        fn mesh(&mut self) {
            let n = self.nodes.len();
            for i in 0..n {
                for j in i + 1..n {
                    self.connect(i, j);
                }
            }
        }

        fn deliver(&mut self) {
            while self.queue.front().is_some_and(|(at, ..)| *at <= self.now) {
                let Some((_, from, to, message)) = self.queue.pop_front() else {
                    break;
                };
                let from = self.nodes[from].local;
                self.input(to, Input::Received { from, message });
            }
        }

        fn step(&mut self) {
            self.now += 10 * MS;
            for i in 0..self.nodes.len() {
                if self.nodes[i].next_deadline().is_some_and(|d| d <= self.now) {
                    self.input(i, Input::Tick);
                }
                self.deliver();
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.step();
            }
        }

        /// Runs until `done`, at most `limit`; returns the time it took.
        fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> Duration {
            let start = self.now;
            while !done(self) {
                assert!(
                    self.now - start < limit,
                    "not done within {limit:?}: {:?}",
                    self.view()
                );
                self.step();
            }
            self.now - start
        }

        fn view(&self) -> Vec<(Option<PeerId>, u64)> {
            self.nodes.iter().map(|n| (n.leader(), n.term())).collect()
        }

        /// The leader and term all running nodes among `nodes` agree on.
        fn agreed_among(&self, nodes: &[usize]) -> Option<(PeerId, u64)> {
            let first = &self.nodes[nodes[0]];
            let leader = first.leader()?;
            nodes
                .iter()
                .all(|&i| {
                    self.nodes[i].leader() == Some(leader) && self.nodes[i].term() == first.term()
                })
                .then_some((leader, first.term()))
        }

        fn agreed(&self) -> Option<(PeerId, u64)> {
            let all: Vec<usize> = (0..self.nodes.len()).collect();
            self.agreed_among(&all)
        }

        fn leaders(&self) -> usize {
            self.nodes
                .iter()
                .filter(|n| matches!(n.role, Role::Leader { .. }))
                .count()
        }
    }

    #[test]
    fn cold_starts_of_2_3_and_5_nodes_elect_one_leader() {
        for n in [2, 3, 5] {
            let mut sim = Sim::new(&ids(n), Config::default());
            sim.mesh();
            sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
            sim.run(Duration::from_secs(5));
            assert!(sim.agreed().is_some(), "{n} nodes: {:?}", sim.view());
            assert_eq!(sim.leaders(), 1);
            assert_eq!(
                sim.changes.len(),
                n,
                "{n} nodes: one change each, no flapping"
            );
        }
    }

    #[test]
    fn simultaneous_candidates_end_with_one_leader() {
        // Nobody waits for its rank: everyone stands at the same moment, every round, until
        // the jitter separates them.
        let config = Config::default()
            .with_election_step(Duration::ZERO)
            .with_election_jitter(Duration::from_millis(100));
        for seed in 0..20u64 {
            let mut sim = Sim::new(&ids(5), config.clone());
            for (k, node) in sim.nodes.iter_mut().enumerate() {
                node.rng = SmallRng::seed_from_u64(seed * 31 + k as u64);
            }
            sim.mesh();
            // Force one round where all five stand at once.
            sim.now += Duration::from_secs(2);
            for i in 0..5 {
                sim.input(i, Input::Tick);
                sim.input(i, Input::Tick);
            }
            sim.deliver();
            sim.run_until(Duration::from_secs(5), |s| s.agreed().is_some());
            sim.run(Duration::from_secs(2));
            assert_eq!(sim.leaders(), 1, "seed {seed}: {:?}", sim.view());
        }
    }

    #[test]
    fn killed_leader_is_replaced_in_a_new_term() {
        let mut sim = Sim::new(&ids(5), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (old, term) = sim.agreed().unwrap();
        let dead = sim.index(old);
        for j in 0..5 {
            if j != dead {
                sim.disconnect(dead, j);
            }
        }
        let rest: Vec<usize> = (0..5).filter(|&j| j != dead).collect();
        let took = sim.run_until(Duration::from_secs(3), |s| s.agreed_among(&rest).is_some());
        let (new, new_term) = sim.agreed_among(&rest).unwrap();
        assert_ne!(new, old);
        assert!(new_term > term);
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn silent_leader_is_replaced_after_the_leader_timeout() {
        let mut sim = Sim::new(&ids(4), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (old, _) = sim.agreed().unwrap();
        let dead = sim.index(old);
        // A cut link: the connections stay up, nothing gets through.
        sim.drop = Box::new(move |from, to, _| from == dead || to == dead);
        let rest: Vec<usize> = (0..4).filter(|&j| j != dead).collect();
        sim.run_until(Duration::from_secs(3), |s| {
            s.agreed_among(&rest).is_some_and(|(l, _)| l != old)
        });
    }

    #[test]
    fn the_survivor_of_a_two_node_cut_leads_before_the_dead_connection_closes() {
        let mut sim = Sim::new(&ids(2), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (old, _) = sim.agreed().unwrap();
        let dead = sim.index(old);
        let survivor = 1 - dead;
        // The link is cut but the connection is not closed yet (the liveness watchdog takes 3 s).
        sim.drop = Box::new(|_, _, _| true);
        let took = sim.run_until(Duration::from_secs(3), |s| {
            s.agreed_among(&[survivor]).is_some_and(|(l, _)| l != old)
        });
        assert!(took < Duration::from_millis(2500), "took {took:?}");
        assert!(
            sim.nodes[survivor].peers().contains(&old),
            "still connected"
        );
    }

    #[test]
    fn goodbye_of_the_leader_starts_an_election_at_once() {
        let mut sim = Sim::new(&ids(5), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (old, _) = sim.agreed().unwrap();
        let leaving = sim.index(old);
        sim.input(leaving, Input::Leave);
        sim.deliver();
        assert_eq!(sim.nodes[leaving].next_deadline(), None);
        let rest: Vec<usize> = (0..5).filter(|&j| j != leaving).collect();
        let took = sim.run_until(Duration::from_secs(1), |s| s.agreed_among(&rest).is_some());
        assert!(took < Duration::from_millis(700), "took {took:?}");
    }

    #[test]
    fn newcomers_and_restarted_nodes_do_not_depose_the_leader() {
        let ids = ids(6);
        // The node with the smallest id joins late: it would win any fair election.
        let mut sim = Sim::new(&ids, Config::default());
        for i in 1..6 {
            for j in i + 1..6 {
                sim.connect(i, j);
            }
        }
        let old: Vec<usize> = (1..6).collect();
        sim.run_until(Duration::from_secs(3), |s| s.agreed_among(&old).is_some());
        let (leader, term) = sim.agreed_among(&old).unwrap();
        for round in 0..3 {
            // Node 0 (re)starts with term 0 and meets everyone, late or early in its wait.
            sim.nodes[0] = ElectionState::new(ids[0], Config::default(), round, sim.now);
            for j in 1..6 {
                sim.disconnect(0, j);
            }
            sim.run(Duration::from_millis(300 * round));
            for j in 1..6 {
                sim.connect(0, j);
            }
            sim.run(Duration::from_secs(3));
            assert_eq!(
                sim.agreed(),
                Some((leader, term)),
                "round {round}: {:?}",
                sim.view()
            );
        }
    }

    #[test]
    fn a_leader_returning_after_a_partition_follows_the_newer_leader() {
        let mut sim = Sim::new(&ids(5), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (old, _) = sim.agreed().unwrap();
        let l = sim.index(old);
        let other = (l + 1) % 5;
        let minority = [l, other];
        let majority: Vec<usize> = (0..5).filter(|j| !minority.contains(j)).collect();
        for &i in &minority {
            for &j in &majority {
                sim.disconnect(i, j);
            }
        }
        sim.run_until(Duration::from_secs(3), |s| {
            s.agreed_among(&majority).is_some()
        });
        assert_eq!(sim.agreed_among(&minority).map(|(p, _)| p), Some(old));
        let (new, new_term) = sim.agreed_among(&majority).unwrap();
        sim.mesh();
        let took = sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        assert_eq!(sim.agreed(), Some((new, new_term)), "the higher term wins");
        assert!(took <= Duration::from_millis(20), "took {took:?}");
        assert_eq!(sim.leaders(), 1);
    }

    #[test]
    fn both_sides_of_a_partition_elect_and_the_heal_keeps_one() {
        let mut sim = Sim::new(&ids(5), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (a, b) = ([0, 1], [2, 3, 4]);
        for i in a {
            for j in b {
                sim.disconnect(i, j);
            }
        }
        sim.run_until(Duration::from_secs(3), |s| {
            s.agreed_among(&a).is_some() && s.agreed_among(&b).is_some()
        });
        assert_eq!(sim.leaders(), 2);
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        sim.run(Duration::from_secs(3));
        assert_eq!(sim.leaders(), 1);
        assert!(sim.agreed().is_some());
    }

    #[test]
    fn a_cut_off_node_asks_again_in_the_same_term_then_counts_its_silent_peers_out() {
        let mut sim = Sim::new(&ids(3), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let (leader, term) = sim.agreed().unwrap();
        let cut = (sim.index(leader) + 1) % 3;
        // Its links stay up but carry nothing, as before TCP keepalive closes them.
        sim.drop = Box::new(move |from, to, _| from == cut || to == cut);
        sim.run(Duration::from_secs(5));
        // Asked in one term; after MUTE_AFTER_ROUNDS unanswered rounds it counts the silent
        // peers out and leads alone, in that same term (as it would once the dead connections
        // close): the term does not grow.
        assert_eq!(sim.nodes[cut].term(), term + 1, "one term, asked again");
        assert_eq!(sim.nodes[cut].leader(), Some(sim.nodes[cut].local));
        let others: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
        assert_eq!(sim.agreed_among(&others), Some((leader, term)));
        // The dead connections close: nothing changes.
        for j in 0..3 {
            if j != cut {
                sim.disconnect(cut, j);
            }
        }
        sim.run(Duration::from_secs(1));
        assert_eq!(sim.nodes[cut].leader(), Some(sim.nodes[cut].local));
        assert_eq!(sim.nodes[cut].term(), term + 1);
    }

    #[test]
    fn silent_participants_do_not_stall_an_election() {
        // Three honest nodes and four identities that take part and never say a word.
        let peers = ids(7);
        let mut sim = Sim::new(&peers, Config::default());
        sim.mesh();
        let silent = [3, 4, 5, 6];
        sim.drop = Box::new(move |from, _, _| silent.contains(&from));
        let honest = [0, 1, 2];
        sim.run_until(Duration::from_secs(5), |s| {
            s.agreed_among(&honest).is_some()
        });
        let (leader, term) = sim.agreed_among(&honest).unwrap();
        let dead = sim.index(leader);
        for j in 0..7 {
            if j != dead {
                sim.disconnect(dead, j);
            }
        }
        let rest: Vec<usize> = honest.iter().copied().filter(|&i| i != dead).collect();
        let took = sim.run_until(Duration::from_secs(3), |s| {
            s.agreed_among(&rest).is_some_and(|(l, _)| l != leader)
        });
        let (_, new_term) = sim.agreed_among(&rest).unwrap();
        assert!(new_term <= term + 2, "term {term} -> {new_term}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A muted identity that speaks again counts again.
        let survivor = rest[0];
        let voice = sim.nodes[3].local;
        sim.input(
            survivor,
            Input::Received {
                from: voice,
                message: Message::VoteReply {
                    term: new_term,
                    granted: false,
                },
            },
        );
        assert!(!sim.nodes[survivor].mute.contains(&voice));
    }

    #[test]
    fn a_leader_its_followers_depose_is_replaced_and_not_heard_for_a_while() {
        // Four nodes; the leader stops serving (the node tells the election so when its index
        // pushes go unanswered), and its followers find out at different moments.
        let peers = ids(4);
        let mut sim = Sim::new(&peers, Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(5), |s| s.agreed().is_some());
        let (bad, term) = sim.agreed().unwrap();
        let b = sim.index(bad);
        let rest: Vec<usize> = (0..4).filter(|&i| i != b).collect();
        for (k, &i) in rest.iter().enumerate() {
            sim.input(i, Input::Depose(bad));
            if k + 1 < rest.len() {
                sim.run(Duration::from_secs(3));
            }
        }
        let took = sim.run_until(Duration::from_secs(5), |s| {
            s.agreed_among(&rest).is_some_and(|(l, _)| l != bad)
        });
        let (good, new_term) = sim.agreed_among(&rest).unwrap();
        // The deposed leader keeps heartbeating (and asks for votes): nobody follows it, for
        // the whole distrust time.
        sim.run(DISTRUST - Duration::from_secs(30));
        assert_eq!(sim.agreed_among(&rest).map(|(l, _)| l), Some(good));
        let (_, later) = sim.agreed_among(&rest).unwrap();
        println!(
            "deposed: new leader {took:?} after the last follower deposed it; terms {term} -> {new_term} -> {later}"
        );
        assert!(new_term <= term + 10, "term {term} -> {new_term}");
    }

    #[test]
    fn a_deposed_leader_that_was_only_cut_off_follows_the_new_one() {
        // The leader is cut off; its followers depose it (their pushes went unserved) and
        // elect another. When it is back, still leading its old term, the new leader's
        // heartbeats reach it although it is not heard: it follows.
        let peers = ids(4);
        let mut sim = Sim::new(&peers, Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(5), |s| s.agreed().is_some());
        let (old, _) = sim.agreed().unwrap();
        let o = sim.index(old);
        let rest: Vec<usize> = (0..4).filter(|&i| i != o).collect();
        for &i in &rest {
            sim.disconnect(o, i);
        }
        for &i in &rest {
            sim.input(i, Input::Depose(old));
        }
        sim.run_until(Duration::from_secs(10), |s| {
            s.agreed_among(&rest).is_some_and(|(l, _)| l != old)
        });
        let (new, term) = sim.agreed_among(&rest).unwrap();
        assert_eq!(
            sim.nodes[o].leader(),
            Some(old),
            "it still leads its own term"
        );
        for &i in &rest {
            sim.connect(o, i);
        }
        let took = sim.run_until(Duration::from_secs(5), |s| {
            s.agreed().is_some_and(|(l, _)| l == new)
        });
        println!("the cut-off leader followed the new one after {took:?}");
        assert_eq!(sim.agreed(), Some((new, term)));
    }

    #[test]
    fn a_node_alone_in_deposing_the_leader_gives_in() {
        // One follower's pushes fail (its own trouble); the others are served and keep
        // following the leader, so they deny its votes: it trusts the leader again.
        let peers = ids(4);
        let mut sim = Sim::new(&peers, Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(5), |s| s.agreed().is_some());
        let (leader, term) = sim.agreed().unwrap();
        let lonely = (0..4).find(|&i| i != sim.index(leader)).unwrap();
        sim.input(lonely, Input::Depose(leader));
        assert_eq!(sim.nodes[lonely].leader(), None);
        let others: Vec<usize> = (0..4).filter(|&i| i != lonely).collect();
        let took = sim.run_until(FORGIVE_AFTER + Duration::from_secs(10), |s| {
            s.agreed().is_some_and(|(l, _)| l == leader)
        });
        // The others never left the leader.
        assert!(sim
            .changes
            .iter()
            .all(|(i, l)| !others.contains(i) || *l == Some(leader)));
        let (_, after) = sim.agreed().unwrap();
        println!("alone: back to the leader after {took:?}; term {term} -> {after}");
        assert!(took >= FORGIVE_AFTER, "{took:?}");
        // Meanwhile it asked in one term (nobody answered it in its term): one term more.
        assert!(after <= term + 1, "term {term} -> {after}");
    }

    #[test]
    fn lost_vote_replies_only_delay_the_election() {
        let mut sim = Sim::new(&ids(3), Config::default());
        let mut lost = 0;
        sim.drop = Box::new(move |_, _, m| {
            let drop = matches!(m, Message::VoteReply { granted: true, .. }) && lost < 4;
            lost += drop as u32;
            drop
        });
        sim.mesh();
        sim.run_until(Duration::from_secs(5), |s| s.agreed().is_some());
        assert_eq!(sim.leaders(), 1);
        // Asked again in the same term, the voters grant the same candidate again.
        assert_eq!(sim.agreed().unwrap().1, 1);
    }

    #[test]
    fn lost_heartbeats_within_the_timeout_change_nothing() {
        let mut sim = Sim::new(&ids(4), Config::default());
        sim.mesh();
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        let agreed = sim.agreed();
        let changes = sim.changes.len();
        // Every other heartbeat is lost for 10 s.
        let mut n = 0u32;
        sim.drop = Box::new(move |_, _, m| {
            n += 1;
            matches!(m, Message::Heartbeat { .. }) && n.is_multiple_of(2)
        });
        sim.run(Duration::from_secs(10));
        assert_eq!(sim.agreed(), agreed);
        assert_eq!(sim.changes.len(), changes);
    }

    #[test]
    fn five_percent_loss_and_50_ms_latency_do_not_make_the_leader_flap() {
        for seed in 0..5u64 {
            let mut sim = Sim::new(&ids(5), Config::default());
            sim.mesh();
            sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
            let agreed = sim.agreed();
            let changes = sim.changes.len();
            // Harsher than the lab: a lost message is never retransmitted.
            let mut rng = SmallRng::seed_from_u64(seed);
            sim.drop = Box::new(move |_, _, _| rng.random_range(0..100) < 5);
            sim.latency = Duration::from_millis(50);
            sim.run(Duration::from_secs(60));
            assert_eq!(sim.changes.len(), changes, "seed {seed}: {:?}", sim.view());
            assert_eq!(sim.agreed().map(|a| a.0), agreed.map(|a| a.0));
        }
    }

    #[test]
    fn a_node_that_left_ignores_everything() {
        let [a, b]: [PeerId; 2] = ids(2).try_into().unwrap();
        let t0 = Instant::now();
        let mut s = follower(a, b, 3, &[], t0);
        s.handle(t0, Input::Leave);
        assert_eq!(s.leader(), None);
        for input in [
            Input::Tick,
            Input::PeerConnected(PeerId::random()),
            Input::Received {
                from: b,
                message: Message::VoteRequest { term: 9 },
            },
        ] {
            assert!(s.handle(t0 + Duration::from_secs(5), input).is_empty());
        }
    }

    /// A room of `n` nodes powering on: every node starts at once and every link comes up
    /// at a random moment within `window` (the mesh forming). Runs until the mesh is complete
    /// and all agree on one leader; returns the sim and the time from the last link.
    fn room(n: usize, window: Duration, seed: u64) -> (Sim, Duration) {
        let mut sim = Sim::new(&ids(n), Config::default());
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut ups: Vec<(Duration, usize, usize)> = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let at = Duration::from_millis(rng.random_range(0..=window.as_millis() as u64));
                ups.push((at, i, j));
            }
        }
        ups.sort();
        let start = sim.now;
        let mut next = 0;
        while next < ups.len() {
            while next < ups.len() && start + ups[next].0 <= sim.now {
                let (_, i, j) = ups[next];
                sim.connect(i, j);
                next += 1;
            }
            sim.step();
        }
        let took = sim.run_until(Duration::from_secs(30), |s| {
            s.agreed().is_some() && s.leaders() == 1
        });
        (sim, took)
    }

    fn max_term(sim: &Sim) -> u64 {
        sim.nodes.iter().map(|n| n.term()).max().unwrap_or(0)
    }

    /// Kills the leader (its connections close at once) and returns how long the others take
    /// to agree on a new one.
    fn kill_leader(sim: &mut Sim) -> Duration {
        let n = sim.nodes.len();
        let (old, _) = sim.agreed().expect("agreed before the kill");
        let dead = sim.index(old);
        for j in 0..n {
            if j != dead {
                sim.disconnect(dead, j);
            }
        }
        let rest: Vec<usize> = (0..n).filter(|&j| j != dead).collect();
        sim.run_until(Duration::from_secs(3), |s| {
            s.agreed_among(&rest).is_some_and(|(l, _)| l != old)
        })
    }

    #[test]
    fn rooms_of_100_and_300_nodes_powering_on_agree_with_small_terms_and_fail_over_fast() {
        for (n, window, seeds) in [(100, 5_000, 3), (300, 8_000, 1)] {
            for seed in 0..seeds {
                let (mut sim, took) = room(n, Duration::from_millis(window), seed);
                let term = max_term(&sim);
                assert!(
                    took < Duration::from_secs(10),
                    "{n} nodes, seed {seed}: one leader {took:?} after the last link"
                );
                assert!(term <= 3, "{n} nodes, seed {seed}: term {term}");
                // Calm: nothing changes while the network idles.
                let changes = sim.changes.len();
                sim.run(Duration::from_secs(10));
                assert_eq!(
                    sim.changes.len(),
                    changes,
                    "{n} nodes, seed {seed}: not calm"
                );
                let failover = kill_leader(&mut sim);
                assert!(
                    failover < Duration::from_secs(3),
                    "{n} nodes, seed {seed}: failover {failover:?}"
                );
                assert!(
                    max_term(&sim) <= term + 2,
                    "{n} nodes: one election, not a storm"
                );
            }
        }
    }

    #[test]
    fn nodes_joining_one_by_one_follow_the_first_leader_in_term_1() {
        for n in [100, 300] {
            let mut sim = Sim::new(&ids(n), Config::default());
            // Node 0 is up first and leads alone; the others join every 50 ms in random order,
            // each connecting to everyone already up.
            let mut order: Vec<usize> = (1..n).collect();
            let mut rng = SmallRng::seed_from_u64(n as u64);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            sim.run_until(Duration::from_secs(3), |s| s.nodes[0].leader().is_some());
            let mut up = vec![0];
            for &i in &order {
                for &j in &up {
                    sim.connect(i, j);
                }
                up.push(i);
                sim.run(Duration::from_millis(50));
            }
            sim.run_until(Duration::from_secs(10), |s| s.agreed().is_some());
            let (leader, term) = sim.agreed().unwrap();
            assert_eq!((sim.index(leader), term), (0, 1), "{n} nodes");
            let failover = kill_leader(&mut sim);
            assert!(failover < Duration::from_secs(3), "{n} nodes: {failover:?}");
        }
    }

    #[test]
    fn a_node_that_found_a_network_waits_for_it_instead_of_leading_alone() {
        let peers = ids(4);
        let mut sim = Sim::new(&peers, Config::default());
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            sim.connect(i, j);
        }
        sim.run_until(Duration::from_secs(5), |s| {
            s.agreed_among(&[0, 1, 2]).is_some()
        });
        let (leader, term) = sim.agreed_among(&[0, 1, 2]).unwrap();
        // Node 3 starts now and finds the three at once, but its connections take 3 s (a
        // busy machine, a room powering on).
        sim.nodes[3] = ElectionState::new(peers[3], Config::default(), 99, sim.now);
        for p in &peers[..3] {
            sim.input(3, Input::PeerDiscovered(*p));
        }
        sim.run(Duration::from_secs(3));
        assert!(
            matches!(sim.nodes[3].role(), Role::Follower { leader: None, .. }),
            "node 3 stood or led alone: {:?}",
            sim.nodes[3].role()
        );
        for i in 0..3 {
            sim.connect(3, i);
        }
        sim.run_until(Duration::from_secs(3), |s| s.agreed().is_some());
        assert_eq!(
            sim.agreed(),
            Some((leader, term)),
            "it joins the leader's term"
        );

        // Found peers that never arrive hold it back only for max_settle.
        let config = quiet();
        let t0 = Instant::now();
        let mut alone = ElectionState::new(peers[3], config.clone(), 5, t0);
        alone.handle(t0, Input::PeerDiscovered(peers[0]));
        let mut t = t0;
        while alone.leader().is_none() {
            t = alone.next_deadline().unwrap();
            alone.handle(t, Input::Tick);
            assert!(t - t0 < Duration::from_secs(60), "it never led");
        }
        assert!(
            t - t0 >= config.startup_wait + config.max_settle,
            "led after {:?}, without waiting for the peer it found",
            t - t0
        );
    }

    #[test]
    fn a_node_holds_back_while_participants_keep_arriving_but_not_forever() {
        let config = quiet();
        // The smallest id of all: its ranked delay is 0 whoever arrives (random peers with
        // smaller ids delayed it past the 9 s in about 1 run of 10).
        let all = ids(31);
        let local = all[0];
        let t0 = Instant::now();
        let mut s = ElectionState::new(local, config.clone(), 1, t0);
        // A participant arrives every 300 ms for 9 s: the network never settles.
        let mut stood_at = None;
        for (k, peer) in (0..30u32).zip(&all[1..]) {
            let t = t0 + Duration::from_millis(300) * k;
            s.handle(t, Input::PeerConnected(*peer));
            let out = s.handle(t, Input::Tick);
            let stands = out.iter().any(|a| {
                matches!(
                    a,
                    Action::Send {
                        message: Message::VoteRequest { .. },
                        ..
                    }
                )
            });
            if stands && stood_at.is_none() {
                stood_at = Some(t - t0);
            }
        }
        let stood = stood_at.expect("it stands while they still arrive, once it held back enough");
        assert!(
            stood >= config.startup_wait + config.max_settle,
            "stood after {stood:?}, before holding back for max_settle"
        );
    }
}
