//! The route table: every route the router serves, with its handler. The
//! router registers these and nothing else ([`crate::router`] loops over
//! [`TABLE`]), [`crate::routes`] lists them for embedders and tests, and
//! the metrics label a request with one of these `'static` templates (never
//! a raw path, which anyone could vary without bound), so labelling a
//! request allocates nothing.

use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};

use super::guard::Guards;
use super::{routes, ui, AppState};

/// One route the router serves: a method on a path template (axum's
/// syntax, `{id}` for a parameter, as in the OpenAPI document).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The method (`GET` routes answer `HEAD` too, without a body).
    pub method: Method,
    /// The path template, such as `/v1/providers/{id}`.
    pub path: &'static str,
    /// Why the served OpenAPI document leaves this route out, for a route
    /// deliberately undocumented; `None` for a documented one (every route
    /// today).
    pub undocumented: Option<&'static str>,
}

impl Route {
    /// A documented `GET` route.
    const fn get(path: &'static str) -> Self {
        Self {
            method: Method::GET,
            path,
            undocumented: None,
        }
    }

    /// A documented `POST` route.
    const fn post(path: &'static str) -> Self {
        Self {
            method: Method::POST,
            path,
            undocumented: None,
        }
    }
}

/// A route's handler, guarded, registered for the route's method.
type Handler = fn(MethodFilter, &Guards) -> MethodRouter<AppState>;

/// One row of [`TABLE`].
pub(crate) struct Entry {
    /// The route.
    pub(crate) route: Route,
    /// Its handler; `None` for the route the router's fallback serves
    /// ([`is_validate`]).
    handler: Option<Handler>,
}

impl Entry {
    /// The handler in its guard, answering the route's method only; `None`
    /// for the route the router's fallback serves.
    pub(crate) fn method_router(&self, guards: &Guards) -> Option<MethodRouter<AppState>> {
        let filter = MethodFilter::try_from(self.route.method.clone())
            .expect("a route's method is one axum can filter on");
        self.handler.map(|handler| handler(filter, guards))
    }
}

/// Every route the router serves, with its handler.
pub(crate) static TABLE: [Entry; 18] = [
    Entry {
        route: Route::get("/v1/providers"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::list_providers))),
    },
    Entry {
        route: Route::get("/v1/providers/{id}"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::get_provider))),
    },
    // Served by the router's fallback (`routes::fallback`): a route with
    // a parameter costs axum's router an allocation of its parameters
    // per request (about 5% of a refused validation's time); the fallback
    // reads the id from the path itself. The same answers (405 with
    // `Allow: POST` to another method) and the same metrics label.
    Entry {
        route: Route::post(VALIDATE),
        handler: None,
    },
    Entry {
        route: Route::get("/v1/plugins"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::plugins))),
    },
    Entry {
        route: Route::post("/v1/plugins/rescan"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::rescan))),
    },
    Entry {
        route: Route::get("/ui/instructions"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::instructions))),
    },
    Entry {
        route: Route::get("/"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::index))),
    },
    Entry {
        route: Route::get("/assets/app.js"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::app_js))),
    },
    Entry {
        route: Route::get("/assets/api.js"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::api_js))),
    },
    Entry {
        route: Route::get("/assets/dom.js"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::dom_js))),
    },
    Entry {
        route: Route::get("/assets/forms.js"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::forms_js))),
    },
    Entry {
        route: Route::get("/assets/plugins.js"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::plugins_js))),
    },
    Entry {
        route: Route::get("/assets/providers.js"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::providers_js))),
    },
    Entry {
        route: Route::get("/assets/app.css"),
        handler: Some(|method, guards| on(method, guards.wrap(ui::app_css))),
    },
    Entry {
        route: Route::get("/healthz"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::healthz))),
    },
    Entry {
        route: Route::get("/readyz"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::readyz))),
    },
    Entry {
        route: Route::get("/metrics"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::metrics))),
    },
    Entry {
        route: Route::get("/openapi.json"),
        handler: Some(|method, guards| on(method, guards.wrap(routes::openapi))),
    },
];

/// The validate route's template.
pub(crate) const VALIDATE: &str = "/v1/providers/{id}/validate";

/// Whether `path` is one the validate route's template matches, as axum's
/// router matches it: `/v1/providers/`, one segment (which may be empty),
/// then `/validate`.
pub(crate) fn is_validate(path: &str) -> bool {
    path.strip_prefix("/v1/providers/")
        .and_then(|rest| rest.strip_suffix("/validate"))
        .is_some_and(|id| !id.bytes().any(|byte| byte == b'/'))
}

/// The index in [`TABLE`] of the route the router's fallback serves at
/// `path` (the validate route's, see [`is_validate`]), or `TABLE.len()`
/// for [`UNMATCHED`].
pub(crate) fn fallback_index(path: &str) -> usize {
    if is_validate(path) {
        index(Some(VALIDATE))
    } else {
        TABLE.len()
    }
}

/// The label of requests the router did not match (the fallbacks).
pub(crate) const UNMATCHED: &str = "unmatched";

/// The index in [`TABLE`] of the route the router matched (axum's
/// `MatchedPath`), or `TABLE.len()` for [`UNMATCHED`]. When an embedder
/// nests the router under a prefix, the matched path carries that prefix
/// (`/connhost/v1/providers`): the route is the longest template it ends
/// with (the settings page, `/`, for a matched path ending in `/`).
pub(crate) fn index(matched: Option<&str>) -> usize {
    let Some(matched) = matched else {
        return TABLE.len();
    };
    let path = |i: usize| TABLE[i].route.path;
    if let Some(exact) = (0..TABLE.len()).find(|&i| path(i) == matched) {
        return exact;
    }
    let nested = (0..TABLE.len())
        .filter(|&i| path(i).len() > 1 && matched.ends_with(path(i)))
        .max_by_key(|&i| path(i).len());
    match nested {
        Some(i) => i,
        None if matched.ends_with('/') => (0..TABLE.len())
            .find(|&i| path(i) == "/")
            .unwrap_or(TABLE.len()),
        None => TABLE.len(),
    }
}

