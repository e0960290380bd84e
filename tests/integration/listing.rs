// The combined provider set: built-in and plugin providers, their origins and schemas.

use serde_json::json;

use crate::support::*;

const EXAMPLES: &[&str] = &["daytona", "bedrock", "mai", "github"];

#[test]
fn builtin_and_plugin_providers_are_listed_together_with_their_origins() {
    let dir = PluginDir::with(EXAMPLES);
    let host = host_with(&dir, |_| {});
    let ids: Vec<_> = host
        .providers()
        .into_iter()
        .map(|p| p.provider_id)
        .collect();
    assert_eq!(ids, ["bedrock", "daytona", "github", "mai", "openai"]);
    assert!(
        host.load_report().failed.is_empty(),
        "{:?}",
        host.load_report()
    );

    let daytona = host.provider("daytona").unwrap();
    assert_eq!(
        daytona.origin,
        connhost::Origin::Plugin {
            plugin: "daytona".into(),
            version: "0.1.0".into(),
            path: dir.file(&library_file_name("daytona")),
        }
    );
    assert_eq!(
        host.provider("openai").unwrap().origin,
        connhost::Origin::Builtin
    );
}

#[test]
fn experimental_builtins_appear_only_when_enabled() {
    let dir = PluginDir::empty();
    let plain = host_with(&dir, |_| {});
    assert!(plain.provider("simulator").is_err());
    let experimental = host_with(&dir, |c| c.experimental = true);
    let simulator = experimental.provider("simulator").unwrap();
    assert!(simulator.experimental);
    assert_eq!(
        simulator.form_schema,
        Some(connhost::CredentialFormSchema::empty())
    );
}

#[test]
fn providers_json_follows_the_frontend_contract() {
    let dir = PluginDir::with(EXAMPLES);
    let out = run(connhost(dir.path()).args(["providers", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list = out.json();
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 5);
    for provider in list {
        let mut keys: Vec<_> = provider.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "connection_type",
                "description",
                "display_name",
                "experimental",
                "form_schema",
                "icon",
                "origin",
                "provider_id"
            ]
        );
    }
    let github = list.iter().find(|p| p["provider_id"] == "github").unwrap();
    assert_eq!(github["connection_type"], "o_auth");
    assert_eq!(github["form_schema"], serde_json::Value::Null);
    assert_eq!(github["origin"]["kind"], "plugin");
    assert_eq!(github["origin"]["plugin"], "github");
    assert_eq!(github["origin"]["version"], "0.1.0");
    assert!(github["origin"]["path"]
        .as_str()
        .unwrap()
        .ends_with(&library_file_name("github")));
    let openai = list.iter().find(|p| p["provider_id"] == "openai").unwrap();
    assert_eq!(openai["origin"], json!({"kind": "builtin"}));
    assert_eq!(openai["connection_type"], "api_key");
}

#[test]
fn providers_table_is_readable() {
    let dir = PluginDir::with(&["daytona"]);
    let out = run(connhost(dir.path()).arg("providers"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<_> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", out.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with("daytona")
            && l.contains("api_key")
            && l.contains("daytona 0.1.0")),
        "{}",
        out.stdout
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("openai") && l.contains("builtin")));
}

#[test]
fn schema_command_prints_each_providers_form() {
    let dir = PluginDir::with(EXAMPLES);
    let daytona = run(connhost(dir.path()).args(["schema", "daytona"])).json();
    assert_eq!(daytona["fields"][0]["name"], "api_key");
    assert_eq!(daytona["fields"][0]["label"], "API Key");
    assert_eq!(daytona["fields"][0]["field_type"], "password");
    assert_eq!(daytona["fields"][0]["required"], true);
    let instructions = daytona["instructions_markdown"].as_str().unwrap();
    assert!(
        instructions.contains("[Daytona dashboard](https://app.daytona.io/dashboard)"),
        "the plugin's markdown, as written: {instructions}"
    );

    let bedrock = run(connhost(dir.path()).args(["schema", "bedrock"])).json();
    let names: Vec<_> = bedrock["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "access_key_id",
            "secret_access_key",
            "session_token",
            "region"
        ]
    );
    assert_eq!(bedrock["fields"][3]["field_type"], "text");
    assert_eq!(bedrock["fields"][3]["default_value"], "us-east-1");
    assert_eq!(bedrock["fields"][2]["required"], false);

    let mai = run(connhost(dir.path()).args(["schema", "mai"])).json();
    let groups: std::collections::BTreeSet<_> = mai["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["group"].as_str())
        .collect();
    assert_eq!(groups, ["API key", "Entra ID OAuth"].into());

    let github = run(connhost(dir.path()).args(["schema", "github"]));
    assert_eq!(github.code, 0);
    assert_eq!(github.stdout.trim(), "null");
}

#[test]
fn an_unknown_provider_is_a_usage_error_naming_the_known_ones() {
    let dir = PluginDir::with(&["daytona"]);
    let out = run(connhost(dir.path()).args(["schema", "nope"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no provider \"nope\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("daytona"), "{}", out.stderr);
}

#[test]
fn plugins_report_lists_loaded_plugins_and_their_providers() {
    let dir = PluginDir::with(EXAMPLES);
    let report = run(connhost(dir.path()).args(["plugins", "--json"])).json();
    assert_eq!(report["failed"], json!([]));
    let loaded = report["loaded"].as_array().unwrap();
    assert_eq!(loaded.len(), 4);
    let mai = loaded.iter().find(|p| p["plugin"] == "mai").unwrap();
    assert_eq!(mai["providers"], json!(["mai"]));
    assert_eq!(mai["version"], "0.1.0");
    assert!(mai["path"]
        .as_str()
        .unwrap()
        .ends_with(&library_file_name("mai")));
}
