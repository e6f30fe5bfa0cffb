//! Naming and placing finished downloads: names every platform can store (see "Names on disk"
//! in `docs/protocols.md`), and never overwrite anything in the download folder.
//!
//! The network keeps names exactly as the sharer has them; only the downloader maps a name that
//! its own platform cannot create, by [`local_name`] under the [`NameRule`] of the platform:
//! - Windows: each of `< > : " \ | ? *` and each control character 1–31 becomes U+F000 + its
//!   code (the Cygwin / WSL / Git-for-Windows convention); a trailing dot or space, and the
//!   first character of a reserved device name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`,
//!   `LPT0`–`LPT9`, with superscript digits too, with or without an extension) are mapped the
//!   same way.
//! - Every rule: a name longer than the platform allows (255 bytes on Unix; 255 UTF-16 units
//!   on Windows; both on macOS) is cut at a character boundary and ends in `~` and 16 hex
//!   digits of the BLAKE3 hash of the original name (keeping a short extension).
//!
//! [`unmap`] undoes the character mapping. Mapping is a pure function of the name, so a resumed
//! download finds its files again; collisions within one folder are settled by the plan
//! (`transfer::plan`), deterministically in manifest order.

use std::{
    io,
    path::{Path, PathBuf},
};

use iwant_behaviours::id::Id;

/// The longest name component, in bytes (Unix) or UTF-16 units (Windows), a platform stores.
pub const MAX_NAME_LEN: usize = 255;

/// First code point of the private-use block that stands for a character a platform forbids.
const ESCAPE_BASE: u32 = 0xF000;

/// Which platform's naming rules a local name must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Linux and other Unix: only the length is limited (NUL and `/` never reach here).
    Unix,
    /// macOS: like Unix, and also at most 255 UTF-16 units; names are compared case-blind.
    MacOs,
    /// Windows: forbidden characters, reserved device names, trailing dot or space, 255
    /// UTF-16 units; names are compared case-blind.
    Windows,
}

impl NameRule {
    /// The rule of the platform this node runs on.
    pub fn current() -> Self {
        if cfg!(windows) {
            Self::Windows
        } else if cfg!(target_os = "macos") {
            Self::MacOs
        } else {
            Self::Unix
        }
    }

    /// Whether this platform treats `A.txt` and `a.txt` as one name (by default).
    pub fn case_blind(self) -> bool {
        !matches!(self, Self::Unix)
    }

    fn fits(self, name: &str) -> bool {
        let units = name.encode_utf16().count();
        match self {
            Self::Unix => name.len() <= MAX_NAME_LEN,
            Self::MacOs => name.len() <= MAX_NAME_LEN && units <= MAX_NAME_LEN,
            Self::Windows => units <= MAX_NAME_LEN,
        }
    }
}

fn windows_forbidden(c: char) -> bool {
    matches!(c, '<' | '>' | ':' | '"' | '\\' | '|' | '?' | '*') || ('\u{1}'..='\u{1f}').contains(&c)
}

fn escape(c: char) -> char {
    char::from_u32(ESCAPE_BASE + c as u32).expect("bug: escaped ASCII is a valid char")
}

fn windows_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL") {
        return true;
    }
    let mut chars = upper.chars();
    let head: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    (head == "COM" || head == "LPT")
        && rest.len() == 1
        && (rest[0].is_ascii_digit() || matches!(rest[0], '¹' | '²' | '³'))
}

/// The name one component `name` (as the network has it) gets on disk under `rule`.
pub fn local_name(name: &str, rule: NameRule) -> String {
    let mut out: String = name.to_string();
    if rule == NameRule::Windows {
        let mut chars: Vec<char> = name
            .chars()
            .map(|c| if windows_forbidden(c) { escape(c) } else { c })
            .collect();
        if let Some(last) = chars.last_mut() {
            if matches!(*last, '.' | ' ') {
                *last = escape(*last);
            }
        }
        if windows_reserved(name) {
            if let Some(first) = chars.first_mut() {
                *first = escape(*first);
            }
        }
        out = chars.into_iter().collect();
    }
    if !rule.fits(&out) {
        out = shortened(&out, name, rule);
    }
    out
}

/// `mapped` cut to fit `rule`, ending in `~<16 hex digits of the hash of original>` and a
/// short extension if it had one.
fn shortened(mapped: &str, original: &str, rule: NameRule) -> String {
    let hash = blake3::hash(original.as_bytes()).to_hex();
    let ext = match mapped.rfind('.') {
        Some(dot) if dot > 0 && mapped.len() - dot <= 16 => &mapped[dot..],
        _ => "",
    };
    let suffix = format!("~{}{ext}", &hash[..16]);
    let mut stem = String::new();
    for c in mapped[..mapped.len() - ext.len()].chars() {
        let candidate = format!("{stem}{c}{suffix}");
        if !rule.fits(&candidate) {
            break;
        }
        stem.push(c);
    }
    format!("{stem}{suffix}")
}

