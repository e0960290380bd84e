//! What a running worker asks of its host: answers to route to their
//! calls, HTTP requests to perform for a validation in flight, and log
//! lines to scrub and emit.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::conn::{Call, Conn};
use super::lifecycle::kind_of;
use super::supervisor::Shared;
use crate::backend::ProviderOutcome;
use crate::protocol::{self, FromWorker, HttpFailure, ToWorker, WireOutcome};
use crate::redact::scrub_all;

/// Serves what the worker says until it stops talking; a worker that
/// breaks the protocol is killed. Runs on a thread of its own, which the
/// kernel wakes when the worker writes: an answer goes from it straight
/// to its caller.
pub(super) fn read_frames(shared: Arc<Shared>, conn: Arc<Conn>, socket: Arc<UnixStream>) {
    let plugin = shared.plugin();
    let mut reader = protocol::FrameReader::new();
    loop {
        let frame = match reader.read_blocking(&socket) {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                conn.kill(format!("was stopped: it broke its socket ({e})"));
                return;
            }
        };
        let message = match protocol::decode::<FromWorker>(&frame) {
            Ok(message) => message,
            Err(e) => {
                conn.kill(format!("was stopped: it sent {e}"));
                return;
            }
        };
        match message {
            FromWorker::Outcome { id, outcome } => {
                if let Some(Call {
                    reply: Some(reply), ..
                }) = conn.end_call(id)
                {
                    let _ = reply.send(unwire(outcome));
                }
            }
            FromWorker::Cancelled { id } => {
                conn.end_call(id);
            }
            FromWorker::Http {
                id,
                validation,
                request,
            } => http_for_call(&shared, &conn, id, validation, request),
            FromWorker::Named { .. } => {
                conn.kill("was stopped: it named its plugin twice".to_owned());
                return;
            }
            // Scrubbed of every secret in flight, whichever validation
            // it came from (one call may log another's).
            FromWorker::Log {
                level,
                target,
                message,
            } => {
                let message = scrub_all(&conn.secrets(), &message);
                crate::capabilities::emit_plugin_log(&plugin, level, &target, &message);
            }
            other @ (FromWorker::Ready(_) | FromWorker::LoadFailed { .. }) => {
                conn.kill(format!("was stopped: it said {} twice", kind_of(&other)));
                return;
            }
        }
    }
}

/// Performs the worker's HTTP request `id` for its validation
/// `validation`, tied to that call: cancelled when it ends. A request made
/// outside any validation in flight is refused.
pub(super) fn http_for_call(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    id: u64,
    validation: Option<u64>,
    request: protocol::HttpRequest,
) {
    let mut calls = conn.calls.lock().unwrap_or_else(|e| e.into_inner());
    let call = validation
        .and_then(|v| calls.get_mut(&v))
        .filter(|call| call.reply.is_some());
    let Some(call) = call else {
        drop(calls);
        let _ = conn.out.send(&ToWorker::HttpDone {
            id,
            result: Err(HttpFailure {
                kind: connhost_plugin_api::abi::http_error::DENIED,
                message: "refused: a plugin's HTTP request must be made by one of its validations in flight (from the validation's own future), and this one was not".to_owned(),
            }),
        });
        return;
    };
    let out = conn.out.clone();
    let token = shared.spec.egress_token;
    let task = shared.runtime().spawn(async move {
        let result = crate::capabilities::http_for_worker(token, request).await;
        let _ = out.send(&ToWorker::HttpDone { id, result });
    });
    call.http.retain(|(_, task)| !task.is_finished());
    call.http.push((id, task.abort_handle()));
}

pub(super) fn unwire(outcome: WireOutcome) -> ProviderOutcome {
    match outcome {
        WireOutcome::Valid {
            username,
            metadata_json,
        } => ProviderOutcome::valid_from_plugin(username, metadata_json.as_deref()),
        WireOutcome::Rejected(message) => ProviderOutcome::Rejected(message),
        WireOutcome::Inconclusive(message) => ProviderOutcome::Inconclusive(message),
        WireOutcome::Fault(message) => ProviderOutcome::Fault(message),
    }
}
