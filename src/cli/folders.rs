//! `iwant config`, `iwant share` and `iwant download-to`.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::{
    config::{check_folders, Folders, Home},
    control::{Client, ClientError, Request, Response},
};

/// Which folder a command changes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Which {
    Shared,
    Download,
}

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
            let folders = Folders {
                shared_dir: config.shared_dir,
                download_dir: config.download_dir,
            };
            (folders, false)
        }
        Err(e) => return Err(e.into()),
    };
    output(&home, folders, running, json, None)
}

pub(super) async fn set(home: Home, which: Which, path: PathBuf, json: bool) -> anyhow::Result<()> {
    // The daemon's working directory is not ours: send an absolute path.
    let path =
        std::path::absolute(&path).with_context(|| format!("invalid path {}", path.display()))?;
    let request = match which {
        Which::Shared => Request::SetShared { path: path.clone() },
        Which::Download => Request::SetDownload { path: path.clone() },
    };
    match Client::new(home.clone()).request(request).await {
        Ok(Response::Folders(folders)) => output(&home, folders, true, json, Some(which)),
        Ok(other) => anyhow::bail!("the node answered a folder change with {other:?}"),
        Err(ClientError::NotRunning { .. }) => {
            let (mut config, _) = home.load_or_create_config()?;
            match which {
                Which::Shared => config.shared_dir = path,
                Which::Download => config.download_dir = path,
            }
            let folders = check_folders(&config.shared_dir, &config.download_dir)?;
            config.shared_dir = folders.shared_dir.clone();
            config.download_dir = folders.download_dir.clone();
            home.save_config(&config)?;
            output(&home, folders, false, json, Some(which))
        }
        Err(e) => Err(e.into()),
    }
}

fn output(
    home: &Home,
    folders: Folders,
    running: bool,
    json: bool,
    changed: Option<Which>,
) -> anyhow::Result<()> {
    if json {
        return super::print_json(&FoldersOutput {
            shared_dir: folders.shared_dir,
            download_dir: folders.download_dir,
            config_file: home.config_file(),
            node_running: running,
        });
    }
    println!("Shared folder:    {}", folders.shared_dir.display());
    println!("Download folder:  {}", folders.download_dir.display());
    println!("Config file:      {}", home.config_file().display());
    match (changed, running) {
        (Some(which), true) => println!(
            "The running node uses the new {} folder now.",
            match which {
                Which::Shared => "shared",
                Which::Download => "download",
            }
        ),
        (Some(_), false) => println!(
            "The node is not running: the change is saved and takes effect when it starts (`iwant node{}`).",
            home.cli_flag()
        ),
        (None, false) => println!("(read from the config file; the node is not running)"),
        (None, true) => {}
    }
    Ok(())
}
