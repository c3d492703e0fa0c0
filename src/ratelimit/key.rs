//! Bucket keys. Locally a key is a seeded 64-bit hash of the rule and the
//! key parts (no allocation); in Redis it is readable text, the same on
//! every replica: `{key_prefix}{rule}:c=alice:ip=203.0.113.9`.
//!
//! The fallbacks (anonymous `consumer`, absent `header:`) use the client
//! IP with a tag of their own, so an anonymous client never shares a
//! bucket with a consumer who happens to be called like an address.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use percent_encoding::{AsciiSet, CONTROLS};

use super::client_ip::TrustedProxies;
use super::rule::{KeyPart, Rule};

/// What a request contributes to keys; the client IP is worked out only
/// when a key needs it.
pub struct KeySource<'a> {
    pub peer: SocketAddr,
    pub headers: &'a HeaderMap,
    pub consumer: Option<&'a str>,
    pub route_key: &'a str,
    pub trusted: &'a TrustedProxies,
    ip: Option<IpAddr>,
}

impl<'a> KeySource<'a> {
    pub fn new(
        peer: SocketAddr,
        headers: &'a HeaderMap,
        consumer: Option<&'a str>,
        route_key: &'a str,
        trusted: &'a TrustedProxies,
    ) -> Self {
        Self { peer, headers, consumer, route_key, trusted, ip: None }
    }

    pub fn client_ip(&mut self) -> IpAddr {
        match self.ip {
            Some(ip) => ip,
            None => {
                let ip = self.trusted.client_ip(self.peer, self.headers);
                self.ip = Some(ip);
                ip
            }
        }
    }

    /// The local store's key for `rule`.
    pub fn hash(&mut self, rule: &Rule, mut hasher: impl Hasher) -> u64 {
        hasher.write_u64(rule.id);
        for part in rule.parts.iter() {
            match part {
                KeyPart::Consumer => match self.consumer {
                    Some(consumer) => {
                        hasher.write_u8(1);
                        write_bytes(&mut hasher, consumer.as_bytes());
                    }
                    None => {
                        hasher.write_u8(2);
                        write_ip(&mut hasher, self.client_ip());
                    }
                },
                KeyPart::Ip => {
                    hasher.write_u8(3);
                    write_ip(&mut hasher, self.client_ip());
                }
                KeyPart::Route => {
                    hasher.write_u8(4);
                    write_bytes(&mut hasher, self.route_key.as_bytes());
                }
                KeyPart::Header(name) => match self.headers.get(name) {
                    Some(value) => {
                        hasher.write_u8(5);
                        write_bytes(&mut hasher, value.as_bytes());
                    }
                    None => {
                        hasher.write_u8(6);
                        write_ip(&mut hasher, self.client_ip());
                    }
                },
            }
        }
        hasher.finish()
    }

    /// The Redis key for `rule`.
    pub fn text(&mut self, rule: &Rule) -> String {
        let mut key = String::with_capacity(rule.redis_prefix.len() + 48);
        key.push_str(&rule.redis_prefix);
        for part in rule.parts.iter() {
            // Writing into a String cannot fail.
            let _ = match part {
                KeyPart::Consumer => match self.consumer {
                    Some(consumer) => write!(key, ":c={}", escape(consumer.as_bytes())),
                    None => write!(key, ":anon={}", self.client_ip()),
                },
                KeyPart::Ip => write!(key, ":ip={}", self.client_ip()),
                KeyPart::Route => write!(key, ":r={}", escape(self.route_key.as_bytes())),
                KeyPart::Header(name) => match self.headers.get(name) {
                    Some(value) => write!(key, ":h={}", escape(value.as_bytes())),
                    None => write!(key, ":noh={}", self.client_ip()),
                },
            };
        }
        key
    }
}

/// Length first, so `("ab", "c")` and `("a", "bc")` differ.
fn write_bytes(hasher: &mut impl Hasher, bytes: &[u8]) {
    hasher.write_usize(bytes.len());
    hasher.write(bytes);
}

fn write_ip(hasher: &mut impl Hasher, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => hasher.write(&v4.octets()),
        IpAddr::V6(v6) => hasher.write(&v6.octets()),
    }
}

/// `:` separates parts and `%` escapes; spaces and controls would make
/// keys awkward in `redis-cli`.
const KEY_ESCAPES: &AsciiSet = &CONTROLS.add(b':').add(b'%').add(b' ');

fn escape(bytes: &[u8]) -> percent_encoding::PercentEncode<'_> {
    // Non-ASCII bytes (header values need not be UTF-8) are escaped too.
    percent_encoding::percent_encode(bytes, KEY_ESCAPES)
}
