//! HTTP requests made by the host on a provider's behalf.
//!
//! ```no_run
//! # async fn demo(key: &str) -> connhost_plugin_api::ValidationResult {
//! use connhost_plugin_api::prelude::*;
//!
//! let response = http::Request::get("https://api.example.com/me")
//!     .bearer_auth(key)
//!     .send()
//!     .await?; // a network failure becomes an inconclusive verdict
//! match response.status() {
//!     200 => Ok(ConnectionValidation::valid()),
//!     401 | 403 => Err(ValidationError::rejected("The key was refused.")),
//!     other => Err(ValidationError::inconclusive(format!("Unexpected status {other}"))),
//! }
//! # }
//! ```
//!
//! See [`crate::host`] for why providers go through the host for I/O.

use std::fmt;
use std::time::Duration;

use abi_stable::std_types::{RString, RVec, Tuple2};

use crate::abi::{http_error, FfiHttpRequest};
use crate::provider::ValidationError;

/// An HTTP request. Its `Debug` output hides header values, which often hold
/// credentials.
#[derive(Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.header("Content-Type", "application/json").body(body)
    }

    /// Bounds this request (the host applies its own default otherwise).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request through the host.
    pub async fn send(self) -> Result<Response, Error> {
        let Some(host) = crate::host::current() else {
            return Err(Error {
                kind: ErrorKind::Unavailable,
                message:
                    "no connhost host is running this provider, so it cannot make HTTP requests"
                        .to_owned(),
            });
        };
        let request = FfiHttpRequest {
            method: self.method.into(),
            url: self.url.into(),
            headers: self
                .headers
                .into_iter()
                .map(|(k, v)| Tuple2(RString::from(k), RString::from(v)))
                .collect(),
            body: RVec::from(self.body),
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
                .unwrap_or(0),
        };
        match (host.vtable.http())(host.plugin, request)
            .await
            .into_result()
        {
            Ok(response) => Ok(Response {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .map(|Tuple2(k, v)| (k.into_string(), v.into_string()))
                    .collect(),
                body: response.body.into_vec(),
            }),
            Err(error) => Err(Error {
                kind: match error.kind {
                    http_error::CONNECT => ErrorKind::Connect,
                    http_error::TIMEOUT => ErrorKind::Timeout,
                    http_error::DENIED => ErrorKind::Denied,
                    http_error::INVALID_REQUEST => ErrorKind::InvalidRequest,
                    _ => ErrorKind::Other,
                },
                message: error.message.into_string(),
            }),
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| (k.as_str(), "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Could not connect, or the connection broke.
    Connect,
    /// No answer in time.
    Timeout,
    /// The host does not allow this plugin to reach that address.
    Denied,
    /// The request is malformed (bad URL or header).
    InvalidRequest,
    /// No host is installed (e.g. in a provider crate's unit tests).
    Unavailable,
    /// Anything else.
    Other,
}

/// A failed HTTP request.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for ValidationError {
    /// A request that failed says nothing about the credential: inconclusive.
    fn from(error: Error) -> Self {
        ValidationError::inconclusive(format!("Could not reach the service: {error}"))
    }
}
