//! The validate request's body, read by hand so that every malformed input
//! gets a precise error in the API's own format, and so that no error
//! message ever quotes a submitted value. Answers are bounded whatever the
//! body: at most [`MAX_LISTED_PROBLEMS`] problems are listed (with a count
//! of the rest), and names taken from the body are cut to
//! [`MAX_ECHOED_CHARS`] characters.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use connhost_plugin_api::{CredentialFields, FieldError};
use serde_json::Value;

use super::error::{ApiError, ErrorCode};

/// The most problems an `invalid_body` answer lists; the message counts the
/// rest.
pub(crate) const MAX_LISTED_PROBLEMS: usize = 20;

/// The most characters of a client-chosen name (a field, an unknown key, a
/// media type) an error message repeats.
pub(crate) const MAX_ECHOED_CHARS: usize = 64;

/// `text` cut to [`MAX_ECHOED_CHARS`] characters, with `…` when cut.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHOED_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

/// The `{id}` of a provider route; a malformed one (not UTF-8) is a 400 in
/// the API's own format.
#[derive(Debug)]
pub(crate) struct ProviderId(pub(crate) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ProviderId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        // `/v1/providers/{id}`: the last segment.
        provider_id(parts.uri.path(), "").map(|id| ProviderId(id.into_owned()))
    }
}

/// The `{id}` of a provider route whose template ends with `{id}` then
/// `suffix` (`""` or `"/validate"`), read from the request's path as
/// axum's path parameters read it (the router matched the raw path
/// against the template, then percent-decoded the segment), without
/// their allocations: with the same errors (a segment that is not UTF-8
/// once decoded is a 400 `invalid_path`). Borrowed from `path` unless it
/// holds a `%`.
pub(crate) fn provider_id<'a>(
    path: &'a str,
    suffix: &str,
) -> Result<std::borrow::Cow<'a, str>, ApiError> {
    let malformed = |reason: &str| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("The provider id in the path is malformed: {reason}"),
        )
    };
    let segment = path
        .strip_suffix(suffix)
        .and_then(|rest| rest.rsplit_once('/'))
        .map(|(_, segment)| segment)
        .ok_or_else(|| malformed("no provider id in the path"))?;
    percent_decode(segment).ok_or_else(|| malformed("Invalid UTF-8 in `id`"))
}

/// `text` percent-decoded as the `percent-encoding` crate decodes a path
/// segment (a `%` not followed by two hexadecimal digits stays as it is);
/// `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    // (A byte loop: ids are short.)
    if !text.bytes().any(|byte| byte == b'%') {
        return Some(text.into());
    }
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            if let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                // (Two hexadecimal digits: below 256.)
                decoded.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(byte);
        i += 1;
    }
    String::from_utf8(decoded).ok().map(Into::into)
}

/// `{"fields": {name: value}, "include_document": bool?}`
#[derive(Debug)]
pub(crate) struct ValidateRequest {
    pub(crate) fields: CredentialFields,
    pub(crate) include_document: bool,
}

/// The request body's schema, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub(crate) struct ValidateRequestBody {
    /// The submitted form: field name to value. Values must be strings.
    #[schema(value_type = Object, additional_properties = true, example = json!({"api_key": "dtn_..."}))]
    fields: std::collections::BTreeMap<String, String>,
    /// Also return the assembled credential document (it holds secrets).
    /// Default `false`.
    include_document: Option<bool>,
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `application/json` or `application/*+json`, in any case.
fn is_json_media_type(mime: &str) -> bool {
    let starts = |prefix: &str| {
        mime.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &str| {
        mime.get(mime.len().saturating_sub(suffix.len())..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
    };
    mime.eq_ignore_ascii_case("application/json") || (starts("application/") && ends("+json"))
}

fn invalid_body(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidBody, message)
}

impl<S: Send + Sync> FromRequest<S> for ValidateRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        Self::check_content_type(request.headers())?;
        Self::read(request.into_body()).await
    }
}

