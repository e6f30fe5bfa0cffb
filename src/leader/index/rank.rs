//! The string side of search: query words, character masks, and how one name matches.
//!
//! Everything here works on lowercase text (names are lowercased once, when stored; queries
//! once per search) and on bytes where that is exact: substrings always, subsequences when the
//! query word is ASCII.

use std::cmp::Ordering;

use super::{Tier, MAX_QUERY_BYTES, MAX_QUERY_WORDS};

/// Bit 63 of a name mask: the entry is a directory. Character buckets never use it.
pub(super) const DIR_BIT: u64 = 1 << 63;
/// Bit 63 of a path mask: the arena slot holds a live record. Character buckets never use it.
pub(super) const LIVE_BIT: u64 = 1 << 63;

/// The bucket of every byte: `a`–`z` and `0`–`9` have one bit each, other bytes share the rest
/// (bits 36..63). A word can only occur in a text whose mask covers the word's mask.
static BYTE_BITS: [u64; 256] = byte_bits();

const fn byte_bits() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut b = 0usize;
    while b < 256 {
        let bit = match b as u8 {
            c @ b'a'..=b'z' => (c - b'a') as u32,
            c @ b'0'..=b'9' => 26 + (c - b'0') as u32,
            c @ 0x80..=0xff => 36 + (c % 19) as u32,
            c => 55 + (c % 8) as u32,
        };
        table[b] = 1 << bit;
        b += 1;
    }
    table
}

/// The character mask of lowercase text.
pub(super) fn mask_of(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |m, &b| m | BYTE_BITS[b as usize])
}

/// The pair filter of lowercase text: one of 64 bits per pair of adjacent bytes. A word can only
/// occur in a text whose pair filter covers the word's.
pub(super) fn pairs_of(bytes: &[u8]) -> u64 {
    bytes.windows(2).fold(0, |m, w| {
        let pair = (u32::from(w[0]) << 8) | u32::from(w[1]);
        m | 1 << (pair.wrapping_mul(0x9e37_79b1) >> 26)
    })
}

/// One lowercase query word.
pub(super) struct Word {
    pub(super) text: Box<str>,
    pub(super) mask: u64,
    ascii: bool,
}

/// A query, normalised: truncated, lowercased, split on whitespace.
pub(super) struct Parsed {
    pub(super) words: Vec<Word>,
    /// The words joined by single spaces: what the exact and prefix tiers compare.
    phrase: Box<str>,
    /// The whole lowercase text, trimmed (for names with runs of whitespace).
    whole: Box<str>,
    /// The union of the words' masks.
    pub(super) mask: u64,
    /// The union of the words' pair filters.
    pub(super) pairs: u64,
}

impl Parsed {
    /// Parses query text; `None` when it has no words. Never fails otherwise: text past
    /// [`MAX_QUERY_BYTES`] (cut at a char boundary) and words past [`MAX_QUERY_WORDS`] are
    /// dropped.
    pub(super) fn new(text: &str) -> Option<Parsed> {
        let mut end = text.len().min(MAX_QUERY_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let lower = fold(&text[..end]);
        let words: Vec<Word> = lower
            .split_whitespace()
            .take(MAX_QUERY_WORDS)
            .map(|w| Word {
                text: w.into(),
                mask: mask_of(w.as_bytes()),
                ascii: w.is_ascii(),
            })
            .collect();
        if words.is_empty() {
            return None;
        }
        let phrase = words
            .iter()
            .map(|w| &*w.text)
            .collect::<Vec<_>>()
            .join(" ")
            .into();
        let mask = words.iter().fold(0, |m, w| m | w.mask);
        let pairs = words.iter().fold(0, |m, w| m | pairs_of(w.text.as_bytes()));
        Some(Parsed {
            words,
            phrase,
            whole: lower.trim().into(),
            mask,
            pairs,
        })
    }
}

/// How a name matched, as far as the cheap checks can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// The tier and its sub-score are known.
    Scored(Tier, i64),
    /// Every word is a subsequence of the name, not every word a substring: the sub-score
    /// comes from the fuzzy matcher, which the caller runs only if the row can still place.
    Fuzzy,
}

