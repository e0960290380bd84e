//! What a running worker asks of its host: answers to route to their
//! calls, HTTP requests to perform for a validation in flight, and log
//! lines to scrub and emit.

use std::sync::{Arc, TryLockError};

use tokio::sync::oneshot;

use super::conn::{Call, Conn, Inbound};
use super::lifecycle::kind_of;
use super::supervisor::Shared;
use crate::backend::ProviderOutcome;
use crate::protocol::{self, Filled, FromWorker, HttpFailure, Spin, ToWorker, WireOutcome};
use crate::redact::scrub_all;

/// Serves what the worker says until it stops talking; a worker that
/// breaks the protocol is killed. Runs on a thread of its own, which the
/// kernel wakes when the worker writes (unless a caller polls the socket
/// for its answer then, see [`poll_answer`]): an answer goes from it
/// straight to its caller.
pub(super) fn read_frames(shared: Arc<Shared>, conn: Arc<Conn>) {
    loop {
        if let Err(e) = protocol::epoll_wait_one(&conn.epoll, None) {
            conn.kill(format!("was stopped: it broke its socket ({e})"));
            return;
        }
        let mut inbound = conn.inbound.lock().unwrap_or_else(|e| e.into_inner());
        if !drain(&shared, &conn, &mut inbound) {
            return;
        }
    }
}

/// Polls the socket for the answer to the caller's call (the only one in
/// flight when it starts) for at most `spin`'s budget, reading and
/// handling whatever comes meanwhile, with the serving thread's wake-up
/// on the socket turned off (by the caller, before it sent the call).
/// The answer, if it came; otherwise the caller waits for it as usual.
/// Stops early when other calls are made meanwhile: the serving thread
/// reads for all of them.
pub(super) fn poll_answer(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    spin: Spin<'_>,
    answer: &mut oneshot::Receiver<ProviderOutcome>,
) -> Option<ProviderOutcome> {
    let outcome = loop {
        let inbound = match conn.inbound.try_lock() {
            Ok(inbound) => Some(inbound),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut inbound) = inbound {
            if !drain(shared, conn, &mut inbound) {
                break None;
            }
        }
        match answer.try_recv() {
            Ok(outcome) => break Some(outcome),
            Err(oneshot::error::TryRecvError::Closed) => break None,
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let others = conn.calls.lock().unwrap_or_else(|e| e.into_inner()).len() > 1;
        if others || !spin.go_on() {
            break None;
        }
    };
    // Whatever came after the last read wakes the serving thread now.
    conn.watch_socket(true);
    if outcome.is_some() {
        spin.hit();
    }
    outcome
}

/// Reads everything the socket holds and handles every complete frame in
/// order; false once reading has ended (the worker closed or broke the
/// socket, or was stopped for what it said).
fn drain(shared: &Arc<Shared>, conn: &Arc<Conn>, inbound: &mut Inbound) -> bool {
    if inbound.ended {
        return false;
    }
    let filled = inbound.reader.fill(&conn.socket);
    let broken = |inbound: &mut Inbound, e: std::io::Error| {
        inbound.ended = true;
        conn.kill(format!("was stopped: it broke its socket ({e})"));
        false
    };
    let filled = match filled {
        Ok(filled) => filled,
        Err(e) => return broken(inbound, e),
    };
    loop {
        match inbound.reader.next_frame() {
            Ok(Some(frame)) => {
                if let Err(reason) = handle(shared, conn, &frame) {
                    inbound.ended = true;
                    conn.kill(reason);
                    return false;
                }
            }
            Ok(None) => break,
            Err(e) => return broken(inbound, e),
        }
    }
    if filled == Filled::Closed {
        if !inbound.reader.is_empty() {
            return broken(
                inbound,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the peer closed its end in the middle of a frame",
                ),
            );
        }
        inbound.ended = true;
        return false;
    }
    true
}

/// Handles one frame from the worker; why it is to be stopped when the
/// frame breaks the protocol.
fn handle(shared: &Arc<Shared>, conn: &Arc<Conn>, frame: &[u8]) -> Result<(), String> {
    let message =
        protocol::decode::<FromWorker>(frame).map_err(|e| format!("was stopped: it sent {e}"))?;
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
        } => http_for_call(shared, conn, id, validation, request),
        FromWorker::Named { .. } => {
            return Err("was stopped: it named its plugin twice".to_owned());
        }
        // Scrubbed of every secret in flight, whichever validation
        // it came from (one call may log another's).
        FromWorker::Log {
            level,
            target,
            message,
        } => {
            let message = scrub_all(&conn.secrets(), &message);
            crate::capabilities::emit_plugin_log(&conn.plugin, level, &target, &message);
        }
        other @ (FromWorker::Ready(_) | FromWorker::LoadFailed { .. }) => {
            return Err(format!("was stopped: it said {} twice", kind_of(&other)));
        }
    }
    Ok(())
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
