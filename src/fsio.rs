//! Positioned file I/O that works the same on every platform: several threads may read or
//! write one `File` at different offsets without seeking; [`open_regular`], which opens a
//! regular file without ever blocking (for hashing); and [`open_beneath`], which does the same
//! for serving without following a symlink out of the share.

use std::{
    fs::File,
    io,
    path::{Component, Path},
};

/// Opens the file at the `/`-separated relative path `rel` under `root` for reading, never
/// following a symlink out of `root` and never blocking (a FIFO swapped in is not waited on).
/// The result is a regular file; anything else is an error.
///
/// On Linux this is `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` from `root`, so
/// symlinks that stay inside the share (which the index follows) still work. Where `openat2`
/// refuses (an absolute symlink that points back into the share gives `EXDEV`, kernels before
/// 5.6 give `ENOSYS`) and on other platforms, the path is canonicalised, must lie under the
/// canonical root, and that canonical path is opened without following a final symlink. That
/// fallback has a window between the check and the open; callers therefore compare the open
/// file's own metadata (device, inode, size, times) with what they expect before using it.
pub fn open_beneath(root: &Path, rel: &str) -> io::Result<File> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty()
        || parts.iter().any(|p| {
            !matches!(Path::new(p).components().next(), Some(Component::Normal(_)))
                || Path::new(p).components().count() != 1
        })
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain relative path",
        ));
    }
    #[cfg(target_os = "linux")]
    let file = match linux::openat2_beneath(root, &parts) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EPERM | libc::EAGAIN)
            ) =>
        {
            open_canonical(root, &parts)
        }
        other => other,
    }?;
    #[cfg(not(target_os = "linux"))]
    let file = open_canonical(root, &parts)?;
    regular(file).map(|(file, _)| file)
}

/// Opens `path` for reading without ever blocking in `open` (a FIFO or a device swapped in for
/// a file would block a plain open forever) and checks, on the open handle, that it is a
/// regular file. Fails with `InvalidInput` for anything else.
pub fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    regular(nonblocking_read(false).open(path)?)
}

/// `file` and its metadata if it is a regular file; `InvalidInput` otherwise.
fn regular(file: File) -> io::Result<(File, std::fs::Metadata)> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// Read-only options whose `open` never blocks: `O_NONBLOCK` on Unix (it only matters for the
/// open itself; reads of a regular file never block on it). With `nofollow`, a final symlink
/// is not followed (Unix `O_NOFOLLOW`; Windows opens the reparse point itself, which then fails
/// the regular-file check). Elsewhere opening a file never waits on a writer the way a Unix
/// FIFO does.
fn nonblocking_read(nofollow: bool) -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let follow = if nofollow { libc::O_NOFOLLOW } else { 0 };
        options.custom_flags(follow | libc::O_NONBLOCK);
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        // While the node hashes or serves a file, its user's programs may still read, write,
        // rename and delete it: FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE (std's
        // default too; said here because the node relies on it). A change is seen by the
        // stamp checks, never trusted.
        options.share_mode(0x1 | 0x2 | 0x4);
        if nofollow {
            // FILE_FLAG_OPEN_REPARSE_POINT.
            options.custom_flags(0x0020_0000);
        }
    }
    options
}

