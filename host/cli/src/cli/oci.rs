//! `connhost push` and `connhost pull`: plugins as OCI artifacts
//! (`connhost-oci` holds the format and the registry client). What `push`
//! says of a file comes from loading it in a sandboxed worker
//! (`connhost::inspect`); what `pull` writes passes the host's own trust
//! gate (signature, lock file) and loads in a worker before it enters the
//! plugins folder.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use connhost::{HostConfig, Inspection, LockFile};
use connhost_oci::{
    DockerCredentials, Options, Platform, PlatformPush, PluginConfig, ProviderSummary, Pulled,
    Registry,
};
use serde::Serialize;

use super::args::{PullArgs, PushArgs, RegistryArgs};
use super::terminal::{self, escape};

/// Exit status when the registry's content is refused (a digest, a
/// signature, the lock file, a library that does not load here).
const REFUSED: u8 = 1;

/// The suffix of a library's signature file.
const SIGNATURE_SUFFIX: &str = ".minisig";

/// A registry client with `args`' insecure registries and docker's
/// credentials.
pub(crate) fn registry(args: &RegistryArgs) -> anyhow::Result<Registry> {
    let credentials = DockerCredentials::load_default()?;
    Ok(Registry::new(Options {
        insecure_registries: args.insecure_registries.clone(),
        credentials,
        ..Options::default()
    }))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

/// A refusal of content: printed, exit status [`REFUSED`].
fn refused(message: &str) -> anyhow::Result<ExitCode> {
    super::eprint(&format!("connhost: refused: {}\n", escape(message)));
    Ok(ExitCode::from(REFUSED))
}

/// A file's name, as text.
fn name_of(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// `path` with `.minisig` appended.
pub(crate) fn signature_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// One file to push.
struct Source {
    platform: Platform,
    file: PathBuf,
    signature: Option<PathBuf>,
}

/// What `push --json` prints.
#[derive(Serialize)]
struct PushReport {
    reference: String,
    digest: String,
    plugin: String,
    version: String,
    platforms: Vec<PushedPlatform>,
}

#[derive(Serialize)]
struct PushedPlatform {
    platform: String,
    manifest: String,
    file: String,
    library: String,
    signed: bool,
    /// Whether the file was loaded in a worker here (false: built for
    /// another platform, described as FILE is).
    inspected: bool,
}

/// The plugin's config blob, from an inspection of its file.
fn config_of(inspection: &Inspection, file: &Path, target: Platform) -> PluginConfig {
    PluginConfig {
        name: inspection.plugin.clone().unwrap_or_default(),
        version: inspection.version.clone().unwrap_or_default(),
        api_version: inspection.api_version.clone().unwrap_or_default(),
        file: name_of(file),
        target,
        providers: inspection
            .providers
            .iter()
            .map(|p| ProviderSummary {
                id: p.provider_id.clone(),
                name: p.display_name.clone(),
                egress: p.egress.clone(),
            })
            .collect(),
    }
}

/// `connhost push FILE REF`.
pub(crate) fn push(config: &HostConfig, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let host = Platform::host();
    let mut sources = vec![Source {
        platform: host.clone(),
        file: args.file.clone(),
        signature: args
            .signature
            .clone()
            .or_else(|| Some(signature_beside(&args.file)).filter(|s| s.exists())),
    }];
    for given in &args.platforms {
        let (platform, file) = given
            .split_once('=')
            .with_context(|| format!("--platform {given:?} is not OS/ARCH=FILE"))?;
        let platform: Platform = platform.parse()?;
        let file = PathBuf::from(file);
        if sources.iter().any(|s| s.platform == platform) {
            bail!("the platform {platform} is given twice (FILE is for this host's, {host})");
        }
        let signature = Some(signature_beside(&file)).filter(|s| s.exists());
        sources.push(Source {
            platform,
            file,
            signature,
        });
    }
    // Inspection reads the file itself: no signature or lock is asked of a
    // file being published.
    let mut inspect_config = config.clone();
    inspect_config.trust.trusted_keys = None;
    inspect_config.trust.locked = false;
    let inspection = connhost::inspect(&args.file, &inspect_config);
    if !inspection.loadable {
        let reason = inspection
            .failure
            .as_ref()
            .map_or_else(|| "it does not load".to_owned(), |f| f.reason.clone());
        return refused(&format!(
            "{} was not pushed: it does not load in a worker on this host ({host}): {reason}",
            args.file.display()
        ));
    }
    let mut pushes = Vec::new();
    let mut shown = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let library = std::fs::read(&source.file)
            .with_context(|| format!("could not read {}", source.file.display()))?;
        let signature = source
            .signature
            .as_ref()
            .map(|s| std::fs::read(s).with_context(|| format!("could not read {}", s.display())))
            .transpose()?;
        let suffix = match source.platform.os.as_str() {
            "darwin" => ".dylib",
            "windows" => ".dll",
            _ => ".so",
        };
        if !name_of(&source.file).ends_with(suffix) {
            bail!(
                "{} is not named like a library for {} (…{suffix}): pull writes it under this name",
                source.file.display(),
                source.platform
            );
        }
        if i > 0 {
            check_machine(&source.file, &library, &source.platform)?;
        }
        let digest = connhost_oci::digest_of(&library);
        // FILE's description, from its inspection: a library for another
        // platform cannot be loaded here, and is described as FILE is.
        let described = config_of(&inspection, &source.file, source.platform.clone());
        let inspected = i == 0;
        if inspected {
            let seen = inspection.trust.as_ref().map(|t| t.digest.as_str());
            if seen.is_some_and(|seen| !seen.is_empty() && seen != digest) {
                bail!(
                    "{} changed while it was inspected; push it again",
                    source.file.display()
                );
            }
        }
        shown.push(PushedPlatform {
            platform: source.platform.to_string(),
            manifest: String::new(),
            file: described.file.clone(),
            library: digest,
            signed: signature.is_some(),
            inspected,
        });
        pushes.push(PlatformPush {
            config: described,
            library,
            signature,
        });
    }
    let registry = registry(&args.registry)?;
    let pushed = runtime()?.block_on(registry.push(&args.reference, pushes))?;
    for (row, (_, manifest)) in shown.iter_mut().zip(&pushed.manifests) {
        row.manifest = manifest.clone();
    }
    let report = PushReport {
        reference: args.reference.clone(),
        digest: pushed.digest.clone(),
        plugin: inspection.plugin.clone().unwrap_or_default(),
        version: inspection.version.clone().unwrap_or_default(),
        platforms: shown,
    };
    if args.json {
        terminal::print_json(&report)?;
    } else {
        let mut text = format!(
            "Pushed {} {} to {}\ndigest: {}\n",
            report.plugin, report.version, report.reference, report.digest
        );
        let rows: Vec<Vec<String>> = report
            .platforms
            .iter()
            .map(|p| {
                vec![
                    p.platform.clone(),
                    p.file.clone(),
                    if p.signed { "signed" } else { "unsigned" }.to_owned(),
                    p.manifest.clone(),
                ]
            })
            .collect();
        text.push_str(&super::output::table(
            &["PLATFORM", "FILE", "SIGNATURE", "MANIFEST"],
            &rows,
        ));
        terminal::print(&text)?;
    }
    Ok(super::success())
}

/// The ELF machine numbers (`e_machine`) of the architectures OCI names.
const ELF_MACHINES: &[(&str, u16, &str)] = &[
    ("amd64", 62, "x86-64"),
    ("arm64", 183, "AArch64"),
    ("386", 3, "x86"),
    ("arm", 40, "32-bit Arm"),
    ("riscv64", 243, "RISC-V"),
    ("ppc64le", 21, "64-bit PowerPC"),
    ("ppc64", 21, "64-bit PowerPC"),
    ("s390x", 22, "s390x"),
    ("loong64", 258, "LoongArch"),
];

/// Refuses a Linux library for another platform whose ELF header says it
/// is built for another CPU than `platform` names (it cannot be loaded
/// here to be sure). Reads the header only.
fn check_machine(file: &Path, bytes: &[u8], platform: &Platform) -> anyhow::Result<()> {
    if platform.os != "linux" {
        return Ok(());
    }
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF library, so it is not for {platform}",
            file.display()
        );
    }
    let field = [bytes[18], bytes[19]];
    let machine = if bytes[5] == 2 {
        u16::from_be_bytes(field)
    } else {
        u16::from_le_bytes(field)
    };
    let wanted = ELF_MACHINES
        .iter()
        .find(|(arch, _, _)| *arch == platform.architecture);
    match wanted {
        Some((_, number, _)) if *number == machine => Ok(()),
        Some(_) => {
            let built = ELF_MACHINES
                .iter()
                .find(|(_, number, _)| *number == machine)
                .map_or_else(
                    || format!("ELF machine {machine}"),
                    |(_, _, name)| (*name).to_owned(),
                );
            bail!(
                "{} is built for {built}, not for {platform}: check the --platform given for it",
                file.display()
            )
        }
        // An architecture this check does not know: trusted as given.
        None => Ok(()),
    }
}

