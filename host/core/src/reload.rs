//! Hot reload: a thread that keeps a [`Catalog`] in step with its folder
//! and publishes a new provider set whenever it changes.
//!
//! It rescans when the folder changes (a `notify` watcher, debounced; reads
//! of the folder, its own included, are not changes), when asked
//! ([`ReloadHandle::rescan`]: `SIGHUP` and `POST /v1/plugins/rescan` use
//! it, for file systems without change events), shortly after a rescan
//! that found a file still being written, and with a backoff after a
//! rescan that could not list the folder or open a file for a passing
//! reason. An idle server with a quiet folder does nothing.
//!
//! Rescans run on a dedicated OS thread of their own, never on tokio's
//! blocking pool: providers that hold every blocking thread cannot stop
//! hot reload or a rescan request. Each new set is published whole
//! (readers swap an `Arc`), so a reload never blocks a request and never
//! fails one for a provider it did not touch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::catalog::{Catalog, RescanOutcome, COMPLETION_GRACE, SETTLE};
use crate::model::report::LoadReport;
use crate::service::Connhost;

/// Events closer together than this are handled by one rescan.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

enum Command {
    /// Something in the folder changed.
    Changed,
    /// Rescan now and answer with the report.
    Rescan(oneshot::Sender<LoadReport>),
    /// Every handle is gone: stop.
    Stop,
}

/// Stops the reload thread when the last [`ReloadHandle`] is dropped.
#[derive(Debug)]
struct Owner {
    commands: mpsc::Sender<Command>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// Asks the reload thread to rescan. The thread stops when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    commands: mpsc::Sender<Command>,
    _owner: Arc<Owner>,
}

impl ReloadHandle {
    /// Rescans the folder now; returns the report of the set then served,
    /// as [`Connhost::plugins`] gives it, once it is published (`None` if
    /// the reload thread has stopped).
    pub async fn rescan(&self) -> Option<LoadReport> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Rescan(reply)).ok()?;
        answer.await.ok()
    }
}

/// Loads the folder once (publishing the first set before returning), then
/// keeps it in step on a thread of its own. With `watch`, changes in the
/// folder trigger rescans; without, only [`ReloadHandle::rescan`] (and
/// retries after failures) do. Plugins' `init` runs on that thread inside
/// the caller's tokio runtime context, if there is one.
pub async fn start(
    set: Catalog,
    watch: bool,
    publish: impl Fn(Connhost) + Send + Sync + 'static,
) -> ReloadHandle {
    let (commands, received) = mpsc::channel::<Command>();
    let (ready, first) = oneshot::channel();
    let reloader = Reloader {
        set,
        watch,
        watcher: None,
        commands: commands.clone(),
        change_queued: Arc::new(AtomicBool::new(false)),
        runtime: tokio::runtime::Handle::try_current().ok(),
    };
    let spawned = std::thread::Builder::new()
        .name("connhost-reload".to_owned())
        .spawn(move || reloader.run(received, publish, ready));
    match spawned {
        Ok(_) => {
            let _ = first.await;
        }
        Err(e) => tracing::error!("cannot start the hot reload thread: {e}"),
    }
    ReloadHandle {
        _owner: Arc::new(Owner {
            commands: commands.clone(),
        }),
        commands,
    }
}

