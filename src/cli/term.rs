//! Text for people at a terminal: names from disk or the network escaped before they reach
//! it, sizes and counts in words.

use std::fmt;

/// A name shown on a terminal with every control character made visible.
///
/// C0 controls (U+0000–U+001F), DEL (U+007F), C1 controls (U+0080–U+009F) and the bidi
/// override/isolate characters (U+202A–U+202E, U+2066–U+2069) are written as escapes
/// (`\x1b`, `\u{202e}`), and a backslash as `\\` so an escape cannot be faked. Everything
/// else is written as is. JSON output never uses this: it keeps names exact.
pub(crate) struct Safe<'a>(pub(crate) &'a str);

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_control() || is_bidi_control(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

/// `name` with its control characters escaped (see [`Safe`]).
pub(crate) fn safe(name: &str) -> String {
    Safe(name).to_string()
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `1 file`, `2 files`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_escaped() {
        assert_eq!(safe("evil\u{1b}[31mred.txt"), "evil\\x1b[31mred.txt");
        assert_eq!(safe("a\nb\tc\u{7f}"), "a\\x0ab\\x09c\\x7f");
    }

    #[test]
    fn c1_and_bidi_controls_are_shown_escaped() {
        assert_eq!(safe("x\u{9b}y"), "x\\u{9b}y");
        assert_eq!(safe("gpj.\u{202e}exe"), "gpj.\\u{202e}exe");
        assert_eq!(safe("\u{2066}a\u{2069}"), "\\u{2066}a\\u{2069}");
    }

    #[test]
    fn ordinary_names_are_unchanged_and_backslash_is_doubled() {
        assert_eq!(safe("Fotos/été 2024.jpg"), "Fotos/été 2024.jpg");
        assert_eq!(safe("a\\x1b"), "a\\\\x1b");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
