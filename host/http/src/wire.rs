//! A verdict on the wire: the JSON body `POST /v1/providers/{id}/validate`
//! answers with, which `connhost validate --json` prints too, and its
//! OpenAPI description. The core's [`Verdict`] is the verdict as data; its
//! wire form is the HTTP service's.

use connhost::plugin_api::FieldError;
use connhost::{Outcome, Verdict};
use serde::Serialize;
use utoipa::ToSchema;

/// A verdict on the wire:
/// `{"valid": true, "provider_username", "provider_metadata"}` (plus
/// `"credential_document"` when asked for), or
/// `{"valid": false, "outcome", "error", "retryable"}` (plus `"errors"`, each
/// `{"field", "message"}`, for invalid fields).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerdictBody {
    /// The credential was accepted.
    Valid(ValidBody),
    /// It was not, or no decision could be made.
    NotValid(NotValidBody),
}

/// An accepted credential on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidBody {
    /// Always `true`.
    #[schema(schema_with = valid_true)]
    pub valid: bool,
    /// The account the credential belongs to, when the provider says.
    #[schema(required = true)]
    pub provider_username: Option<String>,
    /// Whatever else the provider reported.
    #[schema(value_type = Option<Object>, required = true)]
    pub provider_metadata: Option<serde_json::Value>,
    /// The credential as it should be stored (a lone `api_key` raw,
    /// anything else as JSON with sorted keys). Present only when requested:
    /// it holds secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_document: Option<String>,
}

/// A credential that was not accepted, or a check that did not conclude.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotValidBody {
    /// Always `false`.
    #[schema(schema_with = valid_false)]
    pub valid: bool,
    /// What happened.
    pub outcome: Outcome,
    /// A message for the user.
    pub error: String,
    /// Whether asking again may give another answer.
    pub retryable: bool,
    /// The form's errors, for `invalid_fields`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldErrorBody>>)]
    pub errors: Option<Vec<FieldError>>,
}

/// One form error on the wire.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldErrorBody {
    /// The field the message is about; `null` for a form-wide message.
    pub field: Option<String>,
    /// The message.
    pub message: String,
}

impl VerdictBody {
    /// The wire form of `verdict`.
    pub fn new(verdict: &Verdict, include_document: bool) -> Self {
        match verdict {
            Verdict::Valid(accepted) => VerdictBody::Valid(ValidBody {
                valid: true,
                provider_username: accepted.provider_username.clone(),
                provider_metadata: accepted.provider_metadata.clone(),
                credential_document: if include_document {
                    accepted.document.as_ref().map(|d| d.expose().to_owned())
                } else {
                    None
                },
            }),
            other => VerdictBody::NotValid(NotValidBody {
                valid: false,
                outcome: other.outcome(),
                error: other.error_message().unwrap_or_default(),
                retryable: other.is_retryable(),
                errors: match other {
                    Verdict::InvalidFields(errors) => Some(errors.clone()),
                    _ => None,
                },
            }),
        }
    }
}

impl VerdictBody {
    /// The wire form of `verdict` as JSON.
    pub fn json(verdict: &Verdict, include_document: bool) -> serde_json::Value {
        serde_json::to_value(Self::new(verdict, include_document))
            .expect("a verdict always serialises")
    }
}

/// The schema of an accepted verdict's `valid`: the JSON literal `true`
/// (`{"type": "boolean", "enum": [true]}`), so that no body matches both
/// branches of `VerdictBody`'s `oneOf`.
fn valid_true() -> utoipa::openapi::schema::Object {
    boolean_literal(true, "Always `true`: the credential was accepted.")
}

/// The schema of any other verdict's `valid`: the JSON literal `false`.
fn valid_false() -> utoipa::openapi::schema::Object {
    boolean_literal(false, "Always `false`: see `outcome`.")
}

/// A boolean schema that admits only `value`.
fn boolean_literal(value: bool, description: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([value]))
        .description(Some(description))
        .build()
}