/// Matches a lowercase path (`lpath`, whose name starts at `lname_start`) against the query,
/// for every tier from `min_tier` up (lower tiers may be skipped and give `None`). The name must
/// not be empty. `name_mask` is the mask of the lowercase name.
pub(super) fn classify(
    q: &Parsed,
    lpath: &str,
    lname_start: usize,
    name_mask: u64,
    min_tier: Tier,
) -> Option<Class> {
    let lname = &lpath[lname_start..];
    let name = lname.as_bytes();
    if q.mask & !name_mask == 0 {
        let mut sub = 0;
        let mut covered = 0;
        let mut all_substrings = true;
        for w in &q.words {
            match best_occurrence(name, w.text.as_bytes()) {
                Some(at) => {
                    sub += match at {
                        Occurrence::Start => 300,
                        Occurrence::WordStart => 200,
                        Occurrence::Inside => 100,
                    };
                    covered += w.text.len();
                }
                None => {
                    all_substrings = false;
                    break;
                }
            }
        }
        if all_substrings {
            let phrase = q.phrase.as_bytes();
            if name == phrase || name == q.whole.as_bytes() {
                return Some(Class::Scored(Tier::Exact, 2000));
            }
            if stem(name) == Some(phrase) {
                return Some(Class::Scored(Tier::Exact, 1000));
            }
            if name.starts_with(phrase) {
                return Some(Class::Scored(
                    Tier::Prefix,
                    (phrase.len() * 1000 / name.len()) as i64,
                ));
            }
            let coverage = (covered.min(name.len()) * 100 / name.len()) as i64;
            return Some(Class::Scored(Tier::Substring, sub + coverage));
        }
        if min_tier <= Tier::Fuzzy && q.words.iter().all(|w| is_subsequence(lname, w)) {
            return Some(Class::Fuzzy);
        }
    }
    if min_tier > Tier::Path || lname_start == 0 {
        return None;
    }
    // The path tier: each word is a subsequence of the name or a substring of the path (in
    // the directory part or across the last `/`); at least one word needs the directory (else
    // a tier above would have matched).
    let path = lpath.as_bytes();
    let mut sub = 0;
    for w in &q.words {
        let word = w.text.as_bytes();
        let in_name = w.mask & !name_mask == 0;
        sub += if in_name && best_occurrence(name, word).is_some() {
            400
        } else if in_name && is_subsequence(lname, w) {
            250
        } else {
            match best_occurrence(path, word)? {
                Occurrence::Start | Occurrence::WordStart => 200,
                Occurrence::Inside => 100,
            }
        };
    }
    Some(Class::Scored(Tier::Path, sub))
}

/// The form names and queries are matched in: lowercase, without accents (`Café Müller` →
/// `cafe muller`), with the letters that do not decompose spelled out (`ß` → `ss`, `æ` →
/// `ae`, `ø` → `o`). `/` stays where it was.
pub(super) fn fold(text: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.to_lowercase().nfd().filter(|c| !is_combining_mark(*c)) {
        match c {
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'ø' => out.push('o'),
            'đ' | 'ð' => out.push('d'),
            'ł' => out.push('l'),
            'þ' => out.push_str("th"),
            'ı' => out.push('i'),
            c => out.push(c),
        }
    }
    out
}

/// Compares two paths in natural order: runs of digits by their value (`2` < `10`, `02` =
/// `2` until the end, where fewer leading zeros come first), the rest byte by byte. A total
/// order: texts equal in it are equal bytes.
pub(super) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let strip = |d: &[u8]| {
                let nz = d.iter().position(|&c| c != b'0').unwrap_or(d.len());
                d[nz..].to_vec()
            };
            let (p, q) = (strip(&x[si..i]), strip(&y[sj..j]));
            let by_value = p.len().cmp(&q.len()).then_with(|| p.cmp(&q));
            if by_value != Ordering::Equal {
                return by_value;
            }
        } else {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

/// Where a word occurs in a text, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occurrence {
    /// At the start of the text.
    Start,
    /// At the start of a word inside the text (after a separator, or where letters turn into
    /// digits or back).
    WordStart,
    /// Anywhere else.
    Inside,
}

