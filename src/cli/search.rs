//! `iwant search`: what the whole network shares, by name.

use std::fmt::Write;

use super::term::{human_bytes, safe, Safe};
use crate::{
    config::Home,
    control::{Client, Request, Response, SearchReply},
    share::Kind,
};

/// How many hex digits of an id the table shows (`iwant get` accepts any unique prefix).
pub(crate) const SHORT_ID: usize = 12;

/// Longest name or path shown in the table before it is shortened in the middle.
const MAX_COLUMN: usize = 48;

/// Which results to show: `limit` of them after the `offset` best.
#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    pub limit: u32,
    pub offset: u32,
}

pub(super) async fn run(
    home: Home,
    words: Vec<String>,
    kind: Option<Kind>,
    page: Page,
    json: bool,
) -> anyhow::Result<()> {
    let text = words.join(" ");
    let request = Request::Search {
        text,
        kind,
        limit: page.limit,
        offset: page.offset,
    };
    match Client::new(home.clone()).request(request).await? {
        Response::SearchResults(reply) => {
            remember(&home, &reply);
            if json {
                return super::print_json(&reply);
            }
            out!("{}", render(&reply, page));
            Ok(())
        }
        other => anyhow::bail!("the node answered a search with {other:?}"),
    }
}

/// The file in the home where the last search's names are kept, for `iwant get <id>`.
fn last_search(home: &Home) -> std::path::PathBuf {
    home.root().join("last-search.json")
}

/// Keeps the ids and names the last search showed, so that `iwant get <id>` names the
/// download as the row the user picked (not as another holder names it). Best effort: a
/// failure to write only loses that.
fn remember(home: &Home, reply: &SearchReply) {
    let rows: Vec<(String, &str)> = reply
        .results
        .iter()
        .map(|r| (r.hit.id.to_hex().to_string(), r.name.as_str()))
        .collect();
    if let Ok(text) = serde_json::to_vec(&rows) {
        let _ = std::fs::write(last_search(home), text);
    }
}

/// The name the last search showed for the id starting with `prefix`, if it showed exactly
/// one such id.
pub(super) fn remembered_name(home: &Home, prefix: &str) -> Option<String> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(last_search(home))
        .ok()?
        .take(1 << 20)
        .read_to_end(&mut text)
        .ok()?;
    let rows: Vec<(String, String)> = serde_json::from_slice(&text).ok()?;
    let prefix = prefix.to_ascii_lowercase();
    let mut found = rows.into_iter().filter(|(id, _)| id.starts_with(&prefix));
    let (_, name) = found.next()?;
    found.next().is_none().then_some(name)
}

