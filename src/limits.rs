//! Process limits the node sets at start: the number of files (and sockets) it may hold open.
//!
//! The default soft limit on Linux is 1,024 descriptors (256 on macOS). A node holds one per
//! connection, one per file it serves or hashes, and a few for SQLite and the control channel;
//! a busy LAN, or a peer opening connections on purpose, exhausts 1,024, and then listings,
//! accepts and opens fail all over the node. [`raise_open_files`] lifts the soft limit to the
//! hard one (which the administrator sets), and [`ConnectionBudget`] sizes the connection limits
//! to what remains, so connections alone can never use every descriptor.

use std::io;

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
///
/// `Ok(None)` where the platform has no such limit: on Windows sockets and files are handles,
/// bounded by memory, not by a per-process count.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is `u64` here, not on every Unix.
pub fn raise_open_files() -> io::Result<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other preconditions.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(unused_mut)]
    let mut wanted = limit.rlim_max;
    // macOS refuses a soft limit above OPEN_MAX (10,240) even when the hard limit is
    // "unlimited".
    #[cfg(target_vendor = "apple")]
    {
        const OPEN_MAX: libc::rlim_t = 10_240;
        wanted = wanted.min(OPEN_MAX);
    }
    if wanted <= limit.rlim_cur {
        return Ok(Some(limit.rlim_cur as u64));
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own; no other preconditions.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(wanted as u64))
}

/// See the Unix version: Windows has no per-process limit on open handles to raise.
#[cfg(not(unix))]
pub fn raise_open_files() -> io::Result<Option<u64>> {
    Ok(None)
}

/// How many connections the node takes, sized from the open-file limit: connections may use
/// at most half of it (the rest is for files being served, hashed and written, the database,
/// the control channel), between a floor that a LAN of a few hundred nodes needs and a ceiling
/// no LAN reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// Established connections, in and out.
    pub established: u32,
    /// Inbound connections still in their handshake.
    pub pending_incoming: u32,
    /// Our dials still in their handshake.
    pub pending_outgoing: u32,
}

impl ConnectionBudget {
    /// The fewest established connections the node keeps room for (a LAN of a few hundred).
    pub const MIN_ESTABLISHED: u32 = 320;
    /// The most established connections the node takes.
    pub const MAX_ESTABLISHED: u32 = 4_096;
    /// Inbound handshakes at once: enough for a room of nodes powering on together, few
    /// enough that a flood of half-open connections holds only this many descriptors.
    pub const PENDING_INCOMING: u32 = 128;
    /// Our own dials in their handshake at once.
    pub const PENDING_OUTGOING: u32 = 64;

    /// The budget for `open_files` descriptors (`None`: no limit, see [`raise_open_files`]).
    pub fn for_open_files(open_files: Option<u64>) -> Self {
        let pending = u64::from(Self::PENDING_INCOMING + Self::PENDING_OUTGOING);
        let connections = match open_files {
            Some(n) => (n / 2).saturating_sub(pending),
            None => u64::from(Self::MAX_ESTABLISHED),
        };
        Self {
            established: connections
                .clamp(
                    u64::from(Self::MIN_ESTABLISHED),
                    u64::from(Self::MAX_ESTABLISHED),
                )
                .try_into()
                .unwrap_or(Self::MAX_ESTABLISHED),
            pending_incoming: Self::PENDING_INCOMING,
            pending_outgoing: Self::PENDING_OUTGOING,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_with_the_limit_within_its_bounds() {
        let at = |n| ConnectionBudget::for_open_files(n).established;
        assert_eq!(at(Some(1_024)), ConnectionBudget::MIN_ESTABLISHED);
        assert_eq!(at(Some(4_096)), 2_048 - 192);
        assert_eq!(at(Some(1 << 20)), ConnectionBudget::MAX_ESTABLISHED);
        assert_eq!(at(None), ConnectionBudget::MAX_ESTABLISHED);
        assert_eq!(at(Some(0)), ConnectionBudget::MIN_ESTABLISHED);
    }

    #[cfg(unix)]
    #[test]
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is `u64` here, not on every Unix.
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_open_files().unwrap().expect("unix has a limit");
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur as u64, limit);
        assert!(now.rlim_cur == now.rlim_max || cfg!(target_vendor = "apple"));
    }
}