/// The state of the reload thread.
struct Reloader {
    set: Catalog,
    watch: bool,
    watcher: Option<notify::RecommendedWatcher>,
    commands: mpsc::Sender<Command>,
    /// A `Changed` command is queued and not yet taken: the watcher sends
    /// no other (a burst of events is one command).
    change_queued: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Reloader {
    fn run(
        mut self,
        received: mpsc::Receiver<Command>,
        publish: impl Fn(Connhost),
        ready: oneshot::Sender<()>,
    ) {
        let runtime = self.runtime.clone();
        let _context = runtime.as_ref().map(|r| r.enter());
        if self.watch {
            self.watcher = self.watch_folder();
        }
        // "Ready" means the folder is loaded as it stands: give files that
        // are still being written their chance first.
        let mut outcome = self.scan_until_settled();
        // The last set published: a rescan is answered with its report.
        let mut current = Connhost::from_catalog(&self.set);
        publish(current.clone());
        let _ = ready.send(());
        loop {
            let wake = next_wake(&outcome);
            let command = match wake {
                Some(after) => match received.recv_timeout(after) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match received.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                },
            };
            let mut replies = Vec::new();
            let mut stop = false;
            let mut take = |command: Command| match command {
                Command::Changed => {}
                Command::Rescan(reply) => replies.push(reply),
                Command::Stop => stop = true,
            };
            if let Some(command) = command {
                take(command);
                // Let a burst of events (a copy, a rename) settle into one
                // rescan.
                std::thread::sleep(DEBOUNCE);
            }
            self.change_queued.store(false, Ordering::SeqCst);
            while let Ok(command) = received.try_recv() {
                take(command);
            }
            if stop {
                break;
            }
            let failing_before = self.set.folder_failing();
            // Someone waits for the answer: let files being written settle.
            outcome = if replies.is_empty() {
                self.scan()
            } else {
                // Asked for: isolated plugins parked after a crash loop
                // get another chance too.
                self.set.unpark();
                self.scan_until_settled()
            };
            if outcome.changed {
                current = Connhost::from_catalog(&self.set);
                publish(current.clone());
            }
            if !replies.is_empty() {
                // What `/v1/plugins` says of it, digests included.
                let report = current.plugins();
                for reply in replies {
                    let _ = reply.send(report.clone());
                }
            }
            // A folder that came back may be another folder (or one that
            // did not exist when watching began): watch it anew.
            if self.watch && failing_before && !self.set.folder_failing() {
                self.watcher = None;
                self.watcher = self.watch_folder();
            }
        }
    }

    /// One rescan.
    fn scan(&mut self) -> RescanOutcome {
        tracing::debug!(dir = ?self.set.dir(), "rescanning the plugins folder");
        self.set.rescan()
    }

    /// Rescans until no file is still being written, or until such files
    /// have had [`COMPLETION_GRACE`] to complete (then they are reported
    /// broken). The outcome says whether anything changed across all the
    /// rescans.
    fn scan_until_settled(&mut self) -> RescanOutcome {
        let deadline = Instant::now() + COMPLETION_GRACE + SETTLE * 2;
        let mut total = self.scan();
        while total.waiting && Instant::now() < deadline {
            std::thread::sleep(SETTLE);
            let outcome = self.scan();
            total = RescanOutcome {
                changed: total.changed || outcome.changed,
                ..outcome
            };
        }
        total
    }

    /// Watches the folder (not recursively); every event but a mere read
    /// (open, access, close without writing: notify's `Access` kind, which
    /// rescans cause themselves) becomes a rescan request.
    fn watch_folder(&self) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let dir = self.set.dir()?;
        let commands = self.commands.clone();
        let queued = self.change_queued.clone();
        let mut watcher = match notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                // One queued change is enough for any burst.
                if !queued.swap(true, Ordering::SeqCst) {
                    let _ = commands.send(Command::Changed);
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
        // A lock file kept elsewhere (`--lock-file`): watch its folder too.
        if let Some(folder) = self.set.lock_file().and_then(Path::parent) {
            let outside = !folder.as_os_str().is_empty() && folder != dir;
            if outside {
                if let Err(e) = watcher.watch(folder, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(folder = %folder.display(), "cannot watch the lock file's folder ({e}); use SIGHUP or POST /v1/plugins/rescan after changing it");
                }
            }
        }
        Some(watcher)
    }
}

/// How long to wait for a command before rescanning anyway: [`SETTLE`]
/// while files are being written, the backoff while something is retried,
/// for ever otherwise.
fn next_wake(outcome: &RescanOutcome) -> Option<Duration> {
    let settle = outcome.waiting.then_some(SETTLE);
    match (settle, outcome.retry_in) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