/// The label for [`index`]'s answer.
pub(crate) fn label(index: usize) -> &'static str {
    TABLE.get(index).map_or(UNMATCHED, |entry| entry.route.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    /// The real router's answer to `method path` (no plugins loaded yet,
    /// no token): its status and error code, if any.
    async fn answer(method: Method, path: &str) -> (StatusCode, Option<String>) {
        let config = crate::HttpConfig::default();
        let app = crate::router(crate::AppState::new(&config), &config);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
        (status, code)
    }

    /// A path the template matches, such as `/v1/providers/x` for
    /// `/v1/providers/{id}`.
    fn concrete(template: &str) -> String {
        template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether any listed route's template matches `path`.
    fn listed(path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        TABLE.iter().any(|entry| {
            let template: Vec<&str> = entry.route.path.split('/').collect();
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })
    }

    #[tokio::test]
    async fn every_listed_route_is_served() {
        for entry in &TABLE {
            let route = &entry.route;
            let path = concrete(route.path);
            let (status, code) = answer(route.method.clone(), &path).await;
            assert!(
                !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
                "{} {path}: {status} {code:?}",
                route.method
            );
        }
    }

    #[tokio::test]
    async fn a_listed_path_asked_with_another_method_answers_405() {
        let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
        for entry in &TABLE {
            let path = concrete(entry.route.path);
            for method in &methods {
                let served = TABLE.iter().any(|other| {
                    other.route.path == entry.route.path && other.route.method == method
                });
                if served {
                    continue;
                }
                let (status, code) = answer(method.clone(), &path).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(
                    code.as_deref(),
                    Some("method_not_allowed"),
                    "{method} {path}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_validate_route_answers_another_method_as_its_method_router_did() {
        let config = crate::HttpConfig::default();
        let app = crate::router(crate::AppState::new(&config), &config);
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::OPTIONS] {
            let request = Request::builder()
                .method(method.clone())
                .uri("/v1/providers/x/validate")
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(response.headers()["allow"], "POST", "{method}");
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            // (A HEAD answer has no body.)
            assert_eq!(body.is_empty(), method == Method::HEAD, "{method}");
        }
    }

    /// The router serves the table and nothing else: a path next to a
    /// listed one gets the 404 fallback.
    #[tokio::test]
    async fn a_path_not_listed_gets_the_404_fallback() {
        let mut paths: Vec<String> = ["/v1", "/v1/", "/v1/providers/", "/assets", "/ui", "/x"]
            .map(str::to_owned)
            .to_vec();
        for entry in &TABLE {
            paths.push(format!(
                "{}/x",
                concrete(entry.route.path).trim_end_matches('/')
            ));
            paths.push(format!("{}x", concrete(entry.route.path)));
        }
        paths.retain(|path| !listed(path));
        for path in paths {
            for method in [Method::GET, Method::POST] {
                let (status, code) = answer(method.clone(), &path).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
                assert_eq!(code.as_deref(), Some("not_found"), "{method} {path}");
            }
        }
    }

    #[test]
    fn every_route_has_its_own_label_and_anything_else_is_unmatched() {
        for (i, entry) in TABLE.iter().enumerate() {
            assert_eq!(index(Some(entry.route.path)), i);
            assert_eq!(label(i), entry.route.path);
        }
        assert_eq!(label(index(Some("/v1/providers/daytona"))), UNMATCHED);
        // Nested under a prefix by an embedder.
        for (nested, route) in [
            ("/connhost/v1/providers", "/v1/providers"),
            ("/connhost/v1/providers/{id}", "/v1/providers/{id}"),
            (
                "/connhost/v1/providers/{id}/validate",
                "/v1/providers/{id}/validate",
            ),
            ("/connhost/assets/app.js", "/assets/app.js"),
            ("/connhost/assets/forms.js", "/assets/forms.js"),
            ("/connhost/", "/"),
        ] {
            assert_eq!(label(index(Some(nested))), route, "{nested}");
        }
        assert_eq!(label(index(None)), UNMATCHED);
        assert_eq!(
            label(fallback_index("/v1/providers/x/validate")),
            "/v1/providers/{id}/validate"
        );
        assert_eq!(label(fallback_index("/v2/things")), UNMATCHED);
    }

    #[tokio::test]
    async fn the_validate_path_is_matched_as_axum_matches_its_template() {
        let router: axum::Router = axum::Router::new()
            .route(VALIDATE, axum::routing::post(|| async { "matched" }))
            .fallback(|| async { "fallback" });
        for path in [
            "/v1/providers/mai/validate",
            "/v1/providers/m%61i/validate",
            "/v1/providers/a%2Fb/validate",
            "/v1/providers/validate/validate",
            "/v1/providers//validate",
            "/v1/providers/validate",
            "/v1/providers/a/b/validate",
            "/v1/providers/a/validate/",
            "/v1/providers/a/validatex",
            "/v1/providers/a/validat",
            "/v1/providers/a",
            "/x/v1/providers/a/validate",
            "/v1/providers/%FF/validate",
        ] {
            let request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let body = axum::body::to_bytes(response.into_body(), 64)
                .await
                .unwrap();
            assert_eq!(is_validate(path), &body[..] == b"matched", "{path}");
        }
    }
}
