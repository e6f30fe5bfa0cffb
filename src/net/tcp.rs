//! The TCP transport: listeners bound without `SO_REUSEPORT`, dials through libp2p-tcp.
//!
//! libp2p-tcp binds every listener with `SO_REUSEPORT` on Unix, so several processes of one
//! user can all listen on the same port and the kernel spreads incoming connections among
//! them: a second node on `4747` neither fails nor falls back, and dials reach either node.
//! [`Transport`] binds its own listeners instead:
//! - on Unix with `SO_REUSEADDR` only (a restart can bind a port with connections still in
//!   `TIME_WAIT`; a port another socket listens on stays taken);
//! - on Windows with no option at all (`SO_REUSEADDR` there lets another socket take the
//!   port over);
//! - IPv6 listeners are IPv6 only, as in libp2p-tcp.
//!
//! A taken port fails [`libp2p::core::Transport::listen_on`] at once with `AddrInUse`. A
//! listener on an unspecified address (`0.0.0.0`, `::`) reports one address per interface
//! address of its family and follows interfaces that come and go (`if-watch`), so mDNS and
//! identify advertise concrete addresses. An accept error (such as too many open files) is
//! reported as a listener error and the listener pauses for [`ACCEPT_ERROR_PAUSE`], then goes
//! on. Dials go to libp2p-tcp unchanged; iwant dials from a new port anyway.

