//! Step 2, set up: the plan from the saved row, the partial file or directory tree, the units
//! already on disk, and copies of what this node shares itself. Also the piece lists of a
//! directory's large files, which the fetch phase needs first.

use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
};

use iwant_behaviours::id::Id;

use super::{
    blocking, fetch::REFRESH_NO_HOLDERS, place, prepare::piece_list, remove_part, verify::recheck,
    Context, Placed, Stop, Work,
};
use crate::{
    share::{scan, Kind},
    store::DownloadRow,
    transfer::{
        serve,
        units::{self, Plan},
        DownloadState,
    },
};

/// What set-up found.
pub(super) enum SetUp {
    /// The download was placed before a stop, and is intact: nothing more to do.
    Placed(Placed),
    /// Ready to fetch.
    Ready(Box<Work>),
}

/// Builds the plan of `row`, then the partial data; finds what is done.
pub(super) async fn run(ctx: &Context, row: DownloadRow) -> Result<SetUp, Stop> {
    let id = row.id;
    let built = if row.kind == Kind::Dir {
        Plan::dir(id, &row.meta)
    } else {
        Plan::file(id, row.size, &row.meta)
    };
    let plan = match built {
        Ok(plan) => plan,
        Err(e) => {
            let _ = ctx.store(move |s| s.delete_download(&id)).await;
            return Err(Stop::Failed(format!(
                "its saved state is unusable ({e}); start it again"
            )));
        }
    };
    let part = PathBuf::from(&row.part);
    if let Some(placed) = row.placed.as_deref().map(PathBuf::from) {
        // Finished before a crash or a stop, maybe before its data reached the disk.
        let (p, at) = (plan.clone(), placed.clone());
        if blocking(move || place::intact(&p, &at)).await {
            return Ok(SetUp::Placed((placed, plan, row.started_ms)));
        }
        tracing::warn!(path = %placed.display(), "a finished download was damaged by a crash; fetching it again");
        remove_part(&placed);
        ctx.store(move |s| s.set_download_placed(&id, None)).await?;
    }
    ctx.update(|p| {
        p.bytes_total = plan.total_bytes();
        p.files_total = plan.files.len() as u64;
    });
    tracing::debug!(id = %id, "download prepared");
    let mut done = {
        let (p, at) = (plan.clone(), part.clone());
        let saved = units::from_bitfield(&row.done, plan.unit_lens.len());
        blocking(move || lay_out(&p, &at, saved))
            .await
            .map_err(|e| Stop::Failed(format!("cannot create {}: {e}", part.display())))?
    };
    let resumed: u64 = (0..done.len())
        .filter(|&u| done[u])
        .map(|u| plan.unit_lens[u])
        .sum();
    ctx.update(|p| {
        p.bytes_resumed = resumed;
        p.bytes_done = resumed;
    });
    tracing::debug!(id = %id, "partial data set up");
    copy_local(ctx, &plan, &part, &mut done).await;
    tracing::debug!(id = %id, "local copies checked");
    Ok(SetUp::Ready(Box::new(Work {
        row,
        plan,
        part,
        done,
    })))
}

/// The piece lists of the directory's multi-piece files that are not complete, from their
/// holders; then the units of those files already on disk (written before a restart) are
/// verified.
pub(super) async fn piece_lists(ctx: &Context, work: &mut Work) -> Result<(), Stop> {
    let unknown: Vec<bool> = work.plan.files.iter().map(|f| f.pieces.is_none()).collect();
    fetch_piece_lists(ctx, &work.row.id, &mut work.plan, &work.done).await?;
    if unknown.iter().any(|&u| u) {
        let known_before: Vec<bool> = unknown.iter().map(|u| !u).collect();
        let (plan, part) = (work.plan.clone(), work.part.clone());
        let mut done = std::mem::take(&mut work.done);
        work.done = blocking(move || {
            recheck(&plan, &part, &mut done, &known_before);
            done
        })
        .await;
    }
    Ok(())
}

