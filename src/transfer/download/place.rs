//! Step 5, place: copies for identical contents, the attributes a holder told (executable
//! bit, modification time: `transfer::attrs`), one rename into the download folder under a
//! name that does not exist yet, and the sync that makes it safe for the store to forget the
//! download.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use iwant_behaviours::id::Id;

use super::{blocking, Context, Placed, Stop, Work};
use crate::{
    share::{self, scan},
    transfer::{names, units::Plan},
};

/// Moves the verified download into place and records where.
pub(super) async fn run(ctx: &Context, work: Work) -> Result<Placed, Stop> {
    let Work {
        row, plan, part, ..
    } = work;
    let (p, dest, name) = (plan.clone(), PathBuf::from(&row.dest), row.name.clone());
    let attrs = row.attrs.clone();
    let placed = blocking(move || -> std::io::Result<PathBuf> {
        for f in &p.files {
            let first = scan::native(&part, &f.paths[0]);
            for other in &f.paths[1..] {
                std::fs::copy(&first, scan::native(&part, other))?;
            }
        }
        if let Some(records) = &attrs {
            let failed = crate::transfer::attrs::apply_all(&p, &part, records);
            if failed > 0 {
                tracing::info!(files = failed, "some downloaded files keep the time they were written (their attributes could not be set)");
            }
        }
        names::place(&part, &dest, &name, p.is_dir)
    })
    .await
    .map_err(|e| Stop::Failed(format!("cannot move the download into place: {e}")))?;
    let (id, at) = (row.id, placed.to_string_lossy().into_owned());
    ctx.store(move |s| s.set_download_placed(&id, Some(&at)))
        .await?;
    Ok((placed, plan, row.started_ms))
}

/// Offers what a finished download placed at `placed` (when this node offers its downloads):
/// records its files (paths relative to the download folder, content ids) and folders in the
/// store and in the download folder's rules, and has that folder's indexer look at them.
pub(super) async fn offer(ctx: &Context, placed: &Path, plan: &Plan) {
    let Some(downloads) = ctx.index.downloads.clone() else {
        return;
    };
    let Some(dest) = placed.parent() else {
        return;
    };
    let rel = |disk: &Path| scan::rel_string(disk.strip_prefix(dest).ok()?);
    let mut entries: Vec<(String, Option<Id>)> = Vec::new();
    if plan.is_dir {
        entries.extend(rel(placed).map(|r| (r, None)));
        for dir in &plan.dirs {
            entries.extend(rel(&scan::native(placed, dir)).map(|r| (r, None)));
        }
    }
    for (i, f) in plan.files.iter().enumerate() {
        for disk in plan.paths_of(placed, i) {
            entries.extend(rel(&disk).map(|r| (r, Some(f.id))));
        }
    }
    let root = dest.to_string_lossy().into_owned();
    let saved = entries.clone();
    let key = root.clone();
    // The hashes this download verified, for the indexer to find instead of reading the files
    // again (stamps taken now, after the move).
    let verified = {
        let (placed, plan) = (placed.to_path_buf(), plan.clone());
        blocking(move || verified_rows(&placed, &plan)).await
    };
    let recorded = ctx
        .store(move |s| {
            s.add_placed(&key, &saved)?;
            s.put_file_rows(share::placed::VERIFIED_ROOT, &verified)
        })
        .await;
    if let Err(Stop::Failed(e)) = recorded {
        tracing::warn!(error = %e, "cannot record a finished download to offer it");
        return;
    }
    // Only while this is still the download folder (it may have changed since the start).
    if downloads.index.root_key() == root {
        downloads.placed.add(entries);
        downloads.index.recheck(placed.to_path_buf());
    }
}

/// Index rows for the files of the download placed at `placed`, from what the download
/// verified: one per path (copies included) whose piece list is known, stamped as the file is
/// on disk now, keyed by its path on disk (unique within the cache).
fn verified_rows(placed: &Path, plan: &Plan) -> Vec<crate::store::FileRow> {
    let mut rows = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        let pieces: Vec<u8> = match &f.pieces {
            _ if f.layout.piece_list_len() == 0 => Vec::new(),
            Some(pieces) if pieces.len() == f.layout.piece_list_len() => {
                pieces.iter().flatten().copied().collect()
            }
            _ => continue,
        };
        for disk in plan.paths_of(placed, i) {
            let Ok(meta) = std::fs::symlink_metadata(&disk) else {
                continue;
            };
            rows.push(crate::store::FileRow {
                path: disk.to_string_lossy().into_owned(),
                stamp: scan::Stamp::of(&meta),
                id: f.id.0,
                piece_size: f.layout.piece_size(),
                pieces: pieces.clone(),
            });
        }
    }
    rows
}

/// Whether every file of a placed download (every copy of identical contents too) hashes to
/// its id.
pub(super) fn intact(plan: &Plan, placed: &Path) -> bool {
    plan.files.iter().enumerate().all(|(i, f)| {
        plan.paths_of(placed, i)
            .iter()
            .all(|p| share::hasher::hash_file(p).is_ok_and(|h| h.id == f.id))
    })
}

/// Makes sure every finished file's data is on disk before the download counts as complete:
/// one `syncfs` of the download folder's file system on Linux, a sync per file elsewhere.
pub(super) fn sync_tree(plan: &Plan, part: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = File::open(part) {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
            return;
        }
    }
    for i in 0..plan.files.len() {
        if let Ok(f) = File::open(plan.data_path(part, i)) {
            let _ = f.sync_all();
        }
    }
}
