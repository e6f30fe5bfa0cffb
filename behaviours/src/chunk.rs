//! Chunk (`/iwant/chunk/1`): piece bytes over a raw stream.
//!
//! This module is the wire format only, as plain async functions over
//! [`AsyncRead`]/[`AsyncWrite`]; streams are opened and accepted through [`libp2p_stream`], and
//! reading the pieces from disk is the caller's job.
//!
//! A client writes [`Request`]s ([`write_request`]), as many as it likes before reading (it may
//! pipeline). The server answers them strictly in order ([`read_request`], then for each piece
//! [`write_piece`], or [`write_error`] once), and reads at most a few requests ahead of the one
//! it answers, so the stream's flow control bounds the queue. Each answer is up to
//! `count` frames, each a [`Header`] ([`read_header`]) and `len` bytes: [`Status::Ok`] frames for
//! `first`, `first + 1`, ..., ended early by exactly one error frame (`len` 0, `index` the first
//! piece not sent).
//!
//! A server's accept loop must never wait: `libp2p-stream` drops inbound streams while the
//! loop is behind. It hands each stream to its own task, or closes it at once when the peer
//! already has [`MAX_STREAMS_PER_PEER`] streams or the node [`MAX_STREAMS`].
//!
//! Limits: at most [`MAX_PIECES_PER_REQUEST`] pieces per request, pieces of at most
//! [`MAX_PIECE_LEN`] bytes, at most [`MAX_STREAMS_PER_PEER`] streams per peer and
//! [`MAX_STREAMS`] in total at a server. `docs/protocols.md` has the spec.

use std::io;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::wire::Id;

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/iwant/chunk/1");

/// Most pieces one request may name.
pub const MAX_PIECES_PER_REQUEST: u32 = 64;

/// Longest piece a frame may carry (64 MiB): a reader never allocates more than the length it
/// expects, and never more than this.
pub const MAX_PIECE_LEN: u32 = 64 * 1024 * 1024;

/// Request frame length on the wire (op + id + first + count).
pub const REQUEST_LEN: usize = 41;

/// Header length of each response frame (status + index + len).
pub const HEADER_LEN: usize = 9;

/// Most chunk streams a server serves for one peer at once; it closes extra ones unanswered.
pub const MAX_STREAMS_PER_PEER: usize = 8;

/// Most chunk streams a server serves at once in total; it closes extra ones unanswered.
pub const MAX_STREAMS: usize = 64;

/// The request op byte: "get pieces".
const OP_GET: u8 = 1;

/// "Send me pieces `first .. first + count` of the file `id`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The file's content id.
    pub id: Id,
    /// The first piece wanted.
    pub first: u32,
    /// How many pieces, 1 to [`MAX_PIECES_PER_REQUEST`]; `first + count` fits a `u32`.
    pub count: u32,
}

impl Request {
    /// Checks the bounds that [`read_request`] enforces; the error says which one was broken.
    pub fn check(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_PIECES_PER_REQUEST {
            return Err(format!(
                "a request for {} pieces, not 1 to {MAX_PIECES_PER_REQUEST}",
                self.count
            ));
        }
        if self.first.checked_add(self.count).is_none() {
            return Err(format!(
                "a request for {} pieces from {}, past piece {}",
                self.count,
                self.first,
                u32::MAX
            ));
        }
        Ok(())
    }
}

/// The status of a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The frame carries piece `index`.
    Ok = 0,
    /// This node does not share the id (now).
    NotFound = 1,
    /// Piece `index` is past the file's last piece.
    OutOfRange = 2,
    /// This node shares the id but cannot read piece `index` now (e.g. the file changed on
    /// disk); ask another holder.
    Unavailable = 3,
    /// This node is serving too much; try again shortly.
    Busy = 4,
}

impl TryFrom<u8> for Status {
    type Error = u8;

    /// The status with this wire byte; the byte itself if there is none.
    fn try_from(b: u8) -> Result<Self, u8> {
        Ok(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::OutOfRange,
            3 => Status::Unavailable,
            4 => Status::Busy,
            other => return Err(other),
        })
    }
}

