//! A worker's standard error: forwarded to the log, scrubbed of the
//! secrets in flight, its last lines kept to say why it died.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt as _;

use super::death::LAST_WORDS;
use super::supervisor::Shared;
use crate::redact::scrub_all;

/// How many of a worker's last standard error lines are kept, to explain
/// its death.
pub(super) const STDERR_TAIL: usize = 8;

/// Forwards the worker's standard error to the log (scrubbed of the
/// secrets in flight) and keeps its last lines, which say why it died
/// (an allocation failure, a stack overflow).
pub(super) async fn read_stderr(
    shared: Arc<Shared>,
    mut stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    const MAX_LINE: usize = 4096;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..read]);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            stderr_line(&shared, &tail, &line[..line.len() - 1]);
        }
        if buffer.len() > MAX_LINE {
            let line: Vec<u8> = std::mem::take(&mut buffer);
            stderr_line(&shared, &tail, &line[..MAX_LINE]);
        }
    }
    if !buffer.is_empty() {
        stderr_line(&shared, &tail, &buffer);
    }
}

pub(super) fn stderr_line(shared: &Shared, tail: &Mutex<VecDeque<String>>, line: &[u8]) {
    let mut line = String::from_utf8_lossy(line).into_owned();
    let conn = shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .conn
        .clone();
    if let Some(conn) = conn {
        if let Cow::Owned(scrubbed) = scrub_all(&conn.secrets(), &line) {
            line = scrubbed;
        }
    }
    tracing::warn!(target: "connhost::worker", plugin = %shared.plugin(), "worker stderr: {line}");
    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    if tail.len() == STDERR_TAIL {
        // Last words (an allocation failure before a long backtrace) are
        // kept over ordinary lines.
        let ordinary = tail
            .iter()
            .position(|kept| !LAST_WORDS.iter().any(|words| kept.contains(words)));
        tail.remove(ordinary.unwrap_or(0));
    }
    tail.push_back(line);
}
