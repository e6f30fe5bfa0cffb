//! Wire types shared by iwant's request-response protocols.

use std::{fmt, ops::Deref};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A request-response behaviour for `protocol` with the CBOR codec, the given size caps on
/// encoded requests and responses, and a request timeout: how every iwant request-response
/// protocol is built.
pub fn cbor_behaviour<Req, Resp>(
    protocol: libp2p::StreamProtocol,
    max_request: u64,
    max_response: u64,
    timeout: std::time::Duration,
) -> libp2p::request_response::cbor::Behaviour<Req, Resp>
where
    Req: Send + Serialize + de::DeserializeOwned + 'static,
    Resp: Send + Serialize + de::DeserializeOwned + 'static,
{
    use libp2p::request_response::{cbor, Config, ProtocolSupport};
    let codec = cbor::codec::Codec::default()
        .set_request_size_maximum(max_request)
        .set_response_size_maximum(max_response);
    cbor::Behaviour::with_codec(
        codec,
        [(protocol, ProtocolSupport::Full)],
        Config::default().with_request_timeout(timeout),
    )
}

/// Deserializes a sequence into a `Vec` that keeps at most `MAX + 1` elements and skips the
/// rest without storing them, for a field whose receiver refuses more than `MAX`: its check
/// still sees that there were too many, but a hostile count costs `MAX + 1` elements at most.
/// (Left to serde, a declared length reserves up to 1 MiB before any element is read, and
/// every element is kept: a vector of strings holds 24 bytes per one-byte empty string of
/// input, 32 MiB and more for a 1 MiB message.)
pub(crate) fn capped<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Visitor<T, const MAX: usize>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize> de::Visitor<'de> for Visitor<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let keep = MAX.saturating_add(1);
            // Reserve for what is there, not for what the header claims.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(keep).min(64));
            while out.len() < keep {
                match seq.next_element()? {
                    Some(v) => out.push(v),
                    None => return Ok(out),
                }
            }
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(out)
        }
    }
    d.deserialize_seq(Visitor::<T, MAX>(std::marker::PhantomData))
}

/// Longest relative path in any message, in bytes.
pub const MAX_PATH: usize = 4096;

pub use crate::id::Id;

/// Opaque bytes: a CBOR byte string on the wire (major type 2), never an array of integers.
/// `Debug` prints only the length, so logging a message never dumps its payload.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// What an entry is: the one `Kind` of iwant, on the wire, in the index, in the store and in
/// the control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

#[cfg(test)]
mod bytes_tests {
    use super::Bytes;

    #[test]
    fn bytes_are_cbor_byte_strings_and_debug_shows_only_the_length() {
        for len in [0usize, 1, 23, 24, 255, 256, 70_000] {
            let data = Bytes((0..len).map(|i| i as u8).collect());
            let mut buf = Vec::new();
            cbor4ii::serde::to_writer(&mut buf, &data).unwrap();
            assert_eq!(buf[0] >> 5, 2, "major type 2 (byte string) for {len} bytes");
            let header = match len {
                0..=23 => 1,
                24..=255 => 2,
                256..=65_535 => 3,
                _ => 5,
            };
            assert_eq!(buf.len(), header + len);
            let back: Bytes = cbor4ii::serde::from_slice(&buf).unwrap();
            assert_eq!(back, data);
            let from_reader: Bytes =
                cbor4ii::serde::from_reader(std::io::BufReader::new(&buf[..])).unwrap();
            assert_eq!(from_reader, data);
        }
        assert_eq!(format!("{:?}", Bytes(vec![9; 1000])), "Bytes(1000 bytes)");
        let b = Bytes::from(vec![1, 2, 3]);
        assert_eq!(&b[..], &[1, 2, 3]);
        assert_eq!(b.len(), 3);
        // An array of integers is not a byte string.
        let mut array = Vec::new();
        cbor4ii::serde::to_writer(&mut array, &vec![1u8, 2, 3]).unwrap();
        assert_eq!(array[0] >> 5, 4);
        assert!(cbor4ii::serde::from_slice::<Bytes>(&array).is_err());
    }
}

#[cfg(test)]
mod capped_tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Three {
        #[serde(deserialize_with = "super::capped::<_, _, 3>")]
        v: Vec<String>,
    }

    fn encode(v: &[&str], definite: bool) -> Vec<u8> {
        let mut buf = vec![0xa1, 0x61, b'v'];
        if definite {
            assert!(v.len() < 24);
            buf.push(0x80 | v.len() as u8);
        } else {
            buf.push(0x9f);
        }
        for s in v {
            buf.push(0x60 | s.len() as u8);
            buf.extend(s.as_bytes());
        }
        if !definite {
            buf.push(0xff);
        }
        buf
    }

    #[test]
    fn capped_vectors_keep_one_more_than_the_cap_and_skip_the_rest() {
        for definite in [true, false] {
            for n in 0..10 {
                let items: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
                let refs: Vec<&str> = items.iter().map(String::as_str).collect();
                let got: Three = cbor4ii::serde::from_slice(&encode(&refs, definite)).unwrap();
                assert_eq!(got.v, items[..n.min(4)], "{n} items, definite {definite}");
                assert!(got.v.capacity() <= 4, "{}", got.v.capacity());
            }
        }
        // Skipped items are still read, as any CBOR: the message must be well formed...
        let mut truncated = encode(&["a", "b", "c", "d", "e", "f"], true);
        truncated.pop();
        assert!(cbor4ii::serde::from_slice::<Three>(&truncated).is_err());
        // ...and kept items are still typed.
        let wrong = [0xa1, 0x61, b'v', 0x81, 0x01];
        assert!(cbor4ii::serde::from_slice::<Three>(&wrong).is_err());
        // A claimed length reserves nothing beyond what the cap allows.
        let claim = [
            0xa1, 0x61, b'v', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(cbor4ii::serde::from_slice::<Three>(&claim).is_err());
        // Not a sequence at all.
        assert!(cbor4ii::serde::from_slice::<Three>(&[0xa1, 0x61, b'v', 0x01]).is_err());
    }
}
