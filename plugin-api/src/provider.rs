//! The provider trait that built-in and plugin providers both implement.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::schema::{CredentialFields, CredentialFormSchema};

/// How a user connects to a provider: through an OAuth flow run by the
/// platform, or by pasting credentials into the provider's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    /// The platform runs an OAuth flow; there is no credential form.
    ///
    /// On the wire `"o_auth"`: the seed platform's `ConnectionType::OAuth`
    /// under serde's `snake_case`. `"oauth"` (what connhost wrote before) is
    /// still read.
    #[serde(rename = "o_auth", alias = "oauth")]
    Oauth,
    /// The user fills in the provider's credential form.
    ApiKey,
}

impl ConnectionType {
    /// The wire name: `"o_auth"` or `"api_key"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Oauth => "o_auth",
            ConnectionType::ApiKey => "api_key",
        }
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider learned about a credential it accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionValidation {
    /// The account name the credential belongs to, when the vendor says.
    pub provider_username: Option<String>,
    /// Anything else worth showing or storing (plan, scopes, organisation).
    pub provider_metadata: Option<serde_json::Value>,
}

impl ConnectionValidation {
    /// An accepted credential with nothing more to say.
    pub fn valid() -> Self {
        Self::default()
    }

    /// Sets the account name the credential belongs to.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.provider_username = Some(username.into());
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.provider_metadata = Some(metadata);
        self
    }
}

/// Whether a failed validation is the credential's fault or the world's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationErrorKind {
    /// The vendor says the credential is wrong (bad key, revoked, no access).
    /// Retrying with the same credential will not help.
    Rejected,
    /// The check could not be completed (network failure, rate limit, vendor
    /// outage): says nothing about the credential, and is worth retrying.
    Inconclusive,
}

/// Why a provider did not accept a credential.
///
/// A plain message converts into a [`ValidationErrorKind::Rejected`] error
/// (`Err("Invalid API key".into())`), as in providers written before the
/// distinction existed. Failures of the host's HTTP capability convert into
/// [`ValidationErrorKind::Inconclusive`] errors, so `?` on a request says the
/// right thing.
///
/// The message is shown to users: never put a credential in it. (The host
/// also scrubs submitted secrets from it, but do not rely on that.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    /// Rejected or inconclusive.
    pub kind: ValidationErrorKind,
    /// A message for the user.
    pub message: String,
}

impl ValidationError {
    /// The credential is wrong.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: ValidationErrorKind::Rejected,
            message: message.into(),
        }
    }

    /// The check could not be completed; retrying may help.
    pub fn inconclusive(message: impl Into<String>) -> Self {
        Self {
            kind: ValidationErrorKind::Inconclusive,
            message: message.into(),
        }
    }

    /// True for [`ValidationErrorKind::Inconclusive`].
    pub fn is_retryable(&self) -> bool {
        self.kind == ValidationErrorKind::Inconclusive
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

impl From<String> for ValidationError {
    fn from(message: String) -> Self {
        Self::rejected(message)
    }
}

impl From<&str> for ValidationError {
    fn from(message: &str) -> Self {
        Self::rejected(message)
    }
}

/// The result of validating a credential.
pub type ValidationResult = Result<ConnectionValidation, ValidationError>;

/// A connection provider: one external service, its credential form, and how
/// to check a credential for it.
///
/// Built-in providers (registered with [`ConnectionProviderPlugin`]) and
/// providers in plugin libraries (exported with [`export_plugin!`]) implement
/// this same trait. Implement it with `#[async_trait]`:
///
/// ```
/// use connhost_plugin_api::prelude::*;
///
/// struct Example;
///
/// #[async_trait]
/// impl ConnectionProvider for Example {
///     fn provider_id(&self) -> &str { "example" }
///     fn display_name(&self) -> &str { "Example" }
///     fn description(&self) -> &str { "An example service" }
///     fn icon(&self) -> &str { "plug" }
///     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
///     fn form_schema(&self) -> Option<CredentialFormSchema> {
///         Some(CredentialFormSchema::api_key("Paste your key."))
///     }
///     async fn validate(&self, credential: &str) -> ValidationResult {
///         if credential.starts_with("ex_") {
///             Ok(ConnectionValidation::valid().with_username("someone"))
///         } else {
///             Err("Example keys start with ex_".into())
///         }
///     }
/// }
/// ```
///
/// The host reads the descriptive methods (`provider_id` to `form_schema`)
/// once, when the provider is registered, so they should be cheap and stable.
///
/// [`ConnectionProviderPlugin`]: crate::ConnectionProviderPlugin
/// [`export_plugin!`]: crate::export_plugin
#[async_trait::async_trait]
pub trait ConnectionProvider: Send + Sync {
    /// Stable identifier, unique across the host (`"github"`, `"daytona"`).
    fn provider_id(&self) -> &str;

    /// Name shown to users.
    fn display_name(&self) -> &str;

    /// One sentence shown under the name.
    fn description(&self) -> &str;

    /// A Lucide icon name (`"github"`, `"key-round"`).
    fn icon(&self) -> &str;

    /// OAuth or a credential form.
    fn connection_type(&self) -> ConnectionType;

    /// The credential form; `None` for OAuth providers.
    fn form_schema(&self) -> Option<CredentialFormSchema>;

    /// The hosts this provider calls through [`crate::http`], as egress
    /// patterns: `api.example.com` (any port), `api.example.com:8443`,
    /// `*.example.com` (any subdomain), an IP address (`203.0.113.7`,
    /// `[2001:db8::1]:443`), or `*` (any public host). The host refuses a
    /// request to any other host, unless the operator granted this plugin
    /// other hosts (`egress = [...]` in its `[plugin.NAME]` table, which
    /// then replaces these). A declaration never opens a loopback,
    /// private, link-local or cloud-metadata address: only the operator can
    /// grant one, by name. The default declares nothing, so a provider that
    /// calls out must list its vendor here:
    ///
    /// ```
    /// # use connhost_plugin_api::prelude::*;
    /// # struct Acme;
    /// # #[async_trait]
    /// # impl ConnectionProvider for Acme {
    /// #     fn provider_id(&self) -> &str { "acme" }
    /// #     fn display_name(&self) -> &str { "Acme" }
    /// #     fn description(&self) -> &str { "Acme" }
    /// #     fn icon(&self) -> &str { "rocket" }
    /// #     fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
    /// #     fn form_schema(&self) -> Option<CredentialFormSchema> { None }
    /// #     async fn validate(&self, _: &str) -> ValidationResult { Ok(ConnectionValidation::valid()) }
    /// fn egress(&self) -> Vec<String> {
    ///     vec!["api.acme.example".into()]
    /// }
    /// # }
    /// ```
    fn egress(&self) -> Vec<String> {
        Vec::new()
    }

    /// Checks a single-value credential (an API key or a token).
    async fn validate(&self, credential: &str) -> ValidationResult;

    /// Checks a submitted form. The default passes the `api_key` field (or an
    /// empty string) to [`validate`](Self::validate); multi-field providers
    /// override it.
    async fn validate_fields(&self, fields: &CredentialFields) -> ValidationResult {
        let key = fields.get("api_key").map(String::as_str).unwrap_or("");
        self.validate(key).await
    }
}

/// Everything the host needs to know about a provider besides its code:
/// what its descriptive methods returned, captured once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderDescriptor {
    /// [`ConnectionProvider::provider_id`].
    pub provider_id: String,
    /// [`ConnectionProvider::display_name`].
    pub display_name: String,
    /// [`ConnectionProvider::description`].
    pub description: String,
    /// [`ConnectionProvider::icon`].
    pub icon: String,
    /// [`ConnectionProvider::connection_type`].
    pub connection_type: ConnectionType,
    /// [`ConnectionProvider::form_schema`].
    pub form_schema: Option<CredentialFormSchema>,
    /// [`ConnectionProvider::egress`]: the hosts the provider calls. Left
    /// out of the JSON when empty, so descriptors of providers that declare
    /// none read and write as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
}

