//! File attributes that travel with content without being part of it: the executable bit and
//! the modification time (`content::FileAttrs`, asked for with `content::Request::Attrs`).
//!
//! What this node tells about content it offers ([`offered`]), and how a download applies what
//! a holder told it ([`apply_all`]). They do not change any id and nothing verifies them: a
//! holder may tell anything, so a download takes only a modification time that is not in the
//! future (more than [`MAX_FUTURE`] ahead of its own clock) and turns an executable bit into
//! execute permission for whoever may read the file (never set-id bits); directories keep the
//! time they were made.

use std::{
    fs::{File, FileTimes},
    io,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use iwant_behaviours::{
    content::{FileAttrs, ATTRS_LEN},
    id::Id,
};

use crate::{
    share::{scan, Offered},
    store::Store,
    transfer::{serve, units::Plan},
};

/// How far ahead of this node's clock a told modification time may be (clocks differ a
/// little); a later one is not applied.
pub(crate) const MAX_FUTURE: Duration = Duration::from_secs(24 * 60 * 60);

/// The attribute records of content `id` as this node offers it: one for a file (its indexed
/// version's modification time, its executable bit now), one per manifest entry for a
/// directory (files as for a file; directories with nothing known). `None` when this node does
/// not offer `id`.
pub(super) fn offered(offered: &Offered, store: &Store, id: &Id) -> Option<Vec<u8>> {
    if let Ok(found) = serve::shared_file(offered, store, id) {
        let meta = found.file.metadata().ok()?;
        let attrs = FileAttrs {
            mtime_ns: Some(found.row.stamp.mtime_ns),
            executable: executable(&meta),
        };
        return Some(attrs.to_bytes().to_vec());
    }
    offered.indexes().find_map(|(_, index)| {
        let serve::SharedDir { path, rows, .. } = serve::shared_dir(store, &index.root_key(), id)?;
        let folder = index.root();
        let prefix = if path.is_empty() { 0 } else { path.len() + 1 };
        // In manifest order: by the bytes of the path below the directory.
        let mut records: Vec<(&str, FileAttrs)> = rows
            .iter()
            .map(|row| {
                let attrs = if row.is_dir {
                    FileAttrs::default()
                } else {
                    let meta = std::fs::symlink_metadata(scan::native(&folder, &row.path));
                    FileAttrs {
                        mtime_ns: Some(row.mtime_ns),
                        executable: meta.is_ok_and(|m| executable(&m)),
                    }
                };
                (&row.path[prefix..], attrs)
            })
            .collect();
        records.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Some(records.iter().flat_map(|(_, a)| a.to_bytes()).collect())
    })
}

/// Whether `meta` is a regular file its owner may execute (never on Windows, where a file's
/// name decides).
fn executable(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o100 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// How many attribute records a download of `plan` expects: one per manifest entry.
pub(super) fn expected(plan: &Plan) -> u64 {
    if plan.is_dir {
        (plan.dirs.len() + plan.files.iter().map(|f| f.paths.len()).sum::<usize>()) as u64
    } else {
        1
    }
}

/// Applies `records` (as a holder told them, [`expected`] many) to every file of `plan` below
/// `part`; records of any other count are ignored. Returns how many files could not take
/// their attributes (the download is whole without them).
pub(super) fn apply_all(plan: &Plan, part: &Path, records: &[u8]) -> usize {
    if records.len() as u64 != expected(plan) * ATTRS_LEN as u64 {
        return 0;
    }
    let records: Vec<FileAttrs> = FileAttrs::all(records).collect();
    let now = SystemTime::now();
    let mut failed = 0;
    for (i, f) in plan.files.iter().enumerate() {
        for (disk, entry) in plan.paths_of(part, i).iter().zip(&f.entries) {
            if let Some(attrs) = records.get(*entry) {
                if let Err(e) = apply(disk, *attrs, now) {
                    tracing::debug!(path = %disk.display(), error = %e, "cannot set a file's attributes");
                    failed += 1;
                }
            }
        }
    }
    failed
}

/// Sets the modification time of the file at `path` to `attrs`' (when known, not before the
/// epoch and not more than [`MAX_FUTURE`] ahead of `now`), and on Unix, when `attrs` says
/// executable, execute permission for whoever may read it.
fn apply(path: &Path, attrs: FileAttrs, now: SystemTime) -> io::Result<()> {
    #[cfg(unix)]
    if attrs.executable {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        let with_x = mode | ((mode & 0o444) >> 2);
        if with_x != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(with_x))?;
        }
    }
    if let Some(time) = attrs.mtime_ns.and_then(|ns| usable_time(ns, now)) {
        File::options()
            .write(true)
            .open(path)?
            .set_times(FileTimes::new().set_modified(time))?;
    }
    Ok(())
}

/// The time `ns` nanoseconds after the epoch, if it is not before it and not more than
/// [`MAX_FUTURE`] after `now`.
fn usable_time(ns: i64, now: SystemTime) -> Option<SystemTime> {
    let time = UNIX_EPOCH.checked_add(Duration::from_nanos(u64::try_from(ns).ok()?))?;
    (time <= now + MAX_FUTURE).then_some(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_times_since_the_epoch_and_not_far_ahead_are_used() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = 24 * 60 * 60 * 1_000_000_000i64;
        let now_ns = 1_800_000_000 * 1_000_000_000i64;
        assert_eq!(usable_time(-1, now), None);
        assert_eq!(usable_time(0, now), Some(UNIX_EPOCH));
        assert!(usable_time(now_ns + day, now).is_some());
        assert_eq!(usable_time(now_ns + day + 1, now), None);
        assert_eq!(usable_time(i64::MAX, now), None);
    }

    #[test]
    fn a_told_time_and_executable_bit_are_applied_and_bad_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sh");
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        let now = SystemTime::now();
        let then = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let told = FileAttrs {
            mtime_ns: Some(1_000_000_000 * 1_000_000_000),
            executable: true,
        };
        apply(&path, told, now).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.modified().unwrap(), then);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            assert_eq!(mode & 0o100, 0o100, "{mode:o}");
            assert_eq!(mode & 0o7000, 0, "{mode:o}");
            assert_eq!(
                mode & 0o111,
                (mode & 0o444) >> 2,
                "x only where r: {mode:o}"
            );
        }

        // A time far in the future is not applied; the file keeps what it had.
        let future = FileAttrs {
            mtime_ns: Some(i64::MAX),
            executable: false,
        };
        apply(&path, future, now).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), then);
    }
}
