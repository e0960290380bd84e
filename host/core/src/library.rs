//! Opening one library file and checking that it is a plugin this host can
//! talk to. Libraries are never unloaded.

use std::path::Path;
use std::sync::Mutex;

use abi_stable::library::{abi_header_from_raw_library, LibHeader, LibraryError, RawLibrary};
use abi_stable::sabi_types::VersionNumber;
use connhost_plugin_api::abi::{v0_1_0, PluginModuleRef};
use connhost_plugin_api::PLUGIN_API_VERSION;

use crate::model::report::{FailureKind, LoadFailure};

/// A plugin library, open and checked, with its root module.
#[derive(Clone, Copy)]
pub(crate) struct OpenedLibrary {
    pub(crate) module: PluginModuleRef,
    /// The `connhost-plugin-api` version the plugin was built against.
    pub(crate) api_version: &'static str,
    /// Identifies the library in this process (its header's address):
    /// glibc hands back the already-loaded object for the same file.
    pub(crate) identity: usize,
}

/// The magic numbers of shared libraries on this platform.
fn looks_like_shared_library(head: &[u8]) -> bool {
    if cfg!(target_os = "macos") {
        const MACHO: [[u8; 4]; 5] = [
            [0xfe, 0xed, 0xfa, 0xce],
            [0xfe, 0xed, 0xfa, 0xcf],
            [0xce, 0xfa, 0xed, 0xfe],
            [0xcf, 0xfa, 0xed, 0xfe],
            [0xca, 0xfe, 0xba, 0xbe],
        ];
        MACHO.iter().any(|m| head.starts_with(m))
    } else if cfg!(windows) {
        head.starts_with(b"MZ")
    } else {
        head.starts_with(b"\x7fELF")
    }
}

fn format_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "Mach-O"
    } else if cfg!(windows) {
        "PE"
    } else {
        "ELF"
    }
}

/// Serialises dlopen and the checks: abi_stable's layout checker is not
/// reentrant, and two threads opening the same file must agree.
/// Process-wide, as the system loader it guards.
static OPENING: Mutex<()> = Mutex::new(());

/// Opens `path` and checks it without calling into the plugin (beyond its
/// static initializers and abi_stable's module constructor, which loading
/// a library always runs).
pub(crate) fn open(path: &Path, max_size: u64) -> Result<OpenedLibrary, LoadFailure> {
    open_as(path, max_size, Checks::All)
}

/// What [`open_as`] checks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checks {
    /// Its headers, its API version, abi_stable's layout check.
    All,
    /// Its API version only: this very file (same inode, unchanged since)
    /// passed the header and layout checks of this very host executable
    /// before ([`host_identity`]), as a kept cache's index records. The
    /// layout check is abi_stable's slowest step (about 100 µs), and its
    /// answer for the same file and the same host cannot change.
    PassedBefore,
}

/// What identifies this host executable on disk (device, inode, size,
/// modification and change times), as the cache's index records which
/// executable checked a copy's layout; `None` when it cannot be told (its
/// file was replaced since the process started, for one): then every
/// check runs.
pub(crate) fn host_identity() -> Option<&'static str> {
    static IDENTITY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            use std::os::unix::fs::MetadataExt as _;
            let exe = std::env::current_exe().ok()?;
            let m = std::fs::metadata(exe).ok()?;
            Some(format!(
                "plugin-api {PLUGIN_API_VERSION}, executable {}:{} {} bytes, modified {}.{:09}, changed {}.{:09}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ))
        })
        .as_deref()
}

