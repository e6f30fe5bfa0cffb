//! Desktop notifications when a download completes or fails (config `notify`, on by default),
//! so a download left to run in the background is not forgotten: `notify-send` (libnotify) on
//! Linux and the BSDs, only inside a desktop session (a D-Bus session bus or a display); the
//! Notification Center through `osascript` on macOS; none on Windows yet. Best effort: a
//! missing tool or a failure is logged at debug level and changes nothing else.

use std::{process::Stdio, time::Duration};

use super::term::{human_bytes, safe};
use crate::transfer::{DownloadState, Progress};

/// How long a notification command may run before it is killed.
const COMMAND_LIMIT: Duration = Duration::from_secs(5);

/// Shows that `p` ended (when it completed or failed), without waiting for it.
pub(super) fn download_ended(p: &Progress) {
    let (title, body) = match p.state {
        DownloadState::Done => (
            "Download complete",
            format!(
                "{} ({}) is in {}",
                safe(&p.name),
                human_bytes(p.bytes_total),
                p.path
                    .as_deref()
                    .and_then(|path| path.parent())
                    .map(|folder| safe(&folder.to_string_lossy()))
                    .unwrap_or_default()
            ),
        ),
        DownloadState::Failed => (
            "Download failed",
            format!(
                "{}: {}",
                safe(&p.name),
                safe(p.message.as_deref().unwrap_or("no reason given"))
            ),
        ),
        _ => return,
    };
    let Some(mut command) = command(title, &body) else {
        return;
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    tokio::spawn(async move {
        match command.spawn() {
            Ok(mut child) => {
                if tokio::time::timeout(COMMAND_LIMIT, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot show a desktop notification"),
        }
    });
}

/// `notify-send`, inside a desktop session; its body is markup, so `&`, `<` and `>` are
/// escaped. Arguments, never a shell.
#[cfg(all(unix, not(target_os = "macos")))]
fn command(title: &str, body: &str) -> Option<tokio::process::Command> {
    let desktop = ["DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !desktop {
        return None;
    }
    let body = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut command = tokio::process::Command::new("notify-send");
    command
        .args(["--app-name=iwant", "--icon=folder-download", "--"])
        .arg(format!("iwant: {title}"))
        .arg(body);
    Some(command)
}

/// `osascript` with the texts as arguments of the script (never inside it).
#[cfg(target_os = "macos")]
fn command(title: &str, body: &str) -> Option<tokio::process::Command> {
    let mut command = tokio::process::Command::new("osascript");
    command
        .args([
            "-e",
            "on run argv",
            "-e",
            "display notification (item 2 of argv) with title (item 1 of argv)",
            "-e",
            "end run",
        ])
        .arg(format!("iwant: {title}"))
        .arg(body);
    Some(command)
}

/// None on Windows yet.
#[cfg(windows)]
fn command(_title: &str, _body: &str) -> Option<tokio::process::Command> {
    None
}
