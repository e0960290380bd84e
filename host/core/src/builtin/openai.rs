//! OpenAI: an API key checked against the models endpoint.

use connhost_plugin_api::prelude::*;

/// The OpenAI provider. Its base URL can be changed with the built-in
/// setting `openai_base_url` (`CONNHOST_PLUGIN_BUILTIN_OPENAI_BASE_URL`).
struct OpenAi;

const DEFAULT_BASE_URL: &str = "https://api.openai.com";

#[async_trait]
impl ConnectionProvider for OpenAi {
    fn provider_id(&self) -> &str {
        "openai"
    }

    fn display_name(&self) -> &str {
        "OpenAI"
    }

    fn description(&self) -> &str {
        "GPT models through the OpenAI API"
    }

    fn icon(&self) -> &str {
        "sparkles"
    }

    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }

    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(
            CredentialFormSchema::new(
                "Create a secret key at **platform.openai.com → API keys** and paste it below.",
            )
            .with_field(
                FormField::password("api_key", "API Key")
                    .required()
                    .with_placeholder("sk-..."),
            ),
        )
    }

    /// The default API's host; an operator who points the provider
    /// elsewhere grants that host (`egress` in the plugin's table).
    fn egress(&self) -> Vec<String> {
        vec!["api.openai.com".to_owned()]
    }

    async fn validate(&self, key: &str) -> ValidationResult {
        let base = connhost_plugin_api::config("openai_base_url")
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let response = http::Request::get(format!("{}/v1/models", base.trim_end_matches('/')))
            .bearer_auth(key.trim())
            .send()
            .await?;
        match response.status() {
            200 => Ok(ConnectionValidation::valid()),
            401 | 403 => Err(ValidationError::rejected("OpenAI refused the API key.")),
            429 => Err(ValidationError::inconclusive(
                "OpenAI is rate limiting requests; try again shortly.",
            )),
            status => Err(ValidationError::inconclusive(format!(
                "OpenAI answered with HTTP {status}; the key could not be checked."
            ))),
        }
    }
}

connhost_plugin_api::register_provider!(|| Box::new(OpenAi));
