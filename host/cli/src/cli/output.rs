//! Human-readable output: tables and verdicts. Every value that may come
//! from a plugin (or a file name) is escaped for the terminal as it is
//! formatted ([`escape`]); table cells are escaped by [`table`] itself.

use std::fmt::Write as _;

use connhost::Inspection;
use connhost::{LoadReport, Origin, ProviderInfo, Verdict};

use super::terminal::{escape, escape_lines, terminal_json};

/// Left-aligned columns separated by two spaces. Each cell is one line:
/// it is [escaped](escape) here, line breaks included.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
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
    for row in &rows {
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
            let name = escape(&plugin.plugin);
            let _ = writeln!(out, "  {name}: egress {}", escape(&egress(&plugin.egress)));
            if let Some(crash) = plugin.worker.as_ref().and_then(|w| w.last_crash.as_ref()) {
                let _ = writeln!(out, "  {name}: last crash: {}", escape(crash));
            }
        }
        for plugin in &report.loaded {
            if let Some(trust) = trust(&plugin.trust) {
                let _ = writeln!(out, "  {}: {}", escape(&plugin.plugin), escape(&trust));
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
            let _ = writeln!(
                out,
                "  {}\n    {}",
                escape(&failure.path.display().to_string()),
                escape(&failure.reason)
            );
        }
    }
    out
}