/// [`open`], checking what `checks` says.
pub(crate) fn open_as(
    path: &Path,
    max_size: u64,
    checks: Checks,
) -> Result<OpenedLibrary, LoadFailure> {
    let fail = |kind, reason: String| LoadFailure::new(path, kind, reason);

    // The descriptor stays open until the system loader has the file.
    let _checked = match checks {
        Checks::All => Some(check_file(path, max_size)?),
        Checks::PassedBefore => None,
    };

    let _guard = OPENING.lock().unwrap_or_else(|e| e.into_inner());
    let raw = RawLibrary::load_at(path).map_err(|e| {
        fail(
            FailureKind::OpenFailed,
            format!(
                "the system could not load this shared library: {}. It may be truncated, built for another platform, or need a library that is not installed.",
                open_error_text(&e)
            ),
        )
    })?;
    // SAFETY: the header is only used while the library is loaded, and the
    // library is leaked below, so it stays loaded for the life of the process.
    let header = unsafe { abi_header_from_raw_library(&raw) };
    // Its static initializers have run and may have registered destructors
    // or handed out pointers: a library is never unloaded, plugin or not.
    std::mem::forget(raw);
    let header = header.map_err(|_| {
        fail(
            FailureKind::NotAPlugin,
            "a shared library, but not a connhost plugin: it does not export connhost's plugin entry point. A plugin crate must call `connhost_plugin_api::export_plugin!`.".to_owned(),
        )
    })?;

    let header: &'static LibHeader = header.upgrade().map_err(|e| {
        fail(
            FailureKind::IncompatibleApi,
            format!("built with an incompatible version of abi_stable: {e}"),
        )
    })?;

    let found = header.version_strings().version.as_str();
    check_api_version(found).map_err(|reason| fail(FailureKind::IncompatibleApi, reason))?;

    let checked = match checks {
        Checks::All => check_layout(header),
        // See `Checks::PassedBefore`: this very file passed this very
        // host's layout check before.
        Checks::PassedBefore => Ok(()),
    };
    // SAFETY: the layout passed the check, against the current declaration
    // or against 0.1.0's, which is its prefix: this type's one field more,
    // `validate_lent`, is read by an accessor that consults the library's
    // own field count and answers `None` when the library has no such
    // field (abi_stable's prefix types).
    let module = checked.and_then(|()| unsafe {
        header.init_root_module_with_unchecked_layout::<PluginModuleRef>()
    });
    let module = module
        .map_err(|e| match e {
            LibraryError::AbiInstability(diff) => {
                let diff = diff.to_string();
                fail(
                    FailureKind::IncompatibleApi,
                    format!(
                        "built against an incompatible connhost-plugin-api: it declares version {found} (this host expects {}), but the types it exchanges with the host have a different layout ({}). Rebuild the plugin against connhost-plugin-api {}; `connhost inspect` shows the full layout difference.",
                        expected_range(),
                        summarize_layout_diff(&diff),
                        PLUGIN_API_VERSION
                    ),
                )
                .with_detail(diff)
            }
            LibraryError::RootModule { err, .. } => fail(
                FailureKind::InitFailed,
                format!("the plugin failed while exporting its module: {err}"),
            ),
            other => fail(
                FailureKind::IncompatibleApi,
                format!("the plugin's module could not be checked: {other}"),
            ),
        })?;

    Ok(OpenedLibrary {
        module,
        api_version: found,
        identity: header as *const LibHeader as usize,
    })
}

/// Checks the layout of the library's root module against this host's
/// declaration, or, when that fails, against the declaration of 0.1.0
/// (whose plugins lack the fields appended since: abi_stable refuses a
/// library with fewer fields than the declaration it is checked against).
/// The error is the current declaration's: that is what a plugin failing
/// both should be rebuilt against.
fn check_layout(header: &LibHeader) -> Result<(), LibraryError> {
    let current = header.ensure_layout::<PluginModuleRef>();
    match current {
        Err(LibraryError::AbiInstability(_)) => header
            .ensure_layout::<v0_1_0::PluginModuleRef>()
            .or(current),
        other => other,
    }
}

/// Why a file named like a library could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// It is gone (removed between listing and opening).
    Vanished,
    /// A passing shortage of the process or the system (too many open
    /// files, no memory): it says nothing about the file. Try again later.
    Transient(std::io::Error),
    /// The entry cannot be loaded as it is.
    Failed(LoadFailure),
}

/// Whether an I/O error is a passing shortage rather than a property of
/// the file: out of descriptors (EMFILE, ENFILE), memory, or interrupted.
pub(crate) fn is_transient(error: &std::io::Error) -> bool {
    #[cfg(unix)]
    if let Some(code) = error.raw_os_error() {
        return [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EINTR,
            libc::EAGAIN,
        ]
        .contains(&code);
    }
    matches!(
        error.kind(),
        std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::Interrupted
    )
}

