//! Who may change what decides which code runs: the plugins folder, the
//! plugin files, the trusted keys and the lock file. In the spirit of
//! sshd's `StrictModes`, each must be writable by no one but its owner,
//! and owned by the host's own user or root; otherwise anyone in its group
//! (or anyone at all, or its other owner) could put code into this
//! process.
//!
//! Every check looks at metadata the caller already has: for a plugin
//! file, the `fstat` of the descriptor that is then copied and loaded (so a
//! symbolic link is judged by the file it leads to, and the file judged is
//! the file read).

use std::path::Path;

/// What a path is, in a refusal's words (`the plugin file`, `the plugins
/// folder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The plugins folder.
    PluginsFolder,
    /// A plugin library file (the file a link leads to).
    PluginFile,
    /// The folder of trusted public keys (`--trusted-keys`).
    KeysFolder,
    /// A trusted public key file.
    KeyFile,
    /// The lock file (`--lock-file`).
    LockFile,
}

impl Subject {
    /// The subject in words.
    pub fn words(self) -> &'static str {
        match self {
            Subject::PluginsFolder => "the plugins folder",
            Subject::PluginFile => "the plugin file",
            Subject::KeysFolder => "the trusted keys folder",
            Subject::KeyFile => "the trusted key file",
            Subject::LockFile => "the lock file",
        }
    }
}

/// The effective user id of this process (`None` where there is none).
pub fn host_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(unsafe { libc::geteuid() })
    }
    #[cfg(not(unix))]
    None
}

/// Checks `metadata` (of `path`, a `subject`) against the rules: not
/// writable by its group or by others, owned by `host_uid` or root.
/// Returns the refusal in words, naming the path and the offending bit or
/// owner, with the command that fixes it.
#[cfg(unix)]
pub fn check(
    path: &Path,
    metadata: &std::fs::Metadata,
    subject: Subject,
    host_uid: u32,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    judge(path, metadata.mode(), metadata.uid(), subject, host_uid)
}

/// Not on this platform: nothing to check.
#[cfg(not(unix))]
pub fn check(
    _path: &Path,
    _metadata: &std::fs::Metadata,
    _subject: Subject,
    _host_uid: u32,
) -> Result<(), String> {
    Ok(())
}

/// The rule itself, over a mode and an owner (see [`check`]).
pub fn judge(
    path: &Path,
    mode: u32,
    owner: u32,
    subject: Subject,
    host_uid: u32,
) -> Result<(), String> {
    let shown = path.display();
    let (group, others) = (mode & 0o020 != 0, mode & 0o002 != 0);
    if group || others {
        let (who, fix) = match (group, others) {
            (true, true) => ("its group and by every user", "go-w"),
            (true, false) => ("its group", "g-w"),
            _ => ("every user", "o-w"),
        };
        return Err(format!(
            "{} {shown} is writable by {who} (mode {:04o}), so someone other than this host's user could change what runs; run chmod {fix} {shown}",
            subject.words(),
            mode & 0o7777,
        ));
    }
    if owner != host_uid && owner != 0 {
        return Err(format!(
            "{} {shown} is owned by uid {owner}, not by this host's user (uid {host_uid}) or root, so that user could change what runs; run chown {host_uid} {shown}",
            subject.words(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(mode: u32, owner: u32) -> String {
        judge(
            Path::new("/srv/plugins/libfoo.so"),
            mode,
            owner,
            Subject::PluginFile,
            1000,
        )
        .unwrap_err()
    }

    #[test]
    fn the_owner_alone_may_write() {
        for (mode, owner) in [
            (0o100755, 1000),
            (0o100600, 0),
            (0o40700, 1000),
            (0o100444, 0),
        ] {
            let path = Path::new("/srv/plugins");
            assert_eq!(
                judge(path, mode, owner, Subject::PluginsFolder, 1000),
                Ok(())
            );
        }
    }

    #[test]
    fn a_group_writable_file_is_refused_with_the_bit_and_the_fix() {
        assert_eq!(
            refusal(0o100664, 1000),
            "the plugin file /srv/plugins/libfoo.so is writable by its group (mode 0664), so someone other than this host's user could change what runs; run chmod g-w /srv/plugins/libfoo.so"
        );
    }

    #[test]
    fn world_writable_and_both_are_named() {
        let world = refusal(0o100646, 1000);
        assert!(
            world.contains("writable by every user (mode 0646)"),
            "{world}"
        );
        assert!(
            world.ends_with("run chmod o-w /srv/plugins/libfoo.so"),
            "{world}"
        );
        let both = refusal(0o41777, 1000);
        assert!(
            both.contains("writable by its group and by every user (mode 1777)"),
            "{both}"
        );
        assert!(both.contains("run chmod go-w"), "{both}");
    }

    #[test]
    fn another_owner_is_refused_with_both_uids() {
        assert_eq!(
            refusal(0o100644, 1234),
            "the plugin file /srv/plugins/libfoo.so is owned by uid 1234, not by this host's user (uid 1000) or root, so that user could change what runs; run chown 1000 /srv/plugins/libfoo.so"
        );
    }
}
