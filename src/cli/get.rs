//! `iwant get` and `iwant cancel`: downloads, which belong to the daemon; the CLI starts them
//! and watches them.

use std::{
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use super::term::{human_bytes, safe, Safe};
use crate::{
    config::Home,
    control::{Client, Download as Progress, DownloadState, Request, Response, SearchResult},
    share::Kind,
};

/// Exit code when the user leaves a download's progress with Ctrl-C (it goes on).
pub const EXIT_DETACHED: i32 = 130;

/// What `iwant get` was asked for.
pub(super) struct Ask {
    /// An id (prefix), or words to search for.
    pub words: Vec<String>,
    /// `--as`.
    pub name: Option<String>,
    /// `--to`, absolute.
    pub to: Option<PathBuf>,
    /// `--again`.
    pub again: bool,
}

/// Whether `words` is one id or id prefix (4 to 64 hex digits).
fn is_id(words: &[String]) -> bool {
    matches!(words, [w] if (4..=64).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `iwant get <id>`: start (or re-attach to) a download and follow it until it ends.
pub(super) async fn get(home: Home, ask: Ask, detach: bool, json: bool) -> anyhow::Result<()> {
    let client = Client::new(home.clone());
    let request = |id: String, shown: Option<String>| Request::Get {
        id,
        name: ask.name.clone().or(shown),
        to: ask.to.clone(),
        again: ask.again,
    };
    let id = ask.words.join(" ");
    // An id (prefix), or words: a word that is also hex (`cafe`, `2024`) and no id starts
    // with is searched for.
    let ask_node = async {
        if is_id(&ask.words) {
            let shown = super::search::remembered_name(&home, &id);
            match client.request(request(id.clone(), shown)).await {
                Err(crate::control::ClientError::Remote(e))
                    if e.kind == crate::control::ErrorKind::NotFound && id.len() < 64 => {}
                answer => return Ok::<_, anyhow::Error>(answer?),
            }
        }
        let picked = pick(&client, &ask.words, is_id(&ask.words), json).await?;
        let picked_id = picked.hit.id.to_hex().to_string();
        Ok(client
            .request(request(picked_id, Some(picked.name)))
            .await?)
    };
    // One listener for the whole command, so no Ctrl-C is missed between two polls.
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    let answer = tokio::select! {
        answer = ask_node => answer?,
        _ = &mut interrupt => {
            eprintln!(
                "Left `iwant get`; if the download had started it continues in the background. See `iwant status`, or run `iwant get {id}` again."
            );
            std::process::exit(EXIT_DETACHED);
        }
    };
    let progress = match answer {
        Response::Download(p) => p,
        Response::AlreadyHave { id, path } => {
            if json {
                return super::print_json(&serde_json::json!({ "id": id, "already_have": path }));
            }
            outln!(
                "You have it already: {}\nFetch it once more with `iwant get {} --again`.",
                safe(&path.to_string_lossy()),
                id.short(12)
            );
            return Ok(());
        }
        other => anyhow::bail!("the node answered a get with {other:?}"),
    };
    let short = progress.id.short(12);
    if detach {
        if json {
            return super::print_json(&progress);
        }
        outln!(
            "Downloading {} in the background; watch it with `iwant status` or `iwant get {short}`.",
            Safe(&progress.name)
        );
        return Ok(());
    }
    let lines = json || !std::io::stdout().is_terminal();
    let full = progress.id.to_hex();
    let bar = (!lines).then(|| new_bar(&progress));
    let mut last = progress;
    // Lines go out when the state changes, at the end, and at most every LINE_EVERY between.
    let mut last_line: Option<(DownloadState, Instant)> = None;
    // The node sends the progress as it changes (no polling); it closes the stream at the end.
    let mut replies = if last.state.is_final() {
        None
    } else {
        Some(client.follow(&full).await?)
    };
    loop {
        if lines {
            let due = match last_line {
                None => true,
                Some((state, at)) => state != last.state || at.elapsed() >= LINE_EVERY,
            };
            if due {
                last_line = Some((last.state, Instant::now()));
                outln!("{}", serde_json::to_string(&Line::of(&last))?);
            }
        } else if let Some(bar) = &bar {
            draw(bar, &last);
        }
        if last.state.is_final() {
            break;
        }
        if let Some(error) = &last.write_error {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            anyhow::bail!(
                "the download of {} is paused: {error}. Follow it again with `iwant get {short}`, or drop it with `iwant cancel {short}`.",
                Safe(&last.name)
            );
        }
        let next = tokio::select! {
            next = replies.as_mut().expect("bug: a running download is followed").next() => next,
            _ = &mut interrupt => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                eprintln!(
                    "Left the download of {}; it continues in the background. Watch it with `iwant status` or `iwant get {short}`; stop it with `iwant cancel {short}`.",
                    Safe(&last.name)
                );
                std::process::exit(EXIT_DETACHED);
            }
        };
        last = match next {
            Ok(Some(Response::Download(p))) => p,
            Ok(Some(other)) => anyhow::bail!("the node answered with {other:?}"),
            // The stream ended before the download did: the node stopped.
            Ok(None) | Err(crate::control::ClientError::Protocol(_)) => anyhow::bail!(
                "the node stopped; the download of {} resumes when it starts again (`iwant node`)",
                Safe(&last.name)
            ),
            Err(e) => return Err(e.into()),
        };
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match last.state {
        DownloadState::Done => {
            if !lines {
                outln!(
                    "Downloaded {} ({}) to {}{}.",
                    Safe(&last.name),
                    human_bytes(last.bytes_total),
                    last.path
                        .as_deref()
                        .map(|p| safe(&p.to_string_lossy()))
                        .unwrap_or_default(),
                    summary(&last)
                );
            }
            Ok(())
        }
        DownloadState::Cancelled => {
            anyhow::bail!("the download of {} was cancelled", Safe(&last.name))
        }
        _ => anyhow::bail!(
            "the download of {} failed: {}",
            Safe(&last.name),
            Safe(last.message.as_deref().unwrap_or("no reason given"))
        ),
    }
}

/// `iwant cancel <id>`.
pub(super) async fn cancel(home: Home, id: String, json: bool) -> anyhow::Result<()> {
    match Client::new(home).request(Request::Cancel { id }).await? {
        Response::Download(p) if json => super::print_json(&p),
        Response::Download(p) => {
            outln!(
                "Cancelled the download of {}; its partial data is removed.",
                Safe(&p.name)
            );
            Ok(())
        }
        other => anyhow::bail!("the node answered a cancel with {other:?}"),
    }
}

/// `iwant get <words>`: searches, and picks the match: the only one, or the one the person at
/// the terminal chooses; without a terminal (or with `--json`) lists the matches and fails.
async fn pick(
    client: &Client,
    words: &[String],
    hex: bool,
    json: bool,
) -> anyhow::Result<SearchResult> {
    const SHOWN: u32 = 10;
    let request = Request::Search {
        text: words.join(" "),
        kind: None,
        limit: SHOWN,
        offset: 0,
    };
    let reply = match client.request(request).await? {
        Response::SearchResults(r) => r,
        other => anyhow::bail!("the node answered a search with {other:?}"),
    };
    let results = reply.results;
    let query = words.join(" ");
    if results.is_empty() && hex {
        anyhow::bail!(
            "no node shares anything with an id starting with {query}, and no name matches it either; find ids with `iwant search <words>`"
        );
    }
    if results.is_empty() {
        anyhow::bail!(
            "{query:?} is not an id, and nothing shared matches it; try other words with `iwant search`"
        );
    }
    let list = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "  {:>2}  {}  {:>10}  {}",
                i + 1,
                r.hit.id.short(12),
                human_bytes(r.hit.size),
                safe(&r.hit.path)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let interactive = !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if results.len() == 1 && interactive {
        eprintln!("{query:?} matches one thing:\n{list}");
        return Ok(results.into_iter().next().expect("bug: one result"));
    }
    if !interactive {
        anyhow::bail!(
            "{query:?} is not an id; it matches {}:\n{list}\nGet one with `iwant get <ID>`.",
            super::term::count(reply.total, "entry", "entries")
        );
    }
    eprintln!("{query:?} matches:\n{list}");
    loop {
        eprint!("Which one? [1-{}, Enter to stop] ", results.len());
        let mut line = String::new();
        let read = tokio::task::spawn_blocking(move || {
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await??;
        let choice = read.trim();
        if choice.is_empty() {
            anyhow::bail!("nothing picked; nothing downloaded");
        }
        match choice.parse::<usize>() {
            Ok(n) if (1..=results.len()).contains(&n) => {
                return Ok(results.into_iter().nth(n - 1).expect("bug: in range"))
            }
            _ => eprintln!("Type a number from 1 to {}.", results.len()),
        }
    }
}

/// How often `iwant get` prints a progress line into a pipe or with `--json`, at most.
const LINE_EVERY: Duration = Duration::from_millis(500);

/// How a finished download went, by the node's own measure (this run of the download, not
/// the time this command watched it): ` in 12.7 s, 23.6 MiB/s; 210 MiB were here already`.
fn summary(p: &Progress) -> String {
    let secs = p.elapsed_ms as f64 / 1000.0;
    let mut s = format!(" in {secs:.1} s");
    if p.bytes_fetched > 0 && secs > 0.05 {
        s += &format!(
            ", {}/s",
            human_bytes((p.bytes_fetched as f64 / secs) as u64)
        );
    }
    let mut already = Vec::new();
    if p.bytes_resumed > 0 {
        already.push(format!(
            "{} were here from before",
            human_bytes(p.bytes_resumed)
        ));
    }
    if p.bytes_local > 0 {
        already.push(format!(
            "{} copied from your shared folder",
            human_bytes(p.bytes_local)
        ));
    }
    if !already.is_empty() {
        s += &format!("; {}", already.join(", "));
    }
    s
}

/// One progress line of `iwant get --json`.
#[derive(serde::Serialize)]
struct Line<'a> {
    event: &'static str,
    #[serde(flatten)]
    progress: &'a Progress,
}

impl<'a> Line<'a> {
    fn of(progress: &'a Progress) -> Self {
        let event = match progress.state {
            DownloadState::Done => "done",
            DownloadState::Failed => "failed",
            DownloadState::Cancelled => "cancelled",
            _ => "progress",
        };
        Self { event, progress }
    }
}

/// A bar whose rate and time left are the node's (so re-attaching to a download shows the
/// truth, not what this command saw since it started).
fn new_bar(p: &Progress) -> ProgressBar {
    let bar = ProgressBar::new(p.bytes_total.max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .expect("bug: progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(safe(&p.name));
    draw(&bar, p);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `12.3 MiB/s · 1m 05s left`, from the node's numbers.
pub(super) fn speed(p: &Progress) -> String {
    let mut s = format!("{}/s", human_bytes(p.rate));
    if let Some(ms) = p.eta_ms {
        s += &format!(" · {} left", human_duration(ms / 1000));
    }
    s
}

/// `45s`, `3m 05s`, `2h 10m`.
fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A progress line's tail: peers, files, and what it waits for.
pub(super) fn details(p: &Progress) -> String {
    // Names come from other nodes: escaped.
    let mut parts = vec![if p.from.is_empty() {
        super::term::count(p.peers as u64, "peer", "peers")
    } else {
        let mut who = format!(
            "from {}",
            p.from
                .iter()
                .map(|n| safe(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let more = (p.peers as usize).saturating_sub(p.from.len());
        if more > 0 {
            who += &format!(" +{more}");
        }
        who
    }];
    if p.kind == Kind::Dir {
        parts.push(format!("{}/{} files", p.files_done, p.files_total));
    }
    if let Some(m) = &p.message {
        parts.push(safe(m));
    } else if p.state != DownloadState::Fetching {
        parts.push(format!("{:?}", p.state).to_lowercase());
    }
    parts.join(" · ")
}

fn draw(bar: &ProgressBar, p: &Progress) {
    bar.set_length(p.bytes_total.max(1));
    bar.set_position(p.bytes_done);
    bar.set_message(format!("{} · {}", speed(p), details(p)));
}