/// What was checked about a plugin, when it was signed or locked:
/// `signed by 4BD7A079B2011681 ("release 1.0"), locked at sha256:...`,
/// the trusted comment [escaped](escape).
fn trust(trust: &connhost::PluginTrust) -> Option<String> {
    let signed = trust.signature.as_ref().map(|s| {
        format!(
            "signed by {} (\"{}\")",
            escape(&s.key_id),
            escape(&s.trusted_comment)
        )
    });
    let locked = trust.locked.then(|| format!("locked at {}", trust.digest));
    let parts: Vec<String> = signed.into_iter().chain(locked).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What a plugin may call, in one line: `granted 127.0.0.1:8080
/// (declares api.example.com)`, `declared api.example.com`, `none`.
fn egress(egress: &connhost::Egress) -> String {
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
            let _ = write!(out, "valid: {} accepted the credential", escape(provider));
            if let Some(user) = &accepted.provider_username {
                let _ = write!(out, " (account: {})", escape(user));
            }
            out.push('\n');
            if let Some(metadata) = &accepted.provider_metadata {
                // JSON on one line, escaped as JSON: `\u001b`, `\u202e`.
                let _ = writeln!(out, "metadata: {}", terminal_json(&metadata.to_string()));
            }
            if show_document {
                match &accepted.document {
                    Some(document) => {
                        let _ = writeln!(out, "credential document: {}", escape(document.expose()));
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
                        let _ = writeln!(out, "  {}: {}", escape(field), escape(&error.message));
                    }
                    None => {
                        let _ = writeln!(out, "  {}", escape(&error.message));
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
                escape(&other.error_message().unwrap_or_default())
            );
        }
    }
    out
}

pub(crate) fn inspection(inspection: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "file: {}",
        escape(&inspection.path.display().to_string())
    );
    if let (Some(plugin), Some(version)) = (&inspection.plugin, &inspection.version) {
        let _ = writeln!(out, "plugin: {} {}", escape(plugin), escape(version));
    }
    if let Some(api) = &inspection.api_version {
        let _ = writeln!(
            out,
            "built against: connhost-plugin-api {} (this host: {})",
            escape(api),
            inspection.host_api_version
        );
    }
    if inspection.loadable {
        out.push_str("loadable: yes\n");
    } else {
        out.push_str("loadable: no\n");
    }
    if let Some(failure) = &inspection.failure {
        let _ = writeln!(out, "reason: {}", escape(&failure.reason));
    }
    if let Some(checked) = &inspection.trust {
        let _ = writeln!(
            out,
            "digest: {}{}",
            checked.digest,
            trust(checked)
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        );
    }
    if !inspection.sandbox.is_empty() {
        // Where its code ran: a jailed worker, never this process.
        let _ = writeln!(out, "loaded in a worker: {}", inspection.sandbox.join("; "));
    }
    for provider in &inspection.providers {
        let fields = provider
            .form_schema
            .as_ref()
            .map(|s| {
                s.fields
                    .iter()
                    .map(|f| escape(&f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "no form".to_owned());
        let _ = writeln!(
            out,
            "provider: {} ({}, {}; fields: {fields})",
            escape(&provider.provider_id),
            escape(&provider.display_name),
            provider.connection_type
        );
    }
    for error in &inspection.provider_errors {
        let _ = writeln!(out, "provider error: {}", escape(error));
    }
    if let Some(detail) = &inspection.detail {
        // Several lines on purpose (abi_stable's layouts, side by side).
        let _ = writeln!(out, "\nfull layout difference:\n{}", escape_lines(detail));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::terminal::acts_on_terminal;

    /// What a hostile plugin writes: a window title, a screen clear, a
    /// right-to-left override and a line break.
    const HOSTILE: &str = "A\x1b]0;pwned\x07\x1b[2J\u{202e}B\nvalid: yes";
    /// How it is shown.
    const SHOWN: &str = "A\\x1b]0;pwned\\x07\\x1b[2J\\u{202e}B\\nvalid: yes";

    /// Checks that `out` shows [`HOSTILE`] escaped and holds nothing a
    /// terminal acts on but its own line breaks.
    fn check_escaped(out: &str) {
        assert!(out.contains(SHOWN), "{out}");
        assert!(
            !out.chars().any(|c| c != '\n' && acts_on_terminal(c)),
            "{out:?}"
        );
        assert!(!out.lines().any(|l| l.starts_with("valid: yes")), "{out}");
    }

    #[test]
    fn a_providers_table_escapes_what_a_plugin_wrote() {
        let hostile = ProviderInfo {
            provider_id: "hostile".to_owned(),
            display_name: HOSTILE.to_owned(),
            description: HOSTILE.to_owned(),
            icon: "plug".to_owned(),
            connection_type: connhost::plugin_api::ConnectionType::ApiKey,
            form_schema: None,
            experimental: false,
            origin: Origin::Plugin {
                plugin: "hostile".to_owned(),
                version: "1.0.0".to_owned(),
                path: "/plugins/libhostile.so".into(),
            },
        };
        let out = providers(&[hostile]);
        check_escaped(&out);
        // One header and one row: the line break did not make a row.
        assert_eq!(out.lines().count(), 2, "{out}");
    }

    #[test]
    fn a_verdict_escapes_what_a_provider_answered() {
        let rejected = Verdict::Rejected {
            message: HOSTILE.to_owned(),
        };
        check_escaped(&verdict("hostile", &rejected, false));
        let invalid = Verdict::InvalidFields(vec![connhost::FieldError {
            field: Some(HOSTILE.to_owned()),
            message: HOSTILE.to_owned(),
        }]);
        check_escaped(&verdict("hostile", &invalid, false));
        let valid = Verdict::Valid(connhost::Accepted {
            provider_username: Some(HOSTILE.to_owned()),
            provider_metadata: Some(serde_json::json!({ "note": "\u{202e}\u{9b}" })),
            document: None,
        });
        let out = verdict("hostile", &valid, false);
        check_escaped(&out);
        assert!(
            out.contains(r#"metadata: {"note":"\u202e\u009b"}"#),
            "{out}"
        );
    }

    #[test]
    fn plain_text_is_shown_as_it_is() {
        let rejected = Verdict::Rejected {
            message: "Clé refusée: « C:\\keys » n'existe pas.".to_owned(),
        };
        assert_eq!(
            verdict("mai", &rejected, false),
            "rejected: Clé refusée: « C:\\keys » n'existe pas.\n"
        );
    }
}
