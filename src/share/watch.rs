//! The shared folder's filesystem watcher: one recursive watch where the platform allows it,
//! one watch per folder where it does not.
//!
//! On Linux a recursive watch is one inotify watch per folder, and one folder that cannot be
//! watched (unreadable: inotify needs read access) makes the whole recursive watch fail. Then
//! every folder is watched on its own, the ones that cannot be are counted, and the periodic
//! rescan covers those alone. Walks keep the per-folder watches in step with the tree
//! ([`FolderWatcher::sync`]): new folders are watched, gone ones forgotten, and folders that
//! failed are tried again. What is watched is reported as a [`WatchState`].

use std::{collections::HashSet, path::Path};

use notify::{EventHandler, RecommendedWatcher, RecursiveMode, Watcher};

use super::{scan, WatchState};

/// Most unwatchable folders named in the log per watcher (the count in `status` is exact).
const MAX_LOGGED: usize = 5;

/// A live watcher on the shared folder.
pub(super) struct FolderWatcher {
    watcher: RecommendedWatcher,
    root: std::path::PathBuf,
    /// `None`: one recursive watch on the root. `Some`: a watch per folder (the fallback).
    per_folder: Option<HashSet<String>>,
    /// Folders (relative) that are not watched: the watch failed, or (in either mode) the walk
    /// could not list them.
    unwatched: HashSet<String>,
    logged: usize,
}

impl FolderWatcher {
    /// Watches `root`: recursively, or, when that fails, each of `dirs` (relative, from a walk
    /// of the whole share) on its own. `unlisted` are the folders the walk could not list.
    /// Fails only when not even the root can be watched; the error says why.
    pub(super) fn start<H>(
        root: &Path,
        dirs: &[String],
        unlisted: &[String],
        handler: H,
    ) -> Result<Self, String>
    where
        H: EventHandler + Clone,
    {
        let config = notify::Config::default().with_follow_symlinks(false);
        let new = |handler: H| -> Result<RecommendedWatcher, String> {
            let mut w = notify::recommended_watcher(handler)
                .map_err(|e| format!("no filesystem watcher: {e}"))?;
            w.configure(config)
                .map_err(|e| format!("cannot configure the filesystem watcher: {e}"))?;
            Ok(w)
        };
        let mut watcher = new(handler.clone())?;
        let recursive = watcher.watch(root, RecursiveMode::Recursive);
        let mut this = match recursive {
            Ok(()) => Self {
                watcher,
                root: root.to_path_buf(),
                per_folder: None,
                unwatched: HashSet::new(),
                logged: 0,
            },
            Err(e) => {
                tracing::info!(root = %root.display(), error = %e, "cannot watch the shared folder as a whole; watching each folder on its own");
                // The failed watcher may hold part of the tree: a fresh one starts clean.
                drop(watcher);
                let mut watcher = new(handler)?;
                watcher
                    .watch(root, RecursiveMode::NonRecursive)
                    .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
                Self {
                    watcher,
                    root: root.to_path_buf(),
                    per_folder: Some(HashSet::from([String::new()])),
                    unwatched: HashSet::new(),
                    logged: 0,
                }
            }
        };
        this.sync("", dirs, unlisted);
        Ok(this)
    }

    /// Brings the watches under `rel` in line with a fresh walk of `rel`: its `dirs` (which
    /// include `rel`) and the folders it could not list.
    pub(super) fn sync(&mut self, rel: &str, dirs: &[String], unlisted: &[String]) {
        let under = |p: &String| {
            rel.is_empty()
                || p == rel
                || (p.len() > rel.len() && p.starts_with(rel) && p.as_bytes()[rel.len()] == b'/')
        };
        let listed: HashSet<&String> = dirs.iter().collect();
        self.unwatched.retain(|p| !under(p));
        self.unwatched.extend(unlisted.iter().cloned());
        let Some(watched) = &mut self.per_folder else {
            return;
        };
        // Gone folders: inotify dropped their watches with them.
        watched.retain(|p| !under(p) || listed.contains(p));
        let mut failed = Vec::new();
        for dir in dirs {
            if watched.contains(dir) {
                continue;
            }
            match self
                .watcher
                .watch(&scan::native(&self.root, dir), RecursiveMode::NonRecursive)
            {
                Ok(()) => {
                    watched.insert(dir.clone());
                }
                Err(e) => failed.push((dir.clone(), e)),
            }
        }
        for (dir, e) in failed {
            if self.logged < MAX_LOGGED {
                self.logged += 1;
                tracing::warn!(folder = %dir, error = %e, "cannot watch this folder; changes in it are found by the periodic rescan");
            }
            self.unwatched.insert(dir);
        }
    }

    /// What is watched.
    pub(super) fn state(&self) -> WatchState {
        match self.unwatched.len() {
            0 => WatchState::Full,
            n => WatchState::Partial {
                unwatched: n as u64,
            },
        }
    }
}
