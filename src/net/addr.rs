//! Addresses as people type them: `iwant node --listen` and `--peer` take a multiaddr
//! (`/ip4/10.0.0.2/tcp/4747`), an `ip:port` (`10.0.0.2:4747`, `[fe80::1]:4747`), a
//! `host:port` (resolved once, at start) or a bare port (`4748`: every IPv4 interface to
//! listen on, this machine to dial).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use libp2p::{multiaddr::Protocol, Multiaddr};

use crate::config::DEFAULT_PORT;

/// Parses a `--listen` value.
pub fn parse_listen(s: &str) -> Result<Multiaddr, String> {
    parse(s, Ipv4Addr::UNSPECIFIED).map_err(|e| {
        format!("{e}; write an address to listen on as `{DEFAULT_PORT}`, `0.0.0.0:{DEFAULT_PORT}`, `192.168.1.20:{DEFAULT_PORT}` or `/ip4/0.0.0.0/tcp/{DEFAULT_PORT}`")
    })
}

/// Parses a `--peer` value.
pub fn parse_peer(s: &str) -> Result<Multiaddr, String> {
    parse(s, Ipv4Addr::LOCALHOST).map_err(|e| {
        format!("{e}; write a peer's address as `192.168.1.20:{DEFAULT_PORT}`, `bob-laptop.local:{DEFAULT_PORT}` or `/ip4/192.168.1.20/tcp/{DEFAULT_PORT}`")
    })
}

/// A multiaddr, `ip:port`, `host:port`, or a bare port on `bare_ip`.
fn parse(s: &str, bare_ip: Ipv4Addr) -> Result<Multiaddr, String> {
    let s = s.trim();
    if s.starts_with('/') {
        return s
            .parse::<Multiaddr>()
            .map_err(|e| format!("`{s}` is not a valid multiaddr ({e})"));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port = s
            .parse::<u16>()
            .map_err(|_| format!("{s} is not a port (1 to 65535)"))?;
        return Ok(tcp(SocketAddr::from((bare_ip, port))));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(tcp(addr));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` has no port"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{s}` is not a port (1 to 65535)"))?;
    if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return Err(format!("`{s}` is not an address"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}` ({e})"))?
        .collect();
    // IPv4 first: LAN peers are reached on it most often.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(|a| tcp(*a))
        .ok_or_else(|| format!("`{host}` has no address"))
}

fn tcp(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str, peer: bool) -> String {
        if peer { parse_peer(s) } else { parse_listen(s) }
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_way_of_writing_an_address_gives_the_multiaddr_meant() {
        assert_eq!(ok("4748", false), "/ip4/0.0.0.0/tcp/4748");
        assert_eq!(ok("4748", true), "/ip4/127.0.0.1/tcp/4748");
        assert_eq!(ok("10.0.0.2:4747", true), "/ip4/10.0.0.2/tcp/4747");
        assert_eq!(ok(" 10.0.0.2:4747 ", true), "/ip4/10.0.0.2/tcp/4747");
        assert_eq!(ok("[fe80::1]:4747", true), "/ip6/fe80::1/tcp/4747");
        assert_eq!(ok("localhost:4747", true), "/ip4/127.0.0.1/tcp/4747");
        assert_eq!(ok("/ip4/10.0.0.2/tcp/4747", true), "/ip4/10.0.0.2/tcp/4747");
        assert_eq!(ok("0.0.0.0:0", false), "/ip4/0.0.0.0/tcp/0");
    }

    #[test]
    fn bad_addresses_say_why_and_show_an_example() {
        for (s, why) in [
            ("99999", "is not a port"),
            ("10.0.0.2", "has no port"),
            ("10.0.0.2:http", "is not a port"),
            ("/ip4/1.2.3/tcp/1", "is not a valid multiaddr"),
            (":4747", "is not an address"),
            (
                "no-such-host.invalid:4747",
                "cannot resolve `no-such-host.invalid`",
            ),
        ] {
            let e = parse_peer(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
            assert!(e.contains("192.168.1.20:4747"), "{s}: {e}");
        }
        assert!(parse_listen("x").unwrap_err().contains("0.0.0.0:4747"));
    }
}
