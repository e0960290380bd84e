//! The API's error type: every failure answers with a JSON body
//! `{"error": {"code", "message", ...}}` and the status of its code.
//!
//! [`ErrorCode`] is the one list of codes: each code's status and wire
//! string are decided in [`ErrorCode::spec`], its JSON form is that string,
//! and the OpenAPI document's `ErrorCode` schema is derived from the same
//! enum (the unit tests below hold the three together).

use std::sync::{PoisonError, RwLock};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use connhost_plugin_api::FieldError;
use serde::{Serialize, Serializer};

/// A stable, machine-readable error code: the `error.code` of every error
/// body connhost answers, each with one HTTP status ([`status`]).
///
/// The JSON form is [`as_str`] (`snake_case`, such as
/// `"provider_not_found"`); the served OpenAPI document lists exactly these
/// codes as the `ErrorCode` schema. An embedder that mounts
/// [`router`](crate::router) in its own app sees these codes and no other
/// (apart from hyper's own empty-bodied answers to unparseable requests).
///
/// [`status`]: ErrorCode::status
/// [`as_str`]: ErrorCode::as_str
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 404: no provider with that id.
    ProviderNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 400: the path is malformed.
    InvalidPath,
    /// 400: the body is not valid JSON (the message has the position).
    MalformedJson,
    /// 400: the body could not be read.
    UnreadableBody,
    /// 408: the body did not arrive in time (a total bound from the end
    /// of the headers).
    BodyTimeout,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 422: the body has the wrong shape or a non-string value.
    InvalidBody,
    /// 422: the submission breaks the form's rules; see `fields`.
    InvalidFields,
    /// 401: missing or wrong access token.
    Unauthorized,
    /// 429: too many validations from this client, or with this provider;
    /// `Retry-After` says when to retry.
    RateLimited,
    /// 503: plugins are still loading.
    Starting,
    /// 503: the server is shutting down (also the answer to a request
    /// still running when the shutdown grace ends).
    Draining,
    /// 503: hot reload is not running.
    ReloadUnavailable,
    /// 503: the rate limits' shared store does not answer, and the server
    /// refuses validations meanwhile (`rate_limit_store_failure =
    /// "closed"`).
    RateLimitUnavailable,
    /// 500: a bug; it is logged.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the OpenAPI document lists them.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::ProviderNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidPath,
        ErrorCode::MalformedJson,
        ErrorCode::UnreadableBody,
        ErrorCode::BodyTimeout,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidFields,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
        ErrorCode::Starting,
        ErrorCode::Draining,
        ErrorCode::ReloadUnavailable,
        ErrorCode::RateLimitUnavailable,
        ErrorCode::Internal,
    ];

    /// The one place a code's status and wire string are decided.
    const fn spec(self) -> (StatusCode, &'static str) {
        match self {
            ErrorCode::ProviderNotFound => (StatusCode::NOT_FOUND, "provider_not_found"),
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ErrorCode::InvalidPath => (StatusCode::BAD_REQUEST, "invalid_path"),
            ErrorCode::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json"),
            ErrorCode::UnreadableBody => (StatusCode::BAD_REQUEST, "unreadable_body"),
            ErrorCode::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ErrorCode::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ErrorCode::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ErrorCode::InvalidBody => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            ErrorCode::InvalidFields => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_fields"),
            ErrorCode::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ErrorCode::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
            ErrorCode::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            ErrorCode::ReloadUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "reload_unavailable"),
            ErrorCode::RateLimitUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "rate_limit_unavailable")
            }
            ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The HTTP status every answer with this code has.
    pub const fn status(self) -> StatusCode {
        self.spec().0
    }

    /// The code as it appears in the JSON body, such as
    /// `"provider_not_found"`.
    pub const fn as_str(self) -> &'static str {
        self.spec().1
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error answer of the HTTP API: a code, a message for humans, and for
/// form errors the problem of each field. As an axum response it is the
/// code's status with the JSON body `{"error": {"code", "message",
/// "fields"?}}`, the shape of every error connhost answers, so an
/// embedder's own handlers can answer in it too.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    fields: Option<Vec<FieldError>>,
}

