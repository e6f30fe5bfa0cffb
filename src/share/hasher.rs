//! Hashing files: the id and the piece hashes in one pass, pieces in parallel.

use std::{fs::File, io, path::Path};

use rayon::prelude::*;

use super::pieces::{root_of_pieces, FileHash, Layout};
use crate::fsio::{open_regular, read_at};

/// Bytes read per `read` call while hashing.
const READ_BUF: usize = 1024 * 1024;

/// Hashes the file at `path`. Pieces are hashed in parallel on the current rayon pool. Fails
/// with `UnexpectedEof` if the file shrinks while it is read.
pub fn hash_file(path: &Path) -> io::Result<FileHash> {
    let (file, meta) = open_regular(path)?;
    hash_open_file(&file, meta.len(), &|| false)
}

/// Asked between reads whether to give up; hashing then fails with
/// [`io::ErrorKind::Interrupted`].
pub type Stop<'a> = &'a (dyn Fn() -> bool + Sync);

/// Hashes the first `len` bytes of the file at `path` (the length a walk just saw, which saves
/// a `stat`) and returns the file's metadata as it was once read: the hash is the file's only
/// if that metadata still shows `len` bytes and the walk's mtime.
/// Gives up between two reads of at most `READ_BUF` (1 MiB) bytes once `stop` says so.
pub fn hash_file_with_metadata(
    path: &Path,
    len: u64,
    stop: Stop<'_>,
) -> io::Result<(FileHash, std::fs::Metadata)> {
    let (file, _) = open_regular(path)?;
    let hash = hash_open_file(&file, len, stop)?;
    Ok((hash, file.metadata()?))
}

fn hash_open_file(file: &File, len: u64, stop: Stop<'_>) -> io::Result<FileHash> {
    let layout = Layout::for_len(len);
    if layout.count() == 1 {
        let mut hasher = blake3::Hasher::new();
        let read = hash_range(file, 0, len, &mut hasher, stop)?;
        debug_assert_eq!(read, len);
        return Ok(FileHash {
            id: hasher.finalize(),
            layout,
            pieces: Vec::new(),
        });
    }
    let pieces = (0..layout.count())
        .into_par_iter()
        .map(|i| {
            use blake3::hazmat::HasherExt;
            let range = layout.piece_range(i).expect("bug: index in range");
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(range.start);
            hash_range(
                file,
                range.start,
                range.end - range.start,
                &mut hasher,
                stop,
            )?;
            Ok(hasher.finalize_non_root())
        })
        .collect::<io::Result<Vec<_>>>()?;
    let id = root_of_pieces(&layout, &pieces).expect("bug: full piece list");
    Ok(FileHash { id, layout, pieces })
}

/// Each hashing thread's read buffer, allocated once rather than per piece.
mod buf {
    // The initializer is `const` already: on targets whose thread locals are OS keys
    // (Windows), clippy misreads the macro's expansion and asks for what is there.
    #![allow(clippy::missing_const_for_thread_local)]
    thread_local! {
        pub(super) static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
}
use buf::BUF;

/// Feeds `len` bytes of `file` from `offset` into `hasher`.
fn hash_range(
    file: &File,
    offset: u64,
    len: u64,
    hasher: &mut blake3::Hasher,
    stop: Stop<'_>,
) -> io::Result<u64> {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < READ_BUF {
            buf.resize(READ_BUF, 0);
        }
        hash_range_with(file, offset, len, hasher, &mut buf, stop)
    })
}

fn hash_range_with(
    file: &File,
    offset: u64,
    len: u64,
    hasher: &mut blake3::Hasher,
    buf: &mut [u8],
    stop: Stop<'_>,
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        if stop() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "hashing was stopped",
            ));
        }
        let want = buf.len().min((len - done) as usize);
        let n = read_at(file, &mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was hashed",
            ));
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hash_equals_plain_blake3_for_one_and_many_pieces() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 300_000, 3 * 262_144 + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let hash = hash_file(&path).unwrap();
            assert_eq!(hash.id, blake3::hash(&data), "len {len}");
            assert_eq!(hash, FileHash::of_bytes(Layout::for_len(len as u64), &data));
        }
    }

    #[test]
    fn a_file_that_changed_since_the_walk_is_visible_in_the_returned_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 100]).unwrap();
        // Grew after a walk that saw 50 bytes: the metadata says 100, so the caller discards it.
        let (hash, meta) = hash_file_with_metadata(&path, 50, &|| false).unwrap();
        assert_eq!(hash.id, blake3::hash(&[7u8; 50]));
        assert_eq!(meta.len(), 100);
        // Shrank: reading stops short.
        let err = hash_file_with_metadata(&path, 300_000, &|| false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn hashing_gives_up_between_reads_when_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 3 * READ_BUF]).unwrap();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        // Let two reads through, then stop.
        let stop = || reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 2;
        let err = hash_file_with_metadata(&path, 3 * READ_BUF as u64, &stop).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(hash_file_with_metadata(&path, 3 * READ_BUF as u64, &|| false).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn hashing_a_fifo_fails_at_once_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send((
                hash_file(&p).map(|_| ()),
                hash_file_with_metadata(&p, 10, &|| false).map(|_| ()),
            ));
        });
        let (a, b) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("hashing a FIFO blocked");
        assert_eq!(a.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(b.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