/// What a file type is, in words (`a directory`, `a named pipe (FIFO)`).
fn file_type_name(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

fn not_regular(path: &Path, file_type: std::fs::FileType) -> LoadFailure {
    LoadFailure::new(
        path,
        FailureKind::NotARegularFile,
        format!(
            "not a regular file: it is {}, so it was not opened. Plugins are the `.{}` files cargo builds from a `cdylib` crate (or symbolic links to them).",
            file_type_name(file_type),
            std::env::consts::DLL_EXTENSION
        ),
    )
}

/// Words an error from looking at or opening `path`.
fn open_error(path: &Path, error: std::io::Error) -> OpenError {
    if is_transient(&error) {
        return OpenError::Transient(error);
    }
    let fail = |kind, reason: String| OpenError::Failed(LoadFailure::new(path, kind, reason));
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ELOOP) {
        return fail(
            FailureKind::BrokenLink,
            "a symbolic link that loops (too many levels of symbolic links), so it leads to no file.".to_owned(),
        );
    }
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ENXIO) {
        return fail(
            FailureKind::NotARegularFile,
            "not a regular file: a socket or a device without a reader, so it was not opened."
                .to_owned(),
        );
    }
    match error.kind() {
        std::io::ErrorKind::NotFound => match std::fs::symlink_metadata(path) {
            Ok(link) if link.file_type().is_symlink() => fail(
                FailureKind::BrokenLink,
                match std::fs::read_link(path) {
                    Ok(target) => format!(
                        "a symbolic link to {}, which does not exist.",
                        target.display()
                    ),
                    Err(_) => "a symbolic link whose target does not exist.".to_owned(),
                },
            ),
            Ok(_) => OpenError::Vanished,
            Err(e) if is_transient(&e) => OpenError::Transient(e),
            Err(_) => OpenError::Vanished,
        },
        std::io::ErrorKind::PermissionDenied => fail(
            FailureKind::Unreadable,
            format!(
                "the host may not read this file ({error}); let the user connhost runs as read it."
            ),
        ),
        _ => fail(
            FailureKind::Unreadable,
            format!("could not read the file: {error}."),
        ),
    }
}

/// Opens `path` for reading without ever blocking, and checks that what
/// was opened is a regular file. The entry's metadata is looked at first,
/// so a directory, FIFO, socket or device is never opened at all; the
/// open itself is non-blocking (`O_NONBLOCK`) and its result is checked
/// again with `fstat`, so an entry swapped for a FIFO in between cannot
/// block the caller either. Read only from the returned descriptor.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File, OpenError> {
    let metadata = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    if !metadata.is_file() {
        return Err(OpenError::Failed(not_regular(path, metadata.file_type())));
    }
    open_and_check(path)
}

/// The open step of [`open_regular`]: non-blocking, then `fstat`.
fn open_and_check(path: &Path) -> Result<std::fs::File, OpenError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options.open(path).map_err(|e| open_error(path, e))?;
    let opened = file.metadata().map_err(|e| open_error(path, e))?;
    if !opened.is_file() {
        return Err(OpenError::Failed(not_regular(path, opened.file_type())));
    }
    Ok(file)
}

/// Opens `path` (see [`open_regular`]) and checks it (see [`check_opened`]).
/// A transient failure is reported as a failure of the file, worded as
/// passing: for callers that do not retry.
pub(crate) fn check_file(path: &Path, max_size: u64) -> Result<std::fs::File, LoadFailure> {
    let file = open_regular(path).map_err(|e| match e {
        OpenError::Failed(failure) => failure,
        OpenError::Vanished => LoadFailure::new(
            path,
            FailureKind::Unreadable,
            "the file was removed while it was being loaded.",
        ),
        OpenError::Transient(e) => LoadFailure::new(
            path,
            FailureKind::Unreadable,
            format!("could not open the file for now ({e}); load it again later."),
        ),
    })?;
    check_opened(path, &file, max_size)?;
    Ok(file)
}