impl ProviderDescriptor {
    /// Reads a provider's descriptive methods. Panics if one of them does:
    /// callers that must survive that use [`crate::panic::catch_panic`].
    pub fn capture(provider: &dyn ConnectionProvider) -> Self {
        Self {
            provider_id: provider.provider_id().to_owned(),
            display_name: provider.display_name().to_owned(),
            description: provider.description().to_owned(),
            icon: provider.icon().to_owned(),
            connection_type: provider.connection_type(),
            form_schema: provider.form_schema(),
            egress: provider.egress(),
        }
    }

    /// Reads the descriptive methods one by one, catching a panic in any of
    /// them and naming the method that panicked.
    pub fn capture_catching(provider: &dyn ConnectionProvider) -> Result<Self, String> {
        use crate::panic::catch_panic;
        let named = |method: &str, msg: String| format!("panicked in {method}: {msg}");
        let provider_id = catch_panic(|| provider.provider_id().to_owned())
            .map_err(|m| named("provider_id", m))?;
        let in_provider = |method: &str, msg: String| {
            format!("provider \"{provider_id}\" panicked in {method}: {msg}")
        };
        Ok(Self {
            display_name: catch_panic(|| provider.display_name().to_owned())
                .map_err(|m| in_provider("display_name", m))?,
            description: catch_panic(|| provider.description().to_owned())
                .map_err(|m| in_provider("description", m))?,
            icon: catch_panic(|| provider.icon().to_owned()).map_err(|m| in_provider("icon", m))?,
            connection_type: catch_panic(|| provider.connection_type())
                .map_err(|m| in_provider("connection_type", m))?,
            form_schema: catch_panic(|| provider.form_schema())
                .map_err(|m| in_provider("form_schema", m))?,
            egress: catch_panic(|| provider.egress()).map_err(|m| in_provider("egress", m))?,
            provider_id,
        })
    }

    /// Structural problems that make the descriptor unusable (an empty id, a
    /// form schema with duplicate field names, ...). Empty when it is fine.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.provider_id.trim().is_empty() {
            problems.push("the provider id is empty".to_owned());
        } else if !self
            .provider_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            problems.push(format!(
                "the provider id \"{}\" has characters other than ASCII letters, digits, '-', '_' and '.'",
                self.provider_id
            ));
        }
        if let Some(schema) = &self.form_schema {
            problems.extend(schema.lint());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_type_speaks_the_seeds_wire_names() {
        // The seed's `enum ConnectionType { OAuth, ApiKey }` under serde's
        // `snake_case` is `"o_auth"` and `"api_key"`.
        assert_eq!(
            serde_json::to_string(&ConnectionType::Oauth).unwrap(),
            "\"o_auth\""
        );
        assert_eq!(
            serde_json::to_string(&ConnectionType::ApiKey).unwrap(),
            "\"api_key\""
        );
        assert_eq!(ConnectionType::Oauth.as_str(), "o_auth");
        for (wire, expected) in [
            ("\"o_auth\"", ConnectionType::Oauth),
            ("\"oauth\"", ConnectionType::Oauth),
            ("\"api_key\"", ConnectionType::ApiKey),
        ] {
            assert_eq!(
                serde_json::from_str::<ConnectionType>(wire).unwrap(),
                expected
            );
        }
        assert!(serde_json::from_str::<ConnectionType>("\"OAuth\"").is_err());
    }
}