/// The header of a response frame; `len` bytes of piece data follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Ok, or why the answer ends here.
    pub status: Status,
    /// The piece carried, or for an error the first piece not sent.
    pub index: u32,
    /// Bytes of data that follow: the piece's length when Ok, 0 otherwise.
    pub len: u32,
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Writes one request frame; does not flush (callers pipeline, then flush).
///
/// InvalidInput, with nothing written, for a request that [`read_request`] would refuse.
pub async fn write_request<W: AsyncWrite + Unpin>(io: &mut W, req: &Request) -> io::Result<()> {
    let mut buf = Vec::with_capacity(REQUEST_LEN);
    encode_request(req, &mut buf)?;
    io.write_all(&buf).await
}

/// Appends the request frame of `req` to `out` (to send several requests in one write).
///
/// InvalidInput, with nothing appended, if the request breaks a bound ([`Request::check`]).
pub fn encode_request(req: &Request, out: &mut Vec<u8>) -> io::Result<()> {
    req.check().map_err(invalid_input)?;
    out.push(OP_GET);
    out.extend_from_slice(&req.id.0);
    out.extend_from_slice(&req.first.to_le_bytes());
    out.extend_from_slice(&req.count.to_le_bytes());
    Ok(())
}

/// Reads one request frame.
///
/// `Ok(None)` on a clean end of stream before any byte of a frame; UnexpectedEof on one inside
/// a frame; InvalidData on a bad op, count == 0 or count > MAX_PIECES_PER_REQUEST, or
/// first + count overflowing u32.
pub async fn read_request<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Option<Request>> {
    let mut op = [0u8; 1];
    loop {
        match io.read(&mut op).await {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if op[0] != OP_GET {
        return Err(invalid_data(format!("unknown chunk request op {}", op[0])));
    }
    let mut buf = [0u8; REQUEST_LEN - 1];
    io.read_exact(&mut buf).await?;
    let mut id = [0u8; 32];
    id.copy_from_slice(&buf[..32]);
    let req = Request {
        id: Id(id),
        first: u32::from_le_bytes([buf[32], buf[33], buf[34], buf[35]]),
        count: u32::from_le_bytes([buf[36], buf[37], buf[38], buf[39]]),
    };
    req.check().map_err(invalid_data)?;
    Ok(Some(req))
}

fn header_bytes(status: Status, index: u32, len: u32) -> [u8; HEADER_LEN] {
    let mut buf = [0u8; HEADER_LEN];
    buf[0] = status as u8;
    buf[1..5].copy_from_slice(&index.to_le_bytes());
    buf[5..9].copy_from_slice(&len.to_le_bytes());
    buf
}

/// Writes an Ok frame: the header, then `data`, piece `index`; does not flush.
///
/// InvalidInput, with nothing written, if `data` is longer than [`MAX_PIECE_LEN`].
pub async fn write_piece<W: AsyncWrite + Unpin>(
    io: &mut W,
    index: u32,
    data: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|len| *len <= MAX_PIECE_LEN)
        .ok_or_else(|| {
            invalid_input(format!(
                "a piece of {} bytes, more than {MAX_PIECE_LEN}",
                data.len()
            ))
        })?;
    io.write_all(&header_bytes(Status::Ok, index, len)).await?;
    io.write_all(data).await
}

/// Writes an Ok frame for piece `index` in one write from `frame`: its first [`HEADER_LEN`]
/// bytes are room for the header (overwritten here), the rest is the piece. Does not flush.
/// One write sends the frame in one piece down a multiplexed stream, where header and data
/// written apart would each cost a frame of their own.
///
/// InvalidInput, with nothing written, if `frame` is shorter than the header or its piece
/// longer than [`MAX_PIECE_LEN`].
pub async fn write_piece_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    index: u32,
    frame: &mut [u8],
) -> io::Result<()> {
    let len = frame
        .len()
        .checked_sub(HEADER_LEN)
        .and_then(|len| u32::try_from(len).ok())
        .filter(|len| *len <= MAX_PIECE_LEN)
        .ok_or_else(|| {
            invalid_input(format!(
                "a frame of {} bytes: not a header and a piece of at most {MAX_PIECE_LEN}",
                frame.len()
            ))
        })?;
    frame[..HEADER_LEN].copy_from_slice(&header_bytes(Status::Ok, index, len));
    io.write_all(frame).await
}

