//! Private networks: a pre-shared key (libp2p `pnet`) that every node of the network holds.
//!
//! With a key, every TCP connection starts with libp2p's private-network handshake (24-byte
//! nonces, then XSalsa20 with the key) underneath Noise, so a node without the same key cannot
//! even negotiate a protocol: it cannot connect, see, search or fetch anything. The key file is
//! the format go-libp2p and IPFS use (`swarm.key`):
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```
//!
//! A wrong key or a missing one shows only as a handshake that fails. To tell that from the
//! failures every LAN has (a duplicate connection closed in its handshake, a scanner, a peer
//! that went away), [`Sniffer`] looks at the first bytes each connection receives: every libp2p
//! connection starts with multistream-select's header, in the clear on an open network and once
//! decrypted on a private one. A peer whose first bytes are something else runs another key (or
//! one, when this node has none); a peer whose raw bytes are the header runs none. Only then
//! does [`HandshakeHints`] warn about keys, once per remote address (repeated at most every
//! [`HINT_INTERVAL`]); other handshake failures go to the debug log.

use std::{
    collections::{HashMap, VecDeque},
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite};
use iwant_behaviours::connections::ip_of;
use libp2p::{multiaddr::Protocol, pnet::PreSharedKey, Multiaddr};

/// A network key file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// Why not.
        source: io::Error,
    },
    /// The file is not a pre-shared key file.
    #[error("{path} is not a network key file: {reason}; make one with `iwant keygen`")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `keygen` would overwrite an existing file.
    #[error("{0} exists already; pass --force to replace it (every node using the old key must then get the new one)")]
    Exists(PathBuf),
}

/// Reads the key file at `path`. On Unix, warns when other users may read it.
pub fn load_key(path: &Path) -> Result<PreSharedKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        what: "cannot read the network key",
        path: path.to_path_buf(),
        source,
    })?;
    let key = parse_key(&text).map_err(|reason| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "other users may read the network key; `chmod 600` it"
                );
            }
        }
    }
    Ok(key)
}

/// Parses the text of a key file, saying what is wrong in words a person can act on.
pub fn parse_key(text: &str) -> Result<PreSharedKey, &'static str> {
    use libp2p::pnet::KeyParseError as E;
    text.parse::<PreSharedKey>().map_err(|e| match e {
        E::InvalidKeyFile => {
            "expected three lines: `/key/swarm/psk/1.0.0/`, `/base16/` and 64 hex digits"
        }
        E::InvalidKeyType => "the first line must be `/key/swarm/psk/1.0.0/`",
        E::InvalidKeyEncoding => "the second line must be `/base16/` (the only encoding supported)",
        E::InvalidKeyLength => "the key must be exactly 64 hex digits (32 bytes)",
        E::InvalidKeyChar(_) => "the key has a character that is not a hex digit",
    })
}

/// Writes a new random key to `path` with owner-only permissions (mode 600 on Unix; on
/// Windows the file inherits the folder's access list, which in a user's profile is that
/// user's). Refuses to replace an existing file unless `force`.
pub fn write_new_key(path: &Path, force: bool) -> Result<PreSharedKey, KeyError> {
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists(path.to_path_buf()));
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let key = PreSharedKey::new(bytes);
    let io_err = |what| {
        move |source| KeyError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("cannot create the folder of"))?;
    }
    // Written beside the target, then renamed over it: never a half-written key.
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    crate::config::write_private_file(&tmp, key.to_key_file().as_bytes())
        .map_err(io_err("cannot write the network key"))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("cannot write the network key")(e)
    })?;
    Ok(key)
}

/// How often the same remote address gets the private-network warning again.
pub const HINT_INTERVAL: Duration = Duration::from_secs(300);

/// The header every libp2p connection starts with: multistream-select 1.0's, as a
/// length-prefixed line.
pub const MULTISTREAM_HEADER: &[u8] = b"\x13/multistream/1.0.0\n";

/// What the first bytes of a connection say about the peer's network key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Its first bytes (decrypted, if this node has a key) were not multistream-select's
    /// header: it runs a private network with another key, or one where this node runs none.
    OtherKey,
    /// Its raw first bytes were multistream-select's header, though this node has a key: it
    /// runs no key at all.
    NoKey,
}

/// Verdicts of recent connections, by remote IP and port, for [`HandshakeHints`]. Bounded:
/// the oldest are forgotten.
#[derive(Debug, Clone, Default)]
pub struct Verdicts(Arc<Mutex<VecDeque<(Remote, KeyVerdict)>>>);

/// A connection's remote IP and port.
type Remote = (IpAddr, u16);

/// How many verdicts [`Verdicts`] keeps.
const MAX_VERDICTS: usize = 256;

impl Verdicts {
    fn record(&self, remote: Remote, verdict: KeyVerdict) {
        let mut all = self.0.lock().expect("bug: poisoned");
        if all.len() >= MAX_VERDICTS {
            all.pop_front();
        }
        all.push_back((remote, verdict));
    }

    /// The verdict about the connection to or from `remote`, taken out.
    pub fn take(&self, remote: &Multiaddr) -> Option<KeyVerdict> {
        let key = ip_port_of(remote)?;
        let mut all = self.0.lock().expect("bug: poisoned");
        let at = all.iter().rposition(|(r, _)| *r == key)?;
        all.remove(at).map(|(_, v)| v)
    }
}

/// Which layer a [`Sniffer`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The raw TCP bytes of a node without a key: not the header → [`KeyVerdict::OtherKey`].
    Open,
    /// The raw TCP bytes of a node with a key: the header → [`KeyVerdict::NoKey`].
    BelowKey,
    /// The decrypted bytes of a node with a key: not the header → [`KeyVerdict::OtherKey`].
    AboveKey,
}

/// A connection's byte stream that looks at its first [`MULTISTREAM_HEADER`]-long bytes and
/// records a [`KeyVerdict`] in [`Verdicts`] when they say so; otherwise passes everything
/// through unchanged.
pub struct Sniffer<S> {
    inner: S,
    seen: Vec<u8>,
    /// Where the verdict goes, until the first bytes are seen.
    report: Option<(Verdicts, Remote, Layer)>,
}

impl<S> Sniffer<S> {
    /// Sniffs `inner`, a connection with `remote` (its IP and port; nothing is recorded
    /// without them), at `layer`.
    pub fn new(inner: S, remote: &Multiaddr, layer: Layer, verdicts: Verdicts) -> Self {
        Sniffer {
            inner,
            seen: Vec::with_capacity(MULTISTREAM_HEADER.len()),
            report: ip_port_of(remote).map(|r| (verdicts, r, layer)),
        }
    }

    fn look(&mut self, read: &[u8]) {
        if self.report.is_none() {
            return;
        }
        let room = MULTISTREAM_HEADER.len() - self.seen.len();
        self.seen.extend_from_slice(&read[..read.len().min(room)]);
        if self.seen.len() < MULTISTREAM_HEADER.len() {
            return;
        }
        let Some((verdicts, remote, layer)) = self.report.take() else {
            return;
        };
        let header = self.seen == MULTISTREAM_HEADER;
        let verdict = match layer {
            Layer::Open | Layer::AboveKey if !header => Some(KeyVerdict::OtherKey),
            Layer::BelowKey if header => Some(KeyVerdict::NoKey),
            _ => None,
        };
        if let Some(verdict) = verdict {
            verdicts.record(remote, verdict);
        }
        self.seen = Vec::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            this.look(&buf[..n]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Most remote addresses remembered for [`HandshakeHints`]; the oldest are forgotten.
const MAX_HINTED: usize = 256;

/// Turns failed handshakes into clear, rate-limited warnings about the network key.
#[derive(Debug)]
pub struct HandshakeHints {
    /// The local key's fingerprint, if this node runs a private network.
    fingerprint: Option<String>,
    last: HashMap<IpAddr, Instant>,
    /// What the transport's sniffers saw.
    verdicts: Verdicts,
}

impl HandshakeHints {
    /// Hints for a node with this key (or none), from what the transport's [`Sniffer`]s
    /// record in `verdicts`.
    pub fn new(key: Option<&PreSharedKey>, verdicts: Verdicts) -> Self {
        HandshakeHints {
            fingerprint: key.map(|k| k.fingerprint().to_string()),
            last: HashMap::new(),
            verdicts,
        }
    }

    /// The local key's fingerprint, if this node runs a private network.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Called for a connection to or from `remote` that failed with `error`. Logs a warning
    /// when the error is a failed handshake and the connection's first bytes showed a peer
    /// with another network key (or none), at most once per [`HINT_INTERVAL`] per remote IP;
    /// other failures go to the debug log.
    pub fn failed(
        &mut self,
        remote: Option<&Multiaddr>,
        inbound: bool,
        error: &dyn std::error::Error,
    ) {
        let text = error_chain(error);
        let direction = if inbound { "from" } else { "to" };
        let remote_text = remote.map_or_else(|| "a peer".to_owned(), Multiaddr::to_string);
        let verdict = remote.and_then(|r| self.verdicts.take(r));
        let Some(verdict) = verdict.filter(|_| is_handshake_failure(&text)) else {
            tracing::debug!(remote = %remote_text, error = %text, "connection {direction} the peer failed");
            return;
        };
        let ip = remote.and_then(ip_of);
        if let Some(ip) = ip {
            let now = Instant::now();
            if let Some(at) = self.last.get(&ip) {
                if now.duration_since(*at) < HINT_INTERVAL {
                    tracing::debug!(remote = %remote_text, error = %text, "handshake failed again");
                    return;
                }
            }
            if self.last.len() >= MAX_HINTED {
                if let Some(oldest) = self
                    .last
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(ip, _)| *ip)
                {
                    self.last.remove(&oldest);
                }
            }
            self.last.insert(ip, now);
        }
        match (&self.fingerprint, verdict) {
            (Some(fingerprint), KeyVerdict::NoKey) => tracing::warn!(
                remote = %remote_text,
                error = %text,
                "connection {direction} {remote_text} failed in the handshake: this node runs a private network (network key fingerprint {fingerprint}) and that peer runs none; give it the same --network-key file"
            ),
            (Some(fingerprint), KeyVerdict::OtherKey) => tracing::warn!(
                remote = %remote_text,
                error = %text,
                "connection {direction} {remote_text} failed in the handshake: this node runs a private network (network key fingerprint {fingerprint}) and that peer runs another key; give it the same --network-key file"
            ),
            (None, _) => tracing::warn!(
                remote = %remote_text,
                error = %text,
                "connection {direction} {remote_text} failed in the handshake: if that peer runs a private network (iwant node --network-key), this node needs the same key file to join it"
            ),
        }
    }
}

/// The error and its sources, `: `-joined.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// Whether an error chain is a failure after TCP connected: the private-network handshake,
/// protocol negotiation or Noise failing or stalling, which a key mismatch causes (each side
/// reads the other's bytes as garbage, which may also look like a long message to wait for,
/// until the dial deadline).
fn is_handshake_failure(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "multistream",
        "negotiat",
        "noise",
        "handshake",
        "pnet",
        "decrypt",
        "protocol",
        "timeout",
        "timed out",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn ip_port_of(addr: &Multiaddr) -> Option<Remote> {
    let port = addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    })?;
    Some((ip_of(addr)?, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_round_trips_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("network.key");
        let key = write_new_key(&path, false).unwrap();
        let loaded = load_key(&path).unwrap();
        assert_eq!(
            key.fingerprint().to_string(),
            loaded.fingerprint().to_string()
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            write_new_key(&path, false),
            Err(KeyError::Exists(_))
        ));
        let replaced = write_new_key(&path, true).unwrap();
        assert_ne!(
            replaced.fingerprint().to_string(),
            key.fingerprint().to_string()
        );
        assert_eq!(
            load_key(&path).unwrap().fingerprint().to_string(),
            replaced.fingerprint().to_string()
        );
        assert!(!path.with_extension("key.tmp").exists());
    }

    /// Reads everything `bytes` holds through a sniffer at `layer`; the verdict it recorded.
    fn sniff(bytes: &[u8], layer: Layer) -> Option<KeyVerdict> {
        use futures::AsyncReadExt;
        let remote: Multiaddr = "/ip4/10.0.0.2/tcp/4747".parse().unwrap();
        let verdicts = Verdicts::default();
        let mut sniffer = Sniffer::new(
            futures::io::Cursor::new(bytes.to_vec()),
            &remote,
            layer,
            verdicts.clone(),
        );
        // In small reads, as a socket may deliver them.
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = futures::executor::block_on(sniffer.read(&mut buf)).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, bytes, "the bytes pass through unchanged");
        verdicts.take(&remote)
    }

    #[test]
    fn first_bytes_tell_a_key_mismatch_from_everything_else() {
        let mut libp2p = MULTISTREAM_HEADER.to_vec();
        libp2p.extend_from_slice(b"\x07/noise\n");
        let nonce_and_ciphertext: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        // An open node: a libp2p peer is fine; a private-network peer's nonce is not.
        assert_eq!(sniff(&libp2p, Layer::Open), None);
        assert_eq!(
            sniff(&nonce_and_ciphertext, Layer::Open),
            Some(KeyVerdict::OtherKey)
        );
        // A keyed node: an open peer's plain header below the key, garbage above it.
        assert_eq!(sniff(&libp2p, Layer::BelowKey), Some(KeyVerdict::NoKey));
        assert_eq!(sniff(&nonce_and_ciphertext, Layer::BelowKey), None);
        assert_eq!(
            sniff(&nonce_and_ciphertext, Layer::AboveKey),
            Some(KeyVerdict::OtherKey)
        );
        assert_eq!(sniff(&libp2p, Layer::AboveKey), None);
        // A peer that sends less than the header (a scanner, a duplicate closed at once) says
        // nothing about keys.
        assert_eq!(sniff(&[0x13, b'/', b'x'], Layer::Open), None);
        assert_eq!(sniff(&[], Layer::Open), None);
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let good = "/key/swarm/psk/1.0.0/\n/base16/\n".to_owned() + &"ab".repeat(32);
        assert!(parse_key(&good).is_ok());
        for (text, says) in [
            ("", "three lines"),
            ("/key/swarm/psk/2.0.0/\n/base16/\n00", "first line"),
            ("/key/swarm/psk/1.0.0/\n/base64/\n00", "second line"),
            ("/key/swarm/psk/1.0.0/\n/base16/\nabcd", "64 hex digits"),
            (
                &("/key/swarm/psk/1.0.0/\n/base16/\n".to_owned() + &"zz".repeat(32)),
                "hex digit",
            ),
        ] {
            let reason = parse_key(text).unwrap_err();
            assert!(reason.contains(says), "{text:?}: {reason}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = load_key(&dir.path().join("missing.key")).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the network key"),
            "{err}"
        );
    }
}
