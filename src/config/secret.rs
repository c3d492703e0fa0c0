//! Secrets in config are never inline: `{ env: NAME }` or `{ file: PATH }`
//! (DESIGN §1). Read once, at load; the value never reaches a log line or
//! an error message.

use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSecret")]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<RawSecret> for Secret {
    type Error = String;

    fn try_from(raw: RawSecret) -> Result<Self, Self::Error> {
        match (raw.env, raw.file) {
            (Some(env), None) => Ok(Self::Env(env)),
            (None, Some(file)) => Ok(Self::File(file)),
            _ => Err("a secret is exactly one of { env: NAME } or { file: PATH }".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("reading secret file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the secret from {0} is empty")]
    Empty(String),
}

impl Secret {
    /// The secret's bytes. A file's trailing line break is dropped (editors
    /// and `echo` add one); nothing else is trimmed.
    pub fn read(&self) -> Result<Vec<u8>, SecretError> {
        let (bytes, source) = match self {
            Self::Env(name) => match std::env::var_os(name) {
                Some(value) => (value.into_encoded_bytes(), format!("environment variable {name}")),
                None => return Err(SecretError::MissingEnv(name.clone())),
            },
            Self::File(path) => match std::fs::read(path) {
                Ok(mut bytes) => {
                    if bytes.last() == Some(&b'\n') {
                        bytes.pop();
                        if bytes.last() == Some(&b'\r') {
                            bytes.pop();
                        }
                    }
                    (bytes, format!("file {}", path.display()))
                }
                Err(source) => return Err(SecretError::File { path: path.clone(), source }),
            },
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty(source));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_drops_only_the_final_line_break() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, b" top secret \r\n").expect("write");
        let secret = Secret::File(path);
        assert_eq!(secret.read().expect("reads"), b" top secret ");
    }

    #[test]
    fn missing_and_empty_secrets_are_errors_without_the_value() {
        let missing = Secret::Env("PROTOGATE_TEST_SURELY_UNSET_VAR".into());
        assert!(matches!(missing.read(), Err(SecretError::MissingEnv(_))));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty");
        std::fs::write(&path, b"\n").expect("write");
        assert!(matches!(Secret::File(path).read(), Err(SecretError::Empty(_))));
    }

    #[test]
    fn parses_from_yaml() {
        let s: Secret = serde_yaml_ng::from_str("{ file: /run/secrets/jwt }").expect("parses");
        assert_eq!(s, Secret::File("/run/secrets/jwt".into()));
        assert!(serde_yaml_ng::from_str::<Secret>("{}").is_err());
        assert!(serde_yaml_ng::from_str::<Secret>("plain").is_err());
    }
}
