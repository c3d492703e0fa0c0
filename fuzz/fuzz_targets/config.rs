//! The config loader: YAML text → validated `Config`, as `serve` and
//! `check` read a file.
//!
//! A refusal must name the file and, where it gives a line, a line of the
//! text. What the loader accepts must also be accepted by the features'
//! compilers (auth providers, API keys, policies, rate-limit rules): the
//! loader promises that "what `check` accepts is exactly what `serve`
//! serves", and those compilers re-check what configs built in code could
//! get wrong. Secrets and JWKS files are pointed at fixtures first, so
//! nothing outside the fuzzer's own files is read.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use protogate::config::secret::Secret;
use protogate::config::{self, Config, ConfigError};
use protogate::gateway::load::Features;

const SECRET_VAR: &str = "PROTOGATE_FUZZ_CONFIG_SECRET";

/// A JWKS file with one RSA key, in a folder of the fuzzer's own.
fn jwks_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let jwk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/auth/rsa1.jwk.json"))
            .expect("the JWK fixture is readable");
        let dir = std::env::temp_dir().join(format!("protogate-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let path = dir.join("jwks.json");
        std::fs::write(&path, format!("{{\"keys\":[{jwk}]}}")).expect("the JWKS fixture is written");
        std::env::set_var(SECRET_VAR, "a secret of the fuzzer's own");
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let origin = Path::new("/fuzz/protogate.yaml");
    let config = match config::from_yaml(text, origin) {
        Ok(config) => config,
        Err(err) => return check_refusal(&err, text, origin),
    };
    let config = with_fixture_secrets(config);
    if let Err(err) = Features::compile(&config) {
        panic!("the loader accepted what the features refuse: {:?}\n{text}", err.problems);
    }
});

fn check_refusal(err: &ConfigError, text: &str, origin: &Path) {
    let ConfigError::File { file, message, line, column } = err else {
        panic!("a config text refused as something else than a problem of the file: {err}");
    };
    assert_eq!(file, origin);
    assert!(!message.is_empty());
    if let Some(line) = line {
        // YAML breaks lines at CR LF, LF and a lone CR (and, as libyaml
        // reads it, at NEL, LS and PS). One past the last line is where an
        // unexpected end is reported.
        let lines = text.replace("\r\n", "\n").split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']).count();
        assert!(*line >= 1 && *line <= lines + 1, "line {line} of a text of {lines} lines: {message}");
    }
    if let Some(column) = column {
        assert!(*column >= 1, "column {column}: {message}");
    }
}

/// The same config with every secret and JWKS file replaced by one that
/// exists, so that compiling it reads only the fuzzer's fixtures.
fn with_fixture_secrets(mut config: Config) -> Config {
    let jwks = jwks_file();
    for provider in &mut config.auth.jwt {
        if provider.secret.is_some() {
            provider.secret = Some(Secret::Env(SECRET_VAR.into()));
        }
        if provider.jwks_file.is_some() {
            provider.jwks_file = Some(jwks.to_path_buf());
        }
    }
    config
}
