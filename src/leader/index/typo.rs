//! The typo pass: query tokens against a name's alphanumeric tokens by edit distance.
//!
//! It runs only when nothing in the index matched the query as a subsequence. A query token
//! matches a name token when it is a prefix of it, or when both have the same digits (numbers
//! are never typo-matched: `2026` does not match `2025`) and their optimal string alignment
//! distance (Damerau–Levenshtein without repeated edits of one substring) is at most
//! [`max_edits`] of the query token's length. Every query token must match.

use super::rank::{mask_of, Parsed};

/// Tokens longer than this (in chars) only match as prefixes.
const MAX_TOKEN_CHARS: usize = 64;
/// Tokens of a query beyond this many are ignored.
const MAX_TOKENS: usize = 16;

/// The edits a query token of `len` chars may need: none below 4 chars, 1 up to 7, then 2.
pub(super) fn max_edits(len: usize) -> usize {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

struct Token {
    text: Box<str>,
    chars: Vec<char>,
    mask: u64,
    max_edits: usize,
}

/// The alphanumeric tokens of a query, ready for the typo pass.
pub(super) struct Tokens(Vec<Token>);

impl Tokens {
    /// Splits the query's words at every character that is not alphanumeric.
    pub(super) fn new(q: &Parsed) -> Tokens {
        let tokens = q
            .words
            .iter()
            .flat_map(|w| w.text.split(|c: char| !c.is_alphanumeric()))
            .filter(|t| !t.is_empty())
            .take(MAX_TOKENS)
            .map(|t| {
                let chars: Vec<char> = t.chars().collect();
                Token {
                    text: t.into(),
                    mask: mask_of(t.as_bytes()),
                    max_edits: max_edits(chars.len()),
                    chars,
                }
            })
            .collect();
        Tokens(tokens)
    }

    /// Whether there is nothing to match.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The mask prefilter: a token within `k` edits of a name token has at most `k`
    /// characters the name lacks. Most names fail here without being read.
    pub(super) fn may_match(&self, name_mask: u64) -> bool {
        self.0
            .iter()
            .all(|t| (t.mask & !name_mask).count_ones() as usize <= t.max_edits)
    }

    /// The sub-score (1,000 less 100 per edit) if every token matches a token of the
    /// lowercase name.
    pub(super) fn score(&self, lname: &str) -> Option<i64> {
        let mut edits = 0;
        for t in &self.0 {
            edits += lname
                .split(|c: char| !c.is_alphanumeric())
                .filter(|n| !n.is_empty())
                .filter_map(|n| token_edits(t, n))
                .min()?;
        }
        Some((1000 - 100 * edits as i64).max(0))
    }
}

/// The edits that make name token `n` match query token `t`, if few enough.
fn token_edits(t: &Token, n: &str) -> Option<usize> {
    if n.starts_with(&*t.text) {
        return Some(0);
    }
    if t.max_edits == 0 || t.chars.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let len = if n.is_ascii() {
        n.len()
    } else {
        n.chars().count()
    };
    if len > MAX_TOKEN_CHARS || t.chars.len().abs_diff(len) > t.max_edits {
        return None;
    }
    fn digits(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().filter(u8::is_ascii_digit)
    }
    if !digits(&t.text).eq(digits(n)) {
        return None;
    }
    let mut buf = ['\0'; MAX_TOKEN_CHARS];
    for (slot, c) in buf.iter_mut().zip(n.chars()) {
        *slot = c;
    }
    let d = osa(&t.chars, &buf[..len], t.max_edits);
    (d <= t.max_edits).then_some(d)
}

/// The optimal string alignment distance of `a` and `b` (each at most [`MAX_TOKEN_CHARS`]),
/// or some value above `bound` once it is sure to exceed it.
fn osa(a: &[char], b: &[char], bound: usize) -> usize {
    let m = b.len();
    let mut rows = [[0usize; MAX_TOKEN_CHARS + 1]; 3];
    for (j, cell) in rows[0].iter_mut().enumerate().take(m + 1) {
        *cell = j;
    }
    for i in 1..=a.len() {
        let [r0, r1, r2] = &mut rows;
        let (before, prev, cur) = match i % 3 {
            1 => (&*r2, &*r0, r1),
            2 => (&*r0, &*r1, r2),
            _ => (&*r1, &*r2, r0),
        };
        cur[0] = i;
        let mut row_min = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(before[j - 2] + 1);
            }
            cur[j] = v;
            row_min = row_min.min(v);
        }
        if row_min > bound {
            return bound + 1;
        }
    }
    rows[a.len() % 3][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn osa_counts_transpositions_as_one_edit() {
        let cases = [
            ("main", "mian", 1),
            ("batman", "btaman", 1),
            ("batman", "batmen", 1),
            ("batman", "batman", 0),
            ("abc", "", 3),
            ("", "abc", 3),
            ("kitten", "sitting", 3),
            ("ca", "abc", 3),
        ];
        for (a, b, want) in cases {
            assert_eq!(osa(&chars(a), &chars(b), 10), want, "{a} vs {b}");
        }
    }

    #[test]
    fn numbers_are_never_typo_matched() {
        let q = Parsed::new("2026").expect("words");
        let tokens = Tokens::new(&q);
        assert_eq!(tokens.score("report 2025.pdf"), None);
        assert!(tokens.score("report 2026.pdf").is_some());
        let q = Parsed::new("img4812").expect("words");
        assert_eq!(Tokens::new(&q).score("img4821.jpg"), None);
    }

    #[test]
    fn edits_allowed_grow_with_token_length() {
        let tokens = |s: &str| Tokens::new(&Parsed::new(s).expect("words"));
        assert_eq!(tokens("mian").score("main.rs"), Some(900));
        assert_eq!(tokens("tset").score("test.rs"), Some(900));
        assert_eq!(tokens("cta").score("cat.rs"), None);
        assert_eq!(tokens("documnet").score("document.pdf"), Some(900));
        assert_eq!(tokens("dcouemnts").score("documents.pdf"), Some(800));
        assert_eq!(tokens("dcuoemtns").score("documents.pdf"), None);
        // Long tokens only match as prefixes, in both directions.
        let long = "a".repeat(70);
        assert_eq!(tokens(&long).score("aaa.txt"), None);
        assert_eq!(tokens("aaaa").score(&format!("{long}.txt")), Some(1000));
        assert_eq!(tokens("aaba").score(&format!("{long}.txt")), None);
    }
}