/// Writes an error frame (`len` 0) that ends the answer to a request at piece `index`, the first
/// piece not sent; does not flush.
///
/// InvalidInput, with nothing written, if `status` is [`Status::Ok`].
pub async fn write_error<W: AsyncWrite + Unpin>(
    io: &mut W,
    status: Status,
    index: u32,
) -> io::Result<()> {
    if status == Status::Ok {
        return Err(invalid_input(
            "an error frame needs an error status, not Ok".to_string(),
        ));
    }
    io.write_all(&header_bytes(status, index, 0)).await
}

/// Reads one frame header (exactly [`HEADER_LEN`] bytes, never the data after it).
///
/// UnexpectedEof if the stream ends first; InvalidData on an unknown status byte,
/// len > MAX_PIECE_LEN, or an error frame with len != 0.
pub async fn read_header<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Header> {
    let mut buf = [0u8; HEADER_LEN];
    io.read_exact(&mut buf).await?;
    let status = Status::try_from(buf[0])
        .map_err(|b| invalid_data(format!("unknown chunk frame status {b}")))?;
    let index = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let len = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    if len > MAX_PIECE_LEN {
        return Err(invalid_data(format!(
            "a frame of {len} bytes, more than {MAX_PIECE_LEN}"
        )));
    }
    if status != Status::Ok && len != 0 {
        return Err(invalid_data(format!(
            "a {status:?} frame with {len} bytes of data"
        )));
    }
    Ok(Header { status, index, len })
}

