//! The runner's root: a tmpfs holding only what a plugin needs, read-only,
//! which the keeper pivots into, so nothing else of the host's file system
//! is reachable by any path (Landlock alone leaves metadata changes and
//! pathname Unix sockets open; here those paths do not exist).
//!
//! Built in the keeper's new mount namespace, on a tmpfs mounted over
//! `/tmp` (any folder would do; this one always exists, and the mount is
//! private to the namespace):
//!
//! ```text
//! /                  tmpfs, read-only once built
//! ├── lib, lib64 …   read-only binds of the system's library folders (or the
//! │                  same symlinks, on a merged /usr), /etc/ld.so.*
//! ├── dev/           null, zero, random, urandom (binds of the host's)
//! ├── plugin/NAME    the plugin library: a copy of the descriptor the host
//! │                  passed (the bytes it checked), read-only with the root
//! └── tmp/           a private tmpfs of [`Jail::tmp_size`] bytes, noexec
//! ```

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use crate::{Inherited, Jail};

/// Where the root is built before the pivot.
const BASE: &str = "/tmp";

/// Where the plugin library is, inside the root.
const PLUGIN_DIR: &str = "/plugin";

/// What the dynamic loader reads to find a library's dependencies: bound
/// read-only when they exist (symlinks are made again as symlinks).
const SYSTEM_PATHS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libx32",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// The device nodes a program may expect.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"];

/// The library's path inside the root.
pub(super) fn library_path(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(name)
}

/// Builds the root and pivots into it. On return the process's root and
/// working directory are the new root.
pub(super) fn build_root(jail: &Jail, inherited: &Inherited) -> io::Result<()> {
    // SAFETY: umask takes a mode.
    unsafe { libc::umask(0o022) };
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| context("making the mounts private", e))?;
    let base = Path::new(BASE);
    let library_size = library_size(inherited.library)?;
    mount(
        Some("connhost-root"),
        BASE,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!("mode=0755,size={}", library_size + (1 << 20))),
    )
    .map_err(|e| context("mounting a tmpfs for the root on /tmp", e))?;
    for path in SYSTEM_PATHS {
        replicate(base, Path::new(path))?;
    }
    for device in DEVICES {
        let source = Path::new(device);
        if std::fs::symlink_metadata(source).is_ok() {
            bind_file(source, &inside(base, source), true)?;
        }
    }
    copy_library(
        inherited.library,
        &inside(base, &library_path(&inherited.library_name)),
    )?;
    let tmp = base.join("tmp");
    make_dir(&tmp)?;
    mount(
        Some("connhost-tmp"),
        &path_text(&tmp),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&format!("mode=1777,size={}", jail.tmp_size.max(4096))),
    )
    .map_err(|e| context("mounting the private /tmp", e))?;
    pivot(base)?;
    mount(
        None,
        "/",
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(|e| context("making the root read-only", e))
}

/// The size of the library behind `fd`.
fn library_size(fd: i32) -> io::Result<u64> {
    // SAFETY: fstat writes into the struct it is given.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(context(
            "reading the library's descriptor",
            io::Error::last_os_error(),
        ));
    }
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

/// Copies the library behind `fd` into the root (which becomes read-only
/// with it). A copy, not a bind: the descriptor's mount belongs to the
/// host's mount namespace, which the kernel does not let this one bind
/// from; and a copy does not depend on the host's file still being there.
fn copy_library(fd: i32, target: &Path) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::fd::FromRawFd as _;
    use std::os::unix::fs::FileExt as _;
    if let Some(parent) = target.parent() {
        make_dir(parent)?;
    }
    // SAFETY: borrows the inherited descriptor without taking it (the
    // ManuallyDrop never closes it).
    let source = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| context(&format!("making {}", target.display()), e))?;
    let mut buffer = vec![0; 256 * 1024];
    let mut offset = 0;
    loop {
        let n = source
            .read_at(&mut buffer, offset)
            .map_err(|e| context("reading the library's descriptor", e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])
            .map_err(|e| context("copying the library into the root", e))?;
        offset += n as u64;
    }
    Ok(())
}

/// `path` under `base`.
fn inside(base: &Path, path: &Path) -> PathBuf {
    base.join(path.strip_prefix("/").unwrap_or(path))
}

/// Makes `path` in the root as it is on the host: the same symlink, or a
/// read-only bind of the folder or file. Missing paths are skipped.
fn replicate(base: &Path, path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let target = inside(base, path);
    if meta.file_type().is_symlink() {
        let points_to = std::fs::read_link(path)?;
        if let Some(parent) = target.parent() {
            make_dir(parent)?;
        }
        std::os::unix::fs::symlink(&points_to, &target)
            .map_err(|e| context(&format!("linking {}", path.display()), e))
    } else if meta.is_dir() {
        make_dir(&target)?;
        bind(path, &target, false)
    } else {
        bind_file(path, &target, false)
    }
}

/// Binds the file `source` over a new empty file at `target`, read-only.
fn bind_file(source: &Path, target: &Path, device: bool) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        make_dir(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| context(&format!("making {}", target.display()), e))?;
    bind(source, target, device)
}

/// Binds `source` at `target` (not recursively: mounts beneath it are
/// not brought along), then makes the bind read-only and nosuid (and
/// nodev unless it is a device), keeping the flags the source is mounted
/// with (which a user namespace may not clear).
fn bind(source: &Path, target: &Path, device: bool) -> io::Result<()> {
    let (from, to) = (path_text(source), path_text(target));
    mount(Some(&from), &to, None, libc::MS_BIND, None)
        .map_err(|e| context(&format!("binding {}", source.display()), e))?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
    if !device {
        flags |= libc::MS_NODEV;
    }
    flags |= locked_flags(&from);
    mount(None, &to, None, flags, None)
        .map_err(|e| context(&format!("making {} read-only", source.display()), e))
}

/// The flags `path`'s mount has that a remount must keep.
fn locked_flags(path: &str) -> libc::c_ulong {
    let Ok(path) = CString::new(path) else {
        return 0;
    };
    // SAFETY: statvfs writes into the struct it is given.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return 0;
    }
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st, _)| stat.f_flag & st == *st)
        .fold(0, |flags, (_, ms)| flags | ms)
}

/// Pivots into `base`: it becomes `/`, and the old root is detached.
fn pivot(base: &Path) -> io::Result<()> {
    std::env::set_current_dir(base).map_err(|e| context("entering the new root", e))?;
    let dot = CString::new(".").expect("no NUL");
    // SAFETY: pivot_root with two valid C strings; the old root ends up
    // stacked on "." and is detached just below.
    let pivoted = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if pivoted != 0 {
        return Err(context("pivot_root", io::Error::last_os_error()));
    }
    // SAFETY: detaches the old root, mounted on ".".
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(context(
            "detaching the old root",
            io::Error::last_os_error(),
        ));
    }
    std::env::set_current_dir("/").map_err(|e| context("entering /", e))
}

fn make_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| context(&format!("making {}", path.display()), e))
}

fn path_text(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

/// `mount(2)`.
fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let source = source.map(c).transpose()?;
    let target = c(target)?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a valid C string or null, as mount allows.
    let mounted = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if mounted == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `error`, saying what was being done.
fn context(what: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
