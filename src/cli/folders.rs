//! `iwant config`, `iwant share` and `iwant download-to`.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::{
    config::{change_folder, FolderChange, Folders, Home, Places, Role},
    control::{Client, ClientError, Request, Response},
};

#[derive(Serialize)]
struct FoldersOutput {
    shared_dir: PathBuf,
    download_dir: PathBuf,
    config_file: PathBuf,
    /// Whether a running node answered (and, for changes, applied them at once).
    node_running: bool,
}

pub(super) async fn show(home: Home, json: bool) -> anyhow::Result<()> {
    let (folders, running) = match Client::new(home.clone()).request(Request::Config).await {
        Ok(Response::Folders(f)) => (f, true),
        Ok(other) => anyhow::bail!("the node answered a config request with {other:?}"),
        Err(ClientError::NotRunning { .. }) => {
            let (config, _) = home.load_or_create_config()?;
            (config.folders(), false)
        }
        Err(e) => return Err(e.into()),
    };
    output(&home, folders, running, json, None)
}

/// `iwant name [NEW]`.
pub(super) async fn name(home: Home, new: Option<String>, json: bool) -> anyhow::Result<()> {
    let client = Client::new(home.clone());
    let Some(new) = new else {
        let (name, running) = match client.request(Request::Status).await {
            Ok(Response::Status(s)) => (s.name, true),
            Ok(other) => anyhow::bail!("the node answered a status request with {other:?}"),
            Err(ClientError::NotRunning { .. }) => {
                let (config, _) = home.load_or_create_config()?;
                let name = config.chosen_name().unwrap_or_default();
                (name, false)
            }
            Err(e) => return Err(e.into()),
        };
        if json {
            return super::print_json(
                &serde_json::json!({ "name": name, "node_running": running }),
            );
        }
        outln!("{}", super::term::Safe(&name));
        return Ok(());
    };
    let (name, announced) = match client.request(Request::SetName { name: new.clone() }).await {
        Ok(Response::Named { name, announced }) => (name, Some(announced)),
        Ok(other) => anyhow::bail!("the node answered a name change with {other:?}"),
        Err(ClientError::NotRunning { .. }) => {
            let name = iwant_behaviours::clean_name(&new)
                .context("a name needs at least one visible character")?;
            let (mut config, _) = home.load_or_create_config()?;
            config.name = Some(name.clone());
            home.save_config(&config)?;
            (name, None)
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        return super::print_json(
            &serde_json::json!({ "name": name, "announced": announced, "node_running": announced.is_some() }),
        );
    }
    match announced {
        Some(old) if old != name => outln!(
            "This node is now called {}; peers see the new name once the node restarts (until then: {}).",
            super::term::Safe(&name),
            super::term::Safe(&old)
        ),
        Some(_) => outln!("This node is called {}.", super::term::Safe(&name)),
        None => outln!(
            "Saved: this node is called {} from its next start.",
            super::term::Safe(&name)
        ),
    }
    Ok(())
}

pub(super) async fn set(
    home: Home,
    role: Role,
    path: PathBuf,
    change: FolderChange,
    json: bool,
) -> anyhow::Result<()> {
    // The daemon's working directory is not ours: send an absolute path.
    let path =
        std::path::absolute(&path).with_context(|| format!("invalid path {}", path.display()))?;
    let (force, create) = (change.force, change.create);
    let request = match role {
        Role::Shared => Request::SetShared {
            path: path.clone(),
            force,
            create,
        },
        Role::Download => Request::SetDownload {
            path: path.clone(),
            force,
            create,
        },
    };
    match Client::new(home.clone()).request(request).await {
        Ok(Response::Folders(folders)) => output(&home, folders, true, json, Some(role)),
        Ok(other) => anyhow::bail!("the node answered a folder change with {other:?}"),
        Err(ClientError::NotRunning { .. }) => {
            // The rules first: a refused change must not even create the home.
            let current = if home.config_file().exists() {
                home.load_or_create_config()?.0.folders()
            } else {
                home.default_folders()
            };
            let folders = change_folder(&current, role, &path, change, &Places::of(home.root()))?;
            home.create()?;
            let (mut config, _) = home.load_or_create_config()?;
            config.set_folders(&folders);
            home.save_config(&config)?;
            output(&home, folders, false, json, Some(role))
        }
        Err(e) => Err(e.into()),
    }
}

fn output(
    home: &Home,
    folders: Folders,
    running: bool,
    json: bool,
    changed: Option<Role>,
) -> anyhow::Result<()> {
    if json {
        return super::print_json(&FoldersOutput {
            shared_dir: folders.shared_dir,
            download_dir: folders.download_dir,
            config_file: home.config_file(),
            node_running: running,
        });
    }
    outln!("Shared folder:    {}", folders.shared_dir.display());
    outln!("Download folder:  {}", folders.download_dir.display());
    outln!("Config file:      {}", home.config_file().display());
    match (changed, running) {
        (Some(role), true) => outln!("The running node uses the new {role} folder now."),
        (Some(_), false) => outln!(
            "The node is not running: the change is saved and takes effect when it starts (`iwant node{}`).",
            home.cli_flag()
        ),
        (None, false) => outln!("(read from the config file; the node is not running)"),
        (None, true) => {}
    }
    Ok(())
}
