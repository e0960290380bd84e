//! The settings page: static assets compiled into the binary, and the
//! providers' instructions rendered from markdown to safe HTML.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag, TagEnd};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");

/// The entry module of the page's script (native ES modules): it only
/// starts the page, with the modules it imports.
const APP_JS: &str = include_str!("assets/app.js");

/// One of the modules of the settings page's script, each with one job:
/// the script imports `NAME.js` as `./app.js?module=NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Module {
    /// `dom.js`: building elements (never by parsing HTML).
    Dom,
    /// `api.js`: `fetch` with the access token, and the token prompt.
    Api,
    /// `providers.js`: loading the providers and rendering their cards.
    Providers,
    /// `forms.js`: a provider's credential form, built from its schema.
    Forms,
    /// `plugins.js`: the plugins section.
    Plugins,
}

impl Module {
    /// The module's source, compiled into the binary.
    const fn source(self) -> &'static str {
        match self {
            Self::Dom => include_str!("assets/dom.js"),
            Self::Api => include_str!("assets/api.js"),
            Self::Providers => include_str!("assets/providers.js"),
            Self::Forms => include_str!("assets/forms.js"),
            Self::Plugins => include_str!("assets/plugins.js"),
        }
    }
}

/// Which part of the page's script to answer.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScriptQuery {
    /// One of the modules the entry module imports; without it, the entry
    /// module (`app.js`). Any other value answers 404 `not_found`.
    #[param(inline)]
    module: Option<Module>,
}

/// What the page may load and do: only its own script, styles and API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The settings page.
#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    responses((status = 200, description = "The settings page", body = String, content_type = "text/html")),
)]
pub(crate) async fn index() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(INDEX_HTML),
    )
        .into_response()
}

/// The settings page's script: its entry module, or (with `module`) one of
/// the modules it imports.
#[utoipa::path(
    get,
    path = "/assets/app.js",
    tag = "ui",
    params(ScriptQuery),
    responses((status = 200, description = "The page's script, or one of its modules", body = String, content_type = "text/javascript")),
)]
pub(crate) async fn app_js(query: Result<Query<ScriptQuery>, QueryRejection>) -> Response {
    let source = match query {
        Ok(Query(ScriptQuery { module: None })) => APP_JS,
        Ok(Query(ScriptQuery {
            module: Some(module),
        })) => module.source(),
        Err(_) => {
            return ApiError::not_found("No such module of the page's script.").into_response()
        }
    };
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        source,
    )
        .into_response()
}

/// The settings page's styles.
#[utoipa::path(
    get,
    path = "/assets/app.css",
    tag = "ui",
    responses((status = 200, description = "The page's styles", body = String, content_type = "text/css")),
)]
pub(crate) async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

/// Every provider's instructions, rendered from markdown to sanitised HTML
/// (for the page).
#[utoipa::path(
    get,
    path = "/ui/instructions",
    tag = "ui",
    responses(
        (status = 200, description = "Provider id to instructions as HTML", body = std::collections::BTreeMap<String, String>),
        (status = 401, description = "Missing or wrong access token", body = ErrorBody),
        (status = 503, description = "Still loading plugins", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn instructions(
    State(state): State<AppState>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let host = state.host()?;
    Ok(Json(
        host.providers()
            .into_iter()
            .filter_map(|p| {
                let schema = p.form_schema?;
                Some((
                    p.provider_id,
                    render_markdown(&schema.instructions_markdown),
                ))
            })
            .collect(),
    ))
}

/// Renders markdown from a plugin (untrusted) to HTML that cannot run
/// script: raw HTML is shown as text, links keep only `http`, `https` and
/// `mailto` targets, and images become links (no remote loads).
pub fn render_markdown(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        })
        | Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, parser);
    out
}

fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("mailto:")
    {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode};
    use tower::ServiceExt as _;

    const MODULES: [Module; 5] = [
        Module::Dom,
        Module::Api,
        Module::Providers,
        Module::Forms,
        Module::Plugins,
    ];

    /// The module's name, as the script asks for it (`forms`).
    fn name(module: Module) -> String {
        format!("{module:?}").to_lowercase()
    }

    /// What each import in `source` imports (`./app.js?module=forms`).
    fn imports(source: &str) -> Vec<&str> {
        source
            .split(" from \"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect()
    }

    /// The real router's answer to `GET path`: status, headers and body.
    async fn get(path: &str) -> (StatusCode, HeaderMap, String) {
        let config = crate::HttpConfig::default();
        let app = crate::router(crate::AppState::new(&config), &config);
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[test]
    fn the_script_imports_every_module_and_only_as_served() {
        let mut imported = Vec::new();
        for source in std::iter::once(APP_JS).chain(MODULES.map(Module::source)) {
            for import in imports(source) {
                let name = import
                    .strip_prefix("./app.js?module=")
                    .unwrap_or_else(|| panic!("{import}: not a module app_js serves"));
                let module: Module = serde_json::from_value(serde_json::json!(name))
                    .unwrap_or_else(|_| panic!("{import}: not a module app_js serves"));
                imported.push(module);
            }
        }
        for module in MODULES {
            assert!(imported.contains(&module), "nothing imports {module:?}");
        }
    }

    /// Every script in the assets folder is served: `app.js`, and each
    /// other one as a module.
    #[test]
    fn every_script_in_the_assets_folder_is_a_module() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/assets");
        let mut scripts: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|file| file.ends_with(".js") && file != "app.js")
            .collect();
        scripts.sort();
        let mut served: Vec<String> = MODULES.map(|m| format!("{}.js", name(m))).to_vec();
        served.sort();
        assert_eq!(scripts, served);
    }

    #[tokio::test]
    async fn each_module_is_answered_like_the_entry_module() {
        let (status, entry_headers, body) = get("/assets/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, APP_JS);
        assert_eq!(
            entry_headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(entry_headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        // Another parameter (a cache buster, say) changes nothing.
        assert_eq!(get("/assets/app.js?v=2").await.2, APP_JS);
        for module in MODULES {
            let path = format!("/assets/app.js?module={}", name(module));
            let (status, headers, body) = get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, module.source(), "{path}");
            let names = |headers: &HeaderMap| {
                let mut names: Vec<String> = headers
                    .keys()
                    .filter(|name| *name != header::CONTENT_LENGTH)
                    .map(|name| name.to_string())
                    .collect();
                names.sort();
                names
            };
            assert_eq!(names(&headers), names(&entry_headers), "{path}");
            for (name, value) in &headers {
                if name != header::CONTENT_LENGTH {
                    assert_eq!(value, entry_headers[name], "{path}: {name}");
                }
            }
        }
        for path in [
            "/assets/app.js?module=nope",
            "/assets/app.js?module=Forms",
            "/assets/app.js?module=",
            "/assets/app.js?module=forms&module=api",
        ] {
            let (status, _, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.contains("\"not_found\""), "{path}: {body}");
        }
    }

    /// The page loads its script as one module from its own origin, with no
    /// inline script, which its policy (header and meta) would refuse.
    #[test]
    fn the_page_loads_its_script_as_a_module_of_its_own() {
        assert_eq!(INDEX_HTML.matches("<script").count(), 1, "{INDEX_HTML}");
        assert!(
            INDEX_HTML.contains(r#"<script type="module" src="assets/app.js"></script>"#),
            "{INDEX_HTML}"
        );
        let meta = INDEX_HTML
            .split(r#"http-equiv="Content-Security-Policy" content=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSP meta tag");
        for policy in [CONTENT_SECURITY_POLICY, meta] {
            assert!(policy.contains("script-src 'self';"), "{policy}");
            assert!(!policy.contains("unsafe"), "{policy}");
        }
        // The meta tag says what the header says (frame-ancestors aside,
        // which only a header can).
        assert_eq!(
            CONTENT_SECURITY_POLICY.replace("; frame-ancestors 'none'", ""),
            meta
        );
    }

    #[test]
    fn markdown_renders_but_script_does_not() {
        let html =
            render_markdown("**Bold** [docs](https://example.com/x) <script>alert(1)</script>");
        assert!(html.contains("<strong>Bold</strong>"), "{html}");
        assert!(html.contains("href=\"https://example.com/x\""), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn dangerous_links_and_images_are_defused() {
        for markdown in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](data:text/html,<script>alert(1)</script>)",
            "![img](https://tracker.example/pixel.png)",
            "<img src=x onerror=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
        ] {
            let html = render_markdown(markdown);
            assert!(
                !html.to_ascii_lowercase().contains("<a href=\"javascript"),
                "{markdown}: {html}"
            );
            assert!(!html.contains("<img"), "{markdown}: {html}");
            assert!(!html.contains("<a href=\"data:"), "{markdown}: {html}");
        }
    }
}
