//! The settings page: static assets compiled into the binary, and the
//! providers' instructions rendered from markdown to safe HTML.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag, TagEnd};

use super::error::{ApiError, ErrorBody};
use super::AppState;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");

/// The settings page's script, native ES modules with one job each, each
/// served at its own path (`/assets/NAME.js`, a row of its own in
/// [`crate::paths`] and in the OpenAPI document's `paths`) and importing
/// the others as `./NAME.js`: for each, a handler answering its source
/// (compiled into the binary) the same way, and (for the tests) its row in
/// `SCRIPTS`.
macro_rules! scripts {
    ($($(#[doc = $doc:literal])* $handler:ident: $file:literal,)+) => {
        $(
            $(#[doc = $doc])*
            #[utoipa::path(
                get,
                path = concat!("/assets/", $file),
                tag = "ui",
                responses((status = 200, description = concat!("`", $file, "`, a module of the page's script"), body = String, content_type = "text/javascript")),
            )]
            pub(crate) async fn $handler() -> Response {
                script(include_str!(concat!("assets/", $file)))
            }
        )+

        /// Every script of the page: its file in `assets/` and its source.
        #[cfg(test)]
        const SCRIPTS: &[(&str, &str)] = &[$(($file, include_str!(concat!("assets/", $file)))),+];
    };
}

scripts! {
    /// The page's entry module: it starts the page with the modules it imports.
    app_js: "app.js",
    /// The page's `fetch` with the access token, and the token prompt.
    api_js: "api.js",
    /// The page's elements, built without ever parsing HTML.
    dom_js: "dom.js",
    /// A provider's credential form on the page, built from its schema.
    forms_js: "forms.js",
    /// The page's plugins section.
    plugins_js: "plugins.js",
    /// The page's providers: loading them and rendering their cards.
    providers_js: "providers.js",
}

/// One of the page's scripts, as every one is answered.
fn script(source: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        source,
    )
        .into_response()
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
    use axum::http::{HeaderMap, Method, Request, StatusCode};
    use tower::ServiceExt as _;

    /// The entry module, the one script nothing imports.
    const ENTRY: &str = "app.js";

    /// What each import in `source` imports (`./forms.js`): static imports
    /// and re-exports (`... from "X"`) and imports for effect (`import
    /// "X"`).
    fn imports(source: &str) -> Vec<&str> {
        let quoted = |after: &'static str| {
            source
                .split(after)
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap())
        };
        quoted(" from \"").chain(quoted("import \"")).collect()
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

    /// Each script imports the others by their own paths (`./forms.js`,
    /// as served next to it), only scripts connhost serves, and every
    /// script but the entry module is imported.
    #[test]
    fn every_import_is_a_served_script_and_every_script_is_imported() {
        let files: Vec<&str> = SCRIPTS.iter().map(|(file, _)| *file).collect();
        let mut imported = Vec::new();
        for (file, source) in SCRIPTS {
            assert!(!source.contains("import("), "{file}: a dynamic import");
            for import in imports(source) {
                let name = import
                    .strip_prefix("./")
                    .filter(|name| files.contains(name))
                    .unwrap_or_else(|| panic!("{file} imports {import}: not a served script"));
                imported.push(name);
            }
        }
        imported.sort_unstable();
        imported.dedup();
        let mut expected: Vec<&str> = files.into_iter().filter(|f| *f != ENTRY).collect();
        expected.sort_unstable();
        assert_eq!(imported, expected);
    }

    /// Every script in the assets folder is served, each at its own path
    /// (`/assets/NAME.js`, a row of the route table), and the table serves
    /// no other script.
    #[test]
    fn every_script_in_the_assets_folder_is_served() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/assets");
        let mut in_folder: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|file| file.ends_with(".js"))
            .collect();
        in_folder.sort();
        let mut served: Vec<String> = SCRIPTS.iter().map(|(file, _)| file.to_string()).collect();
        served.sort();
        assert_eq!(in_folder, served);

        let mut routed: Vec<String> = crate::routes()
            .filter(|route| route.path.ends_with(".js"))
            .map(|route| {
                assert_eq!(route.method, Method::GET, "{}", route.path);
                route
                    .path
                    .strip_prefix("/assets/")
                    .unwrap_or_else(|| panic!("{}: a script outside /assets/", route.path))
                    .to_owned()
            })
            .collect();
        routed.sort();
        assert_eq!(routed, served);
    }

    /// Each script, through the real router, at its own path: its source,
    /// as JavaScript, with the same headers as every other script.
    #[tokio::test]
    async fn each_script_is_answered_at_its_own_path() {
        let (_, entry_headers, _) = get(&format!("/assets/{ENTRY}")).await;
        assert_eq!(
            entry_headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(entry_headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let names = |headers: &HeaderMap| {
            let mut names: Vec<String> = headers
                .keys()
                .filter(|name| *name != header::CONTENT_LENGTH)
                .map(|name| name.to_string())
                .collect();
            names.sort();
            names
        };
        for (file, source) in SCRIPTS {
            let path = format!("/assets/{file}");
            let (status, headers, body) = get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, *source, "{path}");
            assert_eq!(names(&headers), names(&entry_headers), "{path}");
            for (name, value) in &headers {
                if name != header::CONTENT_LENGTH {
                    assert_eq!(value, entry_headers[name], "{path}: {name}");
                }
            }
            // A query (a cache buster, say) changes nothing.
            assert_eq!(get(&format!("{path}?v=2")).await.2, *source, "{path}");
        }
        for path in [
            "/assets/nope.js",
            "/assets/Forms.js",
            "/assets/forms",
            "/assets/",
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
