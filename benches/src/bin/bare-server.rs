//! The HTTP baseline: a minimal axum server that answers the benchmarked
//! routes with the bytes `connhost serve` answered them with (captured by
//! `harness http` just before), on the same kind of tokio runtime.
//!
//! `bare-server LISTEN PROVIDERS_BODY VALIDATE_BODY`
//!
//! - `GET /v1/providers`: 200, `content-type: application/json`, the
//!   contents of PROVIDERS_BODY;
//! - `POST /v1/providers/mai/validate`: reads the request body, then 422,
//!   `content-type: application/json`, `cache-control: no-store`, the
//!   contents of VALIDATE_BODY.
//!
//! Prints `listening on http://ADDR` once bound.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, providers, validate] = args.as_slice() else {
        eprintln!("usage: bare-server LISTEN PROVIDERS_BODY VALIDATE_BODY");
        return ExitCode::from(2);
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bare-server: {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    assert!(listen.ip().is_loopback(), "loopback only");
    let read = |path: &String| Bytes::from(std::fs::read(path).expect("read a body file"));
    let (providers, validate) = (read(providers), read(validate));

    let app = Router::new()
        .route(
            "/v1/providers",
            get(move || {
                let body = providers.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/v1/providers/mai/validate",
            post(move |_request: Bytes| {
                let body = validate.clone();
                async move {
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        body,
                    )
                        .into_response()
                }
            }),
        );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        println!(
            "listening on http://{}",
            listener.local_addr().expect("addr")
        );
        axum::serve(listener, app).await.expect("serve");
    });
    ExitCode::SUCCESS
}
