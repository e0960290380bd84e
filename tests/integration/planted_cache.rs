//! Planted cache: the plugin cache folder is the host's alone. Another
//! local user (nobody, through `setpriv`, when the tests run as root) who
//! makes the cache folder first, makes it a link, or plants a file or a
//! link named as a copy of a signed, locked plugin never gets that file
//! loaded; nor does anyone who replaces a copy a kept cache folder
//! remembers: the host loads the bytes it checked.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::server::{get, Server};
use crate::support::{
    built_library, cache_folders_of, cached_copies, connhost, host_with, install,
    library_file_name, loaded_part, run, running_as_root,
};
use crate::trust::{keys_dir, Key};

/// The second user the attacks run as.
const NOBODY: &str = "65534";

/// Whether the tests can act as a second user (root, with `setpriv`).
/// Otherwise the attack is skipped with a note, except under CI, where a
/// skipped attack fails the test.
fn second_user(attack: &str) -> bool {
    let root = running_as_root();
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && setpriv {
        return true;
    }
    let missing = if root {
        "the setpriv tool (util-linux)"
    } else {
        "root"
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{attack}: acting as a second user needs {missing}; under CI the attack must run, not be skipped"
    );
    eprintln!("note: skipped: {attack}: acting as a second user needs {missing}");
    false
}

/// Runs `program args` as nobody; panics if it fails.
fn as_nobody<I: AsRef<OsStr>>(program: &str, args: impl IntoIterator<Item = I>) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            program,
        ])
        .args(args)
        .output()
        .expect("run setpriv");
    assert!(out.status.success(), "as nobody: {program}: {out:?}");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A folder every user may create entries in, and no one may rename or
/// remove another's: a temp dir of its own with `/tmp`'s mode (1777).
fn shared_tmp() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o1777);
    tmp
}

/// A plugins folder with the greeter 1.0.0 as `libgreeter.so`, signed by a
/// trusted key and locked; and the name of its copy in a cache folder.
struct SignedGreeter {
    dir: crate::support::PluginDir,
    keys: tempfile::TempDir,
    file: PathBuf,
    /// `<64 hex digits>.so`: a name shaped as the host names its copies.
    copy_name: String,
}

impl SignedGreeter {
    fn new() -> Self {
        let key = Key::new();
        let keys = keys_dir(&[(&key, "release")]);
        let dir = crate::support::PluginDir::empty();
        let file = install(
            dir.path(),
            "fixture-greeter-v1",
            &library_file_name("greeter"),
        );
        key.sign(&file, "greeter 1.0.0, release build");
        let out = run(connhost(dir.path())
            .arg("--trusted-keys")
            .arg(keys.path())
            .arg("lock"));
        assert_eq!(out.code, 0, "{}", out.stderr);
        // A name shaped as the host names copies: `<64 hex>.<so>`.
        let copy_name = format!("{}.{}", "c0".repeat(32), std::env::consts::DLL_EXTENSION);
        Self {
            dir,
            keys,
            file,
            copy_name,
        }
    }

    /// `--trusted-keys KEYS --locked`.
    fn trust_args(&self, command: &mut Command) {
        command
            .arg("--trusted-keys")
            .arg(self.keys.path())
            .arg("--locked");
    }

    /// The same, for the library.
    fn trust_config(&self, config: &mut connhost::HostConfig) {
        config.trust.trusted_keys = Some(self.keys.path().to_owned());
        config.trust.locked = true;
    }
}

/// The other greeter (2.0.0): the code an attacker wants loaded.
fn other_code() -> Vec<u8> {
    std::fs::read(built_library("fixture-greeter-v2")).unwrap()
}

/// The greeter as a report lists it (`/v1/plugins`, `plugins --json`).
fn greeter_in(report: &Value) -> Value {
    report["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"].as_str().unwrap().ends_with("libgreeter.so"))
        .unwrap_or_else(|| panic!("the greeter is loaded: {report:#}"))
        .clone()
}

/// Asserts that `greeter` (a report's entry) is the signed, locked 1.0.0.
fn is_the_signed_greeter(greeter: &Value) {
    assert_eq!(greeter["plugin"], "fixture-greeter-v1", "{greeter:#}");
    assert_eq!(greeter["version"], "1.0.0", "{greeter:#}");
    assert_eq!(greeter["trust"]["locked"], true, "{greeter:#}");
    assert_eq!(
        greeter["trust"]["signature"]["trusted_comment"],
        "greeter 1.0.0, release build"
    );
}

/// Starts `connhost serve --cache-dir CACHE` with the greeter's trust
/// flags, expecting a refusal: the exit code and the error.
fn refused_start(greeter: &SignedGreeter, cache: &Path, more: &[&str]) -> (Option<i32>, String) {
    match Server::try_start(greeter.dir.path(), |c| {
        greeter.trust_args(c);
        c.arg("--cache-dir").arg(cache).args(more);
    }) {
        Ok(server) => panic!("served over {}:\n{}", cache.display(), server.log()),
        Err(refusal) => refusal,
    }
}