impl ValidateRequest {
    /// The first half of [`FromRequest::from_request`]: a body that is not
    /// JSON (by its `Content-Type`) is a 415.
    pub(crate) fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
        let value = headers.get(header::CONTENT_TYPE);
        // What nearly every client sends, known without parsing.
        if value.is_some_and(|value| value.as_bytes() == b"application/json") {
            return Ok(());
        }
        let content_type = value.and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if is_json_media_type(mime) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            if content_type.is_empty() {
                "The body must be JSON: send Content-Type: application/json.".to_owned()
            } else {
                format!(
                    "The body must be JSON (Content-Type: application/json), not {}.",
                    bounded(&mime.to_ascii_lowercase())
                )
            },
        ))
    }

    /// The second half: reads and parses the body (of a request whose
    /// `Content-Type` passed [`Self::check_content_type`]). Split so that
    /// a handler's future holds the body alone while it is read, not the
    /// whole request.
    pub(crate) async fn read(body: axum::body::Body) -> Result<Self, ApiError> {
        // The router's guard holds the body to the size limit and the
        // total deadline (`body::BoundedBody`): read it all here.
        let bytes = read_body(body).await.map_err(|error| {
                if super::body::body_too_large(&error) {
                    super::body::payload_too_large()
                } else if let Some(timeout) = super::body::body_timeout(&error) {
                    ApiError::new(
                        ErrorCode::BodyTimeout,
                        format!(
                            "The body did not arrive within {} s of the headers (see --body-timeout); send it at once.",
                            timeout.as_secs_f64()
                        ),
                    )
                } else {
                    // (Worded as axum's `Bytes` extractor words it.)
                    ApiError::new(
                        ErrorCode::UnreadableBody,
                        format!(
                            "The body could not be read: Failed to buffer the request body: {error}"
                        ),
                    )
                }
        })?;
        parse_body(&bytes)
    }
}

/// The error of a body that is not JSON. serde_json's syntax errors name
/// a position, never the content.
fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedJson,
        format!("The body is not valid JSON: {e}."),
    )
}

/// A validate request's body: exactly what `parse(serde_json::from_slice
/// ::<Value>(bytes)?)` answers (a unit test holds the two together),
/// without building the top-level map.
fn parse_body(bytes: &[u8]) -> Result<ValidateRequest, ApiError> {
    if let Some(plain) = Plain(bytes).request() {
        return Ok(plain);
    }
    let raw_value_key = std::cell::Cell::new(false);
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let shape = serde::de::DeserializeSeed::deserialize(ShapeSeed(&raw_value_key), &mut json)
        .and_then(|shape| json.end().map(|()| shape));
    if raw_value_key.get() {
        // serde_json's `Value` reads such a body its own way: let it.
        let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
        return parse(value);
    }
    parse_shape(shape.map_err(malformed)?)
}

/// A reader of the plainest valid bodies, the common case, without
/// serde's machinery: an object with `"fields"` (an object of strings)
/// and optionally `"include_document"` (`true` or `false`), each key
/// once, in either order, and strings without escapes. Anything else
/// (including any error) it declines, and [`parse_body`] reads the body
/// in full: what it accepts, it reads exactly as that would.
struct Plain<'a>(&'a [u8]);

impl<'a> Plain<'a> {
    /// The request, or `None` to decline the body.
    fn request(mut self) -> Option<ValidateRequest> {
        let mut fields = None;
        let mut include_document = None;
        self.byte(b'{')?;
        loop {
            let key = self.string()?;
            self.byte(b':')?;
            match key {
                "fields" if fields.is_none() => fields = Some(self.fields()?),
                "include_document" if include_document.is_none() => {
                    include_document = Some(self.boolean()?)
                }
                _ => return None,
            }
            if self.byte(b'}').is_some() {
                break;
            }
            self.byte(b',')?;
        }
        self.skip_whitespace();
        if !self.0.is_empty() {
            return None;
        }
        Some(ValidateRequest {
            fields: fields?,
            include_document: include_document.unwrap_or(false),
        })
    }

