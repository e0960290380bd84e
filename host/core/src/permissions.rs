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
//!
//! The plugin cache folder ([`crate::cache_dir`]) is held to a stricter
//! rule, because what is in it is loaded without being checked again: it
//! must be owned by the host's user itself (`judge_cache_folder`), and
//! every folder above it must be owned by that user or root and writable
//! by no one else unless its sticky bit is set, as `/tmp`'s is
//! (`judge_cache_parent`): otherwise someone could rename the cache
//! folder away and put their own in its place.

use std::path::Path;

/// What a path is, in a refusal's words (`the plugin file`, `the plugins
/// folder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
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
    /// The plugin cache folder (`--cache-dir`, or the host's own).
    CacheFolder,
    /// A folder above the plugin cache folder.
    CacheParent,
}

impl Subject {
    /// The subject in words.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Subject::PluginsFolder => "the plugins folder",
            Subject::PluginFile => "the plugin file",
            Subject::KeysFolder => "the trusted keys folder",
            Subject::KeyFile => "the trusted key file",
            Subject::LockFile => "the lock file",
            Subject::CacheFolder => "the plugin cache folder",
            Subject::CacheParent => "the folder above the plugin cache folder",
        }
    }

    /// The subject and its path in words, to begin a sentence with: `the
    /// plugin file /srv/plugins/libfoo.so`, `/srv, a folder above the
    /// plugin cache folder,`.
    fn named(self, path: &Path) -> String {
        match self {
            Subject::CacheParent => {
                format!(
                    "{}, a folder above the plugin cache folder,",
                    path.display()
                )
            }
            _ => format!("{} {}", self.words(), path.display()),
        }
    }
}

/// The effective user id of this process (`None` where there is none).
pub(crate) fn host_uid() -> Option<u32> {
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
pub(crate) fn check(
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
pub(crate) fn judge(
    path: &Path,
    mode: u32,
    owner: u32,
    subject: Subject,
    host_uid: u32,
) -> Result<(), String> {
    writable_by_owner_alone(path, mode, subject, "")?;
    if owner != host_uid && owner != 0 {
        let shown = path.display();
        return Err(format!(
            "{} is owned by uid {owner}, not by this host's user (uid {host_uid}) or root, so that user could change what runs; run chown {host_uid} {shown}",
            subject.named(path),
        ));
    }
    Ok(())
}

/// The rule for the plugin cache folder (`mode` and `owner` from an
/// `lstat` of `path`): writable by no one but its owner, who must be the
/// host's user itself (not root, unless the host runs as root). Its
/// refusal names the path, the bit or the owner, and the fix.
pub(crate) fn judge_cache_folder(
    path: &Path,
    mode: u32,
    owner: u32,
    host_uid: u32,
) -> Result<(), String> {
    let subject = Subject::CacheFolder;
    writable_by_owner_alone(path, mode, subject, "")?;
    if owner != host_uid {
        let shown = path.display();
        return Err(format!(
            "{} is owned by uid {owner}, not by this host's user (uid {host_uid}), so that user could change what runs; run chown {host_uid} {shown}, or remove the folder (connhost creates a missing one, with mode 0700)",
            subject.named(path),
        ));
    }
    Ok(())
}

/// The rule for a folder above the plugin cache folder (`mode` and
/// `owner` of the folder a lookup goes through, links followed): owned
/// by the host's user or root, and writable by no one else unless its
/// sticky bit is set (then no one may rename or remove what they do not
/// own in it).
pub(crate) fn judge_cache_parent(
    path: &Path,
    mode: u32,
    owner: u32,
    host_uid: u32,
) -> Result<(), String> {
    let sticky = mode & 0o1000 != 0;
    if !sticky {
        let also = format!(" (or chmod +t {}, as /tmp has)", path.display());
        writable_by_owner_alone(path, mode, Subject::CacheParent, &also)?;
    }
    judge(path, mode & !0o022, owner, Subject::CacheParent, host_uid)
}

/// Refuses a `mode` writable by the group or by others, with the fix
/// (and `also`, another fix, after it).
fn writable_by_owner_alone(
    path: &Path,
    mode: u32,
    subject: Subject,
    also: &str,
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
            "{} is writable by {who} (mode {:04o}), so someone other than this host's user could change what runs; run chmod {fix} {shown}{also}",
            subject.named(path),
            mode & 0o7777,
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
    fn the_cache_folder_must_be_the_host_users_own() {
        let path = Path::new("/var/cache/connhost");
        assert_eq!(judge_cache_folder(path, 0o40700, 1000, 1000), Ok(()));
        assert_eq!(judge_cache_folder(path, 0o40755, 0, 0), Ok(()));
        assert_eq!(
            judge_cache_folder(path, 0o40700, 0, 1000).unwrap_err(),
            "the plugin cache folder /var/cache/connhost is owned by uid 0, not by this host's user (uid 1000), so that user could change what runs; run chown 1000 /var/cache/connhost, or remove the folder (connhost creates a missing one, with mode 0700)"
        );
        assert_eq!(
            judge_cache_folder(path, 0o41777, 1000, 1000).unwrap_err(),
            "the plugin cache folder /var/cache/connhost is writable by its group and by every user (mode 1777), so someone other than this host's user could change what runs; run chmod go-w /var/cache/connhost"
        );
    }

    #[test]
    fn a_folder_above_the_cache_may_be_shared_only_with_the_sticky_bit() {
        let path = Path::new("/srv/shared");
        assert_eq!(judge_cache_parent(path, 0o41777, 0, 1000), Ok(()));
        assert_eq!(judge_cache_parent(path, 0o40755, 1000, 1000), Ok(()));
        assert_eq!(
            judge_cache_parent(path, 0o40757, 0, 1000).unwrap_err(),
            "/srv/shared, a folder above the plugin cache folder, is writable by every user (mode 0757), so someone other than this host's user could change what runs; run chmod o-w /srv/shared (or chmod +t /srv/shared, as /tmp has)"
        );
        assert!(judge_cache_parent(path, 0o41777, 1234, 1000)
            .unwrap_err()
            .starts_with("/srv/shared, a folder above the plugin cache folder, is owned by uid 1234, not by this host's user (uid 1000) or root"));
    }

    #[test]
    fn another_owner_is_refused_with_both_uids() {
        assert_eq!(
            refusal(0o100644, 1234),
            "the plugin file /srv/plugins/libfoo.so is owned by uid 1234, not by this host's user (uid 1000) or root, so that user could change what runs; run chown 1000 /srv/plugins/libfoo.so"
        );
    }
}
