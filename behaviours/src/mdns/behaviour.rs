//! The mDNS behaviour: follows the interfaces, runs one task per IPv4 interface, and turns
//! what they hear into [`Event`]s through the [`Table`].

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use futures_timer::Delay;
use if_watch::{tokio::IfWatcher, IfEvent};
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, ListenAddresses, NetworkBehaviour,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    iface::{self, Heard, Shared},
    table::{Refused, Table},
};

/// How many heard answers wait for the behaviour at most; more are dropped.
const HEARD_QUEUE: usize = 64;

/// How often a refused announcement is logged at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Settings of [`Behaviour::new`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How long other nodes may keep our addresses.
    pub ttl: Duration,
    /// How often we ask the network once settled (a new interface asks at once, then after
    /// 0.5, 1, 2, … s until someone answers).
    pub query_interval: Duration,
}

/// What mDNS found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Addresses heard for the first time (or again after they expired).
    Discovered(Vec<(PeerId, Multiaddr)>),
    /// Addresses not announced again in time.
    Expired(Vec<(PeerId, Multiaddr)>),
}

/// See the [module docs](super).
pub struct Behaviour {
    shared: Arc<Shared>,
    listen: ListenAddresses,
    /// Publishes `listen` to the interface tasks.
    listen_tx: tokio::sync::watch::Sender<Vec<Multiaddr>>,
    if_watch: IfWatcher,
    interfaces: HashMap<Ipv4Addr, JoinHandle<()>>,
    heard_tx: mpsc::Sender<Heard>,
    heard_rx: mpsc::Receiver<Heard>,
    table: Table,
    /// Fires at the table's next expiry.
    timer: Option<(Instant, Delay)>,
    /// The table changed since the timer was set.
    dirty: bool,
    pending: VecDeque<Event>,
    last_refusal_log: Option<Instant>,
}

impl Behaviour {
    /// The mDNS behaviour of node `local`. Needs a tokio runtime (one task per interface).
    pub fn new(config: Config, local: PeerId) -> std::io::Result<Self> {
        let (heard_tx, heard_rx) = mpsc::channel(HEARD_QUEUE);
        let (listen_tx, listen_rx) = tokio::sync::watch::channel(Vec::new());
        Ok(Self {
            shared: Arc::new(Shared {
                local,
                listen: listen_rx,
                ttl: u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX),
                query_interval: config.query_interval,
            }),
            listen: ListenAddresses::default(),
            listen_tx,
            if_watch: IfWatcher::new()?,
            interfaces: HashMap::new(),
            heard_tx,
            heard_rx,
            table: Table::default(),
            timer: None,
            dirty: false,
            pending: VecDeque::new(),
            last_refusal_log: None,
        })
    }

    /// How many peers mDNS holds now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether mDNS holds no peers.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn on_heard(&mut self, heard: Heard) {
        let now = Instant::now();
        let mut found = Vec::new();
        for announcement in heard.peers {
            let ttl = Duration::from_secs(u64::from(announcement.ttl));
            match self
                .table
                .heard(now, heard.ip, announcement.peer, &announcement.addrs, ttl)
            {
                Ok(new) => found.extend(new.into_iter().map(|addr| (announcement.peer, addr))),
                Err(refused) => {
                    if self
                        .last_refusal_log
                        .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY)
                    {
                        self.last_refusal_log = Some(now);
                        let why = match refused {
                            Refused::Full => "mDNS holds as many peers as it may",
                            Refused::IpFull => "that address announced as many peers as it may",
                        };
                        tracing::warn!(ip = %heard.ip, peer = %announcement.peer, "ignoring peers announced by mDNS: {why} (logged once a minute)");
                    }
                }
            }
        }
        if !found.is_empty() {
            self.pending.push_back(Event::Discovered(found));
        }
        self.dirty = true;
    }

    fn publish_listen_addrs(&self) {
        self.listen_tx
            .send_replace(self.listen.iter().cloned().collect());
    }
}

impl Drop for Behaviour {
    fn drop(&mut self) {
        for task in self.interfaces.values() {
            task.abort();
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionEstablished(established) = event {
            self.table.prove(&established.peer_id);
            self.dirty = true;
        }
        if self.listen.on_swarm_event(&event) {
            self.publish_listen_addrs();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        never: THandlerOutEvent<Self>,
    ) {
        let never: Infallible = never;
        match never {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            while let Poll::Ready(Some(event)) = self.if_watch.poll_next_unpin(cx) {
                match event {
                    Ok(IfEvent::Up(net)) => {
                        let IpAddr::V4(addr) = net.addr() else {
                            continue;
                        };
                        if addr.is_loopback() || self.interfaces.contains_key(&addr) {
                            continue;
                        }
                        match iface::spawn(addr, self.shared.clone(), self.heard_tx.clone()) {
                            Ok(task) => {
                                tracing::debug!(iface = %addr, "mDNS on");
                                self.interfaces.insert(addr, task);
                            }
                            Err(error) => {
                                tracing::warn!(iface = %addr, %error, "mDNS cannot use this interface")
                            }
                        }
                    }
                    Ok(IfEvent::Down(net)) => {
                        if let IpAddr::V4(addr) = net.addr() {
                            if let Some(task) = self.interfaces.remove(&addr) {
                                task.abort();
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "mDNS cannot follow the interfaces"),
                }
            }
            // A bounded batch per poll: the swarm's other work goes on during a flood.
            let mut batch = 0;
            while batch < HEARD_QUEUE {
                match self.heard_rx.poll_recv(cx) {
                    Poll::Ready(Some(heard)) => self.on_heard(heard),
                    Poll::Ready(None) | Poll::Pending => break,
                }
                batch += 1;
            }
            if batch == HEARD_QUEUE {
                cx.waker().wake_by_ref();
            }
            if !self.pending.is_empty() {
                continue;
            }
            if std::mem::take(&mut self.dirty) {
                let next = self.table.next_expiry();
                if self.timer.as_ref().map(|(at, _)| *at) != next {
                    let now = Instant::now();
                    self.timer = next.map(|at| (at, Delay::new(at.saturating_duration_since(now))));
                }
            }
            if let Some((_, delay)) = &mut self.timer {
                if delay.poll_unpin(cx).is_ready() {
                    self.timer = None;
                    self.dirty = true;
                    let gone = self.table.expire(Instant::now());
                    if !gone.is_empty() {
                        self.pending.push_back(Event::Expired(gone));
                    }
                    continue;
                }
            }
            return Poll::Pending;
        }
    }
}