/// (Blocking) creates the partial tree's directories and empty files and returns which
/// units are done: those the saved bitfield says, plus those found intact in files already
/// there. Other files are created when their first piece arrives (`fetcher::Files`).
fn lay_out(plan: &Plan, part: &Path, mut done: Vec<bool>) -> std::io::Result<Vec<bool>> {
    if plan.is_dir {
        std::fs::create_dir_all(part)?;
        let mut made = HashSet::new();
        let parents = plan.files.iter().flat_map(|f| &f.paths).filter_map(|p| {
            let path = scan::native(part, p);
            path.parent().map(Path::to_path_buf)
        });
        for dir in plan
            .dirs
            .iter()
            .map(|d| scan::native(part, d))
            .chain(parents)
        {
            if made.insert(dir.clone()) {
                std::fs::create_dir_all(&dir)?;
            }
        }
    }
    let mut absent = vec![false; plan.files.len()];
    for (i, absent) in absent.iter_mut().enumerate() {
        let path = plan.data_path(part, i);
        let len = plan.files[i].layout.len();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                if meta.len() != len {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(len)?;
                }
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is in the way", path.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if len == 0 {
                    File::create(&path)?;
                } else {
                    *absent = true;
                    // Saved bits of a file that is gone mean nothing.
                    for u in plan.units_of(i) {
                        done[u] = false;
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    recheck(plan, part, &mut done, &absent);
    Ok(done)
}

/// Copies every distinct file this node shares itself into the partial tree and marks its units
/// done (step 4 verifies the copies like everything else).
async fn copy_local(ctx: &Context, plan: &Plan, part: &Path, done: &mut [bool]) {
    let missing: Vec<(usize, Id)> = (0..plan.files.len())
        .filter(|&i| plan.units_of(i).any(|u| !done[u]))
        .map(|i| (i, plan.files[i].id))
        .collect();
    if missing.is_empty() {
        return;
    }
    let index = ctx.index.clone();
    let targets: Vec<PathBuf> = missing
        .iter()
        .map(|(i, _)| plan.data_path(part, *i))
        .collect();
    let copied = blocking(move || -> Vec<(usize, u64)> {
        let Ok(store) = index.db().get() else {
            return Vec::new();
        };
        let mut copied = Vec::new();
        for ((i, id), target) in missing.into_iter().zip(targets) {
            // What this node would serve: indexed here and unchanged on disk.
            // Copied from the verified open file, never from the path again; the length is
            // counted here (some platforms report 0 from `fs::copy`).
            let Ok(serve::Found {
                row,
                file: mut source,
                ..
            }) = serve::shared_file(&index, &store, &id)
            else {
                continue;
            };
            let mut copy = || -> std::io::Result<u64> {
                let mut out = std::fs::File::create(&target)?;
                let n = std::io::copy(
                    &mut std::io::Read::take(&mut source, row.stamp.size),
                    &mut out,
                )?;
                Ok(n)
            };
            if copy().is_ok_and(|n| n == row.stamp.size) {
                copied.push((i, row.stamp.size));
            }
        }
        copied
    })
    .await;
    let mut bytes = 0;
    for (i, size) in copied {
        bytes += size;
        for u in plan.units_of(i) {
            done[u] = true;
        }
    }
    if bytes > 0 {
        tracing::info!(
            bytes,
            "copied content this node shares instead of fetching it"
        );
        ctx.update(|p| p.bytes_local += bytes);
    }
}

/// Fetches the piece lists of the directory's multi-piece files that are not complete.
async fn fetch_piece_lists(
    ctx: &Context,
    id: &Id,
    plan: &mut Plan,
    done: &[bool],
) -> Result<(), Stop> {
    loop {
        let needed: Vec<usize> = (0..plan.files.len())
            .filter(|&i| plan.files[i].needs_pieces() && plan.units_of(i).any(|u| !done[u]))
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        ctx.set_state(
            DownloadState::Starting,
            Some(format!(
                "fetching the piece lists of {} files",
                needed.len()
            )),
        );
        let holders = ctx.holders.find(*id).await.unwrap_or_default();
        for i in needed {
            let id = plan.files[i].id;
            for &peer in &holders {
                if let Ok((size, bytes)) = piece_list(ctx, peer, id).await {
                    if let Ok(p) = Plan::file(id, size, &bytes) {
                        if size == plan.files[i].layout.len() {
                            plan.files[i].pieces = p.files[0].pieces.clone();
                            break;
                        }
                    }
                }
            }
        }
        if plan.files.iter().any(|f| f.needs_pieces()) {
            ctx.set_state(
                DownloadState::Waiting,
                Some("waiting for a holder to give the piece lists".into()),
            );
            ctx.pause(REFRESH_NO_HOLDERS * 2).await?;
        } else {
            return Ok(());
        }
    }
}
