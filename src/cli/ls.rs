//! `iwant ls`: what this node shares, or (`--peer`) what another node shares.

use crate::{
    config::Home,
    control::{Client, LeftOut, Request, Response},
    share::{IndexEntry, Kind},
};

pub(super) async fn run(
    home: Home,
    path: Option<String>,
    errors: bool,
    skipped: bool,
    json: bool,
) -> anyhow::Result<()> {
    let answer = Client::new(home)
        .request(Request::List { errors, skipped })
        .await?;
    let answer = match (answer, path) {
        (Response::Entries { entries }, Some(path)) => Response::Entries {
            entries: below(entries, &path)?,
        },
        (answer, _) => answer,
    };
    match answer {
        Response::Entries { entries } if json => super::print_json(&entries),
        Response::ScanErrors { errors } if json => super::print_json(&errors),
        Response::Entries { entries } => {
            out!("{}", render_entries(&entries));
            Ok(())
        }
        Response::ScanErrors { errors } => {
            out!("{}", render_errors(&errors));
            Ok(())
        }
        Response::Skipped { skipped, .. } if json => super::print_json(&skipped),
        Response::Skipped { skipped, total } => {
            out!("{}", render_skipped(&skipped, total));
            Ok(())
        }
        other => anyhow::bail!("the node answered a listing with {other:?}"),
    }
}

/// `iwant ls --peer NODE [PATH]`: what the node `peer` shares at `path` and below (asked by
/// this node; at most [`crate::control::MAX_BROWSED`] entries).
pub(super) async fn browse(
    home: Home,
    peer: String,
    path: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let path = share_path(path.as_deref().unwrap_or(""));
    let answer = Client::new(home)
        .request(Request::Browse { peer, path })
        .await?;
    let Response::Browsed {
        peer,
        name,
        total,
        entries,
    } = answer
    else {
        anyhow::bail!("the node answered a listing with {answer:?}");
    };
    if json {
        return super::print_json(&serde_json::json!({
            "peer": peer,
            "name": name,
            "total": total,
            "entries": entries,
        }));
    }
    out!("{}", render_entries(&entries));
    let more = total.saturating_sub(entries.len() as u64);
    if more > 0 {
        out!(
            "... and {more} more; give a folder to see less at once (`iwant ls --peer {} <FOLDER>`)",
            super::term::Safe(&name)
        );
    }
    Ok(())
}

/// A path in the share as a user typed it (relative, `/` or the platform's separator between
/// folders, maybe `./` before) in the network's form.
fn share_path(path: &str) -> String {
    path.replace(std::path::MAIN_SEPARATOR, "/")
        .trim_start_matches("./")
        .trim_matches('/')
        .to_string()
}

/// The entries at `path` (as the share names it: relative, `/` or the platform's separator
/// between folders) and below it; an error if there are none.
fn below(entries: Vec<IndexEntry>, path: &str) -> anyhow::Result<Vec<IndexEntry>> {
    let wanted = share_path(path);
    let found: Vec<IndexEntry> = entries
        .into_iter()
        .filter(|e| {
            wanted.is_empty()
                || e.path == wanted
                || e.path
                    .strip_prefix(&wanted)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .collect();
    if found.is_empty() {
        anyhow::bail!(
            "nothing shared at {:?}; give a path inside the shared folder as `iwant ls` shows it (`iwant ls` lists everything)",
            super::term::Safe(path).to_string()
        );
    }
    Ok(found)
}

fn render_entries(entries: &[IndexEntry]) -> String {
    use std::fmt::Write;
    let mut out = format!("{:<4}  {:>10}  {:<16}  PATH\n", "KIND", "SIZE", "ID");
    for e in entries {
        let kind = match e.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
        };
        let path = if e.path.is_empty() {
            ".".to_string()
        } else {
            super::term::safe(&e.path)
        };
        let path = if e.kind == Kind::Dir && !e.path.is_empty() {
            format!("{path}/")
        } else {
            path
        };
        let _ = writeln!(
            out,
            "{kind:<4}  {:>10}  {:<16}  {path}",
            super::term::human_bytes(e.size),
            &e.id.to_hex()[..16]
        );
    }
    out
}

fn render_skipped(skipped: &[LeftOut], total: u64) -> String {
    use std::fmt::Write;
    if skipped.is_empty() {
        return "Nothing was left out.\n".into();
    }
    let mut out = String::from("PATH  (WHY)\n");
    for s in skipped {
        let _ = writeln!(
            out,
            "{}  ({})",
            super::term::Safe(&s.path),
            super::term::Safe(&s.reason)
        );
    }
    let more = total.saturating_sub(skipped.len() as u64);
    if more > 0 {
        let _ = writeln!(out, "... and {more} more");
    }
    out
}

fn render_errors(errors: &[LeftOut]) -> String {
    if errors.is_empty() {
        return "Every entry of the shared folder is indexed.\n".into();
    }
    errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}\n",
                super::term::Safe(&e.path),
                super::term::Safe(&e.reason)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_and_error_paths_are_escaped() {
        let entry = LeftOut {
            path: "a\u{1b}[31m.txt".into(),
            reason: "hidden".into(),
        };
        let skipped = render_skipped(std::slice::from_ref(&entry), 3);
        assert!(skipped.contains("a\\x1b[31m.txt  (hidden)\n"), "{skipped}");
        assert!(skipped.contains("... and 2 more"), "{skipped}");
        let errors = render_errors(&[entry]);
        assert!(!errors.contains('\u{1b}'), "{errors}");
    }

    #[test]
    fn listing_shows_kind_size_short_id_and_path() {
        let entries = vec![
            IndexEntry {
                path: String::new(),
                kind: Kind::Dir,
                size: 5,
                id: blake3::hash(b"root").into(),
            },
            IndexEntry {
                path: "a.txt".into(),
                kind: Kind::File,
                size: 5,
                id: blake3::hash(b"hello").into(),
            },
        ];
        let text = render_entries(&entries);
        let hello = blake3::hash(b"hello").to_hex();
        assert!(
            text.contains(&format!("file         5 B  {}  a.txt", &hello[..16])),
            "{text}"
        );
        assert!(text.lines().nth(1).unwrap().ends_with("  ."), "{text}");
    }
}
