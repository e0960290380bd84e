//! `connhost lock`: records the plugin files that load in the lock file
//! (`connhost.lock` in the plugins folder unless `--lock-file`), for
//! `--locked`. The folder is loaded through the catalog, so every other
//! check (permissions, signatures) applies to what is locked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use connhost::{Connhost, HostConfig, LoadReport};
use connhost::{LockEntry, LockFile};

/// Exit status when a file to add was not admitted.
const NOT_ADMITTED: u8 = 1;

/// Writes the lock file: anew from every plugin file that loads, or, with
/// `add`, replacing only those files' entries.
pub(crate) fn run(config: &HostConfig, add: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let path = config
        .trust
        .lock_path(config.plugins_dir.as_deref())
        .context("no plugins folder and no --lock-file: nothing to lock")?;
    let host = Connhost::start(config);
    // With every digest, computed where loading did not need it.
    let report = &host.plugins();
    if let Some(failure) = report.folder_failure() {
        anyhow::bail!("{failure}");
    }
    let mut lock = if add.is_empty() {
        LockFile::default()
    } else {
        existing(&path)?
    };
    let mut refused = String::new();
    if add.is_empty() {
        for plugin in &report.loaded {
            lock.insert(entry(plugin));
        }
    } else {
        for file in add {
            match admitted(report, file) {
                Ok(plugin) => lock.insert(entry(plugin)),
                Err(reason) => {
                    let _ = writeln!(refused, "connhost: {reason}");
                }
            }
        }
    }
    lock.write(&path)
        .with_context(|| format!("could not write the lock file {}", path.display()))?;
    super::terminal::print(&summary(&path, &lock))?;
    if !refused.is_empty() {
        super::eprint(&refused);
        return Ok(ExitCode::from(NOT_ADMITTED));
    }
    if add.is_empty() && !report.failed.is_empty() {
        super::eprint(&format!(
            "note: {} plugin file(s) or provider(s) were not loaded, so they are not locked; `connhost plugins` says why.\n",
            report.failed.len()
        ));
    }
    Ok(super::success())
}

/// The lock file as it stands (empty if there is none yet).
fn existing(path: &Path) -> anyhow::Result<LockFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(LockFile::parse(&text, path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
        Err(e) => {
            Err(e).with_context(|| format!("could not read the lock file {}", path.display()))
        }
    }
}

/// The loaded plugin of the file `file` (a path, or a name in the plugins
/// folder), or why it is not there.
fn admitted<'a>(report: &'a LoadReport, file: &Path) -> Result<&'a connhost::LoadedPlugin, String> {
    let name = file.file_name().unwrap_or(file.as_os_str());
    let named = |path: &Path| path.file_name() == Some(name);
    if let Some(plugin) = report.loaded.iter().find(|p| named(&p.path)) {
        return Ok(plugin);
    }
    let shown = name.to_string_lossy();
    let shown = super::terminal::escape(&shown);
    Err(match report.failed.iter().find(|f| named(&f.path)) {
        Some(failure) => format!(
            "{shown} was not locked: it does not load: {}",
            super::terminal::escape(&failure.reason)
        ),
        None => {
            format!("{shown} was not locked: there is no such plugin file in the plugins folder")
        }
    })
}

/// The lock entry of a loaded plugin.
fn entry(plugin: &connhost::LoadedPlugin) -> LockEntry {
    LockEntry {
        file: plugin
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        plugin: plugin.plugin.clone(),
        version: plugin.version.clone(),
        digest: plugin.trust.digest.clone(),
    }
}

/// What the lock file now holds, in words.
fn summary(path: &Path, lock: &LockFile) -> String {
    let mut out = format!(
        "Locked {} plugin file(s) in {}\n",
        lock.entries.len(),
        path.display()
    );
    let rows: Vec<Vec<String>> = lock
        .entries
        .values()
        .map(|e| {
            vec![
                e.file.clone(),
                e.plugin.clone(),
                e.version.clone(),
                e.digest.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&super::output::table(
            &["FILE", "PLUGIN", "VERSION", "DIGEST"],
            &rows,
        ));
    }
    out
}