/// The best occurrence of `needle` in `hay` (both lowercase), if any.
fn best_occurrence(hay: &[u8], needle: &[u8]) -> Option<Occurrence> {
    let (&first, rest) = needle.split_first()?;
    if needle.len() > hay.len() {
        return None;
    }
    let mut found = None;
    for at in 0..=hay.len() - needle.len() {
        if hay[at] != first || &hay[at + 1..at + needle.len()] != rest {
            continue;
        }
        if at == 0 {
            return Some(Occurrence::Start);
        }
        if is_word_start(hay[at - 1], hay[at]) {
            return Some(Occurrence::WordStart);
        }
        found = Some(Occurrence::Inside);
    }
    found
}

fn is_word_start(prev: u8, cur: u8) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80;
    word(cur) && (!word(prev) || prev.is_ascii_digit() != cur.is_ascii_digit())
}

/// The name without its extension, if it has one (a leading dot does not start one).
fn stem(name: &[u8]) -> Option<&[u8]> {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => Some(&name[..dot]),
        _ => None,
    }
}

/// Whether the word's characters occur in `hay` in order.
fn is_subsequence(hay: &str, w: &Word) -> bool {
    if w.ascii {
        let mut rest = hay.bytes();
        w.text.bytes().all(|c| rest.any(|h| h == c))
    } else {
        let mut rest = hay.chars();
        w.text.chars().all(|c| rest.any(|h| h == c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(query: &str, lpath: &str) -> Option<Class> {
        let q = Parsed::new(query).expect("words");
        let start = lpath.rfind('/').map_or(0, |s| s + 1);
        let mask = mask_of(&lpath.as_bytes()[start..]);
        classify(&q, lpath, start, mask, Tier::Typo)
    }

    fn tier(query: &str, lpath: &str) -> Option<Tier> {
        class(query, lpath).map(|c| match c {
            Class::Scored(t, _) => t,
            Class::Fuzzy => Tier::Fuzzy,
        })
    }

    #[test]
    fn each_tier_is_recognised() {
        let cases = [
            (
                "batman begins (2005).mkv",
                "batman begins (2005).mkv",
                Some(Tier::Exact),
            ),
            ("batman", "m/batman.mkv", Some(Tier::Exact)),
            ("bat", "batman.mkv", Some(Tier::Prefix)),
            ("begins batman", "batman begins.mkv", Some(Tier::Substring)),
            ("btmn", "batman.mkv", Some(Tier::Fuzzy)),
            ("movies batman", "movies/batman.mkv", Some(Tier::Path)),
            (
                "beatles/help",
                "music/the beatles/help.flac",
                Some(Tier::Path),
            ),
            ("a  b.txt", "a  b.txt", Some(Tier::Exact)),
            ("btmn", "b/a/t/m/n.mkv", None),
            ("x", "abc", None),
        ];
        for (query, path, want) in cases {
            assert_eq!(tier(query, path), want, "{query:?} in {path:?}");
        }
    }

    #[test]
    fn masks_of_a_substring_are_covered_by_the_text() {
        for (word, text) in [("river", "07 - river.flac"), ("é", "café"), ("a", "a")] {
            let (w, t) = (word.as_bytes(), text.as_bytes());
            assert_eq!(mask_of(w) & !mask_of(t), 0);
            assert_eq!(pairs_of(w) & !pairs_of(t), 0);
        }
        assert_ne!(pairs_of(b"river") & !pairs_of(b"revir.flac"), 0);
        assert_eq!(mask_of(b"a") & (DIR_BIT | LIVE_BIT), 0);
    }

    #[test]
    fn word_starts_score_higher_than_inner_substrings() {
        let Some(Class::Scored(Tier::Substring, start)) = class("man", "the man.txt") else {
            panic!("substring expected");
        };
        let Some(Class::Scored(Tier::Substring, inner)) = class("man", "batman.txt") else {
            panic!("substring expected");
        };
        assert!(start > inner);
    }

    #[test]
    fn query_is_cut_at_a_char_boundary_and_word_count() {
        let long = "é".repeat(MAX_QUERY_BYTES);
        let q = Parsed::new(&long).expect("words");
        assert!(q.words[0].text.len() <= MAX_QUERY_BYTES);
        let many = "a ".repeat(1000);
        assert_eq!(
            Parsed::new(&many).expect("words").words.len(),
            MAX_QUERY_WORDS
        );
        assert!(Parsed::new(" \t\n").is_none());
    }
}