/// What `pull --json` prints.
#[derive(Serialize)]
pub(crate) struct PullReport {
    pub(crate) reference: String,
    /// The digest the reference resolved to (the index's).
    pub(crate) digest: String,
    manifest: String,
    platform: String,
    plugin: String,
    version: String,
    pub(crate) file: PathBuf,
    /// The library's digest, as the lock file records it.
    pub(crate) library: String,
    signature: Option<connhost::SignatureInfo>,
    providers: Vec<String>,
    /// Whether the artifact carried a signature (checked or not).
    #[serde(skip)]
    signed: bool,
}

/// Why a pull wrote nothing.
#[derive(Debug)]
pub(crate) enum PullError {
    /// The registry's content was refused (a digest, a signature, the lock
    /// file, a library that does not load here), naming the reference,
    /// the digest and why.
    Refused(String),
    /// Anything else: the registry out of reach, the folder unwritable.
    Failed(anyhow::Error),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Refused(reason) => write!(f, "refused: {reason}"),
            PullError::Failed(error) => write!(f, "{error:#}"),
        }
    }
}

impl From<anyhow::Error> for PullError {
    fn from(error: anyhow::Error) -> Self {
        PullError::Failed(error)
    }
}

impl From<connhost_oci::Error> for PullError {
    fn from(error: connhost_oci::Error) -> Self {
        if refusal(&error) {
            PullError::Refused(error.to_string())
        } else {
            PullError::Failed(error.into())
        }
    }
}

