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
/// `MatchedPath`), or `ALL.len()` for [`UNMATCHED`]. When an embedder
/// nests the router under a prefix, the matched path carries that prefix
/// (`/connhost/v1/providers`): the route is the longest template it ends
/// with (the settings page, `/`, for a matched path ending in `/`).
pub(crate) fn index(matched: Option<&str>) -> usize {
    let Some(matched) = matched else {
        return ALL.len();
    };
    if let Some(exact) = ALL.iter().position(|path| *path == matched) {
        return exact;
    }
    let nested = ALL
        .iter()
        .enumerate()
        .filter(|(_, path)| path.len() > 1 && matched.ends_with(*path))
        .max_by_key(|(_, path)| path.len())
        .map(|(i, _)| i);
    match nested {
        Some(i) => i,
        None if matched.ends_with('/') => ALL.iter().position(|p| *p == INDEX).unwrap_or(ALL.len()),
        None => ALL.len(),
    }
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
        // Nested under a prefix by an embedder.
        assert_eq!(label(index(Some("/connhost/v1/providers"))), PROVIDERS);
        assert_eq!(
            label(index(Some("/connhost/v1/providers/{id}/validate"))),
            VALIDATE
        );
        assert_eq!(label(index(Some("/connhost/v1/providers/{id}"))), PROVIDER);
        assert_eq!(label(index(Some("/connhost/"))), INDEX);
        assert_eq!(label(index(None)), UNMATCHED);
    }
}
