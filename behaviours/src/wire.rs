//! Wire types shared by iwant's request-response protocols.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Longest relative path in any message, in bytes.
pub const MAX_PATH: usize = 4096;

/// A content id: the 32-byte BLAKE3 hash of a file, or of a directory's manifest. A CBOR byte
/// string on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Id, E> {
                <[u8; 32]>::try_from(v)
                    .map(Id)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// Checks a relative path from the network: at most [`MAX_PATH`] bytes, `/` between non-empty
/// components, no `.` or `..` component, no NUL. "" (the shared folder itself) is allowed.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH {
        return Err(format!(
            "a path of {} bytes, more than {MAX_PATH}",
            path.len()
        ));
    }
    if path.is_empty() {
        return Ok(());
    }
    if path.contains('\0') {
        return Err(format!(
            "a path with a NUL byte: {:?}",
            path.replace('\0', "\\0")
        ));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "a path that is not a plain relative path: {path:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_byte_strings_of_32_bytes() {
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &Id([7; 32])).unwrap();
        assert_eq!(buf[0], 0x58, "a byte string with a 1-byte length");
        assert_eq!(buf[1], 32);
        assert_eq!(buf.len(), 34);
        let back: Id = cbor4ii::serde::from_slice(&buf).unwrap();
        assert_eq!(back, Id([7; 32]));
        let mut short = Vec::new();
        cbor4ii::serde::to_writer(&mut short, &serde_bytes_of(&[1; 31])).unwrap();
        assert!(cbor4ii::serde::from_slice::<Id>(&short).is_err());
    }

    struct Bytes<'a>(&'a [u8]);
    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    fn serde_bytes_of(b: &[u8]) -> Bytes<'_> {
        Bytes(b)
    }
}
