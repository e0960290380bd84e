//! What identifies a version of a plugin file without reading it, and of
//! what a decision about it depended on.

use std::path::Path;
use std::time::SystemTime;

use super::folder::SETTLE;
use crate::trust::Stamp;

/// What identifies a version of a directory entry without reading it: its
/// metadata (of the link itself when it is a broken symbolic link). The
/// access time is left out, so reading a file never changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
    inode: u64,
    device: u64,
    mode: u32,
}

impl Fingerprint {
    /// The metadata a fingerprint of what `path` names is made of
    /// (following links; of a broken link itself); `None` if there is
    /// nothing there any more.
    pub(super) fn metadata_of(path: &Path) -> Option<std::fs::Metadata> {
        std::fs::metadata(path)
            .or_else(|_| std::fs::symlink_metadata(path))
            .ok()
    }

    pub(super) fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Self {
                len: metadata.len(),
                modified: metadata.modified().ok(),
                changed: (metadata.ctime(), metadata.ctime_nsec()),
                inode: metadata.ino(),
                device: metadata.dev(),
                mode: metadata.mode(),
            }
        }
        #[cfg(not(unix))]
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            changed: (0, 0),
            inode: 0,
            device: 0,
            mode: u32::from(metadata.is_file()),
        }
    }

    /// Whether the file has not changed for [`SETTLE`].
    pub(super) fn quiet(&self) -> bool {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= SETTLE)
    }
}

/// What a decision about a file depended on: the file's own version, and
/// the trust material around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    pub(super) file: Fingerprint,
    pub(super) trust: Stamp,
}
