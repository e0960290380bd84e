//! `connhost serve --sync REF`: a thread that keeps the plugins folder in
//! step with a list of OCI references, so that every replica given the
//! same list serves the same bytes.
//!
//! Every interval (±10%), each reference is resolved with one manifest
//! request, on the connection to its registry the sync keeps for as long
//! as it runs (one [`Registry`], used on the sync's one runtime, pulls
//! included: no handshake again, no token asked for again); when its digest differs from the one the folder holds, it is
//! pulled exactly as `connhost pull` pulls it ([`super::oci::pull_into`]:
//! the same trust gate, the same atomic writes), and the hot reload of
//! the serving host does the rest. A reference no longer listed has the
//! file it wrote removed (at the next start). Errors leave the folder as
//! it was (the host keeps serving the last good set) and back off, up to
//! ten intervals. What was written is recorded in [`RECORD`] in the
//! plugins folder (reference, file, digests), so a restart neither pulls
//! again what it holds nor forgets what it wrote; files it did not write
//! are never removed. The statuses go to the HTTP service
//! ([`connhost_http::AppState::set_sync`]).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use connhost::HostConfig;
use connhost_http::{AppState, SyncStatus};
use connhost_oci::Registry;
use serde::{Deserialize, Serialize};

use super::args::ServeArgs;
use super::oci::{pull_into, signature_beside};

/// The record of what the sync wrote, in the plugins folder (not named
/// like a library: the catalog never reads it).
pub(crate) const RECORD: &str = ".connhost-sync.json";

/// The longest wait after errors, in intervals.
const MAX_BACKOFF: u32 = 10;

/// One reference's file, as [`RECORD`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Written {
    reference: String,
    /// The file's name in the plugins folder.
    file: String,
    /// The digest the reference resolved to (the artifact's index).
    digest: String,
    /// The library's own digest (`sha256:...`).
    library: String,
}

/// [`RECORD`]'s content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    synced: Vec<Written>,
}

/// A configured sync, ready to start.
pub(crate) struct Sync {
    references: Vec<String>,
    interval: Duration,
    registry: Registry,
    config: HostConfig,
    folder: PathBuf,
    /// Whether the serving host watches the folder; without, the sync asks
    /// it to rescan after each change, through `reload`.
    watch: bool,
    reload: Arc<OnceLock<connhost::reload::ReloadHandle>>,
}

/// One reference while the sync runs.
struct Entry {
    status: SyncStatus,
    /// What the folder holds for it.
    written: Option<Written>,
    due: Instant,
    /// Failed attempts in a row.
    failures: u32,
}

impl Sync {
    /// The sync `args` ask for (`None`: no `--sync`), checked: it needs a
    /// plugins folder to write into.
    pub(crate) fn new(config: &HostConfig, args: &ServeArgs) -> anyhow::Result<Option<Self>> {
        let mut references: Vec<String> = Vec::new();
        for reference in args.sync.iter().map(|r| r.trim()) {
            if !reference.is_empty() && !references.iter().any(|r| r == reference) {
                references.push(reference.to_owned());
            }
        }
        let Some(folder) = config.plugins_dir.clone() else {
            if references.is_empty() {
                return Ok(None);
            }
            bail!("--sync needs a plugins folder to write into: give --plugins DIR");
        };
        if !folder.is_dir() {
            if references.is_empty() {
                return Ok(None);
            }
            bail!(
                "--sync: the plugins folder {} does not exist: create it, or give --plugins DIR",
                folder.display()
            );
        }
        // With no reference left, a record from an earlier run still has
        // its files removed.
        if references.is_empty() && !folder.join(RECORD).exists() {
            return Ok(None);
        }
        Ok(Some(Sync {
            references,
            interval: args.sync_interval,
            registry: super::oci::registry(&args.registry)?,
            config: config.clone(),
            folder,
            watch: !args.no_watch,
            reload: Arc::default(),
        }))
    }

    /// Where the serving host's reload handle goes once it runs (the sync
    /// asks it to rescan after a change when the folder is not watched).
    pub(crate) fn reload_slot(&self) -> Arc<OnceLock<connhost::reload::ReloadHandle>> {
        self.reload.clone()
    }

    /// Starts the sync on a thread of its own (a pull blocks: it loads the
    /// library in a worker), publishing to `state`. It runs until the
    /// process exits.
    pub(crate) fn start(self, state: AppState) -> anyhow::Result<()> {
        std::thread::Builder::new()
            .name("connhost-sync".to_owned())
            .spawn(move || self.run(&state))
            .context("could not start the sync thread")?;
        Ok(())
    }

