//! The JSON API's handlers. Each is a thin layer over [`crate::Connhost`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::auth;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ProviderId, ValidateRequest};
use super::metrics::Exposition;
use super::rate_limit::{ClientKey, Refusal};
use super::AppState;
use crate::wire::VerdictBody;
use connhost::{LoadReport, ProviderInfo, RegisteredProvider, Validation, Verdict};

/// Every provider, built in and loaded, ordered by id.
#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "providers",
    responses(
        (status = 200, description = "The combined provider set", body = [ProviderInfo]),
        (status = 401, description = "Missing or wrong access token", body = ErrorBody),
        (status = 503, description = "Still loading plugins", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn list_providers(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = state.host()?;
    // (What `([(CONTENT_TYPE, "application/json")], bytes)` answers,
    // built without its header parsing.)
    let mut response = Response::new(Body::from(snapshot.providers_json.clone()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// One provider.
#[utoipa::path(
    get,
    path = "/v1/providers/{id}",
    tag = "providers",
    params(("id" = String, Path, description = "The provider id")),
    responses(
        (status = 200, description = "The provider", body = ProviderInfo),
        (status = 400, description = "The id in the path is malformed (`invalid_path`: not UTF-8)", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 401, description = "Missing or wrong access token", body = ErrorBody),
        (status = 503, description = "Plugins still loading", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn get_provider(
    State(state): State<AppState>,
    ProviderId(id): ProviderId,
) -> Result<Json<ProviderInfo>, ApiError> {
    Ok(Json(state.host()?.provider(&id)?))
}

/// Validates a credential: the rate limits first (429 with `Retry-After`,
/// per client and per provider; the body is not read), the form's rules
/// next (422 with every field error; the provider is not called), then the
/// provider, under the host's timeout. The verdict tells rejected, inconclusive, timed out and
/// provider fault apart. The assembled credential document is returned only
/// when `include_document` is true; responses are never cached.
#[utoipa::path(
    post,
    path = "/v1/providers/{id}/validate",
    tag = "providers",
    params(("id" = String, Path, description = "The provider id")),
    request_body(content = super::extract::ValidateRequestBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The provider's verdict", body = VerdictBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "Malformed JSON (`malformed_json`), a malformed id (`invalid_path`) or a body that could not be read (`unreadable_body`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong access token", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 408, description = "The body did not arrive within the body timeout (`body_timeout`)", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields (`invalid_fields`, the provider was not called) or a malformed body (`invalid_body`)", body = ErrorBody,
            headers(("Cache-Control" = String, description = "`no-store` for `invalid_fields`"))),
        (status = 429, description = "Too many validations (`rate_limited`): from this client, or with this provider from all clients; the message says which. The body was not read and the provider not called.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds (at least 1) until a retry can succeed"))),
        (status = 503, description = "Plugins still loading, or shutting down; or (`rate_limit_unavailable`) the rate limits' shared store does not answer and the server is set to refuse validations then", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) fn validate(
    State(state): State<AppState>,
    request: Request,
) -> impl Future<Output = Result<Response, ApiError>> + Send {
    // What can be decided without waiting is decided here, outside the
    // future: a future keeps room for every local that lives across one of
    // its awaits (the request's 240 bytes among them, as a parameter), and
    // it is moved whole into its box and through the layers above.
    let admission = admit(&state, request);
    async move {
        let admitted = match admission {
            Admission::Answered(answer) => return answer,
            Admission::Admitted(admitted) => admitted,
        };
        let Admitted {
            host,
            entry,
            body,
            content_type,
            store,
        } = admitted;
        if let Some(decision) = store {
            if let Err(refused) = decision.await {
                return Ok(refused.answer(&state.0.metrics));
            }
        }
        content_type?;
        let request = ValidateRequest::read(body).await?;
        let started = Instant::now();
        // A submission the form refuses is answered without the provider's
        // call in this future (which keeps it small).
        let verdict = match host.begin_validation(&entry, request.fields) {
            Validation::Answered(verdict) => verdict,
            Validation::Calling(call) => call.await,
        };
        state
            .0
            .metrics
            .validation(entry.id(), verdict.outcome().as_str(), started);
        if let Verdict::InvalidFields(errors) = &verdict {
            let message = || verdict.error_message().unwrap_or_default();
            return Ok(state.0.invalid_fields.response(errors, message));
        }
        let no_store = [(header::CACHE_CONTROL, "no-store")];
        let body = VerdictBody::new(&verdict, request.include_document);
        Ok((no_store, Json(body)).into_response())
    }
}

/// How far [`admit`] took a validation request.
enum Admission {
    /// Answered before its body is read (an error, or the rate limit's
    /// refusal).
    Answered(Result<Response, ApiError>),
    /// To read and validate.
    Admitted(Admitted),
}

/// A validation request admitted so far: its provider exists and the
/// local rate limits let it through.
struct Admitted {
    host: Arc<super::Snapshot>,
    entry: Arc<RegisteredProvider>,
    body: Body,
    /// A wrong Content-Type, answered once the rate limit admitted the
    /// request.
    content_type: Result<(), ApiError>,
    /// The shared store's decision, still to await (boxed: its round
    /// trip would otherwise grow every validation's future, shared limits
    /// or not); `None` when already decided.
    store: Option<StoreDecision>,
}

/// The shared rate limit store's decision on a validation, to await.
type StoreDecision = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>>;

/// The steps of a validation before its body is read, in the order their
/// answers take precedence: the id (a malformed one is a 400 whatever
/// else), readiness, the provider (a request for a provider that does not
/// exist is a 404 whatever its body), the rate limits, the Content-Type.
fn admit(state: &AppState, request: Request) -> Admission {
    let found = super::extract::provider_id(request.uri().path(), "/validate").and_then(|id| {
        let host = state.host()?;
        let entry = host.entry(&id)?;
        Ok((host, entry))
    });
    let (host, entry) = match found {
        Ok(found) => found,
        Err(error) => return Admission::Answered(Err(error)),
    };
    // Charged only for a provider that exists (unknown ids cannot grow the
    // limiter's map), and before the body is read.
    let client = client_key(state, &request);
    let store = match state.0.limiters.decide_locally(&client, entry.id()) {
        Some(Ok(())) => None,
        Some(Err(refused)) => return Admission::Answered(Ok(refused.answer(&state.0.metrics))),
        None => {
            let (state, entry) = (state.clone(), entry.clone());
            let decision: StoreDecision =
                Box::pin(async move { state.0.limiters.decide(&client, entry.id()).await });
            Some(decision)
        }
    };
    Admission::Admitted(Admitted {
        content_type: ValidateRequest::check_content_type(request.headers()),
        body: request.into_body(),
        host,
        entry,
        store,
    })
}

/// Who sent `request`, as the per-client rate limit counts: its peer
/// address and, when the server checks tokens, its bearer token (a
/// request without the right token never gets here then). Without that
/// limit, nobody: the key would be read by no one (and a token's is a
/// hash to compute).
fn client_key(state: &AppState, request: &Request) -> ClientKey {
    if !state.0.limiters.per_client() {
        return ClientKey::new(None, None);
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let token = state
        .0
        .token
        .as_ref()
        .and_then(|_| auth::bearer(request.headers()));
    ClientKey::new(peer, token)
}

/// The load report: plugins loaded, and files that were not, with reasons.
/// A server that syncs its folder with OCI references (`serve --sync`)
/// adds each synced plugin's `source` and each reference's status under
/// `sync`.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "plugins",
    responses(
        (status = 200, description = "The load report", body = LoadReport),
        (status = 401, description = "Missing or wrong access token", body = ErrorBody),
        (status = 503, description = "Plugins still loading", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn plugins(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = state.host()?.plugins();
    Ok(report_response(&state, report))
}

/// The load report as `/v1/plugins` answers it: as it is, or with what
/// the sync adds when the server syncs.
fn report_response(state: &AppState, report: LoadReport) -> Response {
    let statuses = state.0.metrics.sync.load_full();
    match statuses {
        None => Json(report).into_response(),
        Some(statuses) => Json(crate::sync::plugins_body(&report, Some(&statuses))).into_response(),
    }
}

/// Rescans the plugins folder now (for file systems without change
/// events) and answers with the load report once the result is served.
#[utoipa::path(
    post,
    path = "/v1/plugins/rescan",
    tag = "plugins",
    responses(
        (status = 200, description = "The load report after the rescan", body = LoadReport),
        (status = 401, description = "Missing or wrong access token", body = ErrorBody),
        (status = 503, description = "Hot reload is not running", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn rescan(State(state): State<AppState>) -> Result<Response, ApiError> {
    let unavailable = || {
        ApiError::new(
            ErrorCode::ReloadUnavailable,
            "This server does not reload plugins.",
        )
    };
    let handle = state.0.reload.get().ok_or_else(unavailable)?;
    let report = handle.rescan().await.ok_or_else(unavailable)?;
    Ok(report_response(&state, report))
}

/// `GET /healthz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: HealthStatus,
}

/// The only value of [`Health::status`].
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HealthStatus {
    /// The process is up.
    Ok,
}

/// `GET /readyz`'s answer when ready.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// Always `ready`.
    status: ReadyStatus,
    /// Providers registered, built in and loaded.
    providers: usize,
    /// Plugin files loaded.
    plugins_loaded: usize,
    /// Plugin files or providers that failed to load.
    plugins_failed: usize,
}

/// The only value of [`Readiness::status`].
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadyStatus {
    /// The plugins folder is scanned and the API serves.
    Ready,
}

/// Liveness: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Up", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// Readiness: the plugins folder has been scanned and the API serves.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Still loading plugins (`starting`) or shutting down (`draining`)", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::new(
            ErrorCode::Draining,
            "connhost is shutting down and finishing the requests in flight.",
        ));
    }
    let host = state.host()?;
    Ok(Json(Readiness {
        status: ReadyStatus::Ready,
        providers: host.registry().len(),
        plugins_loaded: host.load_report().loaded.len(),
        plugins_failed: host.load_report().failed.len(),
    }))
}

/// Prometheus metrics: OpenMetrics to a scraper whose `Accept` asks for it
/// (Prometheus does), the classic text format 0.0.4 to anyone else; each
/// labelled with its own content type.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics. OpenMetrics 1.0.0 (`application/openmetrics-text; version=1.0.0; charset=utf-8`) when the request's `Accept` prefers it, otherwise the classic Prometheus text format (`text/plain; version=0.0.4; charset=utf-8`).",
            headers(("Vary" = String, description = "`Accept`: the format depends on it")),
            content(
                (String = "text/plain"),
                (String = "application/openmetrics-text"),
            )),
        (status = 401, description = "Missing or wrong access token: with a token, `/metrics` needs it unless the server runs with `--metrics-open`", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Exposition::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "accept"),
        ],
        state.0.metrics.encode(format),
    )
        .into_response()
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json")),
)]
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

