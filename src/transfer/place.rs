//! Naming and placing finished downloads: never overwrite anything in the download folder.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::share::manifest;

/// The file name a download gets: the last component of the path the network knows it by, if
/// that is a safe name on every platform, else `iwant-<first 12 hex digits of the id>`.
pub fn download_name(path: &str, id: &blake3::Hash) -> String {
    let last = path.rsplit('/').next().unwrap_or_default();
    if !last.is_empty() && manifest::check_relative_path(last).is_ok() {
        last.to_string()
    } else {
        format!("iwant-{}", &id.to_hex()[..12])
    }
}

/// The partial file or directory of a download: hidden, in the download folder, named so that
/// the indexer never picks it up (`.iwant-part`).
pub fn part_path(dest: &Path, name: &str, id: &blake3::Hash) -> PathBuf {
    dest.join(format!(
        ".{name}.{}{}",
        &id.to_hex()[..12],
        crate::share::scan::PARTIAL_SUFFIX
    ))
}

/// `name` with a ` (n)` suffix before its extension (`a.txt` → `a (1).txt`; directories and
/// names without an extension get it at the end).
fn numbered(name: &str, n: u32, is_dir: bool) -> String {
    if n == 0 {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(dot) if !is_dir && dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Moves the finished `part` into `dest` as `name`, or `name (1)`, `name (2)`, ... if a name is
/// taken: an existing file or directory is never replaced. Returns where it went.
pub fn place(part: &Path, dest: &Path, name: &str, is_dir: bool) -> io::Result<PathBuf> {
    for n in 0..10_000 {
        let target = dest.join(numbered(name, n, is_dir));
        if !is_dir {
            // A hard link fails if the name exists: no window between check and move.
            match std::fs::hard_link(part, &target) {
                Ok(()) => {
                    std::fs::remove_file(part)?;
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(_) => {} // no hard links on this file system: check, then rename
            }
        }
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        std::fs::rename(part, &target)?;
        return Ok(target);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{name} and 10,000 numbered variants exist already"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_never_clobber() {
        let id = blake3::hash(b"x");
        assert_eq!(download_name("films/holiday.mkv", &id), "holiday.mkv");
        assert_eq!(
            download_name("", &id),
            format!("iwant-{}", &id.to_hex()[..12])
        );
        assert!(download_name("a/CON", &id).starts_with("iwant-"));
        assert_eq!(numbered("a.txt", 1, false), "a (1).txt");
        assert_eq!(numbered(".hidden", 2, false), ".hidden (2)");
        assert_eq!(numbered("photos.2020", 1, true), "photos.2020 (1)");

        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path();
        std::fs::write(dest.join("a.txt"), b"old").unwrap();
        let part = dest.join("p1");
        std::fs::write(&part, b"new").unwrap();
        let placed = place(&part, dest, "a.txt", false).unwrap();
        assert_eq!(placed, dest.join("a (1).txt"));
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(&placed).unwrap(), b"new");
        assert!(!part.exists());

        std::fs::create_dir(dest.join("d")).unwrap();
        let part = dest.join("p2");
        std::fs::create_dir(&part).unwrap();
        std::fs::write(part.join("f"), b"1").unwrap();
        let placed = place(&part, dest, "d", true).unwrap();
        assert_eq!(placed, dest.join("d (1)"));
        assert!(placed.join("f").exists());
    }
}
