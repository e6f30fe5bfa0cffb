//! The one content id of iwant ([`Id`]) and the prefixes people type for it ([`IdPrefix`]).
//!
//! An id is the 32-byte BLAKE3 hash of a file, or of a directory's manifest. It has one form
//! in memory and each of its outer forms comes from here: 64 lowercase hex digits for people
//! and JSON (`Display`, `FromStr`, serde in human-readable formats), a byte string in CBOR on
//! the wire (serde in binary formats), a 32-byte BLOB in SQLite (with the `rusqlite` feature).

use std::{fmt, str::FromStr};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A content id; see the [module docs](self).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The id of a file's contents (its BLAKE3 hash).
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits (as `Display` writes them).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The first `digits` hex digits (at most 64): how tables show an id.
    pub fn short(&self, digits: usize) -> String {
        let mut hex = self.to_string();
        hex.truncate(digits);
        hex
    }

    /// The hex digit `k` (0..64) as a value 0..16.
    fn nibble(&self, k: usize) -> u8 {
        let byte = self.0[k / 2];
        if k.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0xf
        }
    }
}

impl From<blake3::Hash> for Id {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl From<&blake3::Hash> for Id {
    fn from(hash: &blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl From<&Id> for Id {
    fn from(id: &Id) -> Self {
        *id
    }
}

impl From<Id> for blake3::Hash {
    fn from(id: Id) -> Self {
        blake3::Hash::from_bytes(id.0)
    }
}

impl From<[u8; 32]> for Id {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl PartialEq<blake3::Hash> for Id {
    fn eq(&self, other: &blake3::Hash) -> bool {
        self.0 == *other.as_bytes()
    }
}

impl PartialEq<Id> for blake3::Hash {
    fn eq(&self, other: &Id) -> bool {
        *self.as_bytes() == other.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Text that is not an id or an id prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError(String);

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdError {}

impl FromStr for Id {
    type Err = IdError;

    /// Exactly 64 hex digits, either case.
    fn from_str(text: &str) -> Result<Self, IdError> {
        let prefix: IdPrefix = text.parse()?;
        prefix
            .exact()
            .ok_or_else(|| IdError(format!("{text:?} is not 64 hex digits")))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes, or 64 hex digits")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Id, E> {
                <[u8; 32]>::try_from(v)
                    .map(Id)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_bytes(Visitor)
        }
    }
}

/// The first 1 to 64 hex digits of an id, as people type them (either case, spaces around
/// ignored); [`IdPrefix::matches`] is the one prefix match of iwant.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdPrefix {
    /// The digits' values (0..16), at most 64.
    nibbles: Vec<u8>,
}

impl IdPrefix {
    /// How many digits it has (1..=64).
    pub fn len(&self) -> usize {
        self.nibbles.len()
    }

    /// Never: a prefix has at least one digit. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.nibbles.is_empty()
    }

    /// Whether `id`'s hex form starts with these digits.
    pub fn matches(&self, id: &Id) -> bool {
        self.nibbles
            .iter()
            .enumerate()
            .all(|(k, &n)| id.nibble(k) == n)
    }

    /// The id itself, when all 64 digits are given.
    pub fn exact(&self) -> Option<Id> {
        (self.nibbles.len() == 64).then(|| {
            let mut id = [0u8; 32];
            for (k, pair) in self.nibbles.chunks(2).enumerate() {
                id[k] = pair[0] << 4 | pair[1];
            }
            Id(id)
        })
    }
}

impl From<Id> for IdPrefix {
    /// All 64 digits: matches `id` alone.
    fn from(id: Id) -> Self {
        Self {
            nibbles: (0..64).map(|k| id.nibble(k)).collect(),
        }
    }
}

impl FromStr for IdPrefix {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        let trimmed = text.trim();
        let nibbles: Option<Vec<u8>> = trimmed
            .chars()
            .map(|c| c.to_digit(16).map(|d| d as u8))
            .collect();
        match nibbles {
            Some(nibbles) if (1..=64).contains(&nibbles.len()) => Ok(Self { nibbles }),
            _ => Err(IdError(format!("{text:?} is not 1 to 64 hex digits"))),
        }
    }
}

impl fmt::Display for IdPrefix {
    /// Lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.nibbles {
            write!(f, "{n:x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdPrefix({self})")
    }
}

#[cfg(feature = "rusqlite")]
mod sql {
    use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

    use super::Id;
    use crate::wire::Kind;

    /// A 32-byte BLOB.
    impl ToSql for Id {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
        }
    }

    impl FromSql for Id {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
            <[u8; 32]>::column_result(value).map(Id)
        }
    }

    /// `"file"` or `"dir"`.
    impl ToSql for Kind {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::Borrowed(ValueRef::Text(match self {
                Kind::File => b"file",
                Kind::Dir => b"dir",
            })))
        }
    }

    impl FromSql for Kind {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
            match value.as_str()? {
                "file" => Ok(Kind::File),
                "dir" => Ok(Kind::Dir),
                other => Err(FromSqlError::Other(
                    format!("{other:?} is not a kind (file or dir)").into(),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_prefixes_match_either_case() {
        let id = Id::of(b"hello");
        let hex = id.to_string();
        assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(hex.parse::<Id>().unwrap(), id);
        assert_eq!(hex.to_uppercase().parse::<Id>().unwrap(), id);
        for digits in [1, 4, 12, 63, 64] {
            let prefix: IdPrefix = hex[..digits].to_uppercase().parse().unwrap();
            assert!(prefix.matches(&id), "{digits}");
            assert_eq!(prefix.to_string(), hex[..digits]);
        }
        let other: IdPrefix = format!("{}0", &hex[..3]).parse().unwrap();
        assert_eq!(other.matches(&id), hex.as_bytes()[3] == b'0');
        assert_eq!(" ab12 ".parse::<IdPrefix>().unwrap().to_string(), "ab12");
        assert_eq!(hex[..12].parse::<IdPrefix>().unwrap().exact(), None);
        assert_eq!(id.short(12), hex[..12]);
    }

    #[test]
    fn bad_text_is_refused() {
        for text in ["", "  ", "xyz", "12 34", &"a".repeat(65), "é"] {
            assert!(text.parse::<IdPrefix>().is_err(), "{text:?}");
        }
        assert!("abcd".parse::<Id>().is_err());
    }

    #[test]
    fn serde_is_hex_for_people_and_bytes_on_the_wire() {
        let id = Id::of(b"x");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &id).unwrap();
        // A CBOR byte string of 32 bytes: major type 2, length 32 in the next byte.
        assert_eq!(&cbor[..2], &[0x58, 32]);
        assert_eq!(&cbor[2..], id.as_bytes());
        assert_eq!(cbor4ii::serde::from_slice::<Id>(&cbor).unwrap(), id);
    }
}