#[test]
fn a_cache_dir_another_user_made_is_refused_and_nothing_is_loaded_from_it() {
    if !second_user("a cache folder made by another user") {
        return;
    }
    let greeter = SignedGreeter::new();
    let shared = shared_tmp();
    // The attacker makes the folder first, with the other greeter inside
    // under a name shaped as a copy's.
    let cache = shared.path().join("cache");
    let evil = shared.path().join("evil.so");
    std::fs::write(&evil, other_code()).unwrap();
    chmod(&evil, 0o644);
    as_nobody(
        "mkdir",
        [OsStr::new("-m"), OsStr::new("0700"), cache.as_os_str()],
    );
    as_nobody(
        "cp",
        [evil.as_os_str(), cache.join(&greeter.copy_name).as_os_str()],
    );

    let (code, stderr) = refused_start(&greeter, &cache, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let shown = cache.display();
    assert!(
        stderr.contains(&format!(
            "the plugin cache folder {shown} is owned by uid {NOBODY}, not by this host's user (uid 0)"
        )) && stderr.contains(&format!("run chown 0 {shown}")),
        "{stderr}"
    );

    // The library: the start check says the same, and a catalog built
    // anyway loads nothing and reports the cache folder.
    let mut config = connhost::HostConfig::with_plugins_dir(greeter.dir.path());
    greeter.trust_config(&mut config);
    config.cache_dir = Some(cache.clone());
    let refusal = connhost::check_config(&config).unwrap_err();
    assert_eq!(refusal.path, cache);
    assert!(
        refusal
            .reason
            .contains(&format!("is owned by uid {NOBODY}")),
        "{refusal}"
    );
    let host = host_with(&greeter.dir, |c| {
        greeter.trust_config(c);
        c.cache_dir = Some(cache.clone());
    });
    let report = host.load_report();
    assert!(report.loaded.is_empty(), "{report:#?}");
    let failure = report
        .failed
        .iter()
        .find(|f| f.path == cache)
        .unwrap_or_else(|| panic!("the cache folder is reported: {report:#?}"));
    assert_eq!(failure.kind, connhost::FailureKind::CacheFailed);
    assert!(
        failure
            .reason
            .contains(&format!("is owned by uid {NOBODY}"))
            && failure
                .reason
                .contains("No plugin is loaded until it is fixed"),
        "{}",
        failure.reason
    );
    assert_eq!(
        std::fs::read(cache.join(&greeter.copy_name)).unwrap(),
        other_code(),
        "the host wrote nothing into it"
    );
}

#[test]
fn a_cache_dir_others_may_write_or_that_is_a_link_is_refused() {
    let greeter = SignedGreeter::new();
    let shared = shared_tmp();

    // Writable by every user.
    let open = shared.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let (code, stderr) = refused_start(&greeter, &open, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the plugin cache folder {} is writable by its group and by every user (mode 0777)",
            open.display()
        )) && stderr.contains(&format!("run chmod go-w {}", open.display())),
        "{stderr}"
    );

    // A link to a folder the attacker holds (made as nobody when the
    // tests can): refused, even with --insecure-permissions.
    let target = shared.path().join("attacker");
    let link = shared.path().join("link");
    if running_as_root() && second_user("a cache folder that is a link") {
        as_nobody("mkdir", [&target]);
        as_nobody(
            "ln",
            [OsStr::new("-s"), target.as_os_str(), link.as_os_str()],
        );
    } else {
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
    }
    for more in [&[][..], &["--insecure-permissions"][..]] {
        let (code, stderr) = refused_start(&greeter, &link, more);
        assert_eq!(code, Some(2), "{more:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the plugin cache folder {} is a symbolic link (to {})",
                link.display(),
                target.display()
            )) && stderr.contains("name the folder itself"),
            "{more:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn a_remembered_copy_replaced_by_a_file_or_link_is_never_loaded_and_the_checked_bytes_are() {
    let greeter = SignedGreeter::new();
    let checked = std::fs::read(&greeter.file).unwrap();
    let elsewhere = shared_tmp();
    let evil = elsewhere.path().join("evil.so");
    std::fs::write(&evil, other_code()).unwrap();
    for planted in ["file", "link"] {
        // A kept cache folder, remembering the signed greeter's copy.
        let cache = tempfile::tempdir().unwrap();
        let start = || {
            let mut command = connhost(greeter.dir.path());
            greeter.trust_args(&mut command);
            command.arg("--cache-dir").arg(cache.path());
            let out = run(command.args(["plugins", "--json"]));
            assert_eq!(out.code, 0, "{}", out.stderr);
            out.json()
        };
        is_the_signed_greeter(&greeter_in(&start()));
        let copies = cached_copies(cache.path());
        assert_eq!(copies.len(), 1, "{copies:?}");
        let name = &copies[0];
        // The other greeter in its place, under its name: read-only and
        // with its old modification time, as the host left it.
        let modified = std::fs::metadata(name).unwrap().modified().unwrap();
        std::fs::remove_file(name).unwrap();
        match planted {
            "file" => {
                std::fs::write(name, other_code()).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(name)
                    .unwrap()
                    .set_modified(modified)
                    .unwrap();
                chmod(name, 0o444);
            }
            _ => std::os::unix::fs::symlink(&evil, name).unwrap(),
        }
        let server = Server::start(greeter.dir.path(), |c| {
            greeter.trust_args(c);
            c.arg("--cache-dir").arg(cache.path());
        });
        is_the_signed_greeter(&greeter_in(&get(&server, "/v1/plugins")));
        let providers = get(&server, "/v1/providers");
        let served = providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider_id"] == "greeter")
            .unwrap_or_else(|| panic!("{providers:#}"));
        assert_eq!(
            served["origin"]["version"], "1.0.0",
            "{planted}: {served:#}"
        );
        // A new copy of the checked bytes was made; the planted one is no
        // longer remembered, and is gone.
        let now = cached_copies(cache.path());
        assert_eq!(now.len(), 1, "{planted}: {now:?}");
        assert_ne!(&now[0], name, "{planted}");
        assert_eq!(
            std::fs::read(&now[0]).unwrap(),
            loaded_part(&checked),
            "{planted}"
        );
        assert!(
            std::fs::symlink_metadata(name).is_err(),
            "{planted}: the planted {planted} is removed"
        );
        drop(server);
    }
    assert_eq!(
        std::fs::read(&evil).unwrap(),
        other_code(),
        "nothing was written through the link"
    );
}

