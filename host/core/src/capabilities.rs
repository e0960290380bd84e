//! What the host lends to providers: log forwarding, scoped configuration,
//! timers and HTTP, all run on the host's tokio runtime.
//!
//! Each loaded plugin gets a token (an index into `SLOTS`); every host
//! function receives it, so policy is per plugin: logs are tagged with the
//! plugin's name, configuration is scoped to it, and its HTTP goes through
//! a client that enforces its egress policy ([`crate::egress`]): the hosts
//! it may call, and no restricted address without an explicit grant.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RErr, ROk, ROption, RResult, RStr, RString, RVec, Tuple2};
use async_ffi::{FfiFuture, FutureExt as _};
use connhost_plugin_api::abi::{
    http_error, level, FfiHttpError, FfiHttpRequest, FfiHttpResponse, HostContext, HostVTable,
    HostVTableRef,
};

use crate::egress::{Policy, Refusals};
use crate::model::config::HttpLimits;
use crate::model::egress::Egress;
use crate::model::names::setting_env_var;
use crate::redact::scrub_plugin_line;

/// The name built-in providers are known by in logs and configuration.
pub const BUILTIN_SCOPE: &str = "builtin";

/// HTTP requests that set no timeout of their own get this one.
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// The tracing target of events forwarded from plugins.
pub const PLUGIN_LOG_TARGET: &str = "connhost::plugin";

/// One plugin's identity, settings, egress policy and HTTP bounds.
struct Slot {
    name: String,
    /// Where its egress refusals are counted: the host's that loaded it.
    refusals: Arc<Refusals>,
    settings: BTreeMap<String, String>,
    egress: Arc<Policy>,
    limits: HttpLimits,
    /// Its requests in flight (one permit each).
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    /// A slot that may call nothing until its egress is set.
    fn new(name: &str, settings: BTreeMap<String, String>, refusals: Arc<Refusals>) -> Self {
        let limits = HttpLimits::default();
        Self {
            name: name.to_owned(),
            settings,
            egress: Arc::new(Policy::new(name, &Egress::default(), refusals.clone())),
            refusals,
            limits,
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent)),
        }
    }
}

/// Sets the HTTP bounds of the plugin behind `token` (0: the compiled-in
/// providers). Requests already running keep their permits.
pub(crate) fn set_http_limits(token: u64, limits: HttpLimits) {
    let mut slots = slots_mut();
    if let Some(slot) = usize::try_from(token).ok().and_then(|t| slots.get_mut(t)) {
        if slot.limits != limits {
            slot.limits = limits;
            slot.in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent));
        }
    }
}

/// Token -> plugin. Process-wide, as the function table plugins call back
/// through with their token; each slot counts into its own host's state.
/// Token 0 is the compiled-in providers called outside any host (a raw
/// call); each host has a slot of its own for them ([`AsBuiltin`]).
static SLOTS: RwLock<Vec<Slot>> = RwLock::new(Vec::new());

/// The slots for writing, slot 0 made if there is none yet.
fn slots_mut() -> std::sync::RwLockWriteGuard<'static, Vec<Slot>> {
    let mut slots = SLOTS.write().unwrap_or_else(|e| e.into_inner());
    if slots.is_empty() {
        slots.push(Slot::new(BUILTIN_SCOPE, BTreeMap::new(), Arc::default()));
    }
    slots
}

fn with_slot<T>(token: u64, f: impl FnOnce(&Slot) -> T) -> Option<T> {
    let slots = SLOTS.read().unwrap_or_else(|e| e.into_inner());
    slots.get(usize::try_from(token).ok()?).map(f)
}

/// Allocates a token for a plugin, whose egress refusals count into
/// `refusals` (its host's).
pub(crate) fn register_plugin(
    name: &str,
    settings: BTreeMap<String, String>,
    refusals: Arc<Refusals>,
) -> u64 {
    let mut slots = slots_mut();
    slots.push(Slot::new(name, settings, refusals));
    (slots.len() - 1) as u64
}

