// The plugin API as a closed-source vendor gets it: `cargo package` makes the crate file, the README's own example plugin is built against its extracted contents outside the workspace, and the real `connhost` loads and runs the library.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use connhost_plugin_api::PLUGIN_API_VERSION;

use crate::support::vendor::Vendor;
use crate::support::*;

/// The longest `cargo package` may take (it only collects and compresses
/// the crate's files).
const PACKAGE_LIMIT: Duration = Duration::from_secs(300);
/// The longest building or testing the plugin may take: the first build
/// compiles every dependency, on a busy 2-core machine.
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// The longest `tar` or one `connhost` command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The README example's plugin name (its crate name) and provider id.
const PLUGIN: &str = "acme";

/// The metadata a registry shows, and a vendor reads, for the crate.
const METADATA: &[&str] = &[
    "description",
    "license",
    "repository",
    "readme",
    "documentation",
];

#[test]
fn the_readme_plugin_built_against_the_packaged_crate_alone_is_served() {
    let work = VendorDir::new();
    let api = extract(&package_plugin_api(), work.path());
    assert_publishable(&api);
    let plugin = write_readme_example(&api, work.path());
    let library = build_and_test(&plugin);

    let plugins = PluginDir::empty();
    let dropped = plugins.file(&library_file_name(PLUGIN));
    std::fs::copy(&library, &dropped).expect("copy the built plugin");

    let inspect = run_bounded(
        connhost(plugins.path()).arg("inspect").arg(&dropped),
        "connhost inspect",
        COMMAND_LIMIT,
    );
    assert_eq!(
        inspect.code, 0,
        "this connhost cannot load the plugin:\n{}{}",
        inspect.stdout, inspect.stderr
    );

    let listed = run_bounded(
        connhost(plugins.path()).args(["providers", "--json"]),
        "connhost providers",
        COMMAND_LIMIT,
    );
    let acme = listed
        .json()
        .as_array()
        .expect("an array of providers")
        .iter()
        .find(|p| p["provider_id"] == PLUGIN)
        .unwrap_or_else(|| panic!("{PLUGIN} is not served:\n{}", listed.stdout))
        .clone();
    assert_eq!(acme["origin"]["kind"], "plugin", "{acme}");
    assert_eq!(acme["origin"]["plugin"], PLUGIN, "{acme}");
    assert_eq!(acme["origin"]["version"], "1.0.0", "{acme}");
    assert_eq!(acme["display_name"], "Acme", "{acme}");

    // The README's `validate` asks the vendor's API through the host, at the
    // plugin's `base_url` setting: a loopback server answers by bearer token.
    let vendor = Vendor::start();
    let validate = |key: &str| {
        run_bounded(
            connhost(plugins.path())
                .arg("--setting")
                .arg(format!("{PLUGIN}.base_url={}", vendor.url()))
                .env("CONNHOST_CONFIG", vendor.grants_file(&[PLUGIN]))
                .args(["validate", PLUGIN, "--json", "--field"])
                .arg(format!("api_key={key}")),
            "connhost validate",
            COMMAND_LIMIT,
        )
    };
    let valid = validate("good-key");
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    assert_eq!(valid.json()["valid"], true, "{}", valid.stdout);

    let rejected = validate("wrong-key");
    assert_eq!(rejected.code, 1, "{}{}", rejected.stdout, rejected.stderr);
    let verdict = rejected.json();
    assert_eq!(verdict["outcome"], "rejected", "{verdict}");
    assert_eq!(verdict["error"], "Acme refused the key.", "{verdict}");

    let limited = validate("rate-limited");
    assert_eq!(limited.code, 3, "{}{}", limited.stdout, limited.stderr);
    let verdict = limited.json();
    assert_eq!(verdict["outcome"], "inconclusive", "{verdict}");
    assert_eq!(verdict["error"], "Acme answered 429.", "{verdict}");
    assert_eq!(verdict["retryable"], true, "{verdict}");

    assert_eq!(vendor.paths(), ["/me", "/me", "/me"]);
}