/// `connhost pull REF`.
pub(crate) fn pull(config: &HostConfig, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let folder = config
        .plugins_dir
        .clone()
        .context("no plugins folder to pull into: give --plugins DIR")?;
    if !folder.is_dir() {
        bail!(
            "the plugins folder {} does not exist: create it, or give --plugins DIR",
            folder.display()
        );
    }
    let registry = registry(&args.registry)?;
    let runtime = runtime()?;
    let pulled = pull_into(
        &runtime,
        config,
        &registry,
        &args.reference,
        &folder,
        &|_| Ok(()),
    );
    drop(runtime);
    let report = match pulled {
        Ok(report) => report,
        Err(PullError::Refused(reason)) => return refused(&reason),
        Err(PullError::Failed(error)) => return Err(error),
    };
    if args.json {
        terminal::print_json(&report)?;
    } else {
        let signature = match (&report.signature, report.signed) {
            (Some(info), _) => format!("signed by key {}", info.key_id),
            (None, true) => "signed (not checked: no --trusted-keys)".to_owned(),
            (None, false) => "unsigned".to_owned(),
        };
        terminal::print(&format!(
            "Pulled {} {} ({}) from {}\ndigest: {}\nwrote {} ({}), {signature}\nproviders: {}\n",
            report.plugin,
            report.version,
            report.platform,
            report.reference,
            report.digest,
            report.file.display(),
            report.library,
            report.providers.join(", ")
        ))?;
    }
    Ok(super::success())
}

