//! `iwant service install|uninstall`: runs the node in the background at every login, as
//! the platform does it: a systemd user unit on Linux, a launchd agent on macOS, a Task
//! Scheduler task on Windows.

use std::{path::Path, process::Command};

use anyhow::Context;

use crate::config::Home;

/// The service's name (systemd unit, launchd label, scheduled task).
#[cfg(target_os = "linux")]
const UNIT: &str = "iwant.service";
#[cfg(target_os = "macos")]
const LABEL: &str = "org.iwant.node";
#[cfg(windows)]
const TASK: &str = "iwant";

/// The command line the service runs: this binary, the home if one was given, `node`.
fn node_command(home: &Home) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe()
        .and_then(dunce::canonicalize)
        .context("cannot find this program's own path")?;
    let mut args = vec![exe.to_string_lossy().into_owned()];
    if home.is_explicit() {
        args.push("--home".into());
        args.push(home.root().to_string_lossy().into_owned());
    }
    args.push("node".into());
    Ok(args)
}

/// The text of the systemd user unit that runs `command`. (Built and tested everywhere.)
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn systemd_unit(command: &[String]) -> String {
    let exec = command
        .iter()
        .map(|a| systemd_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "[Unit]\n\
         Description=iwant: find and fetch files on your LAN\n\
         Documentation=man:iwant(1)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// A systemd command-line word: quoted when it has spaces or quotes, `%` doubled.
fn systemd_quote(word: &str) -> String {
    let word = word.replace('%', "%%");
    if word.contains([' ', '"', '\'', '\\', '\t']) {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        word
    }
}

/// The text of the launchd agent that runs `command`, logging into `log`. (Built and tested
/// everywhere.)
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub fn launchd_plist(label: &str, command: &[String], log: &Path) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let args: String = command
        .iter()
        .map(|a| format!("    <string>{}</string>\n", escape(a)))
        .collect();
    let log = escape(&log.to_string_lossy());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \x20 <key>Label</key><string>{label}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         \x20 <key>RunAtLoad</key><true/>\n\
         \x20 <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
         \x20 <key>StandardOutPath</key><string>{log}</string>\n\
         \x20 <key>StandardErrorPath</key><string>{log}</string>\n\
         </dict>\n</plist>\n"
    )
}

/// Runs `program args`; `Ok(false)` when the program is not there at all.
fn try_run(program: &str, args: &[&str]) -> anyhow::Result<bool> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(true),
        Ok(out) => anyhow::bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot run {program}")),
    }
}

/// The user's configuration folder (`$XDG_CONFIG_HOME`, else `~/.config`).
#[cfg(target_os = "linux")]
fn config_dir() -> anyhow::Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(std::path::PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(std::path::PathBuf::from(home).join(".config"))
}