fn render(reply: &SearchReply, page: Page) -> String {
    let nodes = super::term::count(reply.nodes as u64, "node", "nodes");
    if reply.results.is_empty() && page.offset > 0 && reply.total > 0 {
        return format!(
            "No more results: {:?} has {} in all.\n",
            reply.query,
            super::term::count(reply.total, "result", "results")
        );
    }
    if reply.results.is_empty() {
        return format!(
            "Nothing matches {:?} among {} shared by {nodes}.\n",
            reply.query,
            super::term::count(reply.indexed, "entry", "entries"),
        );
    }
    let rows: Vec<[String; 6]> = reply
        .results
        .iter()
        .map(|r| {
            let (hit, name) = (&r.hit, &r.name);
            let kind = match hit.kind {
                Kind::File => "file",
                Kind::Dir => "dir",
            };
            let peers = holders_cell(r);
            let dir = match hit.path.rfind('/') {
                Some(i) => &hit.path[..i + 1],
                None => "",
            };
            // Names come from other nodes: escaped before they reach the terminal.
            let name = if hit.kind == Kind::Dir {
                format!("{}/", Safe(name))
            } else {
                safe(name)
            };
            [
                shorten(&name),
                human_bytes(hit.size),
                kind.to_string(),
                hit.id.to_hex()[..SHORT_ID].to_string(),
                peers,
                shorten(&if dir.is_empty() {
                    ".".into()
                } else {
                    safe(dir)
                }),
            ]
        })
        .collect();
    let header = ["NAME", "SIZE", "KIND", "ID", "FROM", "IN"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    };
    line(&mut out, &header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    let shown = reply.results.len() as u64;
    let reachable = reply.total.min(crate::leader::index::MAX_MATCHES as u64);
    let first = page.offset as u64 + 1;
    let last = page.offset as u64 + shown;
    let which = if page.offset == 0 {
        super::term::count(shown, "result", "results")
    } else {
        format!("Results {first}–{last}")
    };
    let more = if reachable > last {
        let next = last / page.limit.max(1) as u64 + 1;
        if last.is_multiple_of(page.limit.max(1) as u64) {
            format!(" ({} more: --page {next})", reachable - last)
        } else {
            format!(" ({} more: --offset {last})", reachable - last)
        }
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{which} of {} matching among {} shared by {nodes}{more}. Fetch one with `iwant get <ID>`.",
        reply.total,
        super::term::count(reply.indexed, "entry", "entries"),
    );
    out
}

/// Who holds a result, for people: `you, bob-laptop, carol +3` (names escaped; at most two
/// other names, then how many more hold it).
fn holders_cell(r: &crate::control::SearchResult) -> String {
    const NAMES: usize = 2;
    let mut parts: Vec<String> = Vec::new();
    if r.local {
        parts.push("you".into());
    }
    let names: Vec<&String> = r.holder_names.iter().filter(|n| !n.is_empty()).collect();
    parts.extend(names.iter().take(NAMES).map(|n| safe(n)));
    let shown = parts.len() as u32;
    let more = r.hit.holder_count.saturating_sub(shown);
    let mut cell = parts.join(", ");
    if more > 0 {
        if cell.is_empty() {
            cell = super::term::count(more as u64, "peer", "peers");
        } else {
            cell += &format!(" +{more}");
        }
    }
    cell
}

/// Shortens long text in the middle, keeping both ends.
fn shorten(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_COLUMN {
        return text.to_string();
    }
    let keep = (MAX_COLUMN - 1) / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(count - (MAX_COLUMN - 1 - keep)).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SearchResult;

    const FIRST: Page = Page {
        limit: 2,
        offset: 0,
    };

    fn result(path: &str, kind: Kind, holders: u32, local: bool) -> SearchResult {
        SearchResult {
            name: path.rsplit('/').next().unwrap().to_string(),
            local,
            holder_names: (0..holders - local as u32)
                .map(|i| ["bob-laptop", "carol", "dave"][i as usize % 3].to_string())
                .collect(),
            hit: iwant_behaviours::search::Hit {
                path: path.into(),
                kind,
                size: 1536,
                id: blake3::hash(path.as_bytes()).into(),
                score: 1,
                holders: vec![],
                holder_count: holders,
            },
        }
    }

    #[test]
    fn the_table_shows_name_size_kind_short_id_peers_and_folder() {
        let reply = SearchReply {
            query: "bat".into(),
            leader: "L".into(),
            total: 3,
            indexed: 10,
            nodes: 2,
            results: vec![
                result("movies/batman.mkv", Kind::File, 2, true),
                result("bats", Kind::Dir, 1, false),
            ],
        };
        let text = render(&reply, FIRST);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        let id = blake3::hash(b"movies/batman.mkv").to_hex();
        assert!(lines[1].starts_with("batman.mkv"), "{text}");
        assert!(lines[1].contains("1.5 KiB"), "{text}");
        assert!(lines[1].contains(&id[..SHORT_ID]), "{text}");
        assert!(!lines[1].contains(&id[..SHORT_ID + 1]), "{text}");
        assert!(lines[1].contains("you, bob-laptop "), "{text}");
        assert!(lines[1].ends_with("movies/"), "{text}");
        assert!(lines[2].starts_with("bats/"), "{text}");
        assert!(lines[2].ends_with(" ."), "{text}");
        assert!(
            lines[3].starts_with(
                "2 results of 3 matching among 10 entries shared by 2 nodes (1 more: --page 2)"
            ),
            "{text}"
        );
        // The second page says which results it shows; the last one has no "more".
        let second = Page {
            limit: 2,
            offset: 2,
        };
        let mut page2 = reply.clone();
        page2.results.truncate(1);
        let text = render(&page2, second);
        assert!(
            text.contains("Results 3–3 of 3 matching among 10 entries shared by 2 nodes. Fetch"),
            "{text}"
        );
        page2.results.clear();
        assert_eq!(
            render(&page2, second),
            "No more results: \"bat\" has 3 results in all.\n"
        );
    }

    #[test]
    fn names_from_the_network_cannot_drive_the_terminal() {
        let reply = SearchReply {
            query: "x".into(),
            leader: "L".into(),
            total: 2,
            indexed: 2,
            nodes: 1,
            results: vec![
                result(
                    "evil\u{1b}]0;owned\u{7}/x\u{1b}[2J.txt",
                    Kind::File,
                    1,
                    false,
                ),
                result("gpj.\u{202e}exe", Kind::Dir, 1, false),
            ],
        };
        let text = render(&reply, FIRST);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("x\\x1b[2J.txt"), "{text}");
        assert!(text.contains("evil\\x1b]0;owned\\x07/"), "{text}");
        assert!(text.contains("gpj.\\u{202e}exe/"), "{text}");
    }

    #[test]
    fn no_match_says_what_was_searched() {
        let reply = SearchReply {
            query: "zzz".into(),
            leader: "L".into(),
            total: 0,
            indexed: 1,
            nodes: 1,
            results: vec![],
        };
        assert_eq!(
            render(&reply, FIRST),
            "Nothing matches \"zzz\" among 1 entry shared by 1 node.\n"
        );
    }

    #[test]
    fn long_names_are_shortened_in_the_middle() {
        let long = format!("{}.mkv", "a".repeat(100));
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_COLUMN);
        assert!(short.ends_with(".mkv") && short.contains('…'));
        assert_eq!(shorten("ok"), "ok");
    }
}
