//! Bearer-token access control for the `/v1` routes, the page's `/ui/`
//! data and (unless the operator opens it) `/metrics`.

use std::fmt;

use axum::http::{header, HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};

/// The access token, kept only as its SHA-256 digest so that comparing a
/// presented token takes the same time whatever it is (length included).
#[derive(Clone)]
pub struct AccessToken {
    digest: [u8; 32],
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl AccessToken {
    /// A token; surrounding whitespace (a file's trailing newline) is
    /// ignored. Empty tokens are refused.
    pub fn new(token: &str) -> Result<Self, &'static str> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the access token is empty");
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }
}

/// Rejects a request to a guarded path (`/v1`, `/v1/...`, `/ui/...`, and
/// `/metrics` unless it is open) without `Authorization: Bearer <token>`;
/// checked by the router's guard (`guard.rs`), so it costs no allocation
/// and no boxed service.
///
/// `/metrics` tells who validates what and how often (counts by provider
/// and outcome), so like Vault (`unauthenticated_metrics_access`, off by
/// default) it needs the token unless the operator opens it.
#[derive(Clone)]
pub(crate) struct RequireToken {
    token: AccessToken,
    metrics_open: bool,
}

impl RequireToken {
    /// Guards with `token`; `metrics_open` leaves `/metrics` to anyone.
    pub(crate) fn new(token: AccessToken, metrics_open: bool) -> Self {
        Self {
            token,
            metrics_open,
        }
    }

    /// Whether a request to `path` must carry the token.
    fn guards(&self, path: &str) -> bool {
        path == "/v1"
            || path.starts_with("/v1/")
            || path.starts_with("/ui/")
            || (path == "/metrics" && !self.metrics_open)
    }

    /// The 401 `unauthorized` answer to `request`, or `None` to let it
    /// through.
    pub(crate) fn refusal<B>(&self, request: &Request<B>) -> Option<Response> {
        let guarded = self.guards(request.uri().path());
        // CORS preflights carry no credentials; the CORS layer answers them.
        if !guarded || request.method() == axum::http::Method::OPTIONS {
            return None;
        }
        match bearer(request.headers()) {
            Some(presented) if self.token.matches(presented.trim()) => None,
            Some(_) => Some(unauthorized("The access token is wrong.")),
            None => Some(unauthorized(
                "This server requires an access token: send Authorization: Bearer <token>.",
            )),
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` header, if the
/// request has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, credentials) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
        })
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthorized, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_never_print() {
        let token = AccessToken::new("s3cret-token\n").unwrap();
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches("s3cret-token2"));
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(AccessToken::new("  \n").is_err());
    }

    #[test]
    fn metrics_are_guarded_unless_opened() {
        let token = AccessToken::new("t").unwrap();
        let closed = RequireToken::new(token.clone(), false);
        let open = RequireToken::new(token, true);
        for path in ["/v1", "/v1/providers", "/ui/instructions"] {
            assert!(closed.guards(path) && open.guards(path), "{path}");
        }
        assert!(closed.guards("/metrics"));
        assert!(!open.guards("/metrics"));
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/",
            "/metrics/x",
            "/v1x",
        ] {
            assert!(!closed.guards(path), "{path}");
        }
    }
}