    /// `{}` or `{"name": "value", ...}`.
    fn fields(&mut self) -> Option<CredentialFields> {
        let mut fields = CredentialFields::new();
        self.byte(b'{')?;
        if self.byte(b'}').is_some() {
            return Some(fields);
        }
        loop {
            let name = self.string()?;
            self.byte(b':')?;
            let value = self.string()?;
            // A repeated name keeps its last value, as in a `Value`.
            fields.insert(name.to_owned(), value.to_owned());
            if self.byte(b'}').is_some() {
                return Some(fields);
            }
            self.byte(b',')?;
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        self.skip_whitespace();
        for (word, value) in [(&b"true"[..], true), (&b"false"[..], false)] {
            if let Some(rest) = self.0.strip_prefix(word) {
                self.0 = rest;
                return Some(value);
            }
        }
        None
    }

    /// A string without escapes or control characters, in UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        self.byte(b'"')?;
        let end = self
            .0
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
        if self.0[end] != b'"' {
            return None;
        }
        let text = std::str::from_utf8(&self.0[..end]).ok()?;
        self.0 = &self.0[end + 1..];
        Some(text)
    }

    /// Whitespace (as JSON has it), then `byte`.
    fn byte(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        let rest = self.0.strip_prefix(&[byte])?;
        self.0 = rest;
        Some(())
    }

    fn skip_whitespace(&mut self) {
        let start = self
            .0
            .iter()
            .position(|byte| !matches!(byte, b' ' | b'\n' | b'\t' | b'\r'))
            .unwrap_or(self.0.len());
        self.0 = &self.0[start..];
    }
}

/// What [`parse_shape`] reads of a body: its top-level keys, each key's
/// (last) value, as `serde_json::from_slice::<Value>` then
/// `Map::remove` would give them, without building the top-level map.
/// Values are `Value`s as serde_json reads them (with its errors and
/// bounds); a body that is not an object is known by its JSON type.
enum Shape {
    /// Not an object: its JSON type, as [`json_type`] names it.
    NotObject(&'static str),
    /// An object.
    Object {
        /// The keys other than `fields` and `include_document`, in the
        /// order (and with the deduplication) of a `Value`'s map.
        unknown: serde_json::Map<String, Value>,
        include_document: Option<Value>,
        fields: Option<Value>,
    },
}

impl From<Value> for Shape {
    fn from(value: Value) -> Self {
        match value {
            Value::Object(mut body) => Shape::Object {
                include_document: body.remove("include_document"),
                fields: body.remove("fields"),
                unknown: body,
            },
            other => Shape::NotObject(json_type(&other)),
        }
    }
}

/// The key serde_json's `Value` treats as its raw-value marker when it
/// comes first in an object (`serde_json::value::RawValue`'s token).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Reads a [`Shape`]; sets its flag, and fails, when the body's first key
/// is [`RAW_VALUE_TOKEN`] (the caller reads such a body as a `Value`).
struct ShapeSeed<'a>(&'a std::cell::Cell<bool>);

impl<'de> serde::de::DeserializeSeed<'de> for ShapeSeed<'_> {
    type Value = Shape;

    fn deserialize<D: serde::Deserializer<'de>>(self, json: D) -> Result<Shape, D::Error> {
        json.deserialize_any(self)
    }
}

/// A top-level key, known ones without an allocation.
enum Key {
    Fields,
    IncludeDocument,
    Other(String),
}

struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: serde::Deserializer<'de>>(self, json: D) -> Result<Key, D::Error> {
        json.deserialize_string(self)
    }
}

