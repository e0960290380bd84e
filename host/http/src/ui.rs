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
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

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

/// The settings page's script.
#[utoipa::path(
    get,
    path = "/assets/app.js",
    tag = "ui",
    responses((status = 200, description = "The page's script", body = String, content_type = "text/javascript")),
)]
pub(crate) async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
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
    use super::render_markdown;

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
