//! The private-network layer (libp2p `pnet`, `/key/swarm/psk/1.0.0/`): the same handshake
//! and cipher as libp2p-pnet, go-libp2p and js-libp2p, with a faster XSalsa20.
//!
//! After each side sends a random 24-byte nonce and reads the other's, everything a side
//! writes is XORed with the XSalsa20 keystream of (key, its own nonce), and what it reads with
//! that of (key, the peer's nonce). libp2p-pnet does this with the RustCrypto `salsa20`
//! crate, which computes one 64-byte block at a time (about 650 MB/s here, so a private
//! network moved 0.6 × what an open one did). Here eight blocks are computed side by side,
//! one lane each, in code the compiler turns into AVX-512 or AVX2 vectors (chosen at run
//! time), else SSE2 ones;
//! the keystream is checked against `salsa20` in the tests. Writes are encrypted into a
//! buffer of up to [`WRITE_CHUNK`] bytes and written out from an offset (no copying back).
//! `docs/decisions/0006-our-own-pnet-cipher.md` has the measurements.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::pnet::PreSharedKey;

/// Nonce length of the handshake.
pub const NONCE_LEN: usize = 24;

/// Most bytes encrypted into the write buffer per write.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Blocks computed at once.
const LANES: usize = 8;

/// Bytes of keystream computed at once.
const BATCH: usize = 64 * LANES;

/// "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The raw bytes of `key` (libp2p keeps them private; its key file form has them in hex).
pub fn key_bytes(key: &PreSharedKey) -> [u8; 32] {
    let file = key.to_key_file();
    let hex = file.lines().nth(2).unwrap_or_default();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .expect("bug: a PreSharedKey's key file has 64 hex digits");
    }
    out
}

/// Runs the handshake on `socket` (sends this side's nonce, reads the peer's) and returns the
/// encrypted stream.
pub async fn handshake<S>(mut socket: S, key: &PreSharedKey) -> io::Result<PnetStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = key_bytes(key);
    let local: [u8; NONCE_LEN] = rand::random();
    socket.write_all(&local).await?;
    socket.flush().await?;
    let mut remote = [0u8; NONCE_LEN];
    socket.read_exact(&mut remote).await?;
    Ok(PnetStream {
        inner: socket,
        write_cipher: XSalsa20::new(&key, &local),
        read_cipher: XSalsa20::new(&key, &remote),
        out: Vec::with_capacity(WRITE_CHUNK),
        sent: 0,
    })
}

/// A stream after the handshake: encrypts what is written, decrypts what is read.
pub struct PnetStream<S> {
    inner: S,
    write_cipher: XSalsa20,
    read_cipher: XSalsa20,
    /// Encrypted bytes not written yet: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
}