/// `iwant service install`.
pub(super) fn install(home: &Home) -> anyhow::Result<()> {
    let command = node_command(home)?;
    #[cfg(target_os = "linux")]
    {
        let dir = config_dir()?.join("systemd/user");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let unit = dir.join(UNIT);
        std::fs::write(&unit, systemd_unit(&command))
            .with_context(|| format!("cannot write {}", unit.display()))?;
        outln!("Wrote the systemd user unit {}", unit.display());
        let enabled = try_run("systemctl", &["--user", "daemon-reload"]).and_then(|found| {
            Ok(found && try_run("systemctl", &["--user", "enable", "--now", UNIT])?)
        });
        match enabled {
            Ok(true) => outln!(
                "The node runs now and at every login (`systemctl --user status {UNIT}`; logs: `journalctl --user -u {UNIT}`). To run it before you log in too: `loginctl enable-linger`."
            ),
            Ok(false) => outln!(
                "systemd is not available here (no `systemctl`): the unit is written but not enabled. Start the node yourself with `{}`.",
                command.join(" ")
            ),
            Err(e) => outln!(
                "systemd did not enable it ({e:#}): the unit is written. Once a user session of systemd runs, enable it with `systemctl --user enable --now {UNIT}`."
            ),
        }
        Ok(())
    }
    #[cfg(target_os = "macos")]
    {
        let user = std::env::var_os("HOME").context("HOME is not set")?;
        let dir = std::path::PathBuf::from(user).join("Library/LaunchAgents");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let plist = dir.join(format!("{LABEL}.plist"));
        let log = home.root().join("node.log");
        std::fs::write(&plist, launchd_plist(LABEL, &command, &log))
            .with_context(|| format!("cannot write {}", plist.display()))?;
        outln!("Wrote the launchd agent {}", plist.display());
        let path = plist.to_string_lossy().into_owned();
        match try_run("launchctl", &["load", "-w", &path]) {
            Ok(true) => outln!(
                "The node runs now and at every login; logs in {}.",
                log.display()
            ),
            Ok(false) => outln!("launchctl is missing: load it with `launchctl load -w {path}`."),
            Err(e) => outln!("launchctl did not load it ({e:#}); try `launchctl load -w {path}`."),
        }
        Ok(())
    }
    #[cfg(windows)]
    {
        let run = command
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(" ");
        match try_run(
            "schtasks",
            &["/Create", "/F", "/SC", "ONLOGON", "/TN", TASK, "/TR", &run],
        ) {
            Ok(true) => {
                outln!("Created the scheduled task {TASK:?}: the node starts at every logon.");
                let _ = try_run("schtasks", &["/Run", "/TN", TASK]);
            }
            Ok(false) => anyhow::bail!(
                "schtasks is missing; start the node with `{}`",
                command.join(" ")
            ),
            Err(e) => return Err(e),
        }
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        anyhow::bail!(
            "no service manager is known on this platform; start the node with `{}`",
            command.join(" ")
        )
    }
}

/// `iwant service uninstall`.
pub(super) fn uninstall() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let unit = config_dir()?.join("systemd/user").join(UNIT);
        let _ = try_run("systemctl", &["--user", "disable", "--now", UNIT]);
        match std::fs::remove_file(&unit) {
            Ok(()) => {
                let _ = try_run("systemctl", &["--user", "daemon-reload"]);
                outln!(
                    "Removed {}; the node no longer starts at login.",
                    unit.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                outln!(
                    "No service was installed ({} does not exist).",
                    unit.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", unit.display())),
        }
        Ok(())
    }
    #[cfg(target_os = "macos")]
    {
        let user = std::env::var_os("HOME").context("HOME is not set")?;
        let plist =
            std::path::PathBuf::from(user).join(format!("Library/LaunchAgents/{LABEL}.plist"));
        let path = plist.to_string_lossy().into_owned();
        let _ = try_run("launchctl", &["unload", "-w", &path]);
        match std::fs::remove_file(&plist) {
            Ok(()) => outln!("Removed {path}; the node no longer starts at login."),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                outln!("No service was installed ({path} does not exist).")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot remove {path}")),
        }
        Ok(())
    }
    #[cfg(windows)]
    {
        match try_run("schtasks", &["/Delete", "/F", "/TN", TASK]) {
            Ok(_) => outln!("Removed the scheduled task {TASK:?}."),
            Err(e) => return Err(e),
        }
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        anyhow::bail!("no service manager is known on this platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_and_the_agent_run_the_node_with_its_home() {
        let command = vec![
            "/opt/my tools/iwant".to_string(),
            "--home".into(),
            "/home/ann/100%".into(),
            "node".into(),
        ];
        let unit = systemd_unit(&command);
        assert!(
            unit.contains("\nExecStart=\"/opt/my tools/iwant\" --home /home/ann/100%% node\n"),
            "{unit}"
        );
        assert!(
            unit.contains("\nRestart=on-failure\n") && unit.contains("\nWantedBy=default.target\n")
        );
        let plist = launchd_plist("org.iwant.node", &command, Path::new("/h/node.log"));
        assert!(
            plist.contains("<string>/opt/my tools/iwant</string>\n    <string>--home</string>"),
            "{plist}"
        );
        assert!(plist.contains("<key>RunAtLoad</key><true/>"), "{plist}");
    }
}