/// A folder outside the workspace for the extracted crate and the vendor's
/// project. Its name is fixed per target dir, so the plugin's dependencies
/// keep their identity (a path dependency is known by its path) and a rerun
/// rebuilds only the two path crates; it is emptied before and removed after.
struct VendorDir(PathBuf);

impl VendorDir {
    fn new() -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        target_dir().hash(&mut hasher);
        let dir = std::env::temp_dir().join(format!("connhost-vendor-{:016x}", hasher.finish()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("empty the vendor folder of an earlier run");
        }
        std::fs::create_dir_all(&dir).expect("create the vendor folder");
        assert!(
            !dir.starts_with(workspace_root()),
            "the temp dir {} is inside the workspace: the plugin would not be built as a vendor builds it",
            dir.display()
        );
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for VendorDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cargo package -p connhost-plugin-api` into a target dir of its own:
/// the `.crate` file a registry would serve. Without verification (building
/// the plugin below compiles the packaged crate anyway); dirty files
/// allowed, so the working tree is what is tested.
fn package_plugin_api() -> PathBuf {
    let target = target_dir().join("packaged-api");
    let packaged = run_bounded(
        Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args(["package", "--package", "connhost-plugin-api"])
            .args(["--no-verify", "--allow-dirty", "--offline", "--target-dir"])
            .arg(&target),
        "cargo package -p connhost-plugin-api",
        PACKAGE_LIMIT,
    );
    assert_eq!(
        packaged.code, 0,
        "cargo package -p connhost-plugin-api failed:\n{}",
        packaged.stderr
    );
    target
        .join("package")
        .join(format!("connhost-plugin-api-{PLUGIN_API_VERSION}.crate"))
}

/// Unpacks a `.crate` file (a gzipped tar) into `into`; returns the
/// crate's folder.
fn extract(crate_file: &Path, into: &Path) -> PathBuf {
    let untar = run_bounded(
        // `-m`: the files get the time of extraction, not the fixed 2006
        // date `cargo package` writes, so cargo sees a changed plugin API
        // as changed and never reuses a build of an older package.
        Command::new("tar")
            .arg("-m")
            .arg("-xzf")
            .arg(crate_file)
            .arg("-C")
            .arg(into),
        "tar (extracting the packaged crate)",
        COMMAND_LIMIT,
    );
    assert_eq!(untar.code, 0, "tar failed:\n{}", untar.stderr);
    let dir = into.join(format!("connhost-plugin-api-{PLUGIN_API_VERSION}"));
    assert!(dir.join("src/lib.rs").is_file(), "{}", dir.display());
    dir
}

/// The packaged manifest names what a registry page shows, and the README
/// it names is in the package.
fn assert_publishable(api: &Path) {
    let manifest = read(&api.join("Cargo.toml"));
    for key in METADATA {
        let value = package_field(&manifest, key)
            .unwrap_or_else(|| panic!("the packaged Cargo.toml has no `{key}`:\n{manifest}"));
        assert!(!value.is_empty(), "`{key}` is empty");
    }
    assert_eq!(
        package_field(&manifest, "license").unwrap(),
        "MIT OR Apache-2.0"
    );
    assert_ne!(
        package_field(&manifest, "publish").as_deref(),
        Some("false"),
        "the crate is not publishable"
    );
    let readme = package_field(&manifest, "readme").unwrap();
    assert!(
        api.join(&readme).is_file(),
        "the package does not contain its readme {readme}"
    );
}

/// Writes the README's example (its `toml` and `rust` blocks) as a vendor's
/// project next to the extracted crate, the registry dependency pointed at
/// that crate; returns the project's folder.
fn write_readme_example(api: &Path, work: &Path) -> PathBuf {
    let readme = read(&api.join("README.md"));
    let manifest = fenced_block(&readme, "toml");
    let source = fenced_block(&readme, "rust");
    assert_eq!(package_field(&manifest, "name").as_deref(), Some(PLUGIN));

    // A vendor depends on the current `0.y` (see the README's version rule).
    let requirement = PLUGIN_API_VERSION
        .rsplit_once('.')
        .expect("a version has a patch")
        .0;
    let dependency = format!("connhost-plugin-api = \"{requirement}\"");
    assert!(
        manifest.lines().any(|line| line.trim() == dependency),
        "the README's Cargo.toml does not depend on `{dependency}`:\n{manifest}"
    );
    let api_name = api.file_name().unwrap().to_string_lossy();
    let manifest = manifest.replace(
        &dependency,
        &format!("connhost-plugin-api = {{ path = \"../{api_name}\" }}"),
    ) + "\n# A workspace of its own, whatever folder holds it.\n[workspace]\n";

    let project = work.join(PLUGIN);
    std::fs::create_dir_all(project.join("src")).expect("create the plugin project");
    std::fs::write(project.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::write(project.join("src/lib.rs"), source).expect("write src/lib.rs");
    project
}

/// `cargo build`, then `cargo test` (the README's unit test), in the
/// vendor's project, with its own lockfile; returns the built library.
///
/// The lockfile starts as a copy of the workspace's, and the build shares
/// the tests' target dir: the plugin's registry dependencies are then the
/// very builds the workspace made (a cargo build is keyed by package,
/// version and features, not by workspace), so only the packaged crate and
/// the plugin are compiled, instead of minutes of dependencies on a fresh
/// machine. The project itself is outside the workspace all the same.
fn build_and_test(project: &Path) -> PathBuf {
    let target = target_dir();
    std::fs::copy(
        workspace_root().join("Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .expect("start the plugin's lockfile from the workspace's");
    let release = profile_dir().file_name().is_some_and(|p| p == "release");
    for step in ["build", "test"] {
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(project)
            .args([step, "--offline", "--target-dir"])
            .arg(&target);
        if release {
            command.arg("--release");
        }
        let what = format!("cargo {step} of the README's plugin");
        let done = run_bounded(&mut command, &what, BUILD_LIMIT);
        assert_eq!(
            done.code, 0,
            "{what} failed:\n{}{}",
            done.stdout, done.stderr
        );
        if step == "test" {
            assert!(
                done.stdout
                    .contains("test tests::without_a_host_the_check_is_inconclusive ... ok"),
                "{}",
                done.stdout
            );
        }
    }
    target
        .join(if release { "release" } else { "debug" })
        .join(library_file_name(PLUGIN))
}

/// The body of the first fenced block in `markdown` tagged `language`.
fn fenced_block(markdown: &str, language: &str) -> String {
    let opening = format!("```{language}\n");
    let start = markdown
        .find(&opening)
        .unwrap_or_else(|| panic!("the README has no {language} block"))
        + opening.len();
    let length = markdown[start..].find("```").expect("the block is closed");
    markdown[start..start + length].to_owned()
}

/// The string value of `key` in the `[package]` table of a manifest written
/// one `key = "value"` per line, as cargo writes a packaged one.
fn package_field(manifest: &str, key: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some((name, value)) = line.split_once('=').filter(|_| in_package) {
            if name.trim() == key {
                let value = value.split('#').next().unwrap_or_default().trim();
                return Some(value.trim_matches('"').to_owned());
            }
        }
    }
    None
}

/// A file's text (invalid UTF-8 replaced).
fn read(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs a command to completion, its output written to files (so a chatty
/// cargo can never stall on a full pipe); if it has not finished within
/// `limit`, it and every process it started are killed and the test fails.
fn run_bounded(command: &mut Command, what: &str, limit: Duration) -> Run {
    let logs = tempfile::tempdir().expect("temp dir for the output");
    let (stdout, stderr) = (logs.path().join("stdout"), logs.path().join("stderr"));
    command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("create stdout file"))
        .stderr(File::create(&stderr).expect("create stderr file"));
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(command, 0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let Some(status) = exit_within(&mut child, limit) else {
        kill_tree(&mut child);
        panic!(
            "{what} did not finish within {limit:?} and was killed; its output so far:\n{}{}",
            read(&stdout),
            read(&stderr)
        );
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: read(&stdout),
        stderr: read(&stderr),
    }
}

/// Kills a child started in a process group of its own, with everything it
/// started (cargo's rustc processes), and reaps it.
fn kill_tree(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        use rustix::process::{kill_process_group, Pid, Signal};
        let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
