// A plugin written outside the project, against plugin-api alone, builds, drops into the folder and is served.

use std::process::Command;

use crate::support::*;

const MANIFEST: &str = r#"[package]
name = "acme-weather"
version = "2.3.4"
edition = "2021"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
connhost-plugin-api = { path = "PLUGIN_API" }

[workspace]
"#;

const SOURCE: &str = r#"
use connhost_plugin_api::prelude::*;

#[derive(Default)]
pub struct AcmeWeather;

#[async_trait]
impl ConnectionProvider for AcmeWeather {
    fn provider_id(&self) -> &str { "acme-weather" }
    fn display_name(&self) -> &str { "Acme Weather" }
    fn description(&self) -> &str { "Forecasts by Acme" }
    fn icon(&self) -> &str { "cloud-sun" }
    fn connection_type(&self) -> ConnectionType { ConnectionType::ApiKey }
    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(CredentialFormSchema::api_key("Find your key in Acme's console."))
    }
    async fn validate(&self, key: &str) -> ValidationResult {
        if key.starts_with("acme_") {
            Ok(ConnectionValidation::valid().with_username("acme-user"))
        } else {
            Err("Acme keys start with acme_".into())
        }
    }
}

connhost_plugin_api::export_plugin!(AcmeWeather);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself_in_process() {
        assert_eq!(AcmeWeather.provider_id(), "acme-weather");
    }
}
"#;

#[test]
fn an_outside_crate_built_against_plugin_api_alone_is_served() {
    let crate_dir = tempfile::Builder::new()
        .prefix("acme-weather-")
        .tempdir()
        .unwrap();
    let plugin_api = workspace_root().join("plugin-api");
    std::fs::write(
        crate_dir.path().join("Cargo.toml"),
        MANIFEST.replace(
            "PLUGIN_API",
            &plugin_api.display().to_string().replace('\\', "/"),
        ),
    )
    .unwrap();
    std::fs::create_dir(crate_dir.path().join("src")).unwrap();
    std::fs::write(crate_dir.path().join("src/lib.rs"), SOURCE).unwrap();
    // Pin the same dependency versions as the workspace, so the build reuses
    // what is already compiled and needs no registry.
    std::fs::copy(
        workspace_root().join("Cargo.lock"),
        crate_dir.path().join("Cargo.lock"),
    )
    .unwrap();

    let target = target_dir().join("third-party");
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(crate_dir.path())
        .args(["build", "--offline", "--target-dir"])
        .arg(&target);
    let output = build.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let plugins = PluginDir::empty();
    std::fs::copy(
        target.join("debug").join(library_file_name("acme-weather")),
        plugins.file(&library_file_name("acme-weather")),
    )
    .unwrap();
    let out = run(connhost(plugins.path()).args(["providers", "--json"]));
    let list = out.json();
    let acme = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider_id"] == "acme-weather")
        .unwrap_or_else(|| panic!("not served: {}", out.stdout))
        .clone();
    assert_eq!(acme["origin"]["plugin"], "acme-weather");
    assert_eq!(acme["origin"]["version"], "2.3.4");

    let valid =
        run(connhost(plugins.path()).args(["validate", "acme-weather", "-f", "api_key=acme_123"]));
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    assert!(valid.stdout.contains("acme-user"), "{}", valid.stdout);
    let rejected =
        run(connhost(plugins.path()).args(["validate", "acme-weather", "-f", "api_key=nope-123"]));
    assert_eq!(rejected.code, 1, "{}", rejected.stdout);
    assert!(
        rejected.stdout.contains("Acme keys start with acme_"),
        "{}",
        rejected.stdout
    );
}