#[test]
fn the_default_cache_folder_is_new_private_and_unguessable() {
    let dir = crate::support::PluginDir::with(&["mai"]);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), |c| {
        c.env("TMPDIR", tmp.path());
    });
    let prefix = format!("connhost-{}-", server.pid());
    let folders = cache_folders_of(tmp.path(), server.pid());
    assert_eq!(folders.len(), 1, "{folders:?}");
    let folder = &folders[0];
    let name = folder.file_name().unwrap().to_str().unwrap();
    let random = &name[prefix.len()..];
    assert!(
        random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "not connhost-<pid>-<small number>: {name}"
    );
    let metadata = std::fs::symlink_metadata(folder).unwrap();
    assert!(metadata.is_dir());
    assert_eq!(metadata.mode() & 0o7777, 0o700, "{name}");
    assert_eq!(metadata.uid(), rustix::process::geteuid().as_raw());
    let copies: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| std::fs::symlink_metadata(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(copies.len(), 1, "mai's copy");
    assert!(copies[0].is_file());
    assert_eq!(copies[0].mode() & 0o7777, 0o444);
}

#[test]
fn folders_another_user_made_under_the_old_default_names_are_never_used() {
    if !second_user("a default cache folder made first by another user") {
        return;
    }
    let greeter = SignedGreeter::new();
    let tmp = shared_tmp();
    let evil = tmp.path().join("evil.so");
    std::fs::write(&evil, other_code()).unwrap();
    chmod(&evil, 0o644);
    // Finding 1, replayed: before the host starts, nobody makes the
    // folders its pid would have had (`connhost-<pid>-0`, `-1`, and the
    // older `connhost-<pid>`), each holding the other greeter under a
    // name shaped as a copy's. The shell execs the host, so its pid is
    // the host's.
    let script = r#"
        export PID=$$
        setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '
            for d in "$TMPDIR/connhost-$PID-0" "$TMPDIR/connhost-$PID-1" "$TMPDIR/connhost-$PID"; do
                mkdir -m 0777 "$d" && cp "$EVIL" "$d/$NAME" || exit 1
            done' || exit 99
        exec "$@"
    "#;
    let mut host = connhost(greeter.dir.path());
    greeter.trust_args(&mut host);
    host.args(["plugins", "--json"]);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(host.get_program())
        .args(host.get_args());
    for (key, value) in host.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .env("TMPDIR", tmp.path())
        .env("EVIL", &evil)
        .env("NAME", &greeter.copy_name);
    let out = run(&mut command);
    assert_eq!(out.code, 0, "{}", out.stderr);
    is_the_signed_greeter(&greeter_in(&out.json()));

    // The planted folders are left as they were: never used, never swept.
    let planted: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        planted.len(),
        3,
        "the host's own folder is gone: {planted:?}"
    );
    for folder in planted {
        assert_eq!(std::fs::metadata(&folder).unwrap().uid(), 65534);
        assert_eq!(
            std::fs::read(folder.join(&greeter.copy_name)).unwrap(),
            other_code()
        );
    }
}