/// The JSON envelope of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable machine-readable code.
    pub(crate) code: ErrorCode,
    /// A message for humans.
    pub(crate) message: String,
    /// For `invalid_fields` and `invalid_body`: each problem tied to its
    /// field (`null` for a form-wide one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::wire::FieldErrorBody>>)]
    pub(crate) fields: Option<Vec<FieldError>>,
}

impl ApiError {
    /// An error with this code (which decides the status) and message. The
    /// message is shown to the client: never put a submitted value in it.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: None,
        }
    }

    /// Adds the problem of each field (`"fields"` in the body).
    #[must_use]
    pub fn with_fields(mut self, fields: Vec<FieldError>) -> Self {
        self.fields = Some(fields);
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The status the answer has: the code's.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    pub(crate) fn starting() -> Self {
        Self::new(
            ErrorCode::Starting,
            "connhost is still loading its plugins; retry in a moment.",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<connhost::UnknownProvider> for ApiError {
    fn from(error: connhost::UnknownProvider) -> Self {
        Self::new(
            ErrorCode::ProviderNotFound,
            format!(
                "No provider \"{}\" is registered. GET /v1/providers lists them.",
                error.provider_id
            ),
        )
    }
}

impl ErrorBody {
    /// The body as JSON, byte for byte what `serde_json::to_vec` writes for
    /// it (a unit test holds the two together), without serde's machinery:
    /// an error answers many requests (every 422 of a form), and this
    /// writes it in a fraction of the time.
    fn to_json(&self) -> Vec<u8> {
        let ErrorDetail {
            code,
            message,
            fields,
        } = &self.error;
        let fields_len: usize = fields
            .iter()
            .flatten()
            .map(|f| f.message.len() + f.field.as_ref().map_or(4, String::len) + 32)
            .sum();
        let mut out = Vec::with_capacity(64 + message.len() + fields_len);
        out.extend_from_slice(b"{\"error\":{\"code\":");
        json_string(&mut out, code.as_str());
        out.extend_from_slice(b",\"message\":");
        json_string(&mut out, message);
        if let Some(fields) = fields {
            out.extend_from_slice(b",\"fields\":[");
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"field\":");
                match &field.field {
                    Some(name) => json_string(&mut out, name),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"message\":");
                json_string(&mut out, &field.message);
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it: `"`,
/// `\` and the control characters below U+0020 (`\b`, `\t`, `\n`, `\f`,
/// `\r` by name, the others as `\u00xx`); every other character as is.
fn json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping.
        if let Some(&chunk) = bytes[i..].first_chunk::<8>() {
            if !needs_escape(u64::from_le_bytes(chunk)) {
                i += 8;
                continue;
            }
        }
        let byte = bytes[i];
        i += 1;
        let named: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i - 1]);
        if named.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(named);
        }
        plain = i;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `word` is one a JSON string escapes
/// (`"`, `\\`, or below 0x20): the classic "has a byte less than n" and
/// "has a zero byte" bit tricks, exact for any word.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (below(word, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGH_BITS != 0
}

impl ApiError {
    /// The JSON body of the answer.
    fn into_json(self) -> Vec<u8> {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                fields: self.fields,
            },
        }
        .to_json()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.into_json(),
        )
            .into_response()
    }
}

/// The bodies of the `invalid_fields` answers given lately, by their field
/// errors: a form refused for the same reasons (every empty submission of
/// a form, say) is answered with the same bytes, written once. The errors
/// come from the providers' forms, never from a submitted value; at most
/// [`Self::MOST`] bodies are kept.
#[derive(Default)]
pub(crate) struct InvalidFieldsBodies(RwLock<Vec<(Vec<FieldError>, Bytes)>>);

impl InvalidFieldsBodies {
    /// The most bodies kept; beyond them, answers are written each time.
    const MOST: usize = 64;

