//! TLS end to end (DESIGN §10), with certificates and CAs made here
//! (rcgen): HTTPS over HTTP/1.1 and HTTP/2 (ALPN) with RSA, ECDSA and
//! Ed25519 keys; a certificate replaced on disk picked up by new
//! connections without a restart while open ones go on; a bad replacement
//! refused with the old certificate still serving; client mTLS required and
//! optional, with the certificate as an `mtls` identity; upstream TLS to a
//! tonic backend with a private CA and client certificates, a wrong CA
//! answered 503 in the envelope, and the upstream files re-read too.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{api, Backend, Descriptors};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::ServerTlsConfig;

// ---- a private PKI -------------------------------------------------------

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn leaf(&self, common_name: &str, names: &[&str], key: KeyPair, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "Protogate Tests");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn server(&self, key: KeyPair) -> Leaf {
        self.leaf("localhost", &["localhost", "127.0.0.1"], key, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, common_name: &str) -> Leaf {
        self.leaf(common_name, &[], key(&rcgen::PKCS_ECDSA_P256_SHA256), ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn key(algorithm: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(algorithm).expect("key pair")
}

/// An RSA key: *ring* signs with RSA but cannot make keys, so the `rsa`
/// crate makes one.
fn rsa_key() -> KeyPair {
    use rsa::pkcs8::EncodePrivateKey;
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("rsa key");
    let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).expect("pkcs8");
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("rsa key pair")
}

/// Writes `contents` to `path` the way deployment tools do: a new file
/// renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let fresh = path.with_extension("new");
    std::fs::write(&fresh, contents).expect("write");
    std::fs::rename(&fresh, path).expect("rename");
}

// ---- the gateway and its clients -----------------------------------------

/// A gateway over the test service set, its public listener on TLS, run
/// from a config file in a folder of its own (the certificates live there).
struct Tls {
    dir: tempfile::TempDir,
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _descriptors: Descriptors,
    _backend: Option<Backend>,
}

impl Tls {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts the gateway with `server` as `cert.pem`/`key.pem` and this extra
/// config (`tls:` and `upstreams:` are written here unless `yaml` has
/// them); `files` are written into the config's folder first.
async fn gateway(server: &Leaf, yaml: &str, files: &[(&str, &str)], backend: Option<Backend>) -> Tls {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cert.pem"), &server.cert).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &server.key).expect("key");
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).expect("file");
    }
    let backend = match backend {
        Some(backend) => backend,
        None => Backend::test_service().await,
    };
    let mut text = String::new();
    if !yaml.contains("upstreams:") {
        text.push_str(&format!("upstreams: {{ \"*\": \"{}\" }}\n", backend.url()));
    }
    if !yaml.contains("\ntls:") && !yaml.starts_with("tls:") {
        text.push_str("tls: { cert: cert.pem, key: key.pem }\n");
    }
    text.push_str(yaml);
    let descriptors = Descriptors::test_service();
    let mut config =
        api::from_yaml(&text, &dir.path().join("protogate.yaml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.descriptors = descriptors.path().to_path_buf();
    let gateway = api::Gateway::load(config).unwrap_or_else(|e| panic!("gateway refused to start: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("https://localhost:{}", listener.local_addr().expect("addr").port());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    Tls { dir, base, stop: Some(stop), task, _descriptors: descriptors, _backend: Some(backend) }
}

/// A client trusting `ca` only, over HTTP/1.1 or HTTP/2 (ALPN), with a
/// client certificate if given.
fn client(ca: &Ca, http1: bool, identity: Option<&Leaf>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("ca pem"))
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .timeout(Duration::from_secs(10));
    if http1 {
        builder = builder.http1_only();
    }
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert, leaf.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

async fn get(
    client: &reqwest::Client,
    url: &str,
) -> Result<(reqwest::Version, u16, serde_json::Value), reqwest::Error> {
    let response = client.get(url).send().await?;
    let (version, status) = (response.version(), response.status().as_u16());
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((version, status, body))
}

/// Asks until `client` gets an answer (a certificate change is seen at the
/// next poll of the files); bounded by a number of tries.
async fn answered(client: &reqwest::Client, url: &str) -> (reqwest::Version, u16, serde_json::Value) {
    for _ in 0..100 {
        if let Ok(answer) = get(client, url).await {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no TLS answer from {url}");
}

const ECHO: &str = "/test/metadata";

// ---- the cases -----------------------------------------------------------

#[tokio::test]
async fn https_serves_http1_and_http2_by_alpn_with_rsa_ecdsa_and_ed25519_keys() {
    let ca = Ca::new("Protogate Test CA");
    for (name, server_key) in
        [("ecdsa", key(&rcgen::PKCS_ECDSA_P256_SHA256)), ("ed25519", key(&rcgen::PKCS_ED25519)), ("rsa", rsa_key())]
    {
        let gw = gateway(&ca.server(server_key), "", &[], None).await;
        let (version, status, _) = get(&client(&ca, true, None), &gw.url(ECHO)).await.expect(name);
        assert_eq!((version, status), (reqwest::Version::HTTP_11, 200), "{name}");
        let (version, status, _) = get(&client(&ca, false, None), &gw.url(ECHO)).await.expect(name);
        assert_eq!((version, status), (reqwest::Version::HTTP_2, 200), "{name} over ALPN h2");
        // The same port speaks no clear text.
        let clear = reqwest::Client::new().get(gw.url(ECHO).replace("https://", "http://")).send().await;
        assert!(clear.map(|r| r.status().as_u16() != 200).unwrap_or(true), "{name}: clear text was served");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_and_open_ones_go_on() {
    let (old_ca, new_ca) = (Ca::new("Old CA"), Ca::new("New CA"));
    let gw = gateway(&old_ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256)), "", &[], None).await;
    let old = client(&old_ca, false, None);
    assert_eq!(get(&old, &gw.url(ECHO)).await.expect("old CA").1, 200);
    let fresh = client(&new_ca, false, None);
    assert!(get(&fresh, &gw.url(ECHO)).await.is_err(), "the new CA is not trusted yet");

    let next = new_ca.server(key(&rcgen::PKCS_ED25519));
    replace(&gw.path("key.pem"), &next.key);
    replace(&gw.path("cert.pem"), &next.cert);
    assert_eq!(answered(&fresh, &gw.url(ECHO)).await.1, 200);
    // The HTTP/2 connection made before the change keeps its certificate.
    assert_eq!(get(&old, &gw.url(ECHO)).await.expect("open connection").1, 200);
    // New connections get the new certificate only.
    assert!(get(&client(&old_ca, false, None), &gw.url(ECHO)).await.is_err());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_replacement_is_refused_and_the_old_certificate_keeps_serving() {
    let ca = Ca::new("Protogate Test CA");
    let gw = gateway(&ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256)), "", &[], None).await;
    // Not PEM at all, then a certificate whose key is not the one on disk.
    let stranger = ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256));
    for bad in ["not a certificate\n", stranger.cert.as_str()] {
        replace(&gw.path("cert.pem"), bad);
        // Several polls of the files go by.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (_, status, _) = get(&client(&ca, true, None), &gw.url(ECHO)).await.expect("the old certificate serves");
        assert_eq!(status, 200);
    }
    // A good pair again is taken.
    let other = Ca::new("Other CA");
    let next = other.server(key(&rcgen::PKCS_ECDSA_P256_SHA256));
    replace(&gw.path("key.pem"), &next.key);
    replace(&gw.path("cert.pem"), &next.cert);
    assert_eq!(answered(&client(&other, true, None), &gw.url(ECHO)).await.1, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn required_client_certificates_are_checked_in_the_handshake() {
    let (ca, clients, rogue) = (Ca::new("Server CA"), Ca::new("Client CA"), Ca::new("Rogue CA"));
    let yaml = "tls: { cert: cert.pem, key: key.pem, client_ca: clients.pem }\n";
    let gw =
        gateway(&ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256)), yaml, &[("clients.pem", &clients.pem)], None).await;
    for http1 in [true, false] {
        assert!(get(&client(&ca, http1, None), &gw.url(ECHO)).await.is_err(), "no certificate");
        let rogue_leaf = rogue.client("mallory");
        assert!(get(&client(&ca, http1, Some(&rogue_leaf)), &gw.url(ECHO)).await.is_err(), "unknown CA");
        let leaf = clients.client("alice");
        let (_, status, _) = get(&client(&ca, http1, Some(&leaf)), &gw.url(ECHO)).await.expect("alice");
        assert_eq!(status, 200);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificates_make_mtls_identities_for_policies() {
    let (ca, clients) = (Ca::new("Server CA"), Ca::new("Client CA"));
    let yaml = "tls: { cert: cert.pem, key: key.pem, client_ca: clients.pem, client_auth: optional }
auth:
  mtls: { name: corp-ca }
  api_keys: { keys: [] }
policies:
  default: authenticated
  rules:
    - { path_prefix: /test/echo, allow: public }
";
    let gw =
        gateway(&ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256)), yaml, &[("clients.pem", &clients.pem)], None).await;
    let anonymous = client(&ca, false, None);
    let (_, status, body) = get(&anonymous, &gw.url(ECHO)).await.expect("handshake without a certificate");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], 16);
    let alice = client(&ca, false, Some(&clients.client("alice")));
    let (_, status, body) = get(&alice, &gw.url(ECHO)).await.expect("alice");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-consumer-id"], "alice");
    assert_eq!(body["headers"]["x-auth-provider"], "corp-ca");
    // The certificate is the credential: an API key beside it is a second.
    let both = alice.get(gw.url(ECHO)).header("x-api-key", "k").send().await.expect("both");
    assert_eq!(both.status().as_u16(), 400);
    // A client cannot claim the identity by header.
    let spoof = anonymous.get(gw.url(ECHO)).header("x-consumer-id", "alice").send().await.expect("spoof");
    assert_eq!(spoof.status().as_u16(), 401);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_mtls_provider_needs_client_certificates() {
    let yaml = "tls: { cert: c.pem, key: k.pem }\nauth: { mtls: {} }\n";
    let err = api::from_yaml(yaml, Path::new("/etc/protogate/protogate.yaml")).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("auth.mtls") && text.contains("tls.client_ca"), "{text}");
}

// ---- upstream TLS ----------------------------------------------------------

/// The test service over TLS with a certificate from `ca`, asking for
/// client certificates from `clients` when given.
async fn tls_backend(ca: &Ca, clients: Option<&Ca>) -> Backend {
    let leaf = ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256));
    let mut tls = ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(&leaf.cert, &leaf.key));
    if let Some(clients) = clients {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(&clients.pem));
    }
    Backend::test_service_tls(tls).await
}

