//! One connection's half of the election: one outbound stream that carries our messages in
//! order, and the peer's inbound stream that carries theirs.
//!
//! The handler opens its outbound stream as soon as the connection is up. If the peer accepts
//! `/iwant/election/1` it is a participant ([`Event::Supported`]); if it refuses, it is not
//! ([`Event::Unsupported`]) and the handler stays silent for the rest of the connection.

use std::{
    collections::VecDeque,
    io,
    task::{Context, Poll},
};

use futures::{future::BoxFuture, FutureExt};
use libp2p::{
    core::upgrade::ReadyUpgrade,
    swarm::{
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
        ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, StreamUpgradeError,
        SubstreamProtocol,
    },
};

use super::protocol::{self, Message, PROTOCOL_NAME};

/// Most messages waiting for the outbound stream; beyond it the oldest is dropped (every
/// message is either repeated, like heartbeats, or covered by a timeout, like votes).
pub const MAX_QUEUED_MESSAGES: usize = 16;

/// How many times in a row the outbound stream may fail to open or to write before the
/// handler gives up on the connection's election traffic.
pub const MAX_OUTBOUND_FAILURES: u8 = 3;

/// What a handler reports to the behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer accepted our election stream: it is a participant.
    Supported,
    /// The peer does not speak the protocol (or its stream failed for good).
    Unsupported,
    /// The peer sent a message.
    Received(Message),
    /// A [`Message::Goodbye`] was written and flushed.
    GoodbyeSent,
}

type SendFuture = BoxFuture<'static, (io::Result<Stream>, bool)>;
type RecvFuture = BoxFuture<'static, io::Result<(Stream, Message)>>;

enum Outbound {
    /// A stream is to be requested on the next poll.
    Open,
    /// A stream has been requested.
    Opening,
    /// The stream is ready for the next message.
    Idle(Stream),
    /// A message is being written; the flag says whether it is a goodbye.
    Sending(SendFuture),
    /// The peer does not speak the protocol, or the stream failed too often.
    Gone,
}

/// See the [module docs](self).
pub struct Handler {
    outbound: Outbound,
    failures: u8,
    /// Whether [`Event::Supported`] was reported.
    reported: bool,
    queue: VecDeque<Message>,
    inbound: Option<RecvFuture>,
    events: VecDeque<Event>,
}

impl Handler {
    pub(super) fn new() -> Self {
        Self {
            outbound: Outbound::Open,
            failures: 0,
            reported: false,
            queue: VecDeque::new(),
            inbound: None,
            events: VecDeque::new(),
        }
    }

    fn outbound_failed(&mut self, error: &dyn std::fmt::Display) {
        self.failures += 1;
        if self.failures >= MAX_OUTBOUND_FAILURES {
            tracing::debug!(%error, "election stream failed for good");
            self.outbound = Outbound::Gone;
            self.queue.clear();
            self.events.push_back(Event::Unsupported);
        } else {
            tracing::debug!(%error, "election stream failed; opening another");
            self.outbound = Outbound::Open;
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Message;
    type ToBehaviour = Event;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL_NAME), ())
    }

    fn on_behaviour_event(&mut self, message: Message) {
        if matches!(self.outbound, Outbound::Gone) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED_MESSAGES {
            tracing::debug!("election queue full; dropping the oldest message");
            self.queue.pop_front();
        }
        self.queue.push_back(message);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if let Some(inbound) = &mut self.inbound {
                match inbound.poll_unpin(cx) {
                    Poll::Ready(Ok((stream, message))) => {
                        self.inbound = Some(protocol::recv(stream).boxed());
                        return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                            Event::Received(message),
                        ));
                    }
                    Poll::Ready(Err(error)) => {
                        if error.kind() != io::ErrorKind::UnexpectedEof {
                            tracing::debug!(%error, "election stream from the peer failed");
                        }
                        self.inbound = None;
                    }
                    Poll::Pending => {}
                }
            }
            match std::mem::replace(&mut self.outbound, Outbound::Gone) {
                Outbound::Open => {
                    self.outbound = Outbound::Opening;
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL_NAME), ()),
                    });
                }
                Outbound::Idle(stream) => match self.queue.pop_front() {
                    Some(message) => {
                        let goodbye = matches!(message, Message::Goodbye { .. });
                        self.outbound = Outbound::Sending(
                            protocol::send(stream, message)
                                .map(move |r| (r, goodbye))
                                .boxed(),
                        );
                        continue;
                    }
                    None => self.outbound = Outbound::Idle(stream),
                },
                Outbound::Sending(mut sending) => match sending.poll_unpin(cx) {
                    Poll::Ready((Ok(stream), goodbye)) => {
                        self.failures = 0;
                        self.outbound = Outbound::Idle(stream);
                        if goodbye {
                            self.events.push_back(Event::GoodbyeSent);
                        }
                        continue;
                    }
                    Poll::Ready((Err(error), _)) => {
                        self.outbound_failed(&error);
                        continue;
                    }
                    Poll::Pending => self.outbound = Outbound::Sending(sending),
                },
                other => self.outbound = other,
            }
            if self.events.is_empty() {
                return Poll::Pending;
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                // Election traffic alone does not keep a connection open; that is the
                // connection policy's call (`connections`).
                stream.ignore_for_keep_alive();
                self.inbound = Some(protocol::recv(stream).boxed());
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = Outbound::Idle(stream);
                if !self.reported {
                    self.reported = true;
                    self.events.push_back(Event::Supported);
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => match error {
                StreamUpgradeError::NegotiationFailed => {
                    self.outbound = Outbound::Gone;
                    self.queue.clear();
                    self.events.push_back(Event::Unsupported);
                }
                StreamUpgradeError::Timeout => self.outbound_failed(&"negotiation timed out"),
                StreamUpgradeError::Io(error) => self.outbound_failed(&error),
                StreamUpgradeError::Apply(never) => match never {},
            },
            _ => {}
        }
    }

    fn connection_keep_alive(&self) -> bool {
        false
    }
}