    /// The `invalid_fields` answer (with `Cache-Control: no-store`) to a
    /// submission refused with `errors`, whose message `message` makes:
    /// byte for byte `(no_store, ApiError::new(InvalidFields, message)
    /// .with_fields(errors))`.
    pub(crate) fn response(
        &self,
        errors: &[FieldError],
        message: impl FnOnce() -> String,
    ) -> Response {
        let known = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(known, _)| known.as_slice() == errors)
            .map(|(_, body)| body.clone());
        let body = known.unwrap_or_else(|| {
            let body = Bytes::from(
                ApiError::new(ErrorCode::InvalidFields, message())
                    .with_fields(errors.to_vec())
                    .into_json(),
            );
            let mut bodies = self.0.write().unwrap_or_else(PoisonError::into_inner);
            if bodies.len() < Self::MOST && !bodies.iter().any(|(known, _)| known == errors) {
                bodies.push((errors.to_vec(), body.clone()));
            }
            body
        });
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = ErrorCode::InvalidFields.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn document() -> Value {
        serde_json::from_str(&crate::openapi::document()).unwrap()
    }

    /// The codes a text names in backticks, such as "`invalid_path`".
    fn codes_named_in(text: &str) -> Vec<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|code| text.contains(&format!("`{}`", code.as_str())))
            .collect()
    }

    /// An `invalid_fields` answer is the same whether its body was written
    /// now or kept from an earlier answer with the same errors.
    #[tokio::test]
    async fn a_kept_invalid_fields_answer_is_the_one_written_each_time() {
        let errors = |message: &str| {
            vec![
                FieldError {
                    field: None,
                    message: message.to_owned(),
                },
                FieldError {
                    field: Some("api_key".to_owned()),
                    message: "API key is required.".to_owned(),
                },
            ]
        };
        let bodies = InvalidFieldsBodies::default();
        for message in [
            "Provide \"credentials\".",
            "Other.",
            "Provide \"credentials\".",
        ] {
            let errors = errors(message);
            let joined = || {
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let expected = (
                [(header::CACHE_CONTROL, "no-store")],
                ApiError::new(ErrorCode::InvalidFields, joined()).with_fields(errors.clone()),
            )
                .into_response();
            let answered = bodies.response(&errors, joined);
            assert_eq!(answered.status(), expected.status());
            assert_eq!(answered.headers(), expected.headers());
            let read = |response: Response| axum::body::to_bytes(response.into_body(), usize::MAX);
            assert_eq!(read(answered).await.unwrap(), read(expected).await.unwrap());
        }
        assert_eq!(bodies.0.read().unwrap().len(), 2);
    }

    /// The hand-written JSON is serde_json's, byte for byte, whatever the
    /// text: every ASCII character, multi-byte ones, fields or none.
    #[test]
    fn the_error_body_is_written_as_serde_json_writes_it() {
        let ascii: String = (0..=0x7f_u8).map(char::from).collect();
        let texts = [
            String::new(),
            "Provide credentials for one of the available methods.".to_owned(),
            ascii.clone(),
            format!("{ascii}é…\u{2028}\u{10FFFF}{ascii}"),
            "\"quoted\" \\ back\\slashes\\".to_owned(),
        ];
        let field_lists = [
            None,
            Some(Vec::new()),
            Some(vec![
                FieldError {
                    field: None,
                    message: texts[1].clone(),
                },
                FieldError {
                    field: Some(texts[3].clone()),
                    message: texts[2].clone(),
                },
            ]),
        ];
        for code in ErrorCode::ALL {
            for message in &texts {
                for fields in &field_lists {
                    let body = ErrorBody {
                        error: ErrorDetail {
                            code: *code,
                            message: message.clone(),
                            fields: fields.clone(),
                        },
                    };
                    assert_eq!(
                        String::from_utf8(body.to_json()).unwrap(),
                        serde_json::to_string(&body).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn a_word_needs_escaping_exactly_when_one_of_its_bytes_does() {
        for byte in 0..=u8::MAX {
            let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
            for position in 0..8 {
                for filler in [b'a', b'~', 0xc3, 0xff] {
                    let mut word = [filler; 8];
                    word[position] = byte;
                    assert_eq!(
                        needs_escape(u64::from_le_bytes(word)),
                        escaped,
                        "{byte:#x} at {position} among {filler:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_code_serialises_as_its_wire_string() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    /// The document's `ErrorCode` schema is derived from the enum, and
    /// `ALL` is checked against it: together they list every variant once.
    #[test]
    fn the_document_lists_exactly_the_codes() {
        let schema = document()["components"]["schemas"]["ErrorCode"].clone();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(schema["enum"], json!(all));
        let description = schema["description"].as_str().unwrap();
        for code in ErrorCode::ALL {
            let status = format!("`{code}` {}", code.status().as_u16());
            assert!(description.contains(&status), "{status}: {description}");
        }
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "{all:?}");
    }

    /// An error's answer is its code's status with the JSON envelope, byte
    /// for byte.
    #[tokio::test]
    async fn an_error_answers_with_its_codes_status_and_the_envelope() {
        let response = ApiError::new(ErrorCode::InvalidFields, "Fix the form.")
            .with_fields(vec![FieldError {
                field: Some("api_key".to_owned()),
                message: "Required.".to_owned(),
            }])
            .into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":{"code":"invalid_fields","message":"Fix the form.","fields":[{"field":"api_key","message":"Required."}]}}"#
        );

        let response = ApiError::new(ErrorCode::Starting, "Wait.").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":{"code":"starting","message":"Wait."}}"#
        );
    }

    /// Where a documented response names a code (in backticks, such as
    /// "Malformed JSON (`malformed_json`)"), it is listed under that code's
    /// status.
    #[test]
    fn the_document_names_each_code_under_its_status() {
        let document = document();
        let mut named = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let description = response["description"].as_str().unwrap_or("");
                    for code in codes_named_in(description) {
                        assert_eq!(
                            status,
                            code.status().as_str(),
                            "{method} {path}: {status} names `{code}`"
                        );
                        named.push(code);
                    }
                }
            }
        }
        for (name, status) in [("NotFound", "404"), ("MethodNotAllowed", "405")] {
            let description = document["components"]["responses"][name]["description"]
                .as_str()
                .unwrap();
            let codes = codes_named_in(description);
            assert!(!codes.is_empty(), "{name}: {description}");
            for code in codes {
                assert_eq!(code.status().as_str(), status, "{name}: {description}");
            }
        }
        // Enough of them are named for the check to mean something.
        for code in [
            ErrorCode::InvalidPath,
            ErrorCode::MalformedJson,
            ErrorCode::BodyTimeout,
            ErrorCode::InvalidFields,
            ErrorCode::Starting,
            ErrorCode::Draining,
        ] {
            assert!(named.contains(&code), "no response names `{code}`");
        }
    }

    /// The README's "Errors" paragraph gives each code's status as
    /// "`code` (status" (or "`a` and `b` (status"): every code is there,
    /// with the status it has.
    #[test]
    fn the_readme_gives_each_code_its_status() {
        let readme_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(readme_path).unwrap();
        let start = readme
            .find("**Errors**")
            .expect("the README has an **Errors** paragraph");
        let paragraph = &readme[start..];
        let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
        for code in ErrorCode::ALL {
            let named = format!("`{}`", code.as_str());
            let at = paragraph
                .find(&named)
                .unwrap_or_else(|| panic!("the README's errors do not name {named}"));
            let after = &paragraph[at..];
            let status = after
                .match_indices('(')
                .map(|(i, _)| &after[i + 1..])
                .find_map(|rest| {
                    rest.get(..3)
                        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                })
                .unwrap_or_else(|| panic!("no status after {named} in the README"));
            assert_eq!(status, code.status().as_str(), "{named} in the README");
        }
    }
}
