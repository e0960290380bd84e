//! Mounting connhost's API and settings page inside an axum app you
//! already have: your routes stay yours, connhost's live under
//! `/connhost/`.
//!
//! Run it with:
//!
//! ```sh
//! cargo xtask plugins                                # stages the example plugins in target/plugins
//! cargo run -p connhost-http --example mount -- target/plugins 127.0.0.1:3000
//! ```
//!
//! then open <http://127.0.0.1:3000/connhost/> (the settings page), or
//! `curl http://127.0.0.1:3000/connhost/v1/providers`. Your own route is
//! <http://127.0.0.1:3000/>.
//!
//! This program serves with `axum::serve` to stay short; `connhost
//! serve` uses [`connhost_http::serve`], which adds a connection cap,
//! per-connection timeouts and a bounded graceful shutdown.

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use connhost::{Connhost, HostConfig};
use connhost_http::{AppState, HttpConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let folder = args.next().unwrap_or_else(|| "target/plugins".to_owned());
    let address = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    // connhost's side: its state (answers 503 `starting` until a provider
    // set is published), and its router. The default configuration limits
    // validations per client and per provider (`http_config.rate_limits`;
    // `connhost_http::RateLimits::OFF` turns them off).
    let http_config = HttpConfig::default();
    let state = AppState::new(&http_config);
    let connhost = connhost_http::router(state.clone(), &http_config);

    // Your app, with connhost nested under /connhost/ (the settings page
    // uses relative links, so it works under any prefix ending in `/`).
    let app = Router::new()
        .route("/", get(|| async { "my app: connhost is at /connhost/\n" }))
        .route(
            "/connhost",
            get(|| async { Redirect::permanent("/connhost/") }),
        )
        .nest("/connhost/", connhost);

    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .expect("bind the address");
    println!(
        "listening on http://{}",
        listener.local_addr().expect("an address")
    );

    // Load the plugins off the async runtime (plugin code runs), then
    // publish the set. For hot reload, hand the catalog to
    // `connhost::reload::start` instead, publishing with `state.set_host`.
    let publishing = state.clone();
    tokio::task::spawn_blocking(move || {
        let host = Connhost::start(&HostConfig::with_plugins_dir(folder));
        println!("serving {} providers", host.registry().len());
        publishing.set_host(host);
    });

    // With the peer address, so that the per-client rate limit on
    // validations tells clients apart.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
    .expect("serve");
}
