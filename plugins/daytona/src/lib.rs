//! Daytona: secure sandboxes for running AI-generated code.
//!
//! The user pastes a Daytona API key. The provider checks it with a real
//! request, `GET {api_url}/sandbox` with the key as a bearer token, made
//! through the host's HTTP capability ([`connhost_plugin_api::http`]):
//!
//! | Daytona answers          | Verdict                                         |
//! |--------------------------|-------------------------------------------------|
//! | `200`                    | valid (with `{"sandboxes": N}` when countable)  |
//! | `401` / `403`            | rejected                                        |
//! | anything else            | inconclusive (rate limit, outage, ...)          |
//! | no answer                | inconclusive                                    |
//!
//! # Configuration
//!
//! | Key       | Default                      | Meaning                          |
//! |-----------|------------------------------|----------------------------------|
//! | `api_url` | `https://app.daytona.io/api` | The Daytona API base URL (for a self-hosted Daytona or a test server). |

use connhost_plugin_api::prelude::*;
use connhost_plugin_api::tracing::{debug, info};

/// The API base used when the operator configured no `api_url`.
const DEFAULT_API_URL: &str = "https://app.daytona.io/api";

/// Markdown shown above the form.
const INSTRUCTIONS: &str = "\
Connect Daytona with an API key:

1. Sign in to the [Daytona dashboard](https://app.daytona.io/dashboard).
2. Open **API Keys** and choose **Create Key**.
3. Name the key, grant it the permissions your agents need (at least \
listing sandboxes, which is how the key is checked), and create it.
4. Copy the key now (Daytona shows it only once) and paste it below.";

/// The Daytona provider. Validates API keys against the Daytona API.
///
/// Build it with [`Daytona::default()`]; it has no fields yet, and is
/// `#[non_exhaustive]` so that some can be added later.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Daytona {}

/// The API base: the configured `api_url` or [`DEFAULT_API_URL`], without
/// trailing slashes.
fn api_base(configured: Option<String>) -> String {
    let base = configured
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
    base.trim().trim_end_matches('/').to_owned()
}

/// Turns Daytona's answer to `GET /sandbox` into a verdict.
fn verdict(status: u16, body: &[u8]) -> ValidationResult {
    match status {
        200 => {
            let validation = ConnectionValidation::valid();
            // The body only adds detail: an unexpected one is not a failure.
            Ok(
                match serde_json::from_slice::<serde_json::Value>(body) {
                    Ok(serde_json::Value::Array(sandboxes)) => validation
                        .with_metadata(serde_json::json!({ "sandboxes": sandboxes.len() })),
                    _ => validation,
                },
            )
        }
        401 | 403 => Err(ValidationError::rejected(
            "Daytona refused the API key (it is wrong, revoked or lacks permission to list sandboxes).",
        )),
        429 => Err(ValidationError::inconclusive(
            "Daytona is rate limiting requests (HTTP 429); try again shortly.",
        )),
        status => Err(ValidationError::inconclusive(format!(
            "Daytona answered with HTTP {status}; the key could not be checked."
        ))),
    }
}

#[async_trait]
impl ConnectionProvider for Daytona {
    fn provider_id(&self) -> &str {
        "daytona"
    }

    fn display_name(&self) -> &str {
        "Daytona"
    }

    fn description(&self) -> &str {
        "Secure sandboxes for running AI-generated code"
    }

    fn icon(&self) -> &str {
        "container"
    }

    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }

    fn form_schema(&self) -> Option<CredentialFormSchema> {
        let mut schema = CredentialFormSchema::api_key(INSTRUCTIONS);
        if let Some(field) = schema.fields.first_mut() {
            field.placeholder = Some("dtn_...".to_owned());
        }
        Some(schema)
    }

    /// The default API's host; an operator who points the provider
    /// elsewhere grants that host (`egress` in the plugin's table).
    fn egress(&self) -> Vec<String> {
        vec!["app.daytona.io".to_owned()]
    }

    async fn validate(&self, api_key: &str) -> ValidationResult {
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(ValidationError::rejected("A Daytona API key is required."));
        }
        let base = api_base(connhost_plugin_api::config("api_url"));
        info!("checking a Daytona API key");
        let response = http::Request::get(format!("{base}/sandbox"))
            .bearer_auth(api_key)
            .header("Accept", "application/json")
            .send()
            .await?;
        let status = response.status();
        debug!(status, "Daytona answered the key check");
        verdict(status, response.bytes())
    }
}

