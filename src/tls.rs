//! TLS material (DESIGN §10): the listener's rustls config, the PEM files
//! behind it and behind upstream TLS re-read when they change, and the
//! verified client certificate of a connection as an identity.
//!
//! Files are watched by polling their contents ([`Watched::refresh`], every
//! [`POLL`]): a certificate is a few kilobytes, and comparing contents sees
//! every way a file gets replaced (written in place, renamed over, a
//! Kubernetes secret's symlink swapped) where file events and modification
//! times each miss one. A change is built and checked as a whole before it
//! goes live; a bad one is logged once (until the files change again) and
//! the previous material keeps serving. Live connections keep the
//! certificate they were made with; new ones get the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::tls::{ClientAuth, TlsConfig};

/// How often watched files are read again.
pub const POLL: Duration = Duration::from_secs(1);

/// Why TLS material cannot be used; names the file, never its contents.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

impl TlsError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self { path: path.display().to_string(), reason: reason.into() }
    }
}

/// The crypto of every TLS session the gateway makes: *ring*, chosen
/// explicitly so that no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, in order; at least one.
pub fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::new(path, format!("not a PEM certificate file ({err})")))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::new(path, "no PKCS#8, RSA or EC PRIVATE KEY block found"))
}

/// The CAs of a PEM file as trust roots.
pub fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        store.add(cert).map_err(|err| TlsError::new(path, format!("not a usable CA certificate ({err})")))?;
    }
    Ok(store)
}

/// Builds the material from the files' contents, in path order.
type Build<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync>;

/// Files read together, and what was built from them.
pub struct Watched<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Build<T>,
    live: ArcSwap<T>,
    /// The contents last looked at, built or refused.
    seen: Mutex<Vec<Vec<u8>>>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("what", &self.what).field("paths", &self.paths).finish_non_exhaustive()
    }
}

/// What a [`Watched::refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Reloaded,
    /// The new files were refused (and logged); the old material serves.
    Refused(String),
}

impl<T> Watched<T> {
    /// Reads `paths` and builds from them; `what` names the material in
    /// logs (`"listener TLS"`).
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let contents = read_all(&paths)?;
        let live = build(&contents)?;
        Ok(Self { what, paths, build: Box::new(build), live: ArcSwap::from_pointee(live), seen: Mutex::new(contents) })
    }

    /// What serves now.
    pub fn current(&self) -> Arc<T> {
        self.live.load_full()
    }

    /// Reads the files again; builds and swaps in what changed. Blocking
    /// file reads: call it off the request path.
    pub fn refresh(&self) -> Refresh {
        let contents = match read_all(&self.paths) {
            Ok(contents) => contents,
            Err(err) => return self.refused(Vec::new(), err),
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == contents {
            return Refresh::Unchanged;
        }
        match (self.build)(&contents) {
            Ok(built) => {
                *seen = contents;
                self.live.store(Arc::new(built));
                tracing::info!(what = self.what, files = ?self.paths, "TLS files changed: new material live");
                Refresh::Reloaded
            }
            Err(err) => {
                drop(seen);
                self.refused(contents, err)
            }
        }
    }

    fn refused(&self, contents: Vec<Vec<u8>>, err: TlsError) -> Refresh {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let message = err.to_string();
        if *seen != contents {
            tracing::error!(what = self.what, error = %err, "TLS files refused; the previous material keeps serving");
            *seen = contents;
        }
        Refresh::Refused(message)
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, TlsError> {
    paths.iter().map(|path| std::fs::read(path).map_err(|err| TlsError::new(path, err.to_string()))).collect()
}

/// The public listener's TLS: `tls.cert`, `tls.key`, `tls.client_ca`.
pub type ServerTls = Watched<ServerConfig>;

/// Reads the listener's files and builds its rustls config.
pub fn server(config: &TlsConfig) -> Result<ServerTls, TlsError> {
    let tls = config.clone();
    let mut paths = vec![tls.cert.clone(), tls.key.clone()];
    paths.extend(tls.client_ca.clone());
    Watched::new("listener TLS", paths, move |contents| server_config(&tls, contents))
}

/// An acceptor with the listener's current certificate.
pub fn acceptor(tls: &ServerTls) -> TlsAcceptor {
    TlsAcceptor::from(tls.current())
}

fn server_config(tls: &TlsConfig, contents: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&tls.cert, &contents[0])?;
    let key = private_key(&tls.key, &contents[1])?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::new(&tls.cert, err.to_string()))?;
    let builder = match (&tls.client_ca, contents.get(2)) {
        (Some(path), Some(pem)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(path, pem)?), provider);
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|err| TlsError::new(path, err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| TlsError::new(&tls.key, format!("cannot be used with the certificate ({err})")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A connection's verified client certificate, as much of it as identities
/// and policies use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's distinguished name, RFC 4514 style (`CN=alice, O=Acme`).
    pub subject: String,
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// DNS, URI and e-mail subject alternative names.
    pub alt_names: Vec<String>,
}

impl ClientCert {
    /// Reads the leaf certificate rustls has already verified.
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject().to_string();
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        let alt_names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                            Some((*s).to_owned())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self { subject, common_name, alt_names })
    }

    /// The consumer id: the common name, else the whole subject.
    pub fn consumer(&self) -> &str {
        self.common_name.as_deref().unwrap_or(&self.subject)
    }
}
