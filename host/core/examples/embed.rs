//! Embedding connhost as a library: a provider of your own, compiled into
//! your program, served next to the plugins of a folder, with one API to
//! list them and validate credentials.
//!
//! Run it with:
//!
//! ```sh
//! cargo xtask plugins                                # stages the example plugins in target/plugins
//! cargo run -p connhost --example embed -- target/plugins
//! ```
//!
//! It prints every provider with where it comes from, then validates two
//! credentials for its own provider (one accepted, one refused), and lists
//! the plugin files that did not load, with why. No network is needed.

use connhost::plugin_api::prelude::*;
use connhost::{Catalog, Connhost, HostConfig, Origin, Verdict};

/// The program's own provider: "Acme" API keys start with `acme_`.
struct Acme;

#[async_trait]
impl ConnectionProvider for Acme {
    fn provider_id(&self) -> &str {
        "acme"
    }
    fn display_name(&self) -> &str {
        "Acme"
    }
    fn description(&self) -> &str {
        "Acme's internal API, checked by the embedding program itself."
    }
    fn icon(&self) -> &str {
        "key"
    }
    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }
    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(CredentialFormSchema::api_key("Paste an Acme API key."))
    }
    async fn validate(&self, credential: &str) -> ValidationResult {
        if credential.starts_with("acme_") {
            Ok(ConnectionValidation::valid().with_username("acme-service-account"))
        } else {
            Err(ValidationError::rejected(
                "Acme keys start with acme_; this one does not.",
            ))
        }
    }
}

fn main() {
    // Isolated plugins run in worker processes started from this very
    // program: a worker must take over before any thread or runtime
    // exists.
    connhost::worker::run_if_worker();
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run());
}

async fn run() {
    let folder = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/plugins".to_owned());
    let config = HostConfig::with_plugins_dir(&folder);

    // The catalog builds the set: the built-ins, Acme, then the folder's
    // plugins. Loading runs plugin code: keep it off the async runtime.
    let host = tokio::task::spawn_blocking(move || {
        let mut catalog = Catalog::new(&config).with_provider(Acme);
        catalog.scan_now();
        Connhost::from_catalog(&catalog)
    })
    .await
    .expect("loading the plugins");

    println!("providers:");
    for provider in host.providers() {
        let origin = match &provider.origin {
            Origin::Builtin => "compiled in".to_owned(),
            Origin::Plugin { plugin, path, .. } => {
                format!("plugin {plugin} ({})", path.display())
            }
        };
        println!("  {:<10} {origin}", provider.provider_id);
    }

    for key in ["acme_0123456789", "not-an-acme-key"] {
        let mut fields = connhost::CredentialFields::new();
        fields.insert("api_key".to_owned(), key.to_owned());
        let verdict = host
            .validate("acme", fields)
            .await
            .expect("acme is registered");
        match &verdict {
            Verdict::Valid(accepted) => println!(
                "acme: valid (as {})",
                accepted.provider_username.as_deref().unwrap_or("?")
            ),
            other => println!(
                "acme: {} ({})",
                other.outcome().as_str(),
                other.error_message().unwrap_or_default()
            ),
        }
    }

    for failure in &host.load_report().failed {
        println!("not loaded: {failure}");
    }
}
