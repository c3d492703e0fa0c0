//! The client's address for keys of type `ip`. Forwarding headers are
//! believed only when the TCP peer is a trusted proxy, and then only as far
//! as the chain of trusted proxies goes: walking the header right to left,
//! the first address that is not a trusted proxy is the client. Whatever a
//! client writes into the header itself sits to the left of that address
//! and is never read, so a client cannot choose its own key.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::rate_limits::{Cidr, ClientIpHeader};

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<Cidr>,
    header: ClientIpHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<Cidr>, header: ClientIpHeader) -> Self {
        Self { nets, header }
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request that came from `peer`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer.ip());
        if self.nets.is_empty() || !self.trusts(&peer) {
            return peer;
        }
        let mut client = peer;
        match self.header {
            ClientIpHeader::XForwardedFor => {
                // Several header lines form one list, in order.
                for line in headers.get_all("x-forwarded-for").iter().rev() {
                    let Ok(line) = line.to_str() else {
                        return client;
                    };
                    for hop in line.rsplit(',') {
                        match parse_hop(hop) {
                            Some(ip) if self.trusts(&ip) => client = ip,
                            Some(ip) => return ip,
                            // Garbage was written by an untrusted hand: the
                            // last trusted hop is all we know.
                            None => return client,
                        }
                    }
                }
            }
            ClientIpHeader::Forwarded => {
                for line in headers.get_all("forwarded").iter().rev() {
                    let Ok(line) = line.to_str() else {
                        return client;
                    };
                    for element in line.rsplit(',') {
                        match forwarded_for(element).and_then(parse_hop) {
                            Some(ip) if self.trusts(&ip) => client = ip,
                            Some(ip) => return ip,
                            None => return client,
                        }
                    }
                }
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack listener reports)
/// as the IPv4 address, so IPv4 CIDRs and keys apply to it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The `for=` of one `Forwarded` element (RFC 7239), quotes removed.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| value.trim().trim_matches('"'))
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    // `[v6]` without a port.
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str], header: ClientIpHeader) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().expect("cidr")).collect(), header)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("value"));
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 4242)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let t = trusted(&["10.0.0.0/8"], ClientIpHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(t.client_ip(peer("203.0.113.9"), &h), ip("203.0.113.9"));
        // Nothing trusted at all: the peer, whatever the headers say.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_chain_is_walked_right_to_left() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.1"], ClientIpHeader::XForwardedFor);
        // client spoofs 6.6.6.6; the real client is 198.51.100.7, then two
        // trusted proxies.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")]);
        assert_eq!(t.client_ip(peer("10.1.2.3"), &h), ip("198.51.100.7"));
        // Split across header lines, same list.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-for", "192.168.1.1")]);
        assert_eq!(t.client_ip(peer("10.1.2.3"), &h), ip("198.51.100.7"));
        // No header: the trusted peer itself.
        assert_eq!(t.client_ip(peer("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 192.168.1.1")]);
        assert_eq!(t.client_ip(peer("10.1.2.3"), &h), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 192.168.1.1")]);
        assert_eq!(t.client_ip(peer("10.1.2.3"), &h), ip("192.168.1.1"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = trusted(&["127.0.0.1"], ClientIpHeader::XForwardedFor);
        let fwd = trusted(&["127.0.0.1"], ClientIpHeader::Forwarded);
        let h = headers(&[("x-forwarded-for", "198.51.100.7"), ("forwarded", "for=6.6.6.6")]);
        assert_eq!(xff.client_ip(peer("127.0.0.1"), &h), ip("198.51.100.7"));
        assert_eq!(fwd.client_ip(peer("127.0.0.1"), &h), ip("6.6.6.6"));
    }

    #[test]
    fn forwarded_syntax() {
        let t = trusted(&["10.0.0.0/8"], ClientIpHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.5;by=10.0.0.6",
        )]);
        assert_eq!(t.client_ip(peer("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
    }

    #[test]
    fn mapped_ipv6_peer_matches_ipv4_cidr() {
        let t = trusted(&["127.0.0.0/8"], ClientIpHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "198.51.100.7:5555")]);
        assert_eq!(t.client_ip(peer("::ffff:127.0.0.1"), &h), ip("198.51.100.7"));
        assert_eq!(t.client_ip(peer("::ffff:8.8.8.8"), &HeaderMap::new()), ip("8.8.8.8"));
    }
}