/// Sets the egress of the plugin behind `token` (and its name, which an
/// isolated plugin's slot learns once its worker has loaded it). Requests
/// already running keep the policy they started with.
pub(crate) fn set_egress(token: u64, name: &str, egress: &Egress) {
    let mut slots = slots_mut();
    if let Some(slot) = usize::try_from(token).ok().and_then(|t| slots.get_mut(t)) {
        slot.name = name.to_owned();
        slot.egress = Arc::new(Policy::new(name, egress, slot.refusals.clone()));
    }
}

/// The egress policy and HTTP bounds of the plugin behind `token`, and
/// its requests in flight; an unknown token may call nothing.
fn http_policy_of(token: u64) -> (Arc<Policy>, HttpLimits, Arc<tokio::sync::Semaphore>) {
    with_slot(token, |slot| {
        (slot.egress.clone(), slot.limits, slot.in_flight.clone())
    })
    .unwrap_or_else(|| {
        (
            Arc::new(Policy::new("?", &Egress::default(), Arc::default())),
            HttpLimits::default(),
            Arc::new(tokio::sync::Semaphore::new(0)),
        )
    })
}

/// The context handed to a plugin's `init`.
pub(crate) fn context_for(token: u64) -> HostContext {
    HostContext {
        plugin: token,
        max_log_level: max_level_code(),
        vtable: vtable(),
    }
}

/// Makes the host's capabilities available to compiled-in providers (this
/// process's own copy of the plugin API), with token 0. Idempotent; called
/// by the compiled-in backend's constructor, the one place every
/// compiled-in provider passes through. A host's call to a compiled-in
/// provider runs under [`AsBuiltin`], so token 0 stands for that host's
/// slot while it is polled.
pub(crate) fn install_for_compiled_in() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        drop(slots_mut());
        connhost_plugin_api::__private::install_host(context_for(0));
    });
}

thread_local! {
    /// The slot of the compiled-in providers of the host whose call is
    /// being polled on this thread, if any.
    static BUILTIN: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The slot a host function's token stands for: token 0 (the compiled-in
/// providers) is the slot of the host whose call is being polled.
fn resolve(token: u64) -> u64 {
    if token == 0 {
        BUILTIN.with(std::cell::Cell::get).unwrap_or(0)
    } else {
        token
    }
}

/// Allocates the slot of one host's compiled-in providers: their settings
/// (scope [`BUILTIN_SCOPE`]), egress (set with [`set_egress`]) and HTTP
/// bounds, refusals counted in `refusals`.
pub(crate) fn register_builtin(settings: BTreeMap<String, String>, refusals: Arc<Refusals>) -> u64 {
    register_plugin(BUILTIN_SCOPE, settings, refusals)
}

pin_project_lite::pin_project! {
    /// A compiled-in provider's validation, polled as a call of the host
    /// whose compiled-in providers' slot is `token`: their settings, egress
    /// and HTTP bounds are that host's.
    pub(crate) struct AsBuiltin<F> {
        token: u64,
        #[pin]
        inner: F,
    }
}

impl<F> AsBuiltin<F> {
    /// `inner`, polled with `token` as the compiled-in providers' slot.
    pub(crate) fn new(token: u64, inner: F) -> Self {
        Self { token, inner }
    }
}

impl<F: Future> Future for AsBuiltin<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let before = BUILTIN.with(|b| b.replace(Some(*this.token)));
        let polled = this.inner.poll(cx);
        BUILTIN.with(|b| b.set(before));
        polled
    }
}

/// In a worker process: the host's level, which the worker's own (absent)
/// subscriber cannot tell. 0 = not a worker. Process-wide: the worker is
/// a process of its own.
static WORKER_LOG_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the most verbose level a worker forwards (plugin-api's codes; the
/// host's, sent in its hello).
pub(crate) fn set_worker_log_level(code: u8) {
    WORKER_LOG_LEVEL.store(code.max(level::ERROR), std::sync::atomic::Ordering::Relaxed);
}

/// The most verbose level the host's subscriber wants (plugin-api's codes).
pub(crate) fn max_level_code() -> u8 {
    use tracing::level_filters::LevelFilter;
    let worker = WORKER_LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed);
    if worker != 0 {
        return worker;
    }
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => level::ERROR,
        LevelFilter::WARN => level::WARN,
        LevelFilter::INFO => level::INFO,
        LevelFilter::DEBUG => level::DEBUG,
        _ => level::TRACE,
    }
}