impl serde::de::Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "fields" => Key::Fields,
            "include_document" => Key::IncludeDocument,
            other => Key::Other(other.to_owned()),
        })
    }

    fn visit_string<E: serde::de::Error>(self, key: String) -> Result<Key, E> {
        match key.as_str() {
            "fields" | "include_document" => self.visit_str(&key),
            _ => Ok(Key::Other(key)),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for ShapeSeed<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::NotObject("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::NotObject("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::NotObject("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::NotObject("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::NotObject("a string"))
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::NotObject("null"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Shape, A::Error> {
        // Read (and checked) as `Value` reads them.
        while items.next_element::<Value>()?.is_some() {}
        Ok(Shape::NotObject("an array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut unknown = serde_json::Map::new();
        let mut include_document = None;
        let mut fields = None;
        let mut first = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if first && matches!(&key, Key::Other(key) if key == RAW_VALUE_TOKEN) {
                self.0.set(true);
                return Err(serde::de::Error::custom("a raw value marker"));
            }
            first = false;
            // A repeated key keeps its last value, as in a `Value`.
            let value = map.next_value::<Value>()?;
            match key {
                Key::Fields => fields = Some(value),
                Key::IncludeDocument => include_document = Some(value),
                Key::Other(key) => {
                    unknown.insert(key, Value::Null);
                }
            }
        }
        Ok(Shape::Object {
            unknown,
            include_document,
            fields,
        })
    }
}

/// The whole of `body`, as `axum::body::to_bytes(body, usize::MAX)` reads
/// it (with its errors), without its size-limit and collecting layers: a
/// body of one frame (any small one) is that frame, not a copy.
async fn read_body(body: axum::body::Body) -> Result<Bytes, axum::Error> {
    use http_body::Body as _;
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut more: Option<Vec<u8>> = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        // (Trailers are not data.)
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match (&mut first, &mut more) {
            (_, Some(more)) => more.extend_from_slice(&data),
            (Some(first), None) => {
                let mut joined = Vec::with_capacity(first.len() + data.len());
                joined.extend_from_slice(first);
                joined.extend_from_slice(&data);
                more = Some(joined);
            }
            (None, None) => first = Some(data),
        }
    }
    Ok(match (first, more) {
        (_, Some(more)) => Bytes::from(more),
        (first, None) => first.unwrap_or_default(),
    })
}

fn parse(value: Value) -> Result<ValidateRequest, ApiError> {
    parse_shape(value.into())
}

fn parse_shape(shape: Shape) -> Result<ValidateRequest, ApiError> {
    let (unknown, include_document, fields) = match shape {
        Shape::NotObject(json_type) => {
            return Err(invalid_body(format!(
                "The body must be a JSON object like {{\"fields\": {{...}}}}, not {json_type}."
            )))
        }
        Shape::Object {
            unknown,
            include_document,
            fields,
        } => (unknown, include_document, fields),
    };
    let mut unknown = unknown.keys();
    if let Some(first) = unknown.next() {
        let more = match unknown.count() {
            0 => String::new(),
            more => format!(" (and {more} more)"),
        };
        return Err(invalid_body(format!(
            "Unknown key \"{}\"{more} in the body; expected \"fields\" and optionally \"include_document\".",
            bounded(first)
        )));
    }
    let include_document = match include_document {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(invalid_body(format!(
                "\"include_document\" must be a boolean, not {}.",
                json_type(&other)
            )))
        }
    };
    let fields = match fields {
        None => return Err(invalid_body("The body has no \"fields\" object.")),
        Some(Value::Object(fields)) => fields,
        Some(other) => {
            return Err(invalid_body(format!(
                "\"fields\" must be an object of strings, not {}.",
                json_type(&other)
            )))
        }
    };
    let mut parsed = CredentialFields::new();
    let mut problems = Vec::new();
    let mut unlisted = 0_usize;
    for (name, value) in fields {
        match value {
            Value::String(s) => {
                parsed.insert(name, s);
            }
            _ if problems.len() == MAX_LISTED_PROBLEMS => unlisted += 1,
            other => {
                let name = bounded(&name).into_owned();
                problems.push(FieldError {
                    message: format!("\"{name}\" must be a string, not {}.", json_type(&other)),
                    field: Some(name),
                })
            }
        }
    }
    if !problems.is_empty() {
        let mut message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if unlisted > 0 {
            message.push_str(&format!(
                " And {unlisted} more fields that are not strings (only the first {MAX_LISTED_PROBLEMS} are listed)."
            ));
        }
        return Err(invalid_body(message).with_fields(problems));
    }
    Ok(ValidateRequest {
        fields: parsed,
        include_document,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_string_values_are_named_without_their_values() {
        let err = parse(json!({"fields": {"api_key": 123456, "region": "x"}})).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        let text = format!("{err:?}");
        assert!(
            text.contains("\\\"api_key\\\" must be a string, not a number"),
            "{text}"
        );
        assert!(!text.contains("123456"), "{text}");
    }

    #[test]
    fn answers_are_bounded_whatever_the_body() {
        let long = "x".repeat(10_000);
        let mut fields = serde_json::Map::new();
        for i in 0..100_000 {
            fields.insert(format!("f{i}"), json!(i));
        }
        fields.insert(long.clone(), json!(1));
        let err = parse(json!({ "fields": fields })).unwrap_err();
        let text = format!("{err:?}");
        assert!(text.len() < 5_000, "{} bytes", text.len());
        assert!(
            text.contains("And 99981 more fields that are not strings"),
            "{text}"
        );
        assert!(!text.contains(&long[..100]), "{text}");

        let mut body = serde_json::Map::new();
        body.insert("fields".to_owned(), json!({}));
        for i in 0..1000 {
            body.insert(format!("{long}{i}"), json!(1));
        }
        let text = format!("{:?}", parse(Value::Object(body)).unwrap_err());
        assert!(text.len() < 1_000, "{text}");
        assert!(text.contains("(and 999 more)"), "{text}");
    }

    #[test]
    fn a_body_is_read_as_its_json_value_would_be() {
        let deep = format!(
            "{{\"fields\":{{}},\"x\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let bodies = [
            r#"{"fields":{}}"#,
            r#"{"fields":{"a":"1","b":"  "},"include_document":true}"#,
            r#"{"fields":{"a":1,"a":"x","b":[1],"c":{"d":null}}}"#,
            r#"{"fields":{"a":"1"},"fields":{"b":2}}"#,
            r#"{"fields":{}, "include_document": null, "include_document": "no"}"#,
            r#"{"zeta":1,"fields":{},"alpha":2,"alpha":3,"include_document":false}"#,
            r#"{"fields":"x"}"#,
            r#"{"include_document":true}"#,
            r#"{}"#,
            r#"[]"#,
            r#"[1,{"a":2}]"#,
            r#"[1,"#,
            r#""fields""#,
            r#"12.5e3"#,
            r#"1e999"#,
            r#"{"fields":{"a":1e999}}"#,
            r#"null"#,
            r#"true"#,
            r#"{"fields":{}}x"#,
            r#"{"fields":{},}"#,
            r#"{"fields":{"a":"\u00e9\n"}}"#,
            r#"{"fi\u0065lds":{"a":"1"}}"#,
            r#"{"$serde_json::private::RawValue":"{\"fields\":{}}"}"#,
            r#"{"$serde_json::private::RawValue":"{\"fields\":{}}","more":1}"#,
            r#"{"fields":{},"$serde_json::private::RawValue":"1"}"#,
            r#"{"fields":{"a":"1"}"#,
            r#"{"fields"}"#,
            " \n{ \"fields\" :\t{ \"a\" : \"1\" , \"b\":\"\" } , \"include_document\" : true }\r\n",
            r#"{"include_document":false,"fields":{"a":"x","a":"y"}}"#,
            r#"{"fields":{},"fields":{}}"#,
            r#"{"fields":{},"include_document":true,"include_document":false}"#,
            r#"{"fields":{"a":"1",}}"#,
            r#"{"fields":{,}}"#,
            r#"{"fields":{"a":"1"},}"#,
            r#"{"fields":{"a":"é\t"}}"#,
            "{\"fields\":{\"a\":\"x\ty\"}}",
            r#"{"fields":{"a":"1"}} {}"#,
            r#"{"fields":{"a":"1"},"include_document":tru}"#,
            r#"{"fields":{"a":"1"},"include_document":truex}"#,
            r#"{"fields":{"a":"1"},"include_document":1}"#,
            r#"{"fields":{"a":"1"},"include_document":"true"}"#,
            r#"{"fields":{"a":1,"b":"2"}}"#,
            r#"{"fields":{"a":"1"}"#,
            r#"{"fields":{"a""1"}}"#,
            r#"{"fields":{"a":"1""b":"2"}}"#,
            r#"{"fields" {}}"#,
            r#"{"fields":{"a":"1"}}}"#,
            r#"{"fields":{"a" : "1" }   }   "#,
            r#"{1:2}"#,
            "",
            " ",
            deep.as_str(),
        ];
        for body in bodies {
            let expected = serde_json::from_slice::<Value>(body.as_bytes())
                .map_err(malformed)
                .and_then(parse);
            assert_eq!(
                format!("{:?}", parse_body(body.as_bytes())),
                format!("{expected:?}"),
                "{body}"
            );
        }
    }

    #[test]
    fn provider_ids_are_read_from_the_path_as_axum_reads_them() {
        let id = |path: &str, suffix: &str| provider_id(path, suffix).map(|id| id.into_owned());
        assert_eq!(id("/v1/providers/mai", "").unwrap(), "mai");
        assert_eq!(
            id("/v1/providers/mai/validate", "/validate").unwrap(),
            "mai"
        );
        assert_eq!(id("/v1/providers/validate", "").unwrap(), "validate");
        // (An empty id, which axum's router matches before `/validate`.)
        assert_eq!(id("/v1/providers//validate", "/validate").unwrap(), "");
        assert_eq!(id("/v1/providers/m%61i", "").unwrap(), "mai");
        assert_eq!(
            id("/v1/providers/m%61i/validate", "/validate").unwrap(),
            "mai"
        );
        assert_eq!(id("/v1/providers/%C3%A9", "").unwrap(), "é");
        assert_eq!(id("/v1/providers/a%2Fb", "").unwrap(), "a/b");
        // (Not an escape: kept, as percent-encoding keeps it.)
        assert_eq!(id("/v1/providers/5%", "").unwrap(), "5%");
        assert_eq!(id("/v1/providers/%zz%4", "").unwrap(), "%zz%4");
        let error = provider_id("/v1/providers/%FF", "").unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidPath);
        // The message axum's `RawPathParams` rejection gave.
        assert_eq!(
            error.message(),
            "The provider id in the path is malformed: Invalid UTF-8 in `id`"
        );
        assert!(provider_id("/v1/providers/%FF/validate", "/validate").is_err());
    }

    #[test]
    fn bodies_that_are_not_utf8_are_read_as_serde_json_reads_them() {
        for body in [
            &b"{\"fields\":{\"a\":\"\xff\"}}"[..],
            b"{\"fields\":{\"\xc3\":\"1\"}}",
            b"{\"fields\":{\"a\":\"\xc3\xa9\"}}",
        ] {
            let expected = serde_json::from_slice::<Value>(body)
                .map_err(malformed)
                .and_then(parse);
            assert_eq!(
                format!("{:?}", parse_body(body)),
                format!("{expected:?}"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let cut = bounded(&"é".repeat(100)).into_owned();
        assert_eq!(cut.chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn shape_errors_are_precise() {
        for (body, needle) in [
            (json!([]), "not an array"),
            (json!({}), "no \\\"fields\\\""),
            (json!({"fields": "x"}), "not a string"),
            (
                json!({"fields": {}, "field": {}}),
                "Unknown key \\\"field\\\"",
            ),
            (
                json!({"fields": {}, "include_document": "yes"}),
                "must be a boolean",
            ),
        ] {
            let text = format!("{:?}", parse(body).unwrap_err());
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let ok = parse(json!({"fields": {"a": "1"}, "include_document": true})).unwrap();
        assert!(ok.include_document);
        assert_eq!(ok.fields["a"], "1");
    }

    #[test]
    fn json_media_types_in_any_case_and_nothing_else() {
        for mime in [
            "application/json",
            "Application/JSON",
            "application/merge-patch+json",
            "APPLICATION/VND.API+JSON",
        ] {
            assert!(is_json_media_type(mime), "{mime}");
        }
        for mime in [
            "",
            "text/plain",
            "application/jsonx",
            "text/x+json",
            "application/+jso",
            "applicatioé+json",
        ] {
            assert!(!is_json_media_type(mime), "{mime}");
        }
    }
}