/// Pulls `reference` for this host's platform into `folder`, as `connhost
/// pull` does (and `serve --sync` after it): the selected manifest's
/// library name must be a library's and pass `accept`, the lock file
/// (`--locked`) and the trusted keys are checked before anything is
/// downloaded, every download against its digest, then the pair is
/// written to a private folder inside `folder`, checked there by the
/// host's own gate and a load in a sandboxed worker, and renamed into
/// `folder` (the signature first, then the library). Blocks on `runtime`
/// (the one `registry` has been used on: it keeps its connections): call
/// it outside any async runtime.
pub(crate) fn pull_into(
    runtime: &tokio::runtime::Runtime,
    config: &HostConfig,
    registry: &Registry,
    reference: &str,
    folder: &Path,
    accept: &dyn Fn(&str) -> Result<(), String>,
) -> Result<PullReport, PullError> {
    let platform = Platform::host();
    let selected = runtime.block_on(registry.select(reference, &platform))?;
    let file = selected.config.file.clone();
    // Only a library's name: the artifact names the file, and must not
    // name the lock file or anything else in the folder.
    if !file.ends_with(std::env::consts::DLL_SUFFIX) {
        return Err(PullError::Refused(format!(
            "{reference} ({}): the artifact names its library {file:?}, which is not a library's name (…{}); nothing was written",
            selected.digest,
            std::env::consts::DLL_SUFFIX
        )));
    }
    if let Err(reason) = accept(&file) {
        return Err(PullError::Refused(format!(
            "{reference} ({}): {reason}; nothing was written",
            selected.digest
        )));
    }
    // The lock file pins the library's content by the digest its layer is
    // named by: refused before anything is downloaded.
    if config.trust.locked {
        let path = config
            .trust
            .lock_path(Some(folder))
            .context("--locked without a lock file")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read the lock file {}", path.display()))?;
        let lock = LockFile::parse(&text, &path).map_err(anyhow::Error::from)?;
        if let Err(reason) = lock.admits(&path, &file, &selected.library.digest) {
            return Err(PullError::Refused(format!(
                "{reference} ({}): {reason}",
                selected.digest
            )));
        }
    }
    if config.trust.trusted_keys.is_some() && selected.signature.is_none() {
        return Err(PullError::Refused(format!(
            "{reference} ({}): the artifact for {} is not signed (its manifest {} has no signature layer), and with --trusted-keys only signed plugins are pulled; nothing was written",
            selected.digest, selected.platform, selected.manifest_digest
        )));
    }
    let pulled = runtime.block_on(registry.download(selected))?;
    let staging = Staging::new(folder)?;
    let staged = staging.write(&pulled)?;
    // The host's own gate on the staged pair: the signature against the
    // trusted keys, the lock file, and a load in a sandboxed worker.
    let inspection = connhost::inspect(&staged, config);
    let why = |reason: &str| {
        PullError::Refused(format!(
            "{reference} ({}): {file} was not written: {reason}",
            pulled.selected.digest
        ))
    };
    if !inspection.loadable {
        let reason = inspection
            .failure
            .as_ref()
            .map_or_else(|| "it does not load".to_owned(), |f| f.reason.clone());
        return Err(why(&reason));
    }
    let config_blob = &pulled.selected.config;
    if inspection.plugin.as_deref() != Some(config_blob.name.as_str())
        || inspection.version.as_deref() != Some(config_blob.version.as_str())
    {
        return Err(why(&format!(
            "the library says it is {} {}, but the artifact's config says {} {}",
            inspection.plugin.as_deref().unwrap_or("?"),
            inspection.version.as_deref().unwrap_or("?"),
            config_blob.name,
            config_blob.version
        )));
    }
    let target = staging.place(folder, &file, pulled.signature.is_some())?;
    Ok(PullReport {
        reference: reference.to_owned(),
        digest: pulled.selected.digest.clone(),
        manifest: pulled.selected.manifest_digest.clone(),
        platform: pulled.selected.platform.to_string(),
        plugin: config_blob.name.clone(),
        version: config_blob.version.clone(),
        file: target,
        library: pulled.selected.library.digest.clone(),
        signature: inspection.trust.as_ref().and_then(|t| t.signature.clone()),
        providers: inspection
            .providers
            .iter()
            .map(|p| p.provider_id.clone())
            .collect(),
        signed: pulled.signature.is_some(),
    })
}

/// Whether `error` refuses the registry's content (rather than failing to
/// reach it).
fn refusal(error: &connhost_oci::Error) -> bool {
    matches!(
        error,
        connhost_oci::Error::DigestMismatch { .. } | connhost_oci::Error::Refused { .. }
    )
}

/// How a staging folder's name starts; the process id that made it
/// follows, then `-`.
const STAGING_PREFIX: &str = ".connhost-pull-";

/// Removes the staging folders in `folder` left by processes that no
/// longer run (killed during a pull: a folder is otherwise removed when
/// its pull ends). Only where `/proc` tells which processes run.
pub(crate) fn remove_stale_staging(folder: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A private folder inside the plugins folder (same file system, so a
/// rename out of it is atomic), removed when dropped.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(folder: &Path) -> anyhow::Result<Self> {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = folder.join(format!(
            "{STAGING_PREFIX}{}-{nonce:08x}",
            std::process::id()
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder
            .create(&dir)
            .with_context(|| format!("could not make a folder in {}", folder.display()))?;
        Ok(Staging { dir })
    }

    /// Writes the library (and its signature beside it) into the staging
    /// folder under its final name; returns the library's path.
    fn write(&self, pulled: &Pulled) -> anyhow::Result<PathBuf> {
        let library = self.dir.join(&pulled.selected.config.file);
        write_synced(&library, &pulled.library)?;
        if let Some(signature) = &pulled.signature {
            write_synced(&signature_beside(&library), signature)?;
        }
        Ok(library)
    }

    /// Moves the staged pair into `folder`: the signature first (or an old
    /// signature away, when the new library has none), then the library.
    fn place(&self, folder: &Path, file: &str, signed: bool) -> anyhow::Result<PathBuf> {
        let target = folder.join(file);
        let signature = signature_beside(&target);
        if signed {
            let staged = signature_beside(&self.dir.join(file));
            std::fs::rename(&staged, &signature)
                .with_context(|| format!("could not write {}", signature.display()))?;
        } else {
            match std::fs::remove_file(&signature) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("could not remove the old signature {}", signature.display())
                    })
                }
            }
        }
        std::fs::rename(self.dir.join(file), &target)
            .with_context(|| format!("could not write {}", target.display()))?;
        // The renames themselves, on disk.
        if let Ok(dir) = File::open(folder) {
            let _ = dir.sync_all();
        }
        Ok(target)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a new file (mode 0644) and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o644);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", path.display()))
}
