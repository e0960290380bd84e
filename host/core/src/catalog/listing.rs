//! Listing a plugins folder: the entries named like libraries, in the
//! order that decides who wins an id conflict.

use std::path::{Path, PathBuf};

/// Whether a path has this platform's shared library extension.
pub(crate) fn is_library_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == std::env::consts::DLL_EXTENSION)
}

/// The entries of `dir` named like libraries, sorted by name (which decides
/// who wins an id conflict between two plugins: the first file). Entries of
/// every type are listed, so that a directory, a FIFO or a broken link
/// named like a library is reported rather than silently skipped; nothing
/// is opened here. An error while listing fails the whole listing.
pub(crate) fn library_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_library_path(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Why a plugins folder could not be listed.
pub(crate) fn missing_dir_reason(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::NotFound {
        "the plugins folder does not exist; create it, or point --plugins (CONNHOST_PLUGINS) at the folder that holds your plugins.".to_owned()
    } else {
        format!("the plugins folder could not be read: {error}.")
    }
}
