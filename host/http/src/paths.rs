//! The route templates, shared by the router and the metrics: a metrics
//! label is one of these `'static` strings (never a raw path, which anyone
//! could vary without bound), so labelling a request allocates nothing.

pub(crate) const PROVIDERS: &str = "/v1/providers";
pub(crate) const PROVIDER: &str = "/v1/providers/{id}";
pub(crate) const VALIDATE: &str = "/v1/providers/{id}/validate";
pub(crate) const PLUGINS: &str = "/v1/plugins";
pub(crate) const RESCAN: &str = "/v1/plugins/rescan";
pub(crate) const INSTRUCTIONS: &str = "/ui/instructions";
pub(crate) const INDEX: &str = "/";
pub(crate) const APP_JS: &str = "/assets/app.js";
pub(crate) const APP_CSS: &str = "/assets/app.css";
pub(crate) const HEALTHZ: &str = "/healthz";
pub(crate) const READYZ: &str = "/readyz";
pub(crate) const METRICS: &str = "/metrics";
pub(crate) const OPENAPI: &str = "/openapi.json";

/// Every route the router serves.
pub(crate) const ALL: [&str; 13] = [
    PROVIDERS,
    PROVIDER,
    VALIDATE,
    PLUGINS,
    RESCAN,
    INSTRUCTIONS,
    INDEX,
    APP_JS,
    APP_CSS,
    HEALTHZ,
    READYZ,
    METRICS,
    OPENAPI,
];

/// The label of requests the router did not match (the fallbacks).
pub(crate) const UNMATCHED: &str = "unmatched";

/// The index in [`ALL`] of the route the router matched (axum's
/// `MatchedPath`), or `ALL.len()` for [`UNMATCHED`].
pub(crate) fn index(matched: Option<&str>) -> usize {
    matched
        .and_then(|matched| ALL.iter().position(|path| *path == matched))
        .unwrap_or(ALL.len())
}

/// The label for [`index`]'s answer.
pub(crate) fn label(index: usize) -> &'static str {
    ALL.get(index).copied().unwrap_or(UNMATCHED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_label_and_anything_else_is_unmatched() {
        for (i, path) in ALL.iter().enumerate() {
            assert_eq!(index(Some(path)), i);
            assert_eq!(label(i), *path);
        }
        assert_eq!(label(index(Some("/v1/providers/daytona"))), UNMATCHED);
        assert_eq!(label(index(None)), UNMATCHED);
    }
}
