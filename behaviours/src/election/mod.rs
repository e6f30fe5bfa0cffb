//! Leader election: one leader per connected group of iwant nodes (`/iwant/election/1`).
//!
//! The main type is [`Behaviour`]; it reports [`Event::LeaderElected`] and
//! [`Event::LeaderLost`]. The algorithm lives in the pure state machine [`state::ElectionState`]
//! (inputs and `now` in, actions out); the behaviour feeds it connection events, messages and
//! timer ticks, and the [`handler::Handler`] carries the messages of one connection. The wire
//! format is in [`protocol`].
//!
//! In short (the whole story, with the safety and liveness argument, is `docs/election.md`):
//! terms number the leaderships; a leader sends a heartbeat every 200 ms over the
//! authenticated connections; a follower that loses its leader (connection closed, goodbye, or
//! 1.5 s without a heartbeat) stands as a candidate after a delay ranked by peer id and
//! randomized, and wins with the votes of a majority of the participants it is connected to.
//! A node that heard its leader within the last 500 ms refuses to vote, so newcomers and
//! restarted nodes cannot depose a working leader. When two leaders meet (a healed
//! partition), the higher term wins, then the smaller peer id.
//!
//! Participants are the peers that accept the `/iwant/election/1` stream; other peers are
//! ignored.

pub mod handler;
pub mod protocol;
pub mod state;

mod behaviour;

use std::time::Duration;

pub use behaviour::{Behaviour, Event};
pub use protocol::{Message, PROTOCOL_NAME};

/// Timers of the election; see `docs/election.md` for how they fit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often a leader sends a heartbeat to every participant. Default: 200 ms.
    pub heartbeat_interval: Duration,
    /// How long a follower waits without a heartbeat before its leader counts as lost.
    /// Default: 1.5 s.
    pub leader_timeout: Duration,
    /// A follower that heard its leader within this time refuses to vote for anyone else.
    /// Default: 500 ms.
    pub leader_lease: Duration,
    /// How long a new node waits to hear of a leader before it stands. Default: 1 s.
    pub startup_wait: Duration,
    /// Extra wait before standing per participant with a smaller peer id. Default: 100 ms.
    pub election_step: Duration,
    /// The random part of every election wait, from zero up to this. Default: 100 ms.
    pub election_jitter: Duration,
    /// How long a candidate waits for a majority before it stands again in a new term (plus
    /// jitter). Default: 400 ms.
    pub round_timeout: Duration,
    /// A node without a leader does not stand while participants keep arriving (a room of
    /// nodes powering on, a mesh still forming): it waits until none has arrived for this
    /// long, so that it stands with the whole network in view. Default: 500 ms.
    pub settle: Duration,
    /// ...but it waits at most this long past its own deadline for the network to settle.
    /// Default: 5 s.
    pub max_settle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(200),
            leader_timeout: Duration::from_millis(1500),
            leader_lease: Duration::from_millis(500),
            startup_wait: Duration::from_secs(1),
            election_step: Duration::from_millis(100),
            election_jitter: Duration::from_millis(100),
            round_timeout: Duration::from_millis(400),
            settle: Duration::from_millis(500),
            max_settle: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Sets [`Config::startup_wait`].
    pub fn with_startup_wait(mut self, d: Duration) -> Self {
        self.startup_wait = d;
        self
    }

    /// Sets [`Config::election_step`].
    pub fn with_election_step(mut self, d: Duration) -> Self {
        self.election_step = d;
        self
    }

    /// Sets [`Config::settle`] and [`Config::max_settle`].
    pub fn with_settle(mut self, settle: Duration, max: Duration) -> Self {
        self.settle = settle;
        self.max_settle = max;
        self
    }

    /// Sets [`Config::election_jitter`].
    pub fn with_election_jitter(mut self, d: Duration) -> Self {
        self.election_jitter = d;
        self
    }
}