/// The function table plugins call back through: process-wide, as the
/// plugins that hold it (each call names its plugin by token).
fn vtable() -> HostVTableRef {
    static VTABLE: OnceLock<HostVTableRef> = OnceLock::new();
    *VTABLE.get_or_init(|| {
        HostVTable {
            log: host_log,
            config: host_config,
            sleep: host_sleep,
            http: host_http,
        }
        .leak_into_prefix()
    })
}

extern "C" fn host_log(plugin: u64, level_code: u8, target: RStr<'_>, message: RStr<'_>) {
    let plugin = resolve(plugin);
    // Nothing here may panic: this runs inside the plugin's call stack.
    let _ = std::panic::catch_unwind(|| {
        // Forwarded (in a worker): the host scrubs and emits it.
        if let Some(forward) = FORWARD.get() {
            (forward.log)(level_code, target.as_str(), message.as_str());
            return;
        }
        let name = with_slot(plugin, |s| s.name.clone()).unwrap_or_else(|| "?".to_owned());
        let message = scrub_plugin_line(&name, message.as_str());
        emit_plugin_log(&name, level_code, target.as_str(), &message);
    });
}

/// Emits a plugin's log event (already scrubbed) under
/// [`PLUGIN_LOG_TARGET`], tagged with the plugin's name.
pub(crate) fn emit_plugin_log(name: &str, level_code: u8, target: &str, message: &str) {
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(target: PLUGIN_LOG_TARGET, $level, plugin = %name, module = %target, "{message}")
        };
    }
    match level_code {
        level::ERROR => emit!(tracing::Level::ERROR),
        level::WARN => emit!(tracing::Level::WARN),
        level::INFO => emit!(tracing::Level::INFO),
        level::DEBUG => emit!(tracing::Level::DEBUG),
        _ => emit!(tracing::Level::TRACE),
    }
}

/// Performs an isolated plugin's HTTP request on its behalf, through the
/// same path (and policy) as an in-process plugin's: `token` is the
/// plugin's own ([`register_plugin`], [`set_egress`]).
pub(crate) async fn http_for_worker(
    token: u64,
    request: crate::protocol::HttpRequest,
) -> Result<crate::protocol::HttpResponse, crate::protocol::HttpFailure> {
    let request = FfiHttpRequest {
        method: request.method.into(),
        url: request.url.into(),
        headers: request
            .headers
            .into_iter()
            .map(|(k, v)| Tuple2(RString::from(k), RString::from(v)))
            .collect(),
        body: RVec::from(request.body),
        timeout_ms: request.timeout_ms,
    };
    match host_http(token, request).await {
        ROk(response) => Ok(crate::protocol::HttpResponse {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|Tuple2(k, v)| (k.into_string(), v.into_string()))
                .collect(),
            body: response.body.into_vec(),
        }),
        RErr(error) => Err(crate::protocol::HttpFailure {
            kind: error.kind,
            message: error.message.into_string(),
        }),
    }
}

/// In a worker: the host's `CONNHOST_PLUGIN_<PLUGIN>_*` variables for its
/// plugin (the worker's own environment is empty). Process-wide: the
/// worker is a process of its own.
static WORKER_ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// Sets the environment variables a worker's plugin reads its settings
/// from (the host sends them).
pub(crate) fn set_worker_env(env: BTreeMap<String, String>) {
    let _ = WORKER_ENV.set(env);
}

/// The host's environment variables that set the plugin `name`'s settings
/// (`CONNHOST_PLUGIN_<NAME>_*`), for its worker.
pub(crate) fn setting_env_vars(name: &str) -> BTreeMap<String, String> {
    let prefix = setting_env_var(name, "");
    std::env::vars()
        .filter(|(key, _)| key.starts_with(&prefix))
        .collect()
}

/// The value of the environment variable `var`: the host's, or in a
/// worker what the host sent.
fn setting_from_env(var: &str) -> Option<String> {
    match WORKER_ENV.get() {
        Some(env) => env.get(var).cloned(),
        None => std::env::var(var).ok(),
    }
}

