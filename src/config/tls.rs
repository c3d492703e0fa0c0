//! `tls:` (the public listener's certificate and client mTLS) and
//! `upstream_tls:` (private CAs and client certificates toward backends),
//! as written and checked. The files themselves are read, and re-read when
//! they change, by `crate::tls`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::check::{self, Check, KeyPath, Problem};
use super::values::{parse_upstream_pattern, relative_to, PathText};

/// `tls:` — the public listener speaks TLS (ALPN `h2`, `http/1.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key of `cert`.
    pub key: PathBuf,
    /// PEM: the CAs client certificates must chain to; `None`: clients
    /// are not asked for a certificate.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Whether a client must present a certificate when `client_ca` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The handshake fails without a certificate that chains to `client_ca`.
    #[default]
    Required,
    /// A client may present none; one it presents must still verify.
    Optional,
}

/// One `upstream_tls` entry: how to speak TLS to the `https://` upstreams
/// of the services `pattern` names (as in `upstreams`; the most specific
/// entry wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    pub pattern: String,
    /// PEM: the CAs the backend's certificate must chain to; `None`: the
    /// web PKI roots.
    pub ca: Option<PathBuf>,
    /// PEM: the client certificate (and chain) presented to the backend,
    /// with `key`; both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the backend's certificate must carry (and SNI); `None`: the
    /// upstream URL's host.
    pub server_name: Option<String>,
}

impl UpstreamTlsConfig {
    /// The files this entry reads, in a fixed order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca, &self.cert, &self.key].into_iter().flatten().map(PathBuf::as_path)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with cert, key, client_ca, client_auth")]
pub(super) struct TlsSection {
    cert: Option<PathText>,
    key: Option<PathText>,
    client_ca: Option<PathText>,
    client_auth: Option<ClientAuth>,
}

impl Check for TlsSection {
    fn check(&self) -> Result<(), String> {
        if self.cert.is_none() || self.key.is_none() {
            return Err("TLS needs both `cert` and `key` (PEM files)".into());
        }
        if self.client_auth.is_some() && self.client_ca.is_none() {
            return Err("`client_auth` needs `client_ca`: the CAs client certificates are checked against".into());
        }
        Ok(())
    }
}

impl TlsSection {
    /// Whether clients are asked for a certificate (`client_ca` is set).
    pub(super) fn asks_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Paths relative to the config file's folder `base`.
    pub(super) fn resolve(self, base: &Path) -> TlsConfig {
        let path = |p: Option<PathText>| p.map(|PathText(p)| relative_to(base, &p));
        TlsConfig {
            cert: path(self.cert).unwrap_or_default(),
            key: path(self.key).unwrap_or_default(),
            client_ca: path(self.client_ca),
            client_auth: self.client_auth.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with match, ca, cert, key, server_name")]
pub(super) struct UpstreamTlsRaw {
    #[serde(rename = "match", deserialize_with = "pattern")]
    pattern: String,
    ca: Option<PathText>,
    cert: Option<PathText>,
    key: Option<PathText>,
    #[serde(default, deserialize_with = "server_name")]
    server_name: Option<String>,
}

fn pattern<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::parsed(d, "`*`, a package or a service", parse_upstream_pattern)
}

fn server_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    fn parse(text: &str) -> Result<String, String> {
        rustls_pki_types::ServerName::try_from(text)
            .map(|_| text.to_owned())
            .map_err(|_| format!("`{text}` is neither a DNS name nor an IP address"))
    }
    check::parsed(d, "a DNS name or an IP address", parse).map(Some)
}

impl Check for UpstreamTlsRaw {
    fn check(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("a client certificate needs both `cert` and `key`".into());
        }
        if self.ca.is_none() && self.cert.is_none() && self.server_name.is_none() {
            return Err("this entry changes nothing: give `ca`, `cert` and `key`, or `server_name`".into());
        }
        Ok(())
    }
}

impl UpstreamTlsRaw {
    pub(super) fn resolve(self, base: &Path) -> UpstreamTlsConfig {
        let path = |p: Option<PathText>| p.map(|PathText(p)| relative_to(base, &p));
        UpstreamTlsConfig {
            pattern: self.pattern,
            ca: path(self.ca),
            cert: path(self.cert),
            key: path(self.key),
            server_name: self.server_name,
        }
    }
}

/// The first entry whose pattern an earlier entry already has.
pub(super) fn duplicate_pattern(entries: &[&UpstreamTlsRaw]) -> Option<Problem> {
    entries.iter().enumerate().find_map(|(index, entry)| {
        entries[..index].iter().any(|earlier| earlier.pattern == entry.pattern).then(|| {
            KeyPath::new()
                .index(index)
                .key("match")
                .problem(format!("pattern `{}` has an entry already; one entry per pattern", entry.pattern))
        })
    })
}