/// Reads the data of an Ok frame whose header is `header`, into `buf` (cleared first), when
/// `header.len` is the `expected` length of that piece; allocates at most `expected` bytes.
///
/// InvalidData, with nothing read, if `header.len != expected` or `header` is not Ok;
/// UnexpectedEof if the stream ends first.
pub async fn read_piece<R: AsyncRead + Unpin>(
    io: &mut R,
    header: &Header,
    expected: u32,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    if header.status != Status::Ok {
        return Err(invalid_data(format!(
            "a {:?} frame carries no piece",
            header.status
        )));
    }
    if header.len != expected {
        return Err(invalid_data(format!(
            "piece {} of {} bytes where {expected} were expected",
            header.index, header.len
        )));
    }
    buf.clear();
    buf.resize(expected as usize, 0);
    io.read_exact(buf).await
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use futures::{executor::block_on, io::Cursor};

    use super::*;

    fn req(first: u32, count: u32) -> Request {
        Request {
            id: Id([0x5a; 32]),
            first,
            count,
        }
    }

    fn request_bytes(op: u8, first: u32, count: u32) -> Vec<u8> {
        let mut v = vec![op];
        v.extend([0x5a; 32]);
        v.extend(first.to_le_bytes());
        v.extend(count.to_le_bytes());
        v
    }

    fn kind<T: std::fmt::Debug>(r: io::Result<T>) -> io::ErrorKind {
        r.expect_err("an error").kind()
    }

    /// A reader that hands out at most one byte per read, to prove frames survive any split.
    struct Trickle<R>(R);

    impl<R: AsyncRead + Unpin> AsyncRead for Trickle<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(1);
            Pin::new(&mut self.0).poll_read(cx, &mut buf[..n])
        }
    }

    #[test]
    fn requests_round_trip_and_have_the_documented_layout() {
        let mut out = Vec::new();
        block_on(async {
            write_request(&mut out, &req(1, 64)).await.unwrap();
            write_request(&mut out, &req(u32::MAX - 1, 1))
                .await
                .unwrap();
        });
        assert_eq!(out.len(), 2 * REQUEST_LEN);
        assert_eq!(out[..REQUEST_LEN], request_bytes(1, 1, 64));
        let mut cursor = Cursor::new(out);
        block_on(async {
            assert_eq!(read_request(&mut cursor).await.unwrap(), Some(req(1, 64)));
            assert_eq!(
                read_request(&mut cursor).await.unwrap(),
                Some(req(u32::MAX - 1, 1))
            );
            assert_eq!(read_request(&mut cursor).await.unwrap(), None);
        });
    }

    #[test]
    fn the_doc_example_bytes_are_what_is_written() {
        let request = Request {
            id: Id(std::array::from_fn(|i| i as u8)),
            first: 2,
            count: 3,
        };
        let mut out = Vec::new();
        block_on(write_request(&mut out, &request)).unwrap();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0200000003000000"
        );
        // Piece 2 of a 700,000-byte file: 700,000 - 2 × 262,144 = 175,712 bytes.
        let piece = vec![0xab; 175_712];
        let mut out = Vec::new();
        block_on(write_piece(&mut out, 2, &piece)).unwrap();
        assert_eq!(
            out[..HEADER_LEN],
            [0x00, 2, 0, 0, 0, 0x60, 0xae, 0x02, 0x00]
        );
        assert_eq!(out[HEADER_LEN..], piece[..]);
        // The same frame written from one buffer, and two requests in one.
        let mut frame = vec![0xff; HEADER_LEN];
        frame.extend_from_slice(&piece);
        let mut framed = Vec::new();
        block_on(write_piece_frame(&mut framed, 2, &mut frame)).unwrap();
        assert_eq!(framed, out);
        let mut short = [0u8; HEADER_LEN - 1];
        assert!(block_on(write_piece_frame(&mut Vec::new(), 0, &mut short)).is_err());
        let mut two = Vec::new();
        encode_request(&request, &mut two).unwrap();
        encode_request(&request, &mut two).unwrap();
        let mut one = Vec::new();
        block_on(write_request(&mut one, &request)).unwrap();
        assert_eq!(two, [one.clone(), one].concat());
        let bad = Request {
            count: 0,
            ..request
        };
        assert!(encode_request(&bad, &mut two).is_err());
        assert_eq!(
            two.len(),
            2 * REQUEST_LEN,
            "nothing appended for a bad request"
        );
        let mut out = Vec::new();
        block_on(write_error(&mut out, Status::OutOfRange, 3)).unwrap();
        assert_eq!(out, [0x02, 3, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_requests_are_invalid_data() {
        for bytes in [
            request_bytes(0, 0, 1),
            request_bytes(2, 0, 1),
            request_bytes(0xff, 0, 1),
            request_bytes(1, 0, 0),
            request_bytes(1, 0, MAX_PIECES_PER_REQUEST + 1),
            request_bytes(1, 0, u32::MAX),
            request_bytes(1, u32::MAX, 1),
            request_bytes(1, u32::MAX - 63, 64),
        ] {
            let r = block_on(read_request(&mut Cursor::new(bytes.clone())));
            assert_eq!(kind(r), io::ErrorKind::InvalidData, "{bytes:02x?}");
        }
        // The largest range that still fits.
        let ok = block_on(read_request(&mut Cursor::new(request_bytes(
            1,
            u32::MAX - 64,
            64,
        ))));
        assert_eq!(ok.unwrap(), Some(req(u32::MAX - 64, 64)));
    }

    #[test]
    fn bad_requests_are_not_written() {
        for bad in [
            req(0, 0),
            req(0, MAX_PIECES_PER_REQUEST + 1),
            req(u32::MAX, 1),
        ] {
            let mut out = Vec::new();
            assert_eq!(
                kind(block_on(write_request(&mut out, &bad))),
                io::ErrorKind::InvalidInput
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn truncated_requests_are_unexpected_eof() {
        let full = request_bytes(1, 3, 4);
        for cut in 1..REQUEST_LEN {
            let r = block_on(read_request(&mut Cursor::new(full[..cut].to_vec())));
            assert_eq!(kind(r), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn frames_round_trip_through_a_reader_that_splits_everything() {
        let mut out = Vec::new();
        block_on(async {
            write_piece(&mut out, 7, &[1, 2, 3]).await.unwrap();
            write_piece(&mut out, 8, &[]).await.unwrap();
            write_error(&mut out, Status::Unavailable, 9).await.unwrap();
            write_error(&mut out, Status::NotFound, 0).await.unwrap();
            write_error(&mut out, Status::Busy, 1).await.unwrap();
            write_error(&mut out, Status::OutOfRange, 2).await.unwrap();
        });
        let mut r = Trickle(Cursor::new(out));
        let mut buf = vec![0xee; 100];
        block_on(async {
            let h = read_header(&mut r).await.unwrap();
            assert_eq!(
                h,
                Header {
                    status: Status::Ok,
                    index: 7,
                    len: 3
                }
            );
            read_piece(&mut r, &h, 3, &mut buf).await.unwrap();
            assert_eq!(buf, [1, 2, 3]);
            let h = read_header(&mut r).await.unwrap();
            assert_eq!((h.status, h.index, h.len), (Status::Ok, 8, 0));
            read_piece(&mut r, &h, 0, &mut buf).await.unwrap();
            assert!(buf.is_empty());
            for (status, index) in [
                (Status::Unavailable, 9),
                (Status::NotFound, 0),
                (Status::Busy, 1),
                (Status::OutOfRange, 2),
            ] {
                let h = read_header(&mut r).await.unwrap();
                assert_eq!(
                    h,
                    Header {
                        status,
                        index,
                        len: 0
                    }
                );
                assert_eq!(
                    kind(read_piece(&mut r, &h, 0, &mut buf).await),
                    io::ErrorKind::InvalidData
                );
            }
            assert_eq!(
                kind(read_header(&mut r).await),
                io::ErrorKind::UnexpectedEof
            );
        });
    }

    #[test]
    fn bad_frames_are_invalid_data_or_invalid_input() {
        let header = |status: u8, len: u32| {
            let mut v = vec![status];
            v.extend(0u32.to_le_bytes());
            v.extend(len.to_le_bytes());
            v
        };
        for bytes in [
            header(5, 0),
            header(0xff, 0),
            header(0, MAX_PIECE_LEN + 1),
            header(0, u32::MAX),
            header(1, 1),
            header(4, MAX_PIECE_LEN),
        ] {
            let r = block_on(read_header(&mut Cursor::new(bytes.clone())));
            assert_eq!(kind(r), io::ErrorKind::InvalidData, "{bytes:02x?}");
        }
        let mut out = Vec::new();
        assert_eq!(
            kind(block_on(write_error(&mut out, Status::Ok, 0))),
            io::ErrorKind::InvalidInput
        );
        let too_long = vec![0u8; MAX_PIECE_LEN as usize + 1];
        assert_eq!(
            kind(block_on(write_piece(&mut out, 0, &too_long))),
            io::ErrorKind::InvalidInput
        );
        assert!(out.is_empty(), "nothing written for refused frames");
    }

    #[test]
    fn a_piece_of_the_wrong_length_is_refused_before_reading() {
        let mut out = Vec::new();
        block_on(write_piece(&mut out, 0, &[9; 10])).unwrap();
        let mut r = Cursor::new(out);
        let mut buf = Vec::new();
        block_on(async {
            let h = read_header(&mut r).await.unwrap();
            assert_eq!(
                kind(read_piece(&mut r, &h, 11, &mut buf).await),
                io::ErrorKind::InvalidData
            );
            assert_eq!(r.position(), HEADER_LEN as u64, "no data was read");
            assert_eq!(buf.capacity(), 0, "nothing was allocated");
        });
    }

    #[test]
    fn truncated_frames_are_unexpected_eof() {
        let mut full = Vec::new();
        block_on(write_piece(&mut full, 3, &[7; 20])).unwrap();
        for cut in 0..HEADER_LEN {
            let r = block_on(read_header(&mut Cursor::new(full[..cut].to_vec())));
            assert_eq!(kind(r), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        for cut in HEADER_LEN..full.len() {
            let mut r = Cursor::new(full[..cut].to_vec());
            let mut buf = Vec::new();
            let r = block_on(async {
                let h = read_header(&mut r).await?;
                read_piece(&mut r, &h, 20, &mut buf).await
            });
            assert_eq!(kind(r), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_length_claim_reads_only_the_header() {
        let mut bytes = vec![0u8];
        bytes.extend(5u32.to_le_bytes());
        bytes.extend(MAX_PIECE_LEN.to_le_bytes());
        let mut r = Cursor::new(bytes);
        let h = block_on(read_header(&mut r)).unwrap();
        assert_eq!(h.len, MAX_PIECE_LEN);
        assert_eq!(r.position(), HEADER_LEN as u64);
        // A reader expecting a 1 KiB piece refuses it without allocating.
        let mut buf = Vec::new();
        assert_eq!(
            kind(block_on(read_piece(&mut r, &h, 1024, &mut buf))),
            io::ErrorKind::InvalidData
        );
        assert_eq!(buf.capacity(), 0);
    }

    /// A server answering pipelined requests from an in-memory "file" of `pieces`, in the way
    /// the protocol requires: strictly in order, reading a request only after answering the
    /// last, flushing after each answer.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        io: &mut S,
        id: Id,
        pieces: &[Vec<u8>],
    ) -> io::Result<()> {
        while let Some(request) = read_request(io).await? {
            if request.id != id {
                write_error(io, Status::NotFound, request.first).await?;
            } else {
                for index in request.first..request.first + request.count {
                    match pieces.get(index as usize) {
                        Some(piece) => write_piece(io, index, piece).await?,
                        None => {
                            write_error(io, Status::OutOfRange, index).await?;
                            break;
                        }
                    }
                }
            }
            io.flush().await?;
        }
        io.close().await
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_over_a_duplex() {
        let id = Id([1; 32]);
        let pieces: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let (client_end, server_end) = duplex();
        let (mut client_read, mut client_write) = client_end.split();
        let mut server = server_end;
        let requests = [
            req(0, 3),
            Request { id, ..req(0, 4) },
            Request { id, ..req(8, 5) },
            Request { id, ..req(4, 1) },
        ];
        block_on(async {
            let server = serve(&mut server, id, &pieces);
            let client_writes = async {
                for r in &requests {
                    write_request(&mut client_write, r).await?;
                }
                client_write.flush().await?;
                client_write.close().await
            };
            let client_reads = async {
                let mut got = Vec::new();
                let mut buf = Vec::new();
                loop {
                    let h = match read_header(&mut client_read).await {
                        Ok(h) => h,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e),
                    };
                    if h.status == Status::Ok {
                        let expected = pieces[h.index as usize].len() as u32;
                        read_piece(&mut client_read, &h, expected, &mut buf).await?;
                        assert_eq!(buf, pieces[h.index as usize]);
                    }
                    got.push((h.status, h.index));
                }
                Ok::<_, io::Error>(got)
            };
            let (s, w, got) = futures::join!(server, client_writes, client_reads);
            s.unwrap();
            w.unwrap();
            let ok = Status::Ok;
            assert_eq!(
                got.unwrap(),
                [
                    (Status::NotFound, 0),
                    (ok, 0),
                    (ok, 1),
                    (ok, 2),
                    (ok, 3),
                    (ok, 8),
                    (ok, 9),
                    (Status::OutOfRange, 10),
                    (ok, 4),
                ]
            );
        });
    }

    /// A bidirectional in-memory byte pipe with a small buffer each way, so that writers wait
    /// for readers as they would on a real stream.
    fn duplex() -> (Pipe, Pipe) {
        let (a_tx, b_rx) = futures::channel::mpsc::channel::<Vec<u8>>(2);
        let (b_tx, a_rx) = futures::channel::mpsc::channel::<Vec<u8>>(2);
        (
            Pipe {
                tx: Some(a_tx),
                rx: a_rx,
                pending: Vec::new(),
            },
            Pipe {
                tx: Some(b_tx),
                rx: b_rx,
                pending: Vec::new(),
            },
        )
    }

    struct Pipe {
        tx: Option<futures::channel::mpsc::Sender<Vec<u8>>>,
        rx: futures::channel::mpsc::Receiver<Vec<u8>>,
        pending: Vec<u8>,
    }

    impl AsyncRead for Pipe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            use futures::Stream;
            while self.pending.is_empty() {
                match Pin::new(&mut self.rx).poll_next(cx) {
                    Poll::Ready(Some(chunk)) => self.pending = chunk,
                    Poll::Ready(None) => return Poll::Ready(Ok(0)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let Some(tx) = self.tx.as_mut() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            match tx.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    // Small pieces, so frames arrive split at odd places.
                    let n = buf.len().min(300);
                    match tx.start_send(buf[..n].to_vec()) {
                        Ok(()) => Poll::Ready(Ok(n)),
                        Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                    }
                }
                Poll::Ready(Err(_)) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Pending => Poll::Pending,
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.tx = None;
            Poll::Ready(Ok(()))
        }
    }

    /// xorshift64*: deterministic pseudo-random bytes without a crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn random_bytes_never_panic_the_readers() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut requests, mut headers) = (0, 0);
        for round in 0..20_000u32 {
            let bytes = if round.is_multiple_of(2) {
                let len = (rng.next() % 100) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                mutated_frames(&mut rng)
            };
            let mut r = Cursor::new(bytes.clone());
            while let Ok(Some(req)) = block_on(read_request(&mut r)) {
                assert!(req.count >= 1 && req.count <= MAX_PIECES_PER_REQUEST);
                assert!(req.first.checked_add(req.count).is_some());
                requests += 1;
            }
            let mut r = Cursor::new(bytes);
            while let Ok(h) = block_on(read_header(&mut r)) {
                assert!(h.len <= MAX_PIECE_LEN);
                assert!(h.status == Status::Ok || h.len == 0);
                headers += 1;
                if h.status == Status::Ok {
                    // A reader expects a length of its own; here, whatever is left, capped.
                    let expected = (r.get_ref().len() as u64 - r.position()).min(64) as u32;
                    let before = r.position();
                    let mut buf = Vec::new();
                    if block_on(read_piece(&mut r, &h, expected, &mut buf)).is_err() {
                        assert_eq!(r.position(), before, "a refused piece reads nothing");
                        break;
                    }
                    assert!(buf.capacity() <= 64);
                }
            }
        }
        assert!(requests > 500 && headers > 500, "{requests} {headers}");
    }

    /// A few well-formed requests and frames with small numbers, then a few bytes flipped and
    /// the end cut at random, so the readers' deeper checks run too.
    fn mutated_frames(rng: &mut XorShift) -> Vec<u8> {
        let small = |rng: &mut XorShift| match rng.next() % 4 {
            0 => rng.next() as u32,
            1 => u32::MAX - (rng.next() % 70) as u32,
            _ => (rng.next() % 70) as u32,
        };
        let mut out = Vec::new();
        for _ in 0..(rng.next() % 4 + 1) {
            if rng.next().is_multiple_of(2) {
                out.push(OP_GET);
                out.extend([rng.next() as u8; 32]);
                out.extend(small(rng).to_le_bytes());
                out.extend(small(rng).to_le_bytes());
            } else {
                let len = small(rng) % 80;
                out.push((rng.next() % 6) as u8);
                out.extend(small(rng).to_le_bytes());
                out.extend(len.to_le_bytes());
                out.extend((0..len).map(|_| rng.next() as u8));
            }
        }
        for _ in 0..(rng.next() % 3) {
            let i = (rng.next() as usize) % out.len();
            out[i] = rng.next() as u8;
        }
        let keep = out.len() - (rng.next() as usize % 4).min(out.len());
        out.truncate(keep);
        out
    }
}