impl<S: AsyncWrite + Unpin> PnetStream<S> {
    /// Writes out the encrypted buffer; ready once it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..])) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection took no more bytes",
                    )))
                }
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PnetStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read_cipher.apply(&mut buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PnetStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(WRITE_CHUNK);
        this.out.extend_from_slice(&buf[..n]);
        this.write_cipher.apply(&mut this.out);
        // Start sending at once; what does not go now goes at the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

/// The XSalsa20 stream cipher (Salsa20/20 under a key derived with HSalsa20 from the key and
/// the first 16 bytes of the nonce).
pub struct XSalsa20 {
    /// The Salsa20 state without its block counter (words 8 and 9).
    state: [u32; 16],
    /// The next block to compute.
    block: u64,
    /// Keystream computed and not used yet: `keystream[used..]`.
    keystream: [u8; BATCH],
    used: usize,
}

impl XSalsa20 {
    /// The cipher for `key` and `nonce`, at the start of its keystream.
    pub fn new(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Self {
        let subkey = hsalsa20(key, nonce[..16].try_into().expect("bug: 16 bytes"));
        let word = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
        let mut state = [0u32; 16];
        state[0] = SIGMA[0];
        state[5] = SIGMA[1];
        state[10] = SIGMA[2];
        state[15] = SIGMA[3];
        state[1..5].copy_from_slice(&subkey[..4]);
        state[11..15].copy_from_slice(&subkey[4..]);
        state[6] = word(&nonce[16..], 0);
        state[7] = word(&nonce[16..], 1);
        Self {
            state,
            block: 0,
            keystream: [0; BATCH],
            used: BATCH,
        }
    }

    /// XORs the next `data.len()` bytes of the keystream into `data`.
    pub fn apply(&mut self, mut data: &mut [u8]) {
        // The rest of the batch computed last.
        let left = (BATCH - self.used).min(data.len());
        xor(
            &mut data[..left],
            &self.keystream[self.used..self.used + left],
        );
        self.used += left;
        data = &mut data[left..];
        let mut batch = [0u8; BATCH];
        while data.len() >= BATCH {
            self.next_batch(&mut batch);
            xor(&mut data[..BATCH], &batch);
            data = &mut data[BATCH..];
        }
        if !data.is_empty() {
            let mut keystream = [0u8; BATCH];
            self.next_batch(&mut keystream);
            self.keystream = keystream;
            xor(data, &self.keystream[..data.len()]);
            self.used = data.len();
        }
    }

    fn next_batch(&mut self, out: &mut [u8; BATCH]) {
        blocks(&self.state, self.block, out);
        self.block = self.block.wrapping_add(LANES as u64);
    }
}

fn xor(data: &mut [u8], keystream: &[u8]) {
    for (d, k) in data.iter_mut().zip(keystream) {
        *d ^= k;
    }
}

/// HSalsa20: the key of XSalsa20's inner Salsa20, from `key` and 16 nonce bytes.
fn hsalsa20(key: &[u8; 32], nonce: &[u8; 16]) -> [u32; 8] {
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    let mut x = [0u32; 16];
    x[0] = SIGMA[0];
    x[5] = SIGMA[1];
    x[10] = SIGMA[2];
    x[15] = SIGMA[3];
    for i in 0..4 {
        x[1 + i] = word(key, i);
        x[11 + i] = word(key, 4 + i);
        x[6 + i] = word(nonce, i);
    }
    let mut v: [[u32; 1]; 16] = x.map(|w| [w]);
    for _ in 0..10 {
        double_round(&mut v);
    }
    [v[0], v[5], v[10], v[15], v[6], v[7], v[8], v[9]].map(|w| w[0])
}

/// `LANES` consecutive Salsa20/20 blocks of `state` from block `first`, into `out`.
fn blocks(state: &[u32; 16], first: u64, out: &mut [u8; BATCH]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has AVX-512F and VL (checked just above).
            unsafe { blocks_avx512(state, first, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { blocks_avx2(state, first, out) };
            return;
        }
    }
    blocks_portable(state, first, out);
}

/// With AVX-512's vector rotations (on 256-bit vectors, VL).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn blocks_avx512(state: &[u32; 16], first: u64, out: &mut [u8; BATCH]) {
    blocks_portable(state, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn blocks_avx2(state: &[u32; 16], first: u64, out: &mut [u8; BATCH]) {
    blocks_portable(state, first, out);
}

/// The blocks with one vector lane per block: every word of the state is `[u32; LANES]`,
/// which the compiler keeps in vector registers.
#[inline(always)]
fn blocks_portable(state: &[u32; 16], first: u64, out: &mut [u8; BATCH]) {
    let mut init: [[u32; LANES]; 16] = state.map(|w| [w; LANES]);
    let (low, high) = init.split_at_mut(9);
    for (lane, (lo, hi)) in low[8].iter_mut().zip(&mut high[0]).enumerate() {
        let block = first.wrapping_add(lane as u64);
        *lo = block as u32;
        *hi = (block >> 32) as u32;
    }
    let mut x = init;
    for _ in 0..10 {
        double_round(&mut x);
    }
    for (i, (x, init)) in x.iter().zip(&init).enumerate() {
        for lane in 0..LANES {
            let w = x[lane].wrapping_add(init[lane]);
            out[64 * lane + 4 * i..64 * lane + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// `x[a] ^= (x[b] + x[c]) <<< r`, lane by lane.
#[inline(always)]
fn step<const N: usize>(x: &mut [[u32; N]; 16], a: usize, b: usize, c: usize, r: u32) {
    let (xb, xc) = (x[b], x[c]);
    for (xa, (xb, xc)) in x[a].iter_mut().zip(xb.iter().zip(&xc)) {
        *xa ^= xb.wrapping_add(*xc).rotate_left(r);
    }
}

/// One column round and one row round.
#[inline(always)]
fn double_round<const N: usize>(x: &mut [[u32; N]; 16]) {
    for (a, b, c, d) in [(0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11)] {
        step(x, b, a, d, 7);
        step(x, c, b, a, 9);
        step(x, d, c, b, 13);
        step(x, a, d, c, 18);
    }
    for (a, b, c, d) in [(0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)] {
        step(x, b, a, d, 7);
        step(x, c, b, a, 9);
        step(x, d, c, b, 13);
        step(x, a, d, c, 18);
    }
}

#[cfg(test)]
mod tests {
    use salsa20::cipher::{KeyIvInit, StreamCipher};

    use super::*;

    fn reference(key: &[u8; 32], nonce: &[u8; 24], data: &mut [u8]) {
        salsa20::XSalsa20::new(key.into(), nonce.into()).apply_keystream(data);
    }

    #[test]
    fn the_keystream_is_xsalsa20_s_in_pieces_of_every_size() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7 + 1);
        let nonce: [u8; 24] = std::array::from_fn(|i| 200 - i as u8);
        let mut expected = vec![0u8; 5 * BATCH + 77];
        reference(&key, &nonce, &mut expected);
        for cut in [1, 3, 63, 64, 65, 511, 512, 513, 1000, 4096] {
            let mut ours = XSalsa20::new(&key, &nonce);
            let mut got = vec![0u8; expected.len()];
            for (n, piece) in got.chunks_mut(cut).enumerate() {
                // Vary the sizes: a long piece now and then.
                if n % 5 == 4 {
                    ours.apply(piece);
                } else {
                    for half in piece.chunks_mut(cut.div_ceil(2)) {
                        ours.apply(half);
                    }
                }
            }
            assert_eq!(got, expected, "pieces of {cut}");
        }
    }

    #[test]
    fn the_block_counter_carries_into_its_high_word() {
        let (key, nonce) = ([9u8; 32], [4u8; 24]);
        let mut ours = XSalsa20::new(&key, &nonce);
        // Blocks 2^32 - 4 .. 2^32 + 4: the low word wraps within one batch.
        ours.block = (1 << 32) - 4;
        let mut got = [0u8; BATCH];
        ours.apply(&mut got);
        let mut reference = salsa20::XSalsa20::new((&key).into(), (&nonce).into());
        use salsa20::cipher::StreamCipherSeek;
        reference.seek(((1u64 << 32) - 4) * 64);
        let mut expected = [0u8; BATCH];
        reference.apply_keystream(&mut expected);
        assert_eq!(got, expected);
    }

    #[test]
    fn every_implementation_this_cpu_has_computes_the_same_blocks() {
        let state: [u32; 16] = std::array::from_fn(|i| (i as u32).wrapping_mul(0x9e37_79b9));
        let mut portable = [0u8; BATCH];
        blocks_portable(&state, u32::MAX as u64 - 2, &mut portable);
        let mut chosen = [0u8; BATCH];
        blocks(&state, u32::MAX as u64 - 2, &mut chosen);
        assert_eq!(chosen, portable);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut avx2 = [0u8; BATCH];
            // SAFETY: the CPU has AVX2.
            unsafe { blocks_avx2(&state, u32::MAX as u64 - 2, &mut avx2) };
            assert_eq!(avx2, portable);
        }
    }

    #[test]
    fn key_bytes_are_the_key_file_s() {
        let key = PreSharedKey::new(std::array::from_fn(|i| i as u8));
        assert_eq!(key_bytes(&key), std::array::from_fn(|i| i as u8));
    }

    #[tokio::test]
    async fn two_ends_talk_through_the_layer_and_libp2p_pnet_understands_it() {
        use futures::io::AsyncReadExt;
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let key = PreSharedKey::new([5; 32]);
        let (a, b) = tokio::io::duplex(1 << 16);
        let (a, b) = (a.compat(), b.compat());
        let (ours, theirs) = futures::join!(
            handshake(a, &key),
            libp2p::pnet::PnetConfig::new(key).handshake(b)
        );
        let (mut ours, mut theirs) = (ours.unwrap(), theirs.unwrap());
        let message: Vec<u8> = (0..300_000u32).map(|i| (i * 31) as u8).collect();
        let send = async {
            ours.write_all(&message).await.unwrap();
            ours.flush().await.unwrap();
        };
        let mut got = vec![0u8; message.len()];
        let receive = async { theirs.read_exact(&mut got).await.unwrap() };
        futures::join!(send, receive);
        assert_eq!(got, message);
        // And back.
        let reply = b"a reply through libp2p-pnet's writer".to_vec();
        let send = async {
            theirs.write_all(&reply).await.unwrap();
            theirs.flush().await.unwrap();
        };
        let mut back = vec![0u8; reply.len()];
        let receive = async { ours.read_exact(&mut back).await.unwrap() };
        futures::join!(send, receive);
        assert_eq!(back, reply);
    }
}
