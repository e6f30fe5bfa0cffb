//! `iwant status`.

use super::term::{safe, Safe};
use crate::{
    config::Home,
    control::{Client, DownloadState, Request, Response, StatusReply, Watch as WatchState},
};

pub(super) async fn run(home: Home, clear: bool, verbose: bool, json: bool) -> anyhow::Result<()> {
    if clear {
        let cleared = match Client::new(home).request(Request::ClearDownloads).await? {
            Response::Cleared { cleared } => cleared,
            other => anyhow::bail!("the node answered a clear request with {other:?}"),
        };
        if json {
            return super::print_json(&serde_json::json!({ "cleared": cleared }));
        }
        outln!(
            "Cleared {} from the list.",
            super::term::count(cleared, "ended download", "ended downloads")
        );
        return Ok(());
    }
    let status = match Client::new(home).request(Request::Status).await? {
        Response::Status(s) => s,
        other => anyhow::bail!("the node answered a status request with {other:?}"),
    };
    if json {
        return super::print_json(&status);
    }
    out!("{}", render(&status, verbose));
    Ok(())
}

/// `just now`, `40 s ago`, `3 min ago`, `2 h ago`.
fn ago(secs: u64) -> String {
    match secs {
        0..5 => "just now".into(),
        5..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// How a peer is shown: its name, else the end of its id.
fn who(peer_id: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => safe(n),
        None => crate::net::short_peer_text(peer_id),
    }
}

/// `10.0.0.2` out of `/ip4/10.0.0.2/tcp/53211` (the port of an incoming connection is a
/// temporary one, of no use to a person).
fn host_of(addr: &str) -> &str {
    let mut parts = addr.split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("ip4" | "ip6" | "dns" | "dns4" | "dns6"), Some(host)) => host,
        _ => addr,
    }
}