/// What the system loader reads of an ELF shared library: the bytes from
/// the file's start to the end of the last thing a program header points
/// at (the headers and every segment), when that is less than the whole
/// file. What follows (the section header table, the symbol table, debug
/// information) is only ever read by tools, never by the loader, so a copy
/// made to be loaded may leave it out ([`crate::cache_dir::copy_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Image {
    /// How many bytes from the start of the file the loader reads.
    pub(crate) len: u64,
    /// Where the ELF header says where the section header table is, how
    /// many sections there are, and which one names them (offset, width):
    /// zeroed in a copy that leaves the table out, so that it reads as a
    /// library without section headers rather than a damaged one.
    pub(crate) section_table_fields: [(u64, usize); 3],
}

/// Checks, before the system loader sees it (and before anything copies
/// it), that the opened file is a complete shared library of at most
/// `max_size` bytes: the dynamic loader maps segments without checking that the file
/// holds them, and touching a missing page kills the process (SIGBUS). A
/// file still being copied looks exactly like that. Only the size and the
/// headers are read, never the whole file. Returns what the loader reads
/// of it ([`Image`]), when that is less than the whole file.
pub(crate) fn check_opened(
    path: &Path,
    file: &std::fs::File,
    max_size: u64,
) -> Result<Option<Image>, LoadFailure> {
    let fail = |kind, reason: String| LoadFailure::new(path, kind, reason);
    let still_copying = "if it is still being copied, load it again once the copy is complete";
    let unreadable = |e: std::io::Error| {
        fail(
            FailureKind::Unreadable,
            format!("could not read the file: {e}."),
        )
    };
    let len = file.metadata().map_err(unreadable)?.len();
    let limit = max_size;
    if len > limit {
        return Err(fail(
            FailureKind::TooLarge,
            format!(
                "the file is {len} bytes, more than the {limit}-byte limit for a plugin, so it was not read. Raise --max-plugin-size (CONNHOST_MAX_PLUGIN_SIZE) if it really is a plugin."
            ),
        ));
    }
    if len == 0 {
        return Err(fail(
            FailureKind::NotASharedLibrary,
            format!("the file is empty (0 bytes), so it is not a shared library; {still_copying}."),
        ));
    }
    let data = object::ReadCache::new(file);
    let head = object::ReadRef::read_bytes_at(&data, 0, len.min(8)).unwrap_or(&[]);
    if !looks_like_shared_library(head) {
        return Err(fail(
            FailureKind::NotASharedLibrary,
            format!(
                "not a shared library: the file does not start with an {} header. Plugins are the `.{}` files cargo builds from a `cdylib` crate.",
                format_name(),
                std::env::consts::DLL_EXTENSION
            ),
        ));
    }
    let layout = if head.starts_with(b"\x7fELF") {
        match head.get(4) {
            Some(1) => check_elf::<object::elf::FileHeader32<object::Endianness>>(&data, len),
            _ => check_elf::<object::elf::FileHeader64<object::Endianness>>(&data, len),
        }
    } else {
        check_other(&data, len).map(|()| None)
    };
    layout.map_err(|problem| match problem {
        Problem::Damaged(e) => fail(
            FailureKind::NotASharedLibrary,
            format!("a damaged or truncated {} file ({e}); {still_copying}.", format_name()),
        ),
        Problem::NotDynamic(kind) => fail(
            FailureKind::NotASharedLibrary,
            format!(
                "an {} file, but not a shared library (it is {kind}). Plugins are the `.{}` files cargo builds from a `cdylib` crate.",
                format_name(),
                std::env::consts::DLL_EXTENSION
            ),
        ),
        Problem::Truncated(needed) => fail(
            FailureKind::NotASharedLibrary,
            format!(
                "the file is truncated: it is {len} bytes, but its segments need {needed} bytes; {still_copying}."
            ),
        ),
    })
}

/// Why a file's layout is not a complete shared library.
enum Problem {
    Damaged(String),
    NotDynamic(String),
    Truncated(u64),
}

