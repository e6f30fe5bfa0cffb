//! Step 4, verify: every distinct file hashed once more from disk; and the checks that find
//! intact data after a restart.

use std::{fs::File, path::Path};

use super::{blocking, Context, Work};
use crate::{
    fsio, share,
    transfer::{units::Plan, DownloadState},
};

/// Hashes every distinct file of `work` from disk. True if all match; else the units of the
/// files that do not are marked not done again (except pieces that verify on their own), for
/// another fetch.
pub(super) async fn run(ctx: &Context, work: &mut Work) -> bool {
    ctx.set_state(DownloadState::Verifying, None);
    tracing::debug!(id = %work.row.id, "fetched; verifying");
    let (plan, part) = (work.plan.clone(), work.part.clone());
    let bad = blocking(move || verify_all(&plan, &part)).await;
    if bad.is_empty() {
        return true;
    }
    tracing::warn!(
        files = bad.len(),
        "finished files that do not verify; fetching their bad pieces again"
    );
    let (plan, part) = (work.plan.clone(), work.part.clone());
    work.done = blocking(move || {
        let mut done = vec![true; plan.unit_lens.len()];
        for f in bad {
            for u in plan.units_of(f) {
                done[u] = false;
            }
        }
        recheck(&plan, &part, &mut done, &[]);
        done
    })
    .await;
    false
}

/// Verifies, from disk, every unit not marked done whose file's piece list is known, and marks
/// the intact ones done.
pub(super) fn recheck(plan: &Plan, part: &Path, done: &mut [bool], skip: &[bool]) {
    let mut buf = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        if f.pieces.is_none() || skip.get(i) == Some(&true) {
            continue;
        }
        let units = plan.units_of(i);
        if units.clone().all(|u| done[u]) {
            continue;
        }
        let Ok(file) = File::open(plan.data_path(part, i)) else {
            continue;
        };
        for u in units {
            if done[u] {
                continue;
            }
            let r = plan.unit(u);
            buf.resize(r.len as usize, 0);
            if fsio::read_exact_at(&file, &mut buf, r.offset).is_ok() && plan.verify(u, &buf) {
                done[u] = true;
            }
        }
    }
}

/// (Blocking) hashes every distinct file from disk; returns the ones that do not match.
fn verify_all(plan: &Plan, part: &Path) -> Vec<usize> {
    (0..plan.files.len())
        .filter(|&i| {
            let path = plan.data_path(part, i);
            !share::hasher::hash_file(&path).is_ok_and(|h| h.id == plan.files[i].id)
        })
        .collect()
}
