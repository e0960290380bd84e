//! The API's error type: every failure answers with a JSON body
//! `{"error": {"code", "message", ...}}` and the right status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use connhost_plugin_api::FieldError;
use serde::Serialize;

/// An error answer of the HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
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
    #[schema(value_type = ErrorCode)]
    pub(crate) code: &'static str,
    /// A message for humans.
    pub(crate) message: String,
    /// For `invalid_fields` and `invalid_body`: each problem tied to its
    /// field (`null` for a form-wide one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<connhost::FieldErrorBody>>)]
    pub(crate) fields: Option<Vec<FieldError>>,
}

/// The error codes (documentation of [`ErrorDetail::code`]).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
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
    /// 503: plugins are still loading.
    Starting,
    /// 503: the server is shutting down.
    Draining,
    /// 503: hot reload is not running.
    ReloadUnavailable,
    /// 500: a bug; it is logged.
    Internal,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    pub(crate) fn with_fields(mut self, fields: Vec<FieldError>) -> Self {
        self.fields = Some(fields);
        self
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub(crate) fn starting() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "connhost is still loading its plugins; retry in a moment.",
        )
    }
}

impl From<connhost::UnknownProvider> for ApiError {
    fn from(error: connhost::UnknownProvider) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "provider_not_found",
            format!(
                "No provider \"{}\" is registered. GET /v1/providers lists them.",
                error.provider_id
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                fields: self.fields,
            },
        };
        // Sized for a typical error at once (axum's `Json` starts at 128
        // bytes and grows).
        let mut bytes = Vec::with_capacity(256);
        match serde_json::to_writer(&mut bytes, &body) {
            Ok(()) => (
                self.status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            // Strings, numbers and field names only: cannot fail.
            Err(_) => self.status.into_response(),
        }
    }
}