fn render(s: &StatusReply, verbose: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match &s.next_name {
        Some(next) => writeln!(
            out,
            "Name:             {} ({} from the node's next start)",
            Safe(&s.name),
            Safe(next)
        ),
        None => writeln!(
            out,
            "Name:             {} (change it with `iwant name <new>`)",
            Safe(&s.name)
        ),
    }
    .expect("bug: writing to a String");
    let _ = writeln!(out, "Peer ID:          {}", s.peer_id);
    let _ = writeln!(out, "Version:          iwant {}", s.version);
    let _ = writeln!(out, "Home:             {}", s.home.display());
    let i = &s.index;
    let _ = writeln!(
        out,
        "Shared folder:    {}{}",
        Safe(&s.shared_dir.to_string_lossy()),
        if i.root_missing {
            " (does not exist: an unmounted disk? Nothing is shared until it is back)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Download folder:  {}",
        Safe(&s.download_dir.to_string_lossy())
    );
    let _ = match &s.offered_downloads {
        Some(d) => writeln!(
            out,
            "Offered:          {} downloaded here, {} (every finished copy is a source for others)",
            super::term::count(d.files, "file", "files"),
            super::term::human_bytes(d.bytes)
        ),
        None => writeln!(
            out,
            "Offered:          no downloads (offer_downloads = false in config.toml)"
        ),
    };
    let _ = writeln!(
        out,
        "Index:            {}, {}, {} (version {}){}",
        super::term::count(i.files, "file", "files"),
        super::term::count(i.dirs, "directory", "directories"),
        super::term::human_bytes(i.bytes),
        i.version,
        if i.ready { "" } else { ", first scan running" }
    );
    if let Some(h) = &i.hashing {
        let _ = writeln!(
            out,
            "Hashing:          {}/{} files, {} of {}",
            h.files_done,
            h.files_total,
            super::term::human_bytes(h.bytes_done),
            super::term::human_bytes(h.bytes_total)
        );
    }
    match &i.watch {
        WatchState::Off => {}
        WatchState::Full => {
            let _ = writeln!(
                out,
                "Watching:         every folder (changes go out at once)"
            );
        }
        WatchState::Partial { unwatched } => {
            let _ = writeln!(
                out,
                "Watching:         all but {} (unreadable?); changes there wait for the periodic rescan",
                super::term::count(*unwatched, "folder", "folders")
            );
        }
        WatchState::Unavailable { reason } => {
            let _ = writeln!(
                out,
                "Watching:         no ({}); every change waits for the periodic rescan",
                Safe(reason)
            );
        }
    }
    if i.errors > 0 {
        let _ = writeln!(
            out,
            "Not indexed:      {} (see `iwant ls --errors`)",
            super::term::count(i.errors, "entry", "entries")
        );
    }
    if i.skipped > 0 {
        let _ = writeln!(
            out,
            "Skipped:          {} (hidden files, secrets, .iwantignore; see `iwant ls --skipped`)",
            i.skipped
        );
    }
    if s.listen_addrs.is_empty() {
        let _ = writeln!(out, "Listening on:     (nothing yet)");
    }
    for (i, addr) in s.listen_addrs.iter().enumerate() {
        let label = if i == 0 { "Listening on:" } else { "" };
        let _ = writeln!(out, "{label:<18}{addr}");
    }
    let leader = match &s.leader {
        Some(l) if *l == s.peer_id => format!("this node, term {}", s.term),
        Some(l) => {
            let name = s
                .peers
                .iter()
                .find(|p| p.peer_id == *l)
                .and_then(|p| p.name.as_deref());
            if verbose {
                format!("{} ({l}), term {}", who(l, name), s.term)
            } else {
                format!("{}, term {}", who(l, name), s.term)
            }
        }
        None => format!("(electing), term {}", s.term),
    };
    let _ = writeln!(out, "Leader:           {leader}");
    let network = match &s.network_key {
        Some(fingerprint) => format!("private (network key fingerprint {fingerprint})"),
        None => "open (no network key)".to_owned(),
    };
    let _ = writeln!(out, "Network:          {network}");
    let _ = writeln!(out, "Peers:            {}", s.peers.len());
    // Names and agents are whatever peers say about themselves: escaped, never trusted.
    let names: Vec<String> = s
        .peers
        .iter()
        .map(|p| who(&p.peer_id, p.name.as_deref()))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (p, name) in s.peers.iter().zip(&names) {
        let rtt = p
            .rtt_us
            .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let pad = " ".repeat(width - name.chars().count());
        if verbose {
            let addr = Safe(p.addrs.first().map(String::as_str).unwrap_or("-"));
            let agent = Safe(p.agent.as_deref().unwrap_or("(identifying)"));
            let _ = writeln!(
                out,
                "  {name}{pad}  {}  {addr}  {agent}  rtt {rtt}",
                p.peer_id
            );
        } else {
            let host = Safe(p.addrs.first().map(|a| host_of(a)).unwrap_or("-"));
            let _ = writeln!(out, "  {name}{pad}  {host}  rtt {rtt}");
        }
    }
    if s.served.pieces > 0 {
        let _ = writeln!(
            out,
            "Served:           {} in {}",
            super::term::human_bytes(s.served.bytes),
            super::term::count(s.served.pieces, "piece", "pieces")
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let width = s
            .served
            .recent
            .iter()
            .map(|r| safe(&r.name).chars().count())
            .max()
            .unwrap_or(0);
        for r in s
            .served
            .recent
            .iter()
            .take(if verbose { usize::MAX } else { 5 })
        {
            let name = safe(&r.name);
            let pad = " ".repeat(width - name.chars().count());
            let _ = writeln!(
                out,
                "  {name}{pad}  {}  {}  {}",
                Safe(&r.file),
                super::term::human_bytes(r.bytes),
                ago(now.saturating_sub(r.last_unix))
            );
        }
    }
    if !s.downloads.is_empty() {
        let _ = writeln!(out, "Downloads:        {}", s.downloads.len());
    }
    for d in &s.downloads {
        let pct = if d.bytes_total == 0 {
            100.0
        } else {
            d.bytes_done as f64 * 100.0 / d.bytes_total as f64
        };
        let state = match d.state {
            DownloadState::Done => format!(
                "done: {}",
                d.path
                    .as_deref()
                    .map(|p| safe(&p.to_string_lossy()))
                    .unwrap_or_default()
            ),
            DownloadState::Failed => {
                format!("failed: {}", Safe(d.message.as_deref().unwrap_or_default()))
            }
            DownloadState::Cancelled => "cancelled".into(),
            _ => format!(
                "{pct:.0}% of {}, {}, {}",
                super::term::human_bytes(d.bytes_total),
                super::get::speed(d),
                super::get::details(d)
            ),
        };
        let _ = writeln!(out, "  {}  {}  {state}", d.id.short(12), Safe(&d.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{IndexInfo, PeerInfo};

    #[test]
    fn renders_peers_and_addresses() {
        let s = StatusReply {
            version: "0.1.0".into(),
            peer_id: "12D3Self".into(),
            name: "ann-desktop".into(),
            next_name: None,
            listen_addrs: vec![
                "/ip4/10.0.0.1/tcp/4747".into(),
                "/ip4/127.0.0.1/tcp/4747".into(),
            ],
            peers: vec![PeerInfo {
                peer_id: "12D3Other".into(),
                addrs: vec!["/ip4/10.0.0.2/tcp/4747".into()],
                connections: 1,
                agent: Some("iwant/0.1.0\u{1b}]0;owned\u{7}".into()),
                name: Some("bob-laptop".into()),
                rtt_us: Some(420),
            }],
            shared_dir: "/s".into(),
            download_dir: "/d".into(),
            home: "/h".into(),
            index: IndexInfo {
                ready: true,
                files: 3,
                dirs: 2,
                bytes: 2048,
                errors: 1,
                skipped: 0,
                version: 7,
                hashing: None,
                hashed_files: 0,
                hashed_bytes: 0,
                root_missing: false,
                watch: WatchState::Full,
            },
            leader: Some("12D3Self".into()),
            term: 4,
            network_key: None,
            downloads: Vec::new(),
            served: Default::default(),
            offered_downloads: None,
        };
        let text = render(&s, false);
        assert!(
            text.contains("Offered:          no downloads (offer_downloads = false"),
            "{text}"
        );
        assert!(
            text.starts_with("Name:             ann-desktop (change it with `iwant name <new>`)\n"),
            "{text}"
        );
        let renamed = StatusReply {
            next_name: Some("ann-laptop".into()),
            ..s.clone()
        };
        assert!(
            render(&renamed, false).starts_with(
                "Name:             ann-desktop (ann-laptop from the node's next start)\n"
            ),
            "{}",
            render(&renamed, false)
        );
        let mut offering = s.clone();
        offering.offered_downloads = Some(IndexInfo {
            files: 2,
            bytes: 3 << 20,
            ..s.index.clone()
        });
        assert!(
            render(&offering, false).contains("Offered:          2 files downloaded here, 3.0 MiB"),
            "{}",
            render(&offering, false)
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            text.contains("Watching:         every folder (changes go out at once)\n"),
            "{text}"
        );
        let mut missing = s.clone();
        missing.index.root_missing = true;
        missing.index.watch = WatchState::Partial { unwatched: 2 };
        let other = render(&missing, false);
        assert!(
            other.contains("Shared folder:    /s (does not exist: an unmounted disk?"),
            "{other}"
        );
        assert!(
            other.contains("Watching:         all but 2 folders (unreadable?)"),
            "{other}"
        );
        assert!(
            text.contains("Leader:           this node, term 4\n"),
            "{text}"
        );
        assert!(
            text.contains("Index:            3 files, 2 directories, 2.0 KiB (version 7)\n"),
            "{text}"
        );
        assert!(text.contains("Not indexed:      1 entry"), "{text}");
        assert!(
            text.contains("Listening on:     /ip4/10.0.0.1/tcp/4747\n"),
            "{text}"
        );
        assert!(
            text.contains("                  /ip4/127.0.0.1/tcp/4747\n"),
            "{text}"
        );
        assert!(text.starts_with("Name:             ann-desktop"), "{text}");
        // Short lines for people: the name and the host.
        assert!(
            text.contains("Peers:            1\n  bob-laptop  10.0.0.2  rtt 0.4 ms\n"),
            "{text}"
        );
        // The full id, address and agent with --verbose; the agent escaped.
        let verbose = render(&s, true);
        assert!(
            verbose.contains(
                "Peers:            1\n  bob-laptop  12D3Other  /ip4/10.0.0.2/tcp/4747  iwant/0.1.0\\x1b]0;owned\\x07  rtt 0.4 ms"
            ),
            "{verbose}"
        );
        let mut unnamed = s.clone();
        unnamed.peers[0].name = None;
        unnamed.leader = Some("12D3Other".into());
        let text = render(&unnamed, false);
        assert!(text.contains("\n  …3Other  10.0.0.2"), "{text}");
        assert!(text.contains("Leader:           …3Other, term 4"), "{text}");
    }
}
