//! Human-readable output: tables and verdicts.

use std::fmt::Write as _;

use connhost::loader::Inspection;
use connhost::{LoadReport, Origin, ProviderInfo, Verdict};

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::Builtin => "builtin".to_owned(),
        Origin::Plugin {
            plugin,
            version,
            path,
        } => format!("{plugin} {version} ({})", path.display()),
    }
}

pub(crate) fn providers(list: &[ProviderInfo]) -> String {
    if list.is_empty() {
        return "No providers are registered.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.provider_id.clone(),
                p.display_name.clone(),
                format!(
                    "{}{}",
                    p.connection_type,
                    if p.experimental {
                        " (experimental)"
                    } else {
                        ""
                    }
                ),
                origin_text(&p.origin),
            ]
        })
        .collect();
    table(&["ID", "NAME", "TYPE", "ORIGIN"], &rows)
}

pub(crate) fn report(report: &LoadReport) -> String {
    let mut out = String::new();
    if report.loaded.is_empty() {
        out.push_str("No plugin loaded.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .loaded
            .iter()
            .map(|p| {
                vec![
                    p.plugin.clone(),
                    p.version.clone(),
                    runs(p),
                    p.providers.join(", "),
                    p.path.display().to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["PLUGIN", "VERSION", "RUNS", "PROVIDERS", "FILE"],
            &rows,
        ));
        for plugin in &report.loaded {
            let _ = writeln!(
                out,
                "  {}: egress {}",
                plugin.plugin,
                egress(&plugin.egress)
            );
            if let Some(crash) = plugin.worker.as_ref().and_then(|w| w.last_crash.as_ref()) {
                let _ = writeln!(out, "  {}: last crash: {crash}", plugin.plugin);
            }
        }
        for plugin in &report.loaded {
            if let Some(trust) = trust(&plugin.trust) {
                let _ = writeln!(out, "  {}: {trust}", plugin.plugin);
            }
        }
    }
    if !report.retired.is_empty() {
        let _ = writeln!(
            out,
            "\nRetired libraries (replaced or removed, still in memory): {}, {} bytes",
            report.retired.len(),
            report.retired_bytes()
        );
    }
    if !report.failed.is_empty() {
        let _ = writeln!(out, "\nNot loaded ({}):", report.failed.len());
        for failure in &report.failed {
            let _ = writeln!(out, "  {}\n    {}", failure.path.display(), failure.reason);
        }
    }
    out
}

/// What was checked about a plugin, when it was signed or locked:
/// `signed by 4BD7A079B2011681 ("release 1.0"), locked`.
fn trust(trust: &connhost::trust::PluginTrust) -> Option<String> {
    let signed = trust
        .signature
        .as_ref()
        .map(|s| format!("signed by {} ({:?})", s.key_id, s.trusted_comment));
    let locked = trust.locked.then(|| format!("locked at {}", trust.digest));
    let parts: Vec<String> = signed.into_iter().chain(locked).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What a plugin may call, in one line: `granted 127.0.0.1:8080
/// (declares api.example.com)`, `declared api.example.com`, `none`.
fn egress(egress: &connhost::egress::Egress) -> String {
    let list = |hosts: &[String]| {
        if hosts.is_empty() {
            "nothing".to_owned()
        } else {
            hosts.join(", ")
        }
    };
    match &egress.granted {
        Some(granted) if egress.declared.is_empty() => format!("granted {}", list(granted)),
        Some(granted) => format!(
            "granted {} (declares {})",
            list(granted),
            list(&egress.declared)
        ),
        None if egress.declared.is_empty() => "none (declares nothing, no grant)".to_owned(),
        None => format!("declared {}", list(&egress.declared)),
    }
}

/// Where a plugin runs: `in-process`, or `process (ready, pid 42, 1 restart)`.
fn runs(plugin: &connhost::LoadedPlugin) -> String {
    let Some(worker) = &plugin.worker else {
        return plugin.isolation.to_string();
    };
    let state = serde_json::to_value(worker.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut runs = format!("{} ({state}", plugin.isolation);
    if let Some(pid) = worker.pid {
        let _ = write!(runs, ", pid {pid}");
    }
    if worker.restarts > 0 {
        let _ = write!(
            runs,
            ", {} restart{}",
            worker.restarts,
            if worker.restarts == 1 { "" } else { "s" }
        );
    }
    runs.push(')');
    runs
}

pub(crate) fn verdict(provider: &str, verdict: &Verdict, show_document: bool) -> String {
    let mut out = String::new();
    match verdict {
        Verdict::Valid(accepted) => {
            let _ = write!(out, "valid: {provider} accepted the credential");
            if let Some(user) = &accepted.provider_username {
                let _ = write!(out, " (account: {user})");
            }
            out.push('\n');
            if let Some(metadata) = &accepted.provider_metadata {
                let _ = writeln!(out, "metadata: {metadata}");
            }
            if show_document {
                match &accepted.document {
                    Some(document) => {
                        let _ = writeln!(out, "credential document: {}", document.expose());
                    }
                    None => out.push_str("credential document: (none: every field was empty)\n"),
                }
            }
        }
        Verdict::InvalidFields(errors) => {
            out.push_str("invalid fields (the provider was not called):\n");
            for error in errors {
                match &error.field {
                    Some(field) => {
                        let _ = writeln!(out, "  {field}: {}", error.message);
                    }
                    None => {
                        let _ = writeln!(out, "  {}", error.message);
                    }
                }
            }
        }
        other => {
            let _ = writeln!(
                out,
                "{}{}: {}",
                other.outcome().as_str().replace('_', " "),
                if other.is_retryable() {
                    " (retryable)"
                } else {
                    ""
                },
                other.error_message().unwrap_or_default()
            );
        }
    }
    out
}

pub(crate) fn inspection(inspection: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "file: {}", inspection.path.display());
    if let (Some(plugin), Some(version)) = (&inspection.plugin, &inspection.version) {
        let _ = writeln!(out, "plugin: {plugin} {version}");
    }
    if let Some(api) = &inspection.api_version {
        let _ = writeln!(
            out,
            "built against: connhost-plugin-api {api} (this host: {})",
            inspection.host_api_version
        );
    }
    if inspection.loadable {
        out.push_str("loadable: yes\n");
    } else {
        out.push_str("loadable: no\n");
    }
    if let Some(failure) = &inspection.failure {
        let _ = writeln!(out, "reason: {}", failure.reason);
    }
    for provider in &inspection.providers {
        let fields = provider
            .form_schema
            .as_ref()
            .map(|s| {
                s.fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "no form".to_owned());
        let _ = writeln!(
            out,
            "provider: {} ({}, {}; fields: {fields})",
            provider.provider_id, provider.display_name, provider.connection_type
        );
    }
    for error in &inspection.provider_errors {
        let _ = writeln!(out, "provider error: {error}");
    }
    if let Some(detail) = &inspection.detail {
        let _ = writeln!(out, "\nfull layout difference:\n{detail}");
    }
    out
}