extern "C" fn host_config(plugin: u64, key: RStr<'_>) -> ROption<RString> {
    let plugin = resolve(plugin);
    std::panic::catch_unwind(|| {
        with_slot(plugin, |slot| {
            slot.settings
                .get(key.as_str())
                .cloned()
                .or_else(|| setting_from_env(&setting_env_var(&slot.name, key.as_str())))
        })
        .flatten()
    })
    .ok()
    .flatten()
    .map(RString::from)
    .into()
}

/// Runs `future` on the host's runtime (the current one, or a fallback
/// when polled from a thread outside any runtime), aborting it when the
/// returned future is dropped.
fn on_host_runtime<T, F>(future: F) -> FfiFuture<Option<T>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let handle = match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => fallback_runtime().handle().clone(),
    };
    let task = AbortOnDrop(handle.spawn(future));
    async move {
        let mut task = task;
        (&mut task.0).await.ok()
    }
    .into_ffi()
}

/// The runtime a host function runs on when its caller polls outside any
/// (a plugin may call back from a thread of its own): process-wide, as
/// the function table that needs it.
fn fallback_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("connhost-io")
            .enable_all()
            .build()
            .expect("connhost: cannot start the fallback I/O runtime")
    })
}

extern "C" fn host_sleep(_plugin: u64, millis: u64) -> FfiFuture<()> {
    // The timer is created inside the task: creating it needs a runtime,
    // and the caller may be polling from a thread outside any.
    let started = std::panic::catch_unwind(|| {
        on_host_runtime(async move { tokio::time::sleep(Duration::from_millis(millis)).await })
    });
    async move {
        if let Ok(sleeping) = started {
            sleeping.await;
        }
    }
    .into_ffi()
}

fn http_failure(kind: u8, message: impl Into<String>) -> FfiHttpError {
    FfiHttpError {
        kind,
        message: RString::from(message.into()),
    }
}

/// The result of a plugin's HTTP request, as the ABI carries it.
pub(crate) type HttpResult = RResult<FfiHttpResponse, FfiHttpError>;

/// Host functions that hand a plugin's logs and HTTP to someone else: a
/// worker installs its own, which send them to its host (where they are
/// scrubbed, checked against the plugin's egress and performed).
#[derive(Clone, Copy)]
pub(crate) struct Forwarding {
    /// Takes a log event (level code, target, message).
    pub(crate) log: fn(u8, &str, &str),
    /// Takes an HTTP request and answers it as a future.
    pub(crate) http: fn(FfiHttpRequest) -> FfiFuture<HttpResult>,
}

/// Process-wide, as the function table plugins call back through: set
/// once by a worker process, before its plugin is loaded.
static FORWARD: OnceLock<Forwarding> = OnceLock::new();

/// Forwards every plugin's logs and HTTP in this process with `forwarding`
/// from now on (a worker process does, before it loads its plugin).
pub(crate) fn forward_with(forwarding: Forwarding) {
    let _ = FORWARD.set(forwarding);
}

extern "C" fn host_http(plugin: u64, request: FfiHttpRequest) -> FfiFuture<HttpResult> {
    let plugin = resolve(plugin);
    // Forwarded (in a worker): the host makes the request.
    if let Some(forward) = FORWARD.get() {
        let forwarded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (forward.http)(request)));
        return forwarded.unwrap_or_else(|_| {
            async {
                RErr(http_failure(
                    http_error::OTHER,
                    "the request could not be forwarded",
                ))
            }
            .into_ffi()
        });
    }
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (policy, limits, in_flight) = http_policy_of(plugin);
        let permit = in_flight.try_acquire_owned().map_err(|_| {
            http_failure(
                http_error::OTHER,
                format!(
                    "refused: plugin \"{}\" already has {} HTTP requests in flight, its limit",
                    policy.plugin(),
                    limits.max_concurrent
                ),
            )
        })?;
        if request.body.len() as u64 > limits.max_body_bytes {
            return Err(http_failure(
                http_error::INVALID_REQUEST,
                format!(
                    "refused: a request body of {} bytes is over the {}-byte limit",
                    request.body.len(),
                    limits.max_body_bytes
                ),
            ));
        }
        build_request(&policy, request).map(|request| (policy, request, limits, permit))
    }));
    let (policy, request, limits, permit) = match built {
        Ok(Ok(built)) => built,
        Ok(Err(error)) => return async move { RErr(error) }.into_ffi(),
        Err(_) => {
            return async {
                RErr(http_failure(
                    http_error::OTHER,
                    "the host failed to build the request",
                ))
            }
            .into_ffi()
        }
    };
    let running = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        on_host_runtime(async move {
            let _permit = permit;
            send(policy, request, limits.max_body_bytes).await
        })
    }));
    async move {
        match running {
            Ok(running) => running.await.unwrap_or_else(|| {
                RErr(http_failure(http_error::OTHER, "the request task failed"))
            }),
            Err(_) => RErr(http_failure(
                http_error::OTHER,
                "the host could not start the request",
            )),
        }
    }
    .into_ffi()
}