/// ELF: a shared object whose loadable segments and section header table
/// all lie inside the file. Returns what the loader reads of it, when
/// that is less than the whole file.
fn check_elf<Elf>(
    data: &object::ReadCache<&std::fs::File>,
    len: u64,
) -> Result<Option<Image>, Problem>
where
    Elf: object::read::elf::FileHeader<Endian = object::Endianness>,
{
    use object::read::elf::ProgramHeader as _;
    let header = Elf::parse(data).map_err(|e| Problem::Damaged(e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| Problem::Damaged(e.to_string()))?;
    if header.e_type(endian) != object::elf::ET_DYN {
        return Err(Problem::NotDynamic(format!(
            "ELF type {}",
            header.e_type(endian)
        )));
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| Problem::Damaged(e.to_string()))?;
    // The loader reads the ELF header, the program header table and what
    // each program header points at.
    let table = header.e_phoff(endian).into().saturating_add(
        u64::from(header.e_phnum(endian)).saturating_mul(header.e_phentsize(endian).into()),
    );
    let mut loaded = table.max(header.e_ehsize(endian).into());
    for segment in segments {
        let end = segment
            .p_offset(endian)
            .into()
            .saturating_add(segment.p_filesz(endian).into());
        if end > len {
            return Err(Problem::Truncated(end));
        }
        loaded = loaded.max(end);
    }
    // The section header table is at the end of the file: a truncated copy
    // loses it first.
    header
        .section_headers(endian, data)
        .map_err(|e| Problem::Damaged(e.to_string()))?;
    // e_shoff, e_shnum and e_shstrndx, as the ELF specification places them.
    let section_table_fields = if header.is_type_64() {
        [(0x28, 8), (0x3c, 2), (0x3e, 2)]
    } else {
        [(0x20, 4), (0x30, 2), (0x32, 2)]
    };
    Ok((loaded < len).then_some(Image {
        len: loaded,
        section_table_fields,
    }))
}

/// Mach-O and PE: the generic parser, then the same segment check.
fn check_other(data: &object::ReadCache<&std::fs::File>, len: u64) -> Result<(), Problem> {
    use object::{Object as _, ObjectKind, ObjectSegment as _};
    let file = object::File::parse(data).map_err(|e| Problem::Damaged(e.to_string()))?;
    if file.kind() != ObjectKind::Dynamic {
        return Err(Problem::NotDynamic(format!("{:?}", file.kind())));
    }
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.saturating_add(size) > len {
            return Err(Problem::Truncated(offset.saturating_add(size)));
        }
    }
    Ok(())
}

fn open_error_text(error: &LibraryError) -> String {
    match error {
        LibraryError::OpenError { err, .. } => err.to_string(),
        other => other.to_string(),
    }
}

/// `0.y.*` while the API is unstable, `x.*` after.
fn expected_range() -> String {
    let host = parse(PLUGIN_API_VERSION).unwrap_or(VersionNumber {
        major: 0,
        minor: 0,
        patch: 0,
    });
    if host.major == 0 {
        format!("0.{}.x", host.minor)
    } else {
        format!("{}.x", host.major)
    }
}

fn parse(version: &str) -> Option<VersionNumber> {
    let mut parts = version.split(['.', '-', '+']);
    Some(VersionNumber {
        major: parts.next()?.parse().ok()?,
        minor: parts.next()?.parse().ok()?,
        patch: parts.next()?.parse().ok()?,
    })
}

/// While the API is `0.y`, the plugin's `y` must equal the host's; from
/// 1.0 on, majors must match and the plugin's minor may not be newer (it
/// could expect host functions this host lacks).
pub(crate) fn check_api_version(found: &str) -> Result<(), String> {
    let host = parse(PLUGIN_API_VERSION).expect("the crate's own version parses");
    let Some(plugin) = parse(found) else {
        return Err(format!(
            "declares a plugin API version \"{found}\" that is not a version number; it was not built with connhost-plugin-api."
        ));
    };
    let compatible = if host.major == 0 {
        plugin.major == 0 && plugin.minor == host.minor
    } else {
        plugin.major == host.major && plugin.minor <= host.minor
    };
    if compatible {
        Ok(())
    } else {
        Err(format!(
            "built against an incompatible connhost-plugin-api: version {found}, but this host loads plugins built against {}. Rebuild the plugin against connhost-plugin-api {}{}.",
            expected_range(),
            PLUGIN_API_VERSION,
            if plugin.major > host.major || (plugin.major == host.major && plugin.minor > host.minor) {
                ", or upgrade connhost"
            } else {
                ""
            }
        ))
    }
}