    fn run(self, state: &AppState) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!("could not start the sync's runtime: {error}");
                return;
            }
        };
        super::oci::remove_stale_staging(&self.folder);
        let mut record = self.load_record();
        if self.remove_unlisted(&mut record) {
            self.rescan(&runtime);
        }
        let now = Instant::now();
        let mut entries: Vec<Entry> = self
            .references
            .iter()
            .map(|reference| {
                let written = record
                    .synced
                    .iter()
                    .find(|w| &w.reference == reference)
                    .cloned();
                let mut status = SyncStatus::new(reference);
                if let Some(written) = &written {
                    status.file = Some(written.file.clone());
                    status.digest = Some(written.digest.clone());
                    status.library = Some(written.library.clone());
                }
                Entry {
                    status,
                    written,
                    due: now,
                    failures: 0,
                }
            })
            .collect();
        if entries.is_empty() {
            // Nothing synced any more: no record, nothing to report.
            let _ = std::fs::remove_file(self.folder.join(RECORD));
            return;
        }
        self.save_record(&entries);
        publish(state, &entries);
        tracing::info!(
            references = ?self.references,
            interval = ?self.interval,
            "syncing the plugins folder"
        );
        let mut seed = seed();
        loop {
            let Some(index) = (0..entries.len()).min_by_key(|&i| entries[i].due) else {
                return;
            };
            std::thread::sleep(entries[index].due.saturating_duration_since(Instant::now()));
            let changed = self.attempt(&runtime, &mut entries, index);
            let entry = &mut entries[index];
            let factor = if entry.status.last_error.is_some() {
                entry.failures = entry.failures.saturating_add(1);
                2u32.saturating_pow(entry.failures).min(MAX_BACKOFF)
            } else {
                entry.failures = 0;
                1
            };
            entry.due = Instant::now() + jittered(self.interval * factor, &mut seed);
            if changed {
                self.save_record(&entries);
                self.rescan(&runtime);
            }
            publish(state, &entries);
        }
    }

    /// One poll of `entries[index]`; whether the folder changed.
    fn attempt(
        &self,
        runtime: &tokio::runtime::Runtime,
        entries: &mut [Entry],
        index: usize,
    ) -> bool {
        let reference = entries[index].status.reference.clone();
        let resolved = runtime.block_on(self.registry.resolve(&reference));
        let digest = match resolved {
            Ok(digest) => digest,
            Err(error) => {
                fail(&mut entries[index], error.to_string());
                return false;
            }
        };
        let holds = entries[index]
            .written
            .as_ref()
            .is_some_and(|w| w.digest == digest && self.folder.join(&w.file).is_file());
        if holds {
            tracing::debug!(reference = %reference, digest = %digest, "sync: the reference is unchanged");
            succeed(&mut entries[index]);
            return false;
        }
        // A file name another reference wrote is not taken over.
        let others: Vec<(String, String)> = entries
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != index)
            .filter_map(|(_, e)| {
                e.written
                    .as_ref()
                    .map(|w| (w.file.clone(), w.reference.clone()))
            })
            .collect();
        let accept = |file: &str| match others.iter().find(|(taken, _)| taken == file) {
            Some((_, owner)) => Err(format!(
                "its library {file} is the file the sync keeps for {owner}"
            )),
            None => Ok(()),
        };
        match pull_into(
            runtime,
            &self.config,
            &self.registry,
            &reference,
            &self.folder,
            &accept,
        ) {
            Ok(report) => {
                let file = report
                    .file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let entry = &mut entries[index];
                // The file an earlier version had under another name goes.
                if let Some(old) = entry.written.take().filter(|old| old.file != file) {
                    self.remove(&old);
                }
                tracing::info!(
                    reference = %reference,
                    digest = %report.digest,
                    file = %file,
                    "synced: wrote the plugin the reference names now"
                );
                let written = Written {
                    reference,
                    file,
                    digest: report.digest,
                    library: report.library,
                };
                entry.status.file = Some(written.file.clone());
                entry.status.digest = Some(written.digest.clone());
                entry.status.library = Some(written.library.clone());
                entry.written = Some(written);
                succeed(entry);
                true
            }
            Err(error) => {
                fail(&mut entries[index], error.to_string());
                false
            }
        }
    }

    /// Without a watch on the folder, asks the serving host to rescan it
    /// (once its first load is done and it can).
    fn rescan(&self, runtime: &tokio::runtime::Runtime) {
        if self.watch {
            return;
        }
        let handle = loop {
            if let Some(handle) = self.reload.get() {
                break handle;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        runtime.block_on(handle.rescan());
    }

    /// Removes the files of references no longer listed, from the folder
    /// and from `record`; whether there were any.
    fn remove_unlisted(&self, record: &mut Record) -> bool {
        let (kept, gone): (Vec<Written>, Vec<Written>) = std::mem::take(&mut record.synced)
            .into_iter()
            .partition(|w| self.references.contains(&w.reference));
        for written in &gone {
            self.remove(written);
        }
        record.synced = kept;
        if !gone.is_empty() {
            self.write_record(record);
        }
        !gone.is_empty()
    }

    /// Removes `written`'s library and signature, if the library is still
    /// the one the sync wrote (a file replaced by someone else stays).
    fn remove(&self, written: &Written) {
        let path = self.folder.join(&written.file);
        let ours = std::fs::read(&path)
            .map(|bytes| connhost_oci::digest_of(&bytes) == written.library)
            .unwrap_or(false);
        if !ours {
            if path.exists() {
                tracing::warn!(
                    reference = %written.reference,
                    file = %path.display(),
                    "sync: left a file it no longer keeps, because it changed since the sync wrote it"
                );
            }
            return;
        }
        // The library first: a signature without its library is nothing
        // the catalog loads.
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let _ = std::fs::remove_file(signature_beside(&path));
                tracing::info!(
                    reference = %written.reference,
                    file = %path.display(),
                    "sync: removed the file of a reference no longer synced"
                );
            }
            Err(error) => tracing::warn!(
                reference = %written.reference,
                file = %path.display(),
                "sync: could not remove a file it no longer keeps: {error}"
            ),
        }
    }

    fn load_record(&self) -> Record {
        let path = self.folder.join(RECORD);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
                tracing::warn!(
                    file = %path.display(),
                    "sync: ignoring its record, which is not what it writes: {error}"
                );
                Record::default()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(error) => {
                tracing::warn!(file = %path.display(), "sync: could not read its record: {error}");
                Record::default()
            }
        }
    }

    fn save_record(&self, entries: &[Entry]) {
        let record = Record {
            synced: entries.iter().filter_map(|e| e.written.clone()).collect(),
        };
        self.write_record(&record);
    }

    /// Writes the record under a temporary name, then renames it.
    fn write_record(&self, record: &Record) {
        let path = self.folder.join(RECORD);
        let temporary = self
            .folder
            .join(format!("{RECORD}.{}.tmp", std::process::id()));
        let written = serde_json::to_vec_pretty(record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(file = %path.display(), "sync: could not write its record: {error}");
        }
    }
}