/// Any path the router did not match: the validate route's (which the
/// router leaves to this fallback, see `paths::TABLE`), answered as its
/// method router would (405 with `Allow: POST` to another method), or 404.
/// A plain function (its future is the validate route's, or an answer),
/// so that a validation's future has no layer more than the route's own.
pub(crate) fn fallback(
    state: State<AppState>,
    request: Request,
) -> FallbackFuture<impl std::future::Future<Output = Result<Response, ApiError>>> {
    let answered = |response: Response| FallbackFuture::Answered {
        response: Some(response),
    };
    if !super::paths::is_validate(request.uri().path()) {
        return answered(not_found_error().into_response());
    }
    if request.method() != axum::http::Method::POST {
        let mut response = method_not_allowed_error().into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return answered(response);
    }
    FallbackFuture::Validate {
        future: validate(state, request),
    }
}

/// [`fallback`] as a handler of its own: axum's handler for a function
/// splits and rebuilds the request to extract its arguments, code run (and
/// fetched into the instruction cache) once per validation for nothing.
#[derive(Clone, Copy)]
pub(crate) struct Fallback;

impl axum::handler::Handler<(), AppState> for Fallback {
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, state: AppState) -> Self::Future {
        // (Boxed as axum boxes a function handler's future.)
        Box::pin(fallback(State(state), request))
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`fallback`].
    #[project = FallbackProjection]
    pub(crate) enum FallbackFuture<F> {
        /// A validation.
        Validate { #[pin] future: F },
        /// An answer given at once (taken when polled).
        Answered { response: Option<Response> },
    }
}

