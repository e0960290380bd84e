//! Hot reload: a task that keeps a [`PluginSet`] in step with its folder
//! and publishes a new provider set whenever it changes.
//!
//! It rescans when the folder changes (a `notify` watcher, debounced), when
//! asked ([`ReloadHandle::rescan`]: `SIGHUP` and `POST /v1/plugins/rescan`
//! use it, for file systems without change events), and again shortly
//! after a rescan that found a file still being written. Each new set is
//! published whole (readers swap an `Arc`), so a reload never blocks a
//! request and never fails one for a provider it did not touch.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::plugin_set::{COMPLETION_GRACE, SETTLE};
use crate::{Connhost, LoadReport, PluginSet, RescanOutcome};

/// Events closer together than this are handled by one rescan.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

enum Command {
    /// Something in the folder changed.
    Changed,
    /// Rescan now and answer with the report.
    Rescan(oneshot::Sender<LoadReport>),
}

/// Asks the reload task to rescan.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    commands: mpsc::Sender<Command>,
}

impl ReloadHandle {
    /// Rescans the folder now; returns the report once the result is
    /// published (`None` if the reload task has stopped).
    pub async fn rescan(&self) -> Option<LoadReport> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Rescan(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// Loads the folder once (publishing the first set before returning), then
/// keeps it in step in a background task. With `watch`, changes in the
/// folder trigger rescans; without, only [`ReloadHandle::rescan`] does.
pub async fn start(
    mut set: PluginSet,
    watch: bool,
    publish: impl Fn(Connhost) + Send + Sync + 'static,
) -> ReloadHandle {
    let (commands, mut received) = mpsc::channel::<Command>(64);
    let watcher = if watch {
        watch_folder(set.dir(), commands.clone())
    } else {
        None
    };
    // "Ready" means the folder is loaded as it stands: give files that are
    // still being written their chance first.
    let (set_back, outcome) = scan_until_settled(set).await;
    set = set_back;
    let first = set.snapshot();
    // What the last published set reported: the answer to a rescan that
    // changed nothing.
    let mut report = first.load_report().clone();
    publish(first);
    let mut waiting = outcome.waiting;

    tokio::spawn(async move {
        let _watcher = watcher; // watching stops when the task ends
        loop {
            let mut replies = Vec::new();
            let first = if waiting {
                match tokio::time::timeout(SETTLE, received.recv()).await {
                    Ok(None) => break,
                    Ok(Some(command)) => Some(command),
                    Err(_) => None, // time to look at the waiting files again
                }
            } else {
                match received.recv().await {
                    None => break,
                    Some(command) => Some(command),
                }
            };
            if let Some(Command::Rescan(reply)) = first {
                replies.push(reply);
            }
            // Let a burst of events (a copy, a rename) settle into one rescan.
            tokio::time::sleep(DEBOUNCE).await;
            while let Ok(command) = received.try_recv() {
                if let Command::Rescan(reply) = command {
                    replies.push(reply);
                }
            }
            // Someone waits for the answer: let files being written settle.
            let (set_back, outcome) = if replies.is_empty() {
                scan(set).await
            } else {
                scan_until_settled(set).await
            };
            set = set_back;
            waiting = outcome.waiting;
            let snapshot = outcome.changed.then(|| set.snapshot());
            if let Some(snapshot) = snapshot {
                report = snapshot.load_report().clone();
                publish(snapshot);
            }
            for reply in replies {
                let _ = reply.send(report.clone());
            }
        }
    });
    ReloadHandle { commands }
}

/// One rescan, off the async runtime.
async fn scan(mut set: PluginSet) -> (PluginSet, RescanOutcome) {
    tokio::task::spawn_blocking(move || {
        let outcome = set.rescan();
        (set, outcome)
    })
    .await
    .expect("a plugin rescan does not panic")
}

/// Rescans until no file is still being written, or until such files have
/// had [`COMPLETION_GRACE`] to complete (then they are reported broken).
/// The outcome says whether anything changed across all the rescans.
async fn scan_until_settled(set: PluginSet) -> (PluginSet, RescanOutcome) {
    let deadline = tokio::time::Instant::now() + COMPLETION_GRACE + SETTLE * 2;
    let (mut set, mut total) = scan(set).await;
    while total.waiting && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(SETTLE).await;
        let (set_back, outcome) = scan(set).await;
        set = set_back;
        total.changed |= outcome.changed;
        total.waiting = outcome.waiting;
    }
    (set, total)
}

/// Watches `dir` (not recursively); every event becomes a rescan request.
fn watch_folder(
    dir: &std::path::Path,
    commands: mpsc::Sender<Command>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                // A full queue already holds a rescan request: dropping is fine.
                let _ = commands.try_send(Command::Changed);
            }
        },
    ) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!("cannot watch the plugins folder ({e}); use SIGHUP or POST /v1/plugins/rescan to rescan");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), "cannot watch the plugins folder ({e}); use SIGHUP or POST /v1/plugins/rescan to rescan");
        return None;
    }
    Some(watcher)
}