/// The useful end of abi_stable's layout diff: its last `Error:` block,
/// on one line (`mismatched type: expected RStr<'a>, found RSlice<'a>`).
pub(crate) fn summarize_layout_diff(diff: &str) -> String {
    let lines: Vec<&str> = diff.lines().map(str::trim).collect();
    let Some(start) = lines.iter().rposition(|l| l.starts_with("Error:")) else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .unwrap_or(&"")
            .to_string();
    };
    let mut summary = lines[start].trim_start_matches("Error:").trim().to_owned();
    for line in lines[start + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .take(8)
    {
        let piece = match *line {
            "Expected:" => ": expected".to_owned(),
            "Found:" => ", found".to_owned(),
            other => format!(" {other}"),
        };
        summary.push_str(&piece);
    }
    summary.replace(" :", ":")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open step alone (as if a FIFO was swapped in after the entry's
    /// type was looked at) must neither block nor accept the FIFO.
    #[cfg(unix)]
    #[test]
    fn opening_a_fifo_never_blocks_and_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libswapped.so");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (done, result) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = done.send(open_and_check(&path).err().map(|e| match e {
                OpenError::Failed(failure) => failure.kind,
                other => panic!("{other:?}"),
            }));
        });
        let kind = result
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO blocked");
        assert_eq!(kind, Some(FailureKind::NotARegularFile));
    }

    #[cfg(unix)]
    #[test]
    fn running_out_of_descriptors_is_passing_and_a_missing_file_is_not() {
        for code in [libc::EMFILE, libc::ENFILE] {
            assert!(is_transient(&std::io::Error::from_raw_os_error(code)));
        }
        for code in [libc::ENOENT, libc::EACCES, libc::ELOOP, libc::ENOTDIR] {
            assert!(!is_transient(&std::io::Error::from_raw_os_error(code)));
        }
    }

    #[cfg(unix)]
    #[test]
    fn special_entries_are_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let kind = |path: &Path| match open_regular(path) {
            Err(OpenError::Failed(failure)) => failure.kind,
            other => panic!("{}: {other:?}", path.display()),
        };
        assert_eq!(kind(dir.path()), FailureKind::NotARegularFile);
        let looping = dir.path().join("loop.so");
        std::os::unix::fs::symlink(&looping, &looping).unwrap();
        assert_eq!(kind(&looping), FailureKind::BrokenLink);
        let dangling = dir.path().join("dangling.so");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        assert_eq!(kind(&dangling), FailureKind::BrokenLink);
        assert!(matches!(
            open_regular(&dir.path().join("absent.so")),
            Err(OpenError::Vanished)
        ));
    }

    #[test]
    fn same_minor_loads_and_other_minors_do_not() {
        assert!(check_api_version(PLUGIN_API_VERSION).is_ok());
        let host = parse(PLUGIN_API_VERSION).unwrap();
        let next = format!("{}.{}.0", host.major, host.minor + 1);
        let err = check_api_version(&next).unwrap_err();
        assert!(err.contains(&next), "{err}");
        assert!(err.contains("upgrade connhost"), "{err}");
        assert!(check_api_version("banana")
            .unwrap_err()
            .contains("not a version number"));
    }

    #[test]
    fn layout_summary_keeps_the_last_error_block_on_one_line() {
        let diff = "lots of text\n  Error:other\n\nError:mismatched type\nExpected:\n    RStr<'a>\nFound:\n    RSlice<'a>\n\n";
        assert_eq!(
            summarize_layout_diff(diff),
            "mismatched type: expected RStr<'a>, found RSlice<'a>"
        );
    }
}
