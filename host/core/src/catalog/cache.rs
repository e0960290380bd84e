//! Where a folder's plugin copies go: a cache folder named by the operator,
//! or one of the catalog's own, made ready (and checked to be the host's
//! alone) at every rescan.

use std::path::{Path, PathBuf};

use crate::cache_dir;

/// Which cache folder.
#[derive(Debug)]
pub(crate) enum CacheChoice {
    /// A folder the operator named (`HostConfig::cache_dir`): created when
    /// missing, refused unless it is the host's alone.
    Given(PathBuf),
    /// A folder of the catalog's own under the temp dir
    /// ([`cache_dir::create_default`]), removed with the catalog; `None`
    /// until one could be created (each copy tries again, and a failure is
    /// the file's, as any failure to copy it).
    Own(Option<PathBuf>),
}

/// A folder's cache.
#[derive(Debug)]
pub(super) struct Cache {
    choice: CacheChoice,
    /// Whether the `--insecure-permissions` warning about it was given.
    warned: bool,
}

impl Cache {
    /// The cache `choice` says.
    pub(super) fn new(choice: CacheChoice) -> Self {
        Self {
            choice,
            warned: false,
        }
    }

    /// The folder copies go to (`None`: its own could not be created yet).
    pub(super) fn dir(&self) -> Option<&Path> {
        match &self.choice {
            CacheChoice::Given(dir) => Some(dir),
            CacheChoice::Own(dir) => dir.as_deref(),
        }
    }

    /// The folder to copy into: the catalog's own is created if it has
    /// none yet (the system's error if it cannot be).
    pub(super) fn folder(&mut self) -> std::io::Result<PathBuf> {
        match &mut self.choice {
            CacheChoice::Given(dir) => Ok(dir.clone()),
            CacheChoice::Own(Some(dir)) => Ok(dir.clone()),
            CacheChoice::Own(own) => {
                let dir = cache_dir::create_default()?;
                tracing::debug!(folder = %dir.display(), "created the plugin cache folder");
                *own = Some(dir.clone());
                Ok(dir)
            }
        }
    }

    /// The folder, when the operator named it (kept between starts, with
    /// an index of what it holds).
    pub(super) fn given(&self) -> Option<&Path> {
        match &self.choice {
            CacheChoice::Given(dir) => Some(dir),
            CacheChoice::Own(_) => None,
        }
    }

    /// The folder, when it is the catalog's own (to remove with it).
    pub(super) fn own(&self) -> Option<&Path> {
        match &self.choice {
            CacheChoice::Own(dir) => dir.as_deref(),
            CacheChoice::Given(_) => None,
        }
    }

    /// Makes the folder ready before anything is copied into it: a named
    /// one created if missing and checked to be the host's alone (the
    /// owner and mode checks off with `check_permissions` false, with a
    /// warning once); the catalog's own one created afresh if it is gone,
    /// and checked the same way. A refusal names the folder and why.
    pub(super) fn prepare(&mut self, check_permissions: bool) -> Result<(), (PathBuf, String)> {
        if !check_permissions && !self.warned {
            self.warned = true;
            if let Some(cache) = self.dir() {
                tracing::warn!(
                    "--insecure-permissions: not checking who may write the plugin cache folder {} or the folders above it; anyone who can write them can run code in this host",
                    cache.display()
                );
            }
        }
        match &mut self.choice {
            CacheChoice::Given(dir) => cache_dir::prepare_given(dir, check_permissions)
                .map_err(|refusal| (dir.clone(), refusal.reason)),
            CacheChoice::Own(own) => {
                let gone = own.as_deref().is_some_and(|dir| {
                    std::fs::symlink_metadata(dir)
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                });
                if gone {
                    // Removed from under the host (a temp dir cleaner): a
                    // new one, never the old name again. If none can be
                    // made now, each copy tries again.
                    *own = cache_dir::create_default().ok();
                }
                match own.as_deref() {
                    Some(dir) => cache_dir::check_private(dir, check_permissions)
                        .map_err(|reason| (dir.to_owned(), reason)),
                    None => Ok(()),
                }
            }
        }
    }
}