impl<F> std::future::Future for FallbackFuture<F>
where
    F: std::future::Future<Output = Result<Response, ApiError>>,
{
    type Output = Response;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        match self.project() {
            FallbackProjection::Validate { future } => {
                future.poll(cx).map(IntoResponse::into_response)
            }
            FallbackProjection::Answered { response } => match response.take() {
                Some(response) => std::task::Poll::Ready(response),
                None => panic!("the fallback's answer was polled after it was given"),
            },
        }
    }
}

/// The answer to any other path.
fn not_found_error() -> ApiError {
    ApiError::not_found("No such route. GET /openapi.json lists the API.")
}

/// The answer to a known path with the wrong method.
fn method_not_allowed_error() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This route does not accept that method. GET /openapi.json lists the API.",
    )
}

/// A known path with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    method_not_allowed_error()
}

#[cfg(test)]
mod tests {
    /// A validation's future is moved whole into its box and through the
    /// layers above it, once per request: it holds neither the request
    /// nor the shared store's round trip (752 and 1,376 bytes when it
    /// did).
    #[test]
    fn a_validation_future_stays_small() {
        let state = super::AppState::new(&crate::HttpConfig::default());
        let request = axum::extract::Request::new(axum::body::Body::empty());
        let future = super::fallback(axum::extract::State(state), request);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 512,
            "the validate route's future takes {size} bytes"
        );
    }
}
