//! The lock file, `connhost.lock`: trust on first use, in the spirit of
//! Terraform's dependency lock. `connhost lock` records the digest, plugin
//! name and version of every plugin file that loads; with `--locked`, a
//! file that is not listed, or whose content has another digest, is
//! refused before it is loaded (which also refuses a downgrade to an
//! older, correctly signed file). `connhost lock --add FILE` admits a new
//! file or version.
//!
//! The file is TOML, one `[[plugin]]` table per file, sorted by file name,
//! under a header comment; it is written whole to a temporary file that is
//! then renamed over the old one, so a reader never sees half of it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache_dir::is_digest;
use crate::model::trust::TrustError;

const HEADER: &str = "\
# connhost.lock: the plugin files `connhost --locked` may load, by digest
# (SHA-256 of the file's content). Written by `connhost lock`;
# `connhost lock --add FILE` admits a new file or version. Trust on first
# use: lock only files you trust.
";

/// One locked plugin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The file's name in the plugins folder (`libdaytona.so`).
    pub file: String,
    /// The plugin's name, as it said when it was locked.
    pub plugin: String,
    /// The plugin's version, as it said when it was locked.
    pub version: String,
    /// `sha256:` and the hex SHA-256 of the file's content.
    pub digest: String,
}

/// A lock file's entries, by file name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    /// The entries, by file name.
    pub entries: BTreeMap<String, LockEntry>,
}

/// The file as written.
#[derive(Serialize)]
struct Written<'a> {
    plugin: Vec<&'a LockEntry>,
}

/// The file as read, with each entry's place for errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    #[serde(default)]
    plugin: Vec<toml::Spanned<LockEntry>>,
}

/// The 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl LockFile {
    /// Parses the text of the lock file at `path`; an error names the file
    /// and the line (`connhost.lock:7: ...`).
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrustError> {
        let at = |offset: Option<usize>, message: String| {
            let place = offset.map_or_else(String::new, |o| format!(":{}", line_of(text, o)));
            TrustError::new(
                path,
                format!(
                    "{}{place}: {message}. Write the lock file again with `connhost lock`.",
                    path.display()
                ),
            )
        };
        let read: Read = toml::from_str(text).map_err(|e| {
            at(
                e.span().map(|s| s.start),
                format!("not a lock file: {}", e.message().trim_end()),
            )
        })?;
        let mut lock = LockFile::default();
        for spanned in read.plugin {
            let start = spanned.span().start;
            let entry = spanned.into_inner();
            if entry.file.is_empty() || entry.file.contains(['/', '\\']) {
                return Err(at(
                    Some(start),
                    format!(
                        "file \"{}\" must be a file name in the plugins folder",
                        entry.file
                    ),
                ));
            }
            if !is_digest(&entry.digest) {
                return Err(at(
                    Some(start),
                    format!(
                        "digest \"{}\" of {} is not sha256: followed by 64 lower-case hex digits",
                        entry.digest, entry.file
                    ),
                ));
            }
            if lock.entries.contains_key(&entry.file) {
                return Err(at(Some(start), format!("{} is listed twice", entry.file)));
            }
            lock.entries.insert(entry.file.clone(), entry);
        }
        Ok(lock)
    }

    /// The text of the lock file: the header comment, then one table per
    /// file in name order.
    pub fn render(&self) -> String {
        let body = toml::to_string(&Written {
            plugin: self.entries.values().collect(),
        })
        .unwrap_or_default();
        format!("{HEADER}\n{body}")
    }

    /// Adds `entry`, replacing its file's entry if there is one.
    pub fn insert(&mut self, entry: LockEntry) {
        self.entries.insert(entry.file.clone(), entry);
    }

    /// Writes the lock file to `path` atomically: a temporary file in the
    /// same folder (mode 0644), synced, renamed over `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o644);
        }
        let result = (|| {
            let mut file = options.open(&temporary)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }

    /// Whether the file `file_name` with content `digest` may load; the
    /// refusal says why and what to run (the lock file is `path`).
    pub fn admits(&self, path: &Path, file_name: &str, digest: &str) -> Result<(), String> {
        match self.entries.get(file_name) {
            None => Err(format!(
                "{file_name} is not in the lock file {}, and with --locked only the files it lists load; if you trust this file, run connhost lock --add {file_name}",
                path.display()
            )),
            Some(entry) if entry.digest != digest => Err(format!(
                "{file_name} has digest {digest}, which does not match the locked {} ({} {}), and with --locked only the locked version loads; if you trust this version, run connhost lock --add {file_name}",
                entry.digest, entry.plugin, entry.version
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!(
            "{}{}",
            crate::cache_dir::DIGEST_PREFIX,
            c.to_string().repeat(64)
        )
    }

    fn entry(file: &str, c: char) -> LockEntry {
        LockEntry {
            file: file.into(),
            plugin: "foo".into(),
            version: "1.2.0".into(),
            digest: digest(c),
        }
    }

    #[test]
    fn a_lock_file_reads_back_what_was_written_in_file_order() {
        let mut lock = LockFile::default();
        lock.insert(entry("libzeta.so", 'b'));
        lock.insert(entry("libalpha.so", 'a'));
        let text = lock.render();
        assert!(text.starts_with("# connhost.lock"), "{text}");
        assert!(text.find("libalpha.so") < text.find("libzeta.so"), "{text}");
        assert_eq!(LockFile::parse(&text, Path::new("x.lock")).unwrap(), lock);
        assert_eq!(
            LockFile::parse("", Path::new("x.lock")).unwrap(),
            LockFile::default()
        );
    }

    #[test]
    fn a_malformed_lock_file_names_the_file_and_the_line() {
        let path = Path::new("/srv/plugins/connhost.lock");
        let good = format!(
            "# header\n\n[[plugin]]\nfile = \"liba.so\"\nplugin = \"a\"\nversion = \"1\"\ndigest = \"{}\"\n",
            digest('a')
        );
        let cases = [
            (format!("{good}\n[[plugin]]\nfile = \"libb.so\"\nplugin = \"b\"\nversion = \"1\"\ndigest = \"md5:00\"\n"), ":9: ", "digest \"md5:00\" of libb.so"),
            (format!("{good}\n[[plugin]]\nfile = \"liba.so\"\nplugin = \"a\"\nversion = \"2\"\ndigest = \"{}\"\n", digest('b')), ":9: ", "liba.so is listed twice"),
            (format!("{good}colour = 3\n"), ":8: ", "not a lock file"),
            ("[[plugin]]\nfile = \"liba.so\"\nplugin = \n".to_owned(), ":3: ", "not a lock file"),
        ];
        for (text, line, what) in cases {
            let err = LockFile::parse(&text, path).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("/srv/plugins/connhost.lock{line}")),
                "{err}"
            );
            assert!(err.contains(what), "{err}");
        }
    }

    #[test]
    fn only_listed_files_with_their_digest_are_admitted() {
        let mut lock = LockFile::default();
        lock.insert(entry("libfoo.so", 'c'));
        let path = Path::new("/p/connhost.lock");
        assert_eq!(lock.admits(path, "libfoo.so", &digest('c')), Ok(()));
        let missing = lock.admits(path, "libbar.so", &digest('c')).unwrap_err();
        assert_eq!(missing, "libbar.so is not in the lock file /p/connhost.lock, and with --locked only the files it lists load; if you trust this file, run connhost lock --add libbar.so");
        let changed = lock.admits(path, "libfoo.so", &digest('a')).unwrap_err();
        assert!(
            changed.contains(&format!(
                "does not match the locked {} (foo 1.2.0)",
                digest('c')
            )),
            "{changed}"
        );
    }
}