/// What the sync's record in `folder` says it wrote, as statuses (for
/// `connhost plugins --json`'s `source`); `None` without a record.
pub(crate) fn recorded(folder: &std::path::Path) -> Option<Vec<SyncStatus>> {
    let text = std::fs::read_to_string(folder.join(RECORD)).ok()?;
    let record: Record = serde_json::from_str(&text).ok()?;
    Some(
        record
            .synced
            .into_iter()
            .map(|written| {
                let mut status = SyncStatus::new(&written.reference);
                status.file = Some(written.file);
                status.digest = Some(written.digest);
                status.library = Some(written.library);
                status
            })
            .collect(),
    )
}

fn succeed(entry: &mut Entry) {
    entry.status.last_success = Some(SystemTime::now());
    entry.status.last_error = None;
}

fn fail(entry: &mut Entry, error: String) {
    tracing::warn!(
        reference = %entry.status.reference,
        "sync failed (the folder keeps what it had): {error}"
    );
    entry.status.errors += 1;
    entry.status.last_error = Some(error);
}

fn publish(state: &AppState, entries: &[Entry]) {
    state.set_sync(entries.iter().map(|e| e.status.clone()).collect());
}

/// A seed for the jitter, different in each process.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

/// `interval`, ±10% at random (xorshift64 over `state`), so that replicas
/// started together do not poll together.
fn jittered(interval: Duration, state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(0.9 + 0.2 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let mut state = seed();
        let interval = Duration::from_secs(60);
        for _ in 0..1000 {
            let d = jittered(interval, &mut state);
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
    }

    #[test]
    fn intervals_read_like_durations() {
        use super::super::args::parse_interval;
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("5 days").is_err());
    }
}