/// Builds the request on the plugin's own client, refusing at once a URL
/// its egress policy does not allow (an IP address in it is checked here:
/// the resolver never sees one).
fn build_request(
    policy: &Arc<Policy>,
    request: FfiHttpRequest,
) -> Result<reqwest::Request, FfiHttpError> {
    let invalid = |what: String| http_failure(http_error::INVALID_REQUEST, what);
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| invalid(format!("invalid HTTP method \"{}\"", request.method)))?;
    let url = reqwest::Url::parse(request.url.as_str())
        .map_err(|e| invalid(format!("invalid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "unsupported URL scheme \"{}\"",
            url.scheme()
        )));
    }
    policy
        .check_url(&url)
        .map_err(|refused| http_failure(http_error::DENIED, refused.0))?;
    let mut builder = policy.client().request(method, url);
    for Tuple2(name, value) in request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let timeout = match request.timeout_ms {
        0 => DEFAULT_HTTP_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    builder
        .timeout(timeout)
        .body(request.body.into_vec())
        .build()
        // Never include the request (its headers hold credentials).
        .map_err(|_| invalid("invalid request: a header name or value is malformed".to_owned()))
}

async fn send(policy: Arc<Policy>, request: reqwest::Request, max_body: u64) -> HttpResult {
    let url = request.url().clone();
    let described = |e: &reqwest::Error| {
        // The root cause ("Connection refused") says the most. Never echo the
        // URL's query (it may hold a key): host, port and path only.
        let mut cause: &dyn std::error::Error = e;
        while let Some(source) = cause.source() {
            cause = source;
        }
        format!(
            "{} {}{}{}: {}",
            if e.is_timeout() {
                "timed out calling"
            } else {
                "could not call"
            },
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            url.path(),
            cause
        )
    };
    let mut response = match policy.client().execute(request).await {
        Ok(response) => response,
        // Refused by the resolver or on a redirect: its own words, which
        // name the host and never the path.
        Err(e) if crate::egress::refusal_in(&e).is_some() => {
            let refused = crate::egress::refusal_in(&e).map(|r| r.0.clone());
            return RErr(http_failure(
                http_error::DENIED,
                refused.unwrap_or_default(),
            ));
        }
        Err(e) if e.is_timeout() => return RErr(http_failure(http_error::TIMEOUT, described(&e))),
        Err(e) => return RErr(http_failure(http_error::CONNECT, described(&e))),
    };
    let status = response.status().as_u16();
    let headers: RVec<Tuple2<RString, RString>> = response
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            Some(Tuple2(
                RString::from(k.as_str()),
                RString::from(v.to_str().ok()?),
            ))
        })
        .collect();
    let too_large = |size: String| {
        RErr(http_failure(
            http_error::OTHER,
            format!(
                "refused: the response from {}{} has a body of {size}, over the {max_body}-byte limit",
                url.host_str().unwrap_or(""),
                url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            ),
        ))
    };
    if let Some(length) = response.content_length().filter(|&n| n > max_body) {
        return too_large(format!("{length} bytes"));
    }
    // Read as it streams in, and given up on (the connection dropped) the
    // moment it passes the limit: never held whole.
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > max_body {
                    return too_large("more than that".to_owned());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return RErr(http_failure(http_error::TIMEOUT, described(&e)))
            }
            Err(e) => return RErr(http_failure(http_error::CONNECT, described(&e))),
        }
    }
    ROk(FfiHttpResponse {
        status,
        headers,
        body: RVec::from(body),
    })
}