/// Undoes the character mapping of [`local_name`]: each U+F001 to U+F07F becomes the ASCII
/// character it stands for. (A shortened name keeps only its hash.)
#[cfg(test)]
pub fn unmap(local: &str) -> String {
    local
        .chars()
        .map(|c| {
            let code = c as u32;
            if (ESCAPE_BASE + 1..ESCAPE_BASE + 0x80).contains(&code) {
                char::from_u32(code - ESCAPE_BASE).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

/// The file name a download gets: the last component of the path the network knows it by,
/// mapped by [`local_name`] for this platform, else (no name at all)
/// `iwant-<first 12 hex digits of the id>`.
pub fn download_name(path: &str, id: &Id) -> String {
    download_name_for(path, id, NameRule::current())
}

/// [`download_name`] under `rule`.
pub fn download_name_for(path: &str, id: &Id, rule: NameRule) -> String {
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.is_empty() || last == "." || last == ".." || last.contains('\0') {
        format!("iwant-{}", id.short(12))
    } else {
        local_name(last, rule)
    }
}

/// The partial file or directory of a download: hidden, in the download folder, named so that
/// the indexer never picks it up (`.iwant-part`).
pub fn part_path(dest: &Path, name: &str, id: &Id) -> PathBuf {
    dest.join(format!(
        ".{name}.{}{}",
        id.short(12),
        crate::share::scan::PARTIAL_SUFFIX
    ))
}

/// `name` with a ` (n)` suffix before its extension (`a.txt` → `a (1).txt`; directories and
/// names without an extension get it at the end).
pub(crate) fn numbered(name: &str, n: u32, is_dir: bool) -> String {
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
        let id = Id::of(b"x");
        assert_eq!(download_name("films/holiday.mkv", &id), "holiday.mkv");
        assert_eq!(download_name("", &id), format!("iwant-{}", id.short(12)));
        assert_eq!(
            download_name_for("a/CON", &id, NameRule::Windows),
            "\u{F043}ON"
        );
        assert_eq!(download_name_for("a/CON", &id, NameRule::Unix), "CON");
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

    #[test]
    fn every_rule_maps_unstorable_names_and_round_trips() {
        use NameRule::*;
        let win = |n: &str| local_name(n, Windows);
        // (network name, Windows name); Unix and macOS keep these names as they are.
        let table = [
            ("Song: Title.txt", "Song\u{F03A} Title.txt"),
            ("what?.txt", "what\u{F03F}.txt"),
            ("CON", "\u{F043}ON"),
            ("con.txt", "\u{F063}on.txt"),
            ("aux.c", "\u{F061}ux.c"),
            ("COM1", "\u{F043}OM1"),
            ("LPT9.log", "\u{F04C}PT9.log"),
            ("COM\u{b9}", "\u{F043}OM\u{b9}"),
            ("trailing.", "trailing\u{F02E}"),
            ("trailing ", "trailing\u{F020}"),
            ("a\\b", "a\u{F05C}b"),
            ("tab\tname", "tab\u{F009}name"),
            ("<>\"|*", "\u{F03C}\u{F03E}\u{F022}\u{F07C}\u{F02A}"),
            ("console", "console"),
            ("COM10", "COM10"),
            ("plain.txt", "plain.txt"),
        ];
        for (name, expected) in table {
            assert_eq!(win(name), expected, "{name:?}");
            assert_eq!(unmap(&win(name)), name, "{name:?}");
            assert_eq!(local_name(name, Unix), name, "{name:?}");
            assert_eq!(local_name(name, MacOs), name, "{name:?}");
        }
        // A name already holding an escape character is kept; the plan settles collisions.
        assert_eq!(win("x\u{F03A}y"), "x\u{F03A}y");
    }

    #[test]
    fn over_long_names_are_shortened_with_a_hash_per_rule() {
        use NameRule::*;
        let ascii = format!("{}.txt", "a".repeat(296));
        let cjk = "\u{6f22}".repeat(120); // 360 bytes, 120 UTF-16 units
        for rule in [Unix, MacOs, Windows] {
            let short = local_name(&ascii, rule);
            assert!(short.len() <= MAX_NAME_LEN, "{rule:?}");
            assert!(short.ends_with(".txt"), "{short}");
            assert_ne!(local_name(&format!("b{ascii}"), rule), short);
            assert_eq!(local_name(&ascii, rule), short, "deterministic");
        }
        assert_eq!(local_name(&cjk, Windows), cjk);
        let unix = local_name(&cjk, Unix);
        assert!(unix.len() <= MAX_NAME_LEN && unix.contains('~'), "{unix}");
        assert_eq!(local_name(&cjk, MacOs), unix);
        let at = "a".repeat(MAX_NAME_LEN);
        assert_eq!(local_name(&at, Unix), at);
    }
}
