//! What a server that keeps its plugins folder in step with OCI
//! references (`connhost serve --sync`) reports: each reference's status
//! under `sync` in `/v1/plugins`, each synced plugin's `source`, and the
//! `connhost_sync_*` metrics. The sync itself is the CLI's; it publishes
//! its statuses here ([`crate::AppState::set_sync`]). A server without
//! sync answers exactly as before: no `sync` key, no `source`, no series.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde::{Serialize, Serializer};

/// One synced reference, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct SyncStatus {
    /// The reference, as configured (`REGISTRY/REPOSITORY:TAG` or
    /// `REGISTRY/REPOSITORY@DIGEST`).
    pub reference: String,
    /// The file it wrote into the plugins folder; absent until it first
    /// wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The digest the reference resolved to when that file was written
    /// (the artifact's index); absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The written library's own digest (`sha256:` and hex, as the lock
    /// file and a loaded plugin's `trust.digest` record it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// When the registry last answered this reference and the folder was
    /// in step with it (RFC 3339, UTC, whole seconds).
    #[serde(serialize_with = "rfc3339", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success: Option<SystemTime>,
    /// Why the last attempt failed, if it did (cleared by a success): the
    /// folder keeps the last good file meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed attempts since the server started.
    pub errors: u64,
}

impl SyncStatus {
    /// A reference not tried yet.
    pub fn new(reference: &str) -> Self {
        SyncStatus {
            reference: reference.to_owned(),
            file: None,
            digest: None,
            library: None,
            last_success: None,
            last_error: None,
            errors: 0,
        }
    }
}

/// Where a synced plugin came from: the `source` of a plugin in
/// `/v1/plugins` when the sync wrote its file (and the loaded copy is the
/// file it wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct PluginSource {
    /// The reference the file was pulled from.
    reference: String,
    /// The digest it resolved to (the artifact's index).
    digest: String,
}

/// The statuses published, shared by the handlers and the metrics.
pub(crate) type Published = Arc<ArcSwapOption<Vec<SyncStatus>>>;

/// `/v1/plugins`'s body: the load report as it always was, with `source`
/// on each plugin the sync wrote and `sync` at the top level, or the
/// report alone when this server does not sync.
pub(crate) fn plugins_body(
    report: &connhost::LoadReport,
    statuses: Option<&[SyncStatus]>,
) -> serde_json::Value {
    let Some(statuses) = statuses else {
        return serde_json::to_value(report).unwrap_or_default();
    };
    let mut body = report_with_sources(report, statuses);
    if let Some(object) = body.as_object_mut() {
        object.insert(
            "sync".to_owned(),
            serde_json::to_value(statuses).unwrap_or_default(),
        );
    }
    body
}

/// `report` as JSON, with `source` (the reference and digest it came
/// from) on each loaded plugin whose file a sync wrote, by `statuses`:
/// the same name, and the same bytes when the report knows the loaded
/// copy's digest (`connhost plugins --json` shows it from the sync's
/// record too).
pub fn report_with_sources(
    report: &connhost::LoadReport,
    statuses: &[SyncStatus],
) -> serde_json::Value {
    let mut body = serde_json::to_value(report).unwrap_or_default();
    let Some(loaded) = body.get_mut("loaded").and_then(|l| l.as_array_mut()) else {
        return body;
    };
    for plugin in loaded {
        let name = plugin
            .get("path")
            .and_then(|p| p.as_str())
            .and_then(|p| std::path::Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let digest = plugin
            .pointer("/trust/digest")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_owned();
        let source = statuses.iter().find(|s| {
            s.file.is_some()
                && s.file == name
                && (digest.is_empty() || s.library.as_deref() == Some(digest.as_str()))
        });
        if let (Some(status), Some(object)) = (source, plugin.as_object_mut()) {
            let source = PluginSource {
                reference: status.reference.clone(),
                digest: status.digest.clone().unwrap_or_default(),
            };
            object.insert(
                "source".to_owned(),
                serde_json::to_value(source).unwrap_or_default(),
            );
        }
    }
    body
}

/// `time` as RFC 3339 in UTC, to the second.
fn rfc3339<S: Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&connhost::rfc3339(*time)),
        None => serializer.serialize_none(),
    }
}

/// The sync's series, read from the published statuses at each scrape:
/// `connhost_sync_last_success_timestamp_seconds` and
/// `connhost_sync_errors_total`, by reference. None without sync.
#[derive(Debug)]
pub(crate) struct SyncCollector(pub(crate) Published);

impl prometheus_client::collector::Collector for SyncCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::TypedMetric as _;
        let statuses = self.0.load();
        let Some(statuses) = statuses.as_ref() else {
            return Ok(());
        };
        let succeeded: Vec<(&str, f64)> = statuses
            .iter()
            .filter_map(|s| {
                let at = s.last_success?.duration_since(UNIX_EPOCH).ok()?;
                Some((s.reference.as_str(), at.as_secs_f64()))
            })
            .collect();
        if !succeeded.is_empty() {
            let mut family = encoder.encode_descriptor(
                "sync_last_success_timestamp_seconds",
                "When each synced reference was last found in step with the registry (Unix time).",
                None,
                ConstGauge::<f64>::TYPE,
            )?;
            for (reference, at) in succeeded {
                let labels = [("reference", reference)];
                ConstGauge::new(at).encode(family.encode_family(&labels)?)?;
            }
        }
        if !statuses.is_empty() {
            let mut family = encoder.encode_descriptor(
                "sync_errors",
                "Failed attempts to sync each reference (the last good file keeps serving).",
                None,
                ConstCounter::<u64>::TYPE,
            )?;
            for status in statuses.iter() {
                let labels = [("reference", status.reference.as_str())];
                ConstCounter::new(status.errors).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        let at = |s| connhost::rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_660_152), "2026-12-07T16:15:52Z");
    }

    #[test]
    fn without_sync_the_body_is_the_report() {
        let report = connhost::LoadReport::default();
        assert_eq!(
            plugins_body(&report, None),
            serde_json::to_value(&report).unwrap()
        );
        let body = plugins_body(&report, Some(&[SyncStatus::new("r/p:1")]));
        assert_eq!(body["sync"][0]["reference"], "r/p:1");
        assert_eq!(body["sync"][0]["errors"], 0);
        assert!(body["sync"][0].get("last_success").is_none());
    }
}
