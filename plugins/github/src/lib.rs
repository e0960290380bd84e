//! GitHub: connected through OAuth, so it has no credential form. A stored
//! OAuth token can still be checked against the GitHub API.

use connhost_plugin_api::prelude::*;

/// The GitHub provider.
#[derive(Debug, Default)]
pub struct GitHub;

const DEFAULT_API_URL: &str = "https://api.github.com";

#[async_trait]
impl ConnectionProvider for GitHub {
    fn provider_id(&self) -> &str {
        "github"
    }

    fn display_name(&self) -> &str {
        "GitHub"
    }

    fn description(&self) -> &str {
        "Repositories, issues and pull requests"
    }

    fn icon(&self) -> &str {
        "github"
    }

    fn connection_type(&self) -> ConnectionType {
        ConnectionType::Oauth
    }

    fn form_schema(&self) -> Option<CredentialFormSchema> {
        None
    }

    /// The default API's host; an operator who points the provider
    /// elsewhere grants that host (`egress` in the plugin's table).
    fn egress(&self) -> Vec<String> {
        vec!["api.github.com".to_owned()]
    }

    async fn validate(&self, token: &str) -> ValidationResult {
        let base =
            connhost_plugin_api::config("api_url").unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        connhost_plugin_api::tracing::info!("checking a GitHub token");
        let response = http::Request::get(format!("{}/user", base.trim_end_matches('/')))
            .bearer_auth(token.trim())
            .header("Accept", "application/vnd.github+json")
            .send()
            .await?;
        match response.status() {
            200 => {
                let user: serde_json::Value = response.json().unwrap_or_default();
                let login = user
                    .get("login")
                    .and_then(|l| l.as_str())
                    .map(str::to_owned);
                Ok(ConnectionValidation {
                    provider_username: login,
                    provider_metadata: None,
                })
            }
            401 => Err("GitHub refused the token (expired or revoked).".into()),
            // GitHub answers 403 both for rate limits (with no requests
            // left) and for a token that may not do this.
            429 => Err(ValidationError::inconclusive(
                "GitHub is rate limiting requests; try again shortly.",
            )),
            403 if response.header("x-ratelimit-remaining") == Some("0") => {
                Err(ValidationError::inconclusive(
                    "GitHub is rate limiting requests; try again shortly.",
                ))
            }
            403 => Err(
                "GitHub refused the token for this request (missing scope or SSO authorisation)."
                    .into(),
            ),
            status => Err(ValidationError::inconclusive(format!(
                "GitHub answered with HTTP {status}."
            ))),
        }
    }

    async fn validate_fields(&self, fields: &CredentialFields) -> ValidationResult {
        let token = fields
            .get("access_token")
            .or_else(|| fields.get("api_key"))
            .map(String::as_str)
            .unwrap_or("");
        self.validate(token).await
    }
}

connhost_plugin_api::export_plugin!(GitHub);
