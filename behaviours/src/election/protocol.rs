//! The wire format of `/iwant/election/1`: length-prefixed CBOR messages on one long-lived
//! stream per direction and connection.
//!
//! Each frame is one length byte `n` (1 ≤ `n` ≤ [`MAX_MESSAGE_SIZE`]) followed by `n` bytes of
//! CBOR (`cbor4ii` with serde, the encoding of libp2p's `cbor` codec). A frame over the limit,
//! or one that does not decode, ends the stream. See `docs/protocols.md`.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The protocol id.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/iwant/election/1");

/// The largest encoded message, in bytes (the largest real one is about 40).
pub const MAX_MESSAGE_SIZE: usize = 64;

/// One election message. Every message carries the sender's term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// "I lead `term`": sent by a leader to every participant every heartbeat interval, and at
    /// once to a new participant.
    Heartbeat {
        /// The leader's term.
        term: u64,
    },
    /// "Vote for me in `term`": sent by a candidate to every participant.
    VoteRequest {
        /// The term the candidate stands in.
        term: u64,
    },
    /// The answer to a [`Message::VoteRequest`].
    VoteReply {
        /// The term of the request if granted; the voter's own term if denied.
        term: u64,
        /// Whether the vote is granted.
        granted: bool,
    },
    /// "I lead `term` no more": sent by a leader that shuts down gracefully.
    Goodbye {
        /// The leader's term.
        term: u64,
    },
}

/// How far ahead of a node's own term a message's term may be (2^32); messages further ahead
/// are ignored. Honest terms grow by one per election.
pub const MAX_TERM_JUMP: u64 = 1 << 32;

impl Message {
    /// The term the message carries.
    pub fn term(&self) -> u64 {
        match self {
            Message::Heartbeat { term }
            | Message::VoteRequest { term }
            | Message::VoteReply { term, .. }
            | Message::Goodbye { term } => *term,
        }
    }

    /// The CBOR encoding of the message.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let bytes = cbor4ii::serde::to_vec(Vec::with_capacity(MAX_MESSAGE_SIZE), self)
            .map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(io::Error::other("bug: an election message over the limit"));
        }
        Ok(bytes)
    }

    /// Decodes one message from its CBOR encoding.
    pub fn decode(bytes: &[u8]) -> io::Result<Message> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "election message over the limit",
            ));
        }
        cbor4ii::serde::from_slice(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// Writes one framed message to `stream` and flushes it.
pub async fn send<S>(mut stream: S, message: Message) -> io::Result<S>
where
    S: AsyncWrite + Unpin,
{
    let body = message.encode()?;
    let mut frame = Vec::with_capacity(body.len() + 1);
    frame.push(body.len() as u8);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(stream)
}

/// Reads one framed message from `stream`.
pub async fn recv<S>(mut stream: S) -> io::Result<(S, Message)>
where
    S: AsyncRead + Unpin,
{
    let mut len = [0u8; 1];
    stream.read_exact(&mut len).await?;
    let len = usize::from(len[0]);
    if len == 0 || len > MAX_MESSAGE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("election frame of {len} bytes"),
        ));
    }
    let mut body = [0u8; MAX_MESSAGE_SIZE];
    stream.read_exact(&mut body[..len]).await?;
    let message = Message::decode(&body[..len])?;
    Ok((stream, message))
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    #[test]
    fn every_message_round_trips_within_the_limit() {
        let all = [
            Message::Heartbeat { term: u64::MAX },
            Message::VoteRequest { term: 0 },
            Message::VoteReply {
                term: u64::MAX,
                granted: false,
            },
            Message::Goodbye { term: 7 },
        ];
        for message in all {
            let bytes = message.encode().unwrap();
            assert!(
                bytes.len() <= MAX_MESSAGE_SIZE,
                "{message:?}: {}",
                bytes.len()
            );
            assert_eq!(Message::decode(&bytes).unwrap(), message);
            let framed = futures::executor::block_on(send(Cursor::new(Vec::new()), message))
                .unwrap()
                .into_inner();
            let (_, back) = futures::executor::block_on(recv(Cursor::new(framed))).unwrap();
            assert_eq!(back, message);
        }
    }

    #[test]
    fn oversized_or_garbage_frames_are_refused() {
        let frames: [&[u8]; 4] = [&[0], &[65], &[3, 0xff, 0xff, 0xff], &[5, 1, 2]];
        for frame in frames {
            let result = futures::executor::block_on(recv(Cursor::new(frame.to_vec())));
            assert!(result.is_err(), "{frame:?} was accepted");
        }
    }
}
