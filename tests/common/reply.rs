//! What the tests read back from the gateway: a response read to the end,
//! the error envelope check, and the HTTP client they talk with.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// A plain HTTP/1.1 client that ignores proxy settings of the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().no_proxy().build().expect("build reqwest client")
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("read response body");
        Reply { status, headers, body }
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body of a {} reply is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The body as text, lossily, for assertions and panic messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of a header as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Asserts the one error envelope (design §5): the HTTP status, a JSON body
/// with `code` == `grpc_code`, a non-empty `message` and a `details` array.
/// Returns the parsed JSON for further checks.
#[track_caller]
pub fn assert_error(reply: &Reply, http_status: u16, grpc_code: i32) -> serde_json::Value {
    assert_eq!(reply.status.as_u16(), http_status, "unexpected HTTP status; body: {}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content-type is {content_type:?}; body: {}",
        reply.text()
    );
    let json = reply.json();
    assert_eq!(json["code"], serde_json::json!(grpc_code), "unexpected `code` in {json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "`message` missing or empty in {json}");
    assert!(json["details"].is_array(), "`details` array missing in {json}");
    json
}

/// The `field`s of the `google.rpc.BadRequest` detail of an error envelope
/// (or Status JSON); panics when there is none.
#[track_caller]
pub fn violation_fields(envelope: &serde_json::Value) -> Vec<String> {
    let details = envelope["details"].as_array().cloned().unwrap_or_default();
    let bad_request = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap_or_else(|| panic!("no google.rpc.BadRequest detail in {envelope}"));
    let violations = bad_request["fieldViolations"]
        .as_array()
        .unwrap_or_else(|| panic!("BadRequest without fieldViolations in {envelope}"));
    assert!(!violations.is_empty(), "empty fieldViolations in {envelope}");
    violations.iter().map(|v| v["field"].as_str().unwrap_or_default().to_owned()).collect()
}