connhost_plugin_api::export_plugin!(Daytona::default());

#[cfg(test)]
mod tests {
    use connhost_plugin_api::schema::FieldType;
    use connhost_plugin_api::{ProviderDescriptor, ValidationErrorKind};

    use super::*;
    use connhost_plugin_api::testing::block_on;

    #[test]
    fn descriptor() {
        let descriptor = ProviderDescriptor::capture(&Daytona::default());
        assert_eq!(descriptor.provider_id, "daytona");
        assert_eq!(descriptor.display_name, "Daytona");
        assert_eq!(descriptor.icon, "container");
        assert_eq!(descriptor.connection_type, ConnectionType::ApiKey);
        assert!(
            descriptor.problems().is_empty(),
            "{:?}",
            descriptor.problems()
        );
    }

    #[test]
    fn schema_is_one_required_secret_key() {
        let schema = Daytona::default()
            .form_schema()
            .expect("an API-key provider has a form");
        assert_eq!(schema.fields.len(), 1);
        let field = &schema.fields[0];
        assert_eq!(field.name, "api_key");
        assert_eq!(field.label, "API Key");
        assert_eq!(field.field_type, FieldType::Password);
        assert!(field.required);
        assert_eq!(field.group, None);
        assert_eq!(field.default_value, None);
        assert!(field.placeholder.is_some());
        assert!(schema.instructions_markdown.contains("Daytona dashboard"));
        assert!(schema.instructions_markdown.contains("API Keys"));
        assert!(schema.lint().is_empty());
    }

    #[test]
    fn api_base_defaults_and_trims() {
        assert_eq!(api_base(None), DEFAULT_API_URL);
        assert_eq!(api_base(Some("  ".into())), DEFAULT_API_URL);
        assert_eq!(
            api_base(Some("http://127.0.0.1:8080/api//".into())),
            "http://127.0.0.1:8080/api"
        );
    }

    #[test]
    fn without_a_host_the_check_is_inconclusive() {
        let error = block_on(Daytona::default().validate("somekey")).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Inconclusive);
        assert!(error.is_retryable());
        assert!(!error.message.contains("somekey"));
    }

    #[test]
    fn validate_fields_uses_api_key() {
        let fields: CredentialFields = [("api_key".to_owned(), "somekey".to_owned())].into();
        let error = block_on(Daytona::default().validate_fields(&fields)).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Inconclusive);
    }

    #[test]
    fn empty_key_is_rejected_without_a_request() {
        for key in ["", "   ", "\n\t"] {
            let error = block_on(Daytona::default().validate(key)).unwrap_err();
            assert_eq!(error.kind, ValidationErrorKind::Rejected, "{key:?}");
        }
        let error =
            block_on(Daytona::default().validate_fields(&CredentialFields::new())).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Rejected);
    }

    #[test]
    fn ok_with_a_list_counts_sandboxes() {
        let validation = verdict(200, br#"[{"id":"a"},{"id":"b"}]"#).unwrap();
        assert_eq!(validation.provider_username, None);
        assert_eq!(
            validation.provider_metadata,
            Some(serde_json::json!({ "sandboxes": 2 }))
        );
        let validation = verdict(200, b"[]").unwrap();
        assert_eq!(
            validation.provider_metadata,
            Some(serde_json::json!({ "sandboxes": 0 }))
        );
    }

    #[test]
    fn ok_with_an_unexpected_body_is_still_valid() {
        for body in [&b""[..], b"not json", br#"{"items":[]}"#, b"null"] {
            let validation = verdict(200, body).unwrap();
            assert_eq!(validation, ConnectionValidation::valid());
        }
    }

    #[test]
    fn refusals_are_rejected() {
        for status in [401, 403] {
            let error = verdict(status, b"").unwrap_err();
            assert_eq!(error.kind, ValidationErrorKind::Rejected);
            assert!(error.message.contains("Daytona refused the API key"));
        }
    }

    #[test]
    fn other_statuses_are_inconclusive_and_named() {
        for status in [429, 500, 502, 503, 404, 301] {
            let error = verdict(status, b"").unwrap_err();
            assert_eq!(error.kind, ValidationErrorKind::Inconclusive);
            assert!(error.message.contains(&status.to_string()), "{error}");
        }
    }
}