use std::{
    collections::VecDeque,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{future, StreamExt};
use if_watch::IfEvent;
use libp2p::{
    core::transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    multiaddr::Protocol,
    tcp, Multiaddr,
};
use socket2::{Domain, Socket, Type};

/// How long a listener waits after an accept or interface-watch error before it tries again.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How many connections may wait in a listener's accept queue (libp2p-tcp's default).
pub const LISTEN_BACKLOG: i32 = 1024;

/// How long a connection may carry nothing before the kernel starts probing it (TCP
/// keepalive).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);

/// How far apart the kernel's keepalive probes go.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// How many unanswered keepalive probes make a connection dead (where the platform lets us
/// choose; Windows always sends 10).
pub const KEEPALIVE_PROBES: u32 = 3;

/// How long sent data may stay unacknowledged before the connection fails (Linux).
pub const USER_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunes a connected stream: `TCP_NODELAY`, and liveness left to the kernel. A peer that
/// vanishes without a word (a pulled cable, a switched-off machine, a cut link) is found dead
/// by the kernel after about [`KEEPALIVE_IDLE`] + [`KEEPALIVE_PROBES`] × [`KEEPALIVE_INTERVAL`]
/// of silence (5 s), or [`USER_TIMEOUT`] after data it did not acknowledge; the connection then
/// fails and closes like any other. Probes cost the node nothing (the kernel answers and
/// sends them), so this scales to hundreds of connections, where pinging every connection
/// every second from the node does not.
pub fn tune(stream: &tokio::net::TcpStream) {
    let socket = socket2::SockRef::from(stream);
    if let Err(error) = socket.set_tcp_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(not(windows))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket.set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Tunes a dialed stream ([`tune`]).
fn tuned(stream: tcp::tokio::TcpStream) -> tcp::tokio::TcpStream {
    tune(&stream.0);
    stream
}

/// What a listener hands the swarm for each accepted connection: the stream itself.
type Upgrade = future::Ready<Result<tcp::tokio::TcpStream, io::Error>>;

type Event = TransportEvent<Upgrade, io::Error>;

/// TCP with exclusive listeners (see the [module docs](self)); `TCP_NODELAY` on every stream.
pub struct Transport {
    dialer: tcp::tokio::Transport,
    listeners: Vec<Listener>,
    /// Events to hand out before polling the listeners (new addresses, closed listeners).
    pending: VecDeque<Event>,
    /// Where to wake the swarm when `pending` grows outside of `poll`.
    waker: Option<Waker>,
}

impl Default for Transport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport {
    /// A transport with no listeners.
    pub fn new() -> Self {
        Transport {
            dialer: tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
            listeners: Vec::new(),
            pending: VecDeque::new(),
            waker: None,
        }
    }

    fn push(&mut self, event: Event) {
        self.pending.push_back(event);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Binds a listening socket on `addr` without `SO_REUSEPORT`.
pub fn bind_exclusive(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Unix: lets a restarted node bind while old connections sit in TIME_WAIT; a listening
    // socket still blocks the port. Windows: would let others steal the port, so not there.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl libp2p::core::Transport for Transport {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = Upgrade;
    type Dial = futures::future::MapOk<
        <tcp::tokio::Transport as libp2p::core::Transport>::Dial,
        fn(tcp::tokio::TcpStream) -> tcp::tokio::TcpStream,
    >;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        let Some(socket_addr) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let std_listener = bind_exclusive(socket_addr).map_err(TransportError::Other)?;
        let local = std_listener.local_addr().map_err(TransportError::Other)?;
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(TransportError::Other)?;
        let if_watcher = if local.ip().is_unspecified() {
            Some(if_watch::tokio::IfWatcher::new().map_err(TransportError::Other)?)
        } else {
            self.push(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: to_multiaddr(local.ip(), local.port()),
            });
            None
        };
        tracing::debug!(addr = %local, "listening");
        self.listeners.push(Listener {
            id,
            local,
            listener,
            if_watcher,
            pause: None,
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(i) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        // Dropping the socket frees the port at once.
        self.listeners.swap_remove(i);
        self.push(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        // The dialer has no listeners, so it never binds a dial to a listen port.
        let dial = self.dialer.dial(addr, opts)?;
        Ok(futures::TryFutureExt::map_ok(
            dial,
            tuned as fn(tcp::tokio::TcpStream) -> tcp::tokio::TcpStream,
        ))
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        let this = &mut *self;
        if let Some(event) = this.pending.pop_front() {
            return Poll::Ready(event);
        }
        for i in 0..this.listeners.len() {
            if let Poll::Ready(event) = this.listeners[i].poll(cx) {
                // The others go first next time, so a busy listener cannot starve them.
                this.listeners[i..].rotate_left(1);
                return Poll::Ready(event);
            }
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// One listening socket.
struct Listener {
    id: ListenerId,
    /// The bound address (port resolved); its IP may be unspecified.
    local: SocketAddr,
    listener: tokio::net::TcpListener,
    /// Interface addresses, for a listener on an unspecified address.
    if_watcher: Option<if_watch::tokio::IfWatcher>,
    /// Set after an error: nothing is accepted until it has passed.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Listener {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(pause) = &mut self.pause {
            if std::future::Future::poll(pause.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        if let Some(watcher) = &mut self.if_watcher {
            while let Poll::Ready(Some(event)) = watcher.poll_next_unpin(cx) {
                let (ip, up) = match event {
                    Ok(IfEvent::Up(net)) => (net.addr(), true),
                    Ok(IfEvent::Down(net)) => (net.addr(), false),
                    Err(error) => return Poll::Ready(self.error(error)),
                };
                if ip.is_ipv4() != self.local.is_ipv4() {
                    continue;
                }
                let listen_addr = to_multiaddr(ip, self.local.port());
                let listener_id = self.id;
                return Poll::Ready(if up {
                    TransportEvent::NewAddress {
                        listener_id,
                        listen_addr,
                    }
                } else {
                    TransportEvent::AddressExpired {
                        listener_id,
                        listen_addr,
                    }
                });
            }
        }
        match self.listener.poll_accept(cx) {
            Poll::Ready(Ok((stream, remote))) => {
                let local = match stream.local_addr() {
                    Ok(local) => local,
                    Err(error) => return Poll::Ready(self.error(error)),
                };
                tune(&stream);
                Poll::Ready(TransportEvent::Incoming {
                    listener_id: self.id,
                    upgrade: future::ok(tcp::tokio::TcpStream(stream)),
                    local_addr: to_multiaddr(local.ip(), local.port()),
                    send_back_addr: to_multiaddr(remote.ip(), remote.port()),
                })
            }
            // Not fatal (too many open files, a connection reset before it was accepted...):
            // report it, pause, go on.
            Poll::Ready(Err(error)) => Poll::Ready(self.error(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn error(&mut self, error: io::Error) -> Event {
        self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
        TransportEvent::ListenerError {
            listener_id: self.id,
            error,
        }
    }
}

/// The socket address of `/ip4|ip6/<ip>/tcp/<port>`; `None` for anything else.
pub(crate) fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    parts.next().is_none().then_some(SocketAddr::new(ip, port))
}

fn to_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    Multiaddr::from(ip).with(Protocol::Tcp(port))
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use libp2p::core::Transport as _;

    use super::*;

    async fn next(t: &mut Transport) -> Event {
        poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
    }

    #[tokio::test]
    async fn a_listener_reports_its_address_and_frees_its_port_when_removed() {
        let mut t = Transport::new();
        let id = ListenerId::next();
        t.listen_on(id, "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = match next(&mut t).await {
            TransportEvent::NewAddress { listen_addr, .. } => listen_addr,
            other => panic!("expected a new address, got {other:?}"),
        };
        let port = socket_addr(&addr).unwrap().port();
        assert_ne!(port, 0);
        let taken = t.listen_on(ListenerId::next(), addr.clone());
        assert!(
            matches!(&taken, Err(TransportError::Other(e)) if e.kind() == io::ErrorKind::AddrInUse),
            "{taken:?}"
        );
        assert!(t.remove_listener(id));
        assert!(matches!(
            next(&mut t).await,
            TransportEvent::ListenerClosed { reason: Ok(()), .. }
        ));
        t.listen_on(ListenerId::next(), addr)
            .expect("the port is free again");
    }

    #[tokio::test]
    async fn a_wildcard_listener_reports_loopback_and_accepts() {
        let mut t = Transport::new();
        t.listen_on(ListenerId::next(), "/ip4/0.0.0.0/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            match next(&mut t).await {
                TransportEvent::NewAddress { listen_addr, .. }
                    if listen_addr.to_string().starts_with("/ip4/127.0.0.1/") =>
                {
                    break listen_addr
                }
                TransportEvent::NewAddress { .. } => {}
                other => panic!("expected new addresses, got {other:?}"),
            }
        };
        let target = socket_addr(&addr).unwrap();
        let _client = tokio::net::TcpStream::connect(target).await.unwrap();
        loop {
            match next(&mut t).await {
                TransportEvent::Incoming { local_addr, .. } => break assert_eq!(local_addr, addr),
                TransportEvent::NewAddress { .. } => {}
                other => panic!("expected a connection, got {other:?}"),
            }
        }
    }

    #[test]
    fn only_plain_tcp_addresses_are_listened_on() {
        assert!(socket_addr(&"/ip4/1.2.3.4/tcp/5".parse().unwrap()).is_some());
        assert!(socket_addr(&"/ip6/::1/tcp/5".parse().unwrap()).is_some());
        assert!(socket_addr(&"/ip4/1.2.3.4/udp/5".parse().unwrap()).is_none());
        assert!(socket_addr(&"/ip4/1.2.3.4/tcp/5/ws".parse().unwrap()).is_none());
    }
}