/// The fallback of [`open_beneath`]. Where no part below `root` is a link, the path is beneath
/// the root as written (its parts are plain names) and is opened as it is. Otherwise it is
/// canonicalised, must lie under the canonical root, and is opened without following a final
/// symlink; never blocking either way.
fn open_canonical(root: &Path, parts: &[&str]) -> io::Result<File> {
    let mut path = root.to_path_buf();
    let mut linked = false;
    for part in parts {
        path.push(part);
        // A missing part fails the open below.
        linked |= std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    }
    if !linked {
        return nonblocking_read(true).open(&path);
    }
    // std's canonical form on both sides: on Windows it is always the verbatim `\\?\` form,
    // which a shorter form (dunce's) cannot be compared with once a path is over MAX_PATH.
    let real = std::fs::canonicalize(&path)?;
    let real_root = std::fs::canonicalize(root)?;
    if !real.starts_with(&real_root) || real == real_root {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the path leads out of the share",
        ));
    }
    nonblocking_read(true).open(&real)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::{
        ffi::CString,
        fs::File,
        io,
        os::{
            fd::{AsRawFd, FromRawFd, OwnedFd},
            unix::ffi::OsStrExt,
        },
        path::Path,
    };

    /// `openat2(root, rel, O_RDONLY | O_NONBLOCK | O_CLOEXEC, RESOLVE_BENEATH |
    /// RESOLVE_NO_MAGICLINKS)`.
    pub(super) fn openat2_beneath(root: &Path, parts: &[&str]) -> io::Result<File> {
        let dir = open_path(root)?;
        let rel = CString::new(parts.join("/"))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // A rename anywhere in the share while the kernel resolves gives EAGAIN: try again a
        // few times, then give up (the caller falls back or reports the file unavailable).
        for _ in 0..OPENAT2_TRIES {
            // SAFETY: `dir` is an open fd, `rel` a NUL-terminated string and `how` a valid
            // `open_how` of the size passed; the kernel reads nothing else.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir.as_raw_fd(),
                    rel.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
                return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted && e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(e);
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// How often `openat2` is retried when a concurrent rename makes it fail with `EAGAIN`.
    const OPENAT2_TRIES: usize = 8;

    fn open_path(root: &Path) -> io::Result<OwnedFd> {
        let c = CString::new(root.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        // SAFETY: `c` is a NUL-terminated path; the fd returned is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_at(buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        file.seek_read(buf, offset)
    }
}

/// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match read_at(file, buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its index says",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let written = {
            use std::os::unix::fs::FileExt;
            file.write_at(buf, offset)
        };
        #[cfg(windows)]
        let written = {
            use std::os::windows::fs::FileExt;
            file.seek_write(buf, offset)
        };
        match written {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "disk write failed",
                ))
            }
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::{io::Read, os::unix::fs::symlink, sync::mpsc, time::Duration};

    use super::*;

    fn share() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("bug: tempdir");
        let root = dir.path().join("share");
        std::fs::create_dir_all(root.join("sub")).expect("bug: mkdir");
        std::fs::write(root.join("sub/a.txt"), b"inside").expect("bug: write");
        std::fs::write(dir.path().join("outside.txt"), b"outside").expect("bug: write");
        (dir, root)
    }

    fn read(file: io::Result<File>) -> io::Result<String> {
        let mut s = String::new();
        file?.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn open_beneath_follows_symlinks_that_stay_inside_the_share() {
        let (_dir, root) = share();
        symlink("sub/a.txt", root.join("rel")).expect("bug: symlink");
        symlink(root.join("sub/a.txt"), root.join("abs")).expect("bug: symlink");
        assert_eq!(read(open_beneath(&root, "sub/a.txt")).unwrap(), "inside");
        assert_eq!(read(open_beneath(&root, "rel")).unwrap(), "inside");
        assert_eq!(read(open_beneath(&root, "abs")).unwrap(), "inside");
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_dotdot_out_of_the_share() {
        let (dir, root) = share();
        symlink("../outside.txt", root.join("rel_out")).expect("bug: symlink");
        symlink(dir.path().join("outside.txt"), root.join("abs_out")).expect("bug: symlink");
        symlink(dir.path(), root.join("dir_out")).expect("bug: symlink");
        for rel in [
            "rel_out",
            "abs_out",
            "dir_out/outside.txt",
            "../outside.txt",
            "sub/../../outside.txt",
            "sub",
            "",
        ] {
            assert!(open_beneath(&root, rel).is_err(), "{rel} was opened");
        }
    }

    /// The fallback, which platforms without `openat2` always take, gives the same answers.
    #[test]
    fn the_fallback_opens_plain_paths_and_links_inside_and_refuses_links_out() {
        let (dir, root) = share();
        symlink("sub/a.txt", root.join("rel")).expect("bug: symlink");
        symlink("../outside.txt", root.join("rel_out")).expect("bug: symlink");
        symlink(dir.path(), root.join("dir_out")).expect("bug: symlink");
        let open = |rel: &str| {
            let parts: Vec<&str> = rel.split('/').collect();
            open_canonical(&root, &parts).and_then(|f| regular(f).map(|(f, _)| f))
        };
        assert_eq!(read(open("sub/a.txt")).unwrap(), "inside");
        assert_eq!(read(open("rel")).unwrap(), "inside");
        for rel in ["rel_out", "dir_out/outside.txt", "sub", "sub/missing"] {
            assert!(open(rel).is_err(), "{rel} was opened");
        }
    }

    #[test]
    fn open_beneath_refuses_a_fifo_without_blocking() {
        let (_dir, root) = share();
        let fifo = root.join("sub/fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("bug: path");
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        symlink("sub/fifo", root.join("to_fifo")).expect("bug: symlink");
        let (tx, rx) = mpsc::channel();
        let root2 = root.clone();
        std::thread::spawn(move || {
            let r = ["sub/fifo", "to_fifo"].map(|rel| open_beneath(&root2, rel).is_err());
            let _ = tx.send(r);
        });
        let refused = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("open_beneath blocked on a FIFO");
        assert_eq!(refused, [true, true]);
    }
}
