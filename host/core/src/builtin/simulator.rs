//! A keyless provider for trying the platform without any real account.
//! Experimental: registered only when experimental features are on.

use connhost_plugin_api::prelude::*;

struct Simulator;

#[async_trait]
impl ConnectionProvider for Simulator {
    fn provider_id(&self) -> &str {
        "simulator"
    }

    fn display_name(&self) -> &str {
        "Simulator"
    }

    fn description(&self) -> &str {
        "A simulated service that needs no credentials, for trying things out"
    }

    fn icon(&self) -> &str {
        "flask-conical"
    }

    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }

    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(CredentialFormSchema::empty())
    }

    async fn validate(&self, _credential: &str) -> ValidationResult {
        Ok(ConnectionValidation::valid().with_username("simulator"))
    }

    async fn validate_fields(&self, _fields: &CredentialFields) -> ValidationResult {
        Ok(ConnectionValidation::valid().with_username("simulator"))
    }
}

connhost_plugin_api::register_provider!(experimental: || Box::new(Simulator));