/// A plain-text gateway in front of `backend` at `https://localhost:PORT`.
async fn tls_upstream_gateway(backend: Backend, upstream_tls: &str, files: &[(&str, &str)]) -> Tls {
    let ca = Ca::new("Listener CA");
    let yaml = format!(
        "upstreams: {{ \"*\": \"https://localhost:{}\" }}\nupstream_tls:\n{upstream_tls}",
        backend.addr().port()
    );
    gateway(&ca.server(key(&rcgen::PKCS_ECDSA_P256_SHA256)), &yaml, files, Some(backend)).await
}

/// A client of the gateway's listener, whose own CA does not matter here.
fn listener_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_private_ca_backend_is_reached_and_a_wrong_ca_is_a_503() {
    let backend_ca = Ca::new("Backend CA");
    let backend = tls_backend(&backend_ca, None).await;
    let gw = tls_upstream_gateway(
        backend,
        "  - { match: \"*\", ca: backend-ca.pem }\n",
        &[("backend-ca.pem", &backend_ca.pem)],
    )
    .await;
    let http = listener_client();
    let (_, status, body) = get(&http, &gw.url(ECHO)).await.expect("answer");
    assert_eq!(status, 200, "{body}");

    let wrong = tls_backend(&Ca::new("Some Other CA"), None).await;
    let gw2 = tls_upstream_gateway(
        wrong,
        "  - { match: protogate, ca: backend-ca.pem }\n",
        &[("backend-ca.pem", &backend_ca.pem)],
    )
    .await;
    let (_, status, body) = get(&http, &gw2.url(ECHO)).await.expect("answer");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 14, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.contains("BEGIN") && !message.contains("backend-ca.pem"), "{message}");
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn client_certificates_to_an_mtls_backend_and_their_files_are_reread() {
    let (backend_ca, gateway_ca) = (Ca::new("Backend CA"), Ca::new("Gateway client CA"));
    let backend = tls_backend(&backend_ca, Some(&gateway_ca)).await;
    let ours = gateway_ca.client("protogate");
    let theirs = Ca::new("Unknown CA").client("protogate");
    // First a certificate the backend does not accept.
    let gw = tls_upstream_gateway(
        backend,
        "  - { match: protogate.test.v1, ca: ca.pem, cert: client.pem, key: client-key.pem, server_name: localhost }\n",
        &[("ca.pem", &backend_ca.pem), ("client.pem", &theirs.cert), ("client-key.pem", &theirs.key)],
    )
    .await;
    let http = listener_client();
    let (_, status, body) = get(&http, &gw.url(ECHO)).await.expect("answer");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 14);
    // The right one, written over the files: taken without a restart.
    replace(&gw.path("client-key.pem"), &ours.key);
    replace(&gw.path("client.pem"), &ours.cert);
    let mut status = 0;
    for _ in 0..100 {
        status = get(&http, &gw.url(ECHO)).await.expect("answer").1;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn unreadable_tls_files_stop_the_start_naming_the_file() {
    let config = |yaml: &str| {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("bad.pem"), "garbage").expect("write");
        let mut config = api::from_yaml(yaml, &dir.path().join("protogate.yaml")).expect("config parses");
        config.descriptors = dir.path().join("descriptors");
        (dir, config)
    };
    for (yaml, named) in
        [("tls: { cert: bad.pem, key: bad.pem }\n", "bad.pem"), ("tls: { cert: bad.pem, key: gone.pem }\n", "gone.pem")]
    {
        let (_dir, listener) = config(yaml);
        let err = api::Gateway::load(listener).err().expect("refused").to_string();
        assert!(err.contains(named), "{err}");
    }
    let (_dir, upstream) =
        config("upstreams: { \"*\": \"https://localhost:1\" }\nupstream_tls: [{ match: \"*\", ca: bad.pem }]\n");
    let err = api::Gateway::load(upstream).err().expect("refused").to_string();
    assert!(err.contains("bad.pem"), "{err}");
}
