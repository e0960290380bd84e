//! Trust: only files the operator approved load. Real files, real keys
//! (made with the `minisign` crate, and with the `minisign` tool where the
//! test says so), the real binary: permissions (group-writable files and
//! folders, another owner, `--insecure-permissions`), signatures (each way
//! a file can fail to be signed by a trusted key), the lock file
//! (`connhost lock`, `--locked`, `lock --add`), and hot reload under each.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::server::{client, get, Server};
use crate::support::{
    connhost, install, library_file_name, run, running_as_root, wait_until, PluginDir,
};

/// A minisign key pair made with the `minisign` crate.
pub(crate) struct Key {
    pair: minisign::KeyPair,
    /// Its key id as the minisign tool prints it: upper-case hex without
    /// leading zeros (the minisign crate pads it to 16 digits).
    pub(crate) id: String,
}

impl Key {
    pub(crate) fn new() -> Self {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
        let id = format!(
            "{:X}",
            u64::from_le_bytes(pair.pk.keynum().try_into().expect("8 bytes"))
        );
        Key { pair, id }
    }

    /// Writes the public key (the two lines `minisign -G` writes) as
    /// `dir/NAME.pub`.
    fn trust_in(&self, dir: &Path, name: &str) {
        let text = self.pair.pk.to_box().expect("public key box").to_string();
        std::fs::write(dir.join(format!("{name}.pub")), text).expect("write key");
    }

    /// The detached signature of `file`'s current content.
    fn signature(&self, file: &Path, comment: &str) -> String {
        let data = std::fs::File::open(file).expect("open file to sign");
        minisign::sign(
            Some(&self.pair.pk),
            &self.pair.sk,
            data,
            Some(comment),
            None,
        )
        .expect("sign")
        .to_string()
    }

    /// Signs `file` into `file.minisig` (written whole, then renamed).
    pub(crate) fn sign(&self, file: &Path, comment: &str) {
        let signature = self.signature(file, comment);
        write_atomically(&signature_of(file), signature.as_bytes());
    }
}

fn signature_of(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.minisig", file.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp-write");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A folder of trusted keys (mode 0700 like any temp dir).
pub(crate) fn keys_dir(keys: &[(&Key, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (key, name) in keys {
        key.trust_in(dir.path(), name);
    }
    dir
}

/// `connhost [ARGS] plugins --json` over `dir`.
fn plugins(dir: &Path, args: &[&str]) -> Value {
    let out = run(connhost(dir).args(args).args(["plugins", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

fn loaded<'a>(report: &'a Value, file: &str) -> Option<&'a Value> {
    report["loaded"]
        .as_array()?
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|p| p.ends_with(file)))
}

fn failed<'a>(report: &'a Value, file: &str) -> Option<&'a Value> {
    report["failed"]
        .as_array()?
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|p| p.ends_with(file)))
}

/// The failure of `file`: its kind and reason.
fn refusal(report: &Value, file: &str) -> (String, String) {
    let failure = failed(report, file).unwrap_or_else(|| panic!("{file} refused: {report:#}"));
    (
        failure["kind"].as_str().unwrap().to_owned(),
        failure["reason"].as_str().unwrap().to_owned(),
    )
}

fn names(report: &Value) -> Vec<String> {
    report["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plugin"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn group_writable_files_and_folders_are_refused_and_the_rest_loads() {
    let dir = PluginDir::with(&["daytona", "mai"]);
    let mai = dir.file(&library_file_name("mai"));
    chmod(&mai, 0o664);
    let report = plugins(dir.path(), &[]);
    assert_eq!(names(&report), ["daytona"], "{report:#}");
    let (kind, reason) = refusal(&report, &library_file_name("mai"));
    assert_eq!(kind, "insecure_permissions");
    assert!(
        reason.contains(&format!(
            "{} is writable by its group (mode 0664)",
            mai.display()
        )),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("run chmod g-w {}", mai.display())),
        "{reason}"
    );

    // The folder itself: nothing loads from it, and it says why.
    chmod(&mai, 0o644);
    chmod(dir.path(), 0o775);
    let report = plugins(dir.path(), &[]);
    assert!(names(&report).is_empty(), "{report:#}");
    let (kind, reason) = refusal(&report, &dir.path().display().to_string());
    assert_eq!(kind, "folder_unreadable");
    assert!(
        reason.contains(&format!(
            "the plugins folder {} is writable by its group (mode 0775)",
            dir.path().display()
        )),
        "{reason}"
    );

    // --insecure-permissions loads both, and warns about what it skipped.
    chmod(&mai, 0o666);
    let out = run(connhost(dir.path()).env("CONNHOST_LOG", "warn").args([
        "--insecure-permissions",
        "plugins",
        "--json",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(names(&out.json()), ["daytona", "mai"]);
    assert!(
        out.stderr.contains("--insecure-permissions")
            && out.stderr.contains(&dir.path().display().to_string())
            && out.stderr.contains(&mai.display().to_string()),
        "{}",
        out.stderr
    );
    // The variable and the config file key say the same.
    let out = run(connhost(dir.path())
        .env("CONNHOST_INSECURE_PERMISSIONS", "true")
        .args(["plugins", "--json"]));
    assert_eq!(names(&out.json()), ["daytona", "mai"]);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("connhost.toml");
    std::fs::write(&file, "insecure_permissions = true\n").unwrap();
    let out = run(connhost(dir.path())
        .arg("--config")
        .arg(&file)
        .args(["plugins", "--json"]));
    assert_eq!(names(&out.json()), ["daytona", "mai"]);
    chmod(dir.path(), 0o700);
}

#[test]
fn a_file_owned_by_another_user_is_refused_even_through_a_link() {
    if !running_as_root() {
        eprintln!("note: skipped: changing a file's owner needs root");
        return;
    }
    let dir = PluginDir::with(&["daytona"]);
    // The file outside the folder, linked in: the target is what is judged.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join(library_file_name("mai"));
    std::fs::copy(crate::support::built_library("mai"), &target).unwrap();
    std::os::unix::fs::chown(&target, Some(65534), None).unwrap();
    let link = dir.file(&library_file_name("mai"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let report = plugins(dir.path(), &[]);
    assert_eq!(names(&report), ["daytona"], "{report:#}");
    let (kind, reason) = refusal(&report, &library_file_name("mai"));
    assert_eq!(kind, "insecure_permissions");
    assert!(
        reason.contains("is owned by uid 65534, not by this host's user (uid 0) or root"),
        "{reason}"
    );
    let report = plugins(dir.path(), &["--insecure-permissions"]);
    assert_eq!(names(&report), ["daytona", "mai"], "{report:#}");
}

#[test]
fn only_files_signed_by_a_trusted_key_load_and_each_refusal_says_why() {
    let (trusted, stranger) = (Key::new(), Key::new());
    let keys = keys_dir(&[(&trusted, "release")]);
    let dir = PluginDir::with(&[
        "daytona",
        "mai",
        "bedrock",
        "github",
        "fixture-greeter-v1",
        "fixture-greeter-v2",
    ]);
    let file = |name: &str| dir.file(&library_file_name(name));
    trusted.sign(&file("daytona"), "daytona 0.1.0, built by CI");
    // Tampered: one byte flipped after signing (past the headers).
    trusted.sign(&file("bedrock"), "bedrock");
    let mut bytes = std::fs::read(file("bedrock")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(file("bedrock"), bytes).unwrap();
    // Signed by a key that is not trusted.
    stranger.sign(&file("github"), "github");
    // Another file's signature.
    std::fs::copy(
        signature_of(&file("daytona")),
        signature_of(&file("fixture-greeter-v1")),
    )
    .unwrap();
    // Not a signature at all.
    std::fs::write(
        signature_of(&file("fixture-greeter-v2")),
        "untrusted comment: x\nnot base64\n",
    )
    .unwrap();

    let keys_arg = keys.path().to_str().unwrap();
    let report = plugins(dir.path(), &["--trusted-keys", keys_arg]);
    assert_eq!(names(&report), ["daytona"], "{report:#}");
    let daytona = loaded(&report, &library_file_name("daytona")).unwrap();
    assert_eq!(daytona["trust"]["signature"]["key_id"], trusted.id.as_str());
    assert_eq!(
        daytona["trust"]["signature"]["trusted_comment"],
        "daytona 0.1.0, built by CI"
    );
    assert!(daytona["trust"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    let (kind, reason) = refusal(&report, &library_file_name("mai"));
    assert_eq!(kind, "unsigned");
    assert!(
        reason.contains("not signed: there is no libmai.so.minisig"),
        "{reason}"
    );
    assert!(reason.contains(&trusted.id), "{reason}");

    let (kind, reason) = refusal(&report, &library_file_name("bedrock"));
    assert_eq!(kind, "bad_signature");
    assert!(
        reason.contains("does not match the file's content"),
        "{reason}"
    );

    let (kind, reason) = refusal(&report, &library_file_name("github"));
    assert_eq!(kind, "untrusted_key");
    assert!(
        reason.contains(&format!(
            "signed by key {}, which is not a trusted key",
            stranger.id
        )) && reason.contains(&format!("{} (release.pub)", trusted.id)),
        "{reason}"
    );

    let (kind, reason) = refusal(&report, &library_file_name("fixture-greeter-v1"));
    assert_eq!(kind, "bad_signature");
    assert!(
        reason.contains("the signature is another file's")
            && reason.contains("daytona 0.1.0, built by CI"),
        "{reason}"
    );

    let (kind, reason) = refusal(&report, &library_file_name("fixture-greeter-v2"));
    assert_eq!(kind, "bad_signature");
    assert!(reason.contains("is not a minisign signature"), "{reason}");

    // The text output shows the signer compactly.
    let out = run(connhost(dir.path()).args(["--trusted-keys", keys_arg, "plugins"]));
    assert!(
        out.stdout
            .contains(&format!("daytona: signed by {}", trusted.id)),
        "{}",
        out.stdout
    );
}

#[test]
fn a_key_folder_that_cannot_be_used_stops_the_start_naming_the_file() {
    let dir = PluginDir::with(&["daytona"]);
    let keys = tempfile::tempdir().unwrap();
    let bad = keys.path().join("broken.pub");
    std::fs::write(&bad, "untrusted comment: minisign public key\nnot a key\n").unwrap();
    let out = run(connhost(dir.path())
        .arg("--trusted-keys")
        .arg(keys.path())
        .arg("providers"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("{} is not a minisign public key", bad.display())),
        "{}",
        out.stderr
    );
    let missing = keys.path().join("nowhere");
    let out = run(connhost(dir.path())
        .arg("--trusted-keys")
        .arg(&missing)
        .arg("plugins"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "{}",
        out.stderr
    );
}

/// The real `minisign` tool, or `None` (with a note) when it is absent
/// outside CI; in CI its absence fails the test (`cargo xtask test`
/// installs it).
fn minisign_tool() -> Option<&'static str> {
    let present = Command::new("minisign")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Some("minisign");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the minisign tool is missing: `cargo xtask test` installs it (apt-get install -y minisign)"
    );
    eprintln!("note: skipped: the minisign tool is not installed (apt-get install -y minisign)");
    None
}

#[test]
fn files_signed_with_the_minisign_tool_load_with_their_key_id_and_comment() {
    let Some(minisign) = minisign_tool() else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (public, secret) = (keys.path().join("ci.pub"), secrets.path().join("ci.sec"));
    let id = tool_key(minisign, &public, &secret);
    let dir = PluginDir::with(&["daytona", "mai"]);
    tool_sign(
        minisign,
        &dir.file(&library_file_name("daytona")),
        &secret,
        "daytona signed by the minisign tool",
    );
    let report = plugins(
        dir.path(),
        &["--trusted-keys", keys.path().to_str().unwrap()],
    );
    assert_eq!(names(&report), ["daytona"], "{report:#}");
    let signature = &loaded(&report, "libdaytona.so").unwrap()["trust"]["signature"];
    assert_eq!(signature["key_id"], id.as_str());
    assert_eq!(
        signature["trusted_comment"],
        "daytona signed by the minisign tool"
    );
    assert_eq!(refusal(&report, "libmai.so").0, "unsigned");
}

/// Makes a key pair with the minisign tool (without a password) and
/// returns its key id as the tool printed it in the public key's comment:
/// `untrusted comment: minisign public key 4BD7A079B2011681`.
fn tool_key(minisign: &str, public: &Path, secret: &Path) -> String {
    let generated = Command::new(minisign)
        .args(["-G", "-f", "-W", "-p"])
        .arg(public)
        .arg("-s")
        .arg(secret)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let text = std::fs::read_to_string(public).unwrap();
    let comment = text.lines().next().unwrap();
    let id = comment
        .strip_prefix("untrusted comment: minisign public key ")
        .unwrap_or_else(|| panic!("not the tool's comment: {comment:?}"));
    id.to_owned()
}

/// Signs `file` with the minisign tool and the secret key `secret`.
fn tool_sign(minisign: &str, file: &Path, secret: &Path, comment: &str) {
    let signed = Command::new(minisign)
        .args(["-S", "-m"])
        .arg(file)
        .arg("-s")
        .arg(secret)
        .args(["-t", comment])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(signed.status.success(), "{signed:?}");
}

#[test]
fn a_key_id_whose_top_digit_is_zero_is_shown_as_the_minisign_tool_prints_it() {
    let Some(minisign) = minisign_tool() else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (public, secret) = (
        keys.path().join("zero.pub"),
        secrets.path().join("zero.sec"),
    );
    // One key in 16 has a zero top digit, which the tool leaves out: make
    // keys until one has (a thousand misses in a row: about 1 in 10^28).
    let id = (0..1000)
        .map(|_| tool_key(minisign, &public, &secret))
        .find(|id| id.len() < 16)
        .expect("a key id with a leading zero digit");
    let dir = PluginDir::with(&["daytona", "mai"]);
    tool_sign(
        minisign,
        &dir.file(&library_file_name("daytona")),
        &secret,
        "release",
    );
    let trusted = ["--trusted-keys", keys.path().to_str().unwrap()];
    let report = plugins(dir.path(), &trusted);
    let signature = &loaded(&report, "libdaytona.so").unwrap()["trust"]["signature"];
    assert_eq!(signature["key_id"], id.as_str(), "{report:#}");
    let out = run(connhost(dir.path()).args(trusted).arg("plugins"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("daytona: signed by {id} (\"release\")")),
        "{}",
        out.stdout
    );
    // A file it signed, under another trusted key: the refusal names the
    // signer as the tool does, and the trusted key likewise.
    let other = Key::new();
    let others = keys_dir(&[(&other, "other")]);
    let report = plugins(
        dir.path(),
        &["--trusted-keys", others.path().to_str().unwrap()],
    );
    let (kind, reason) = refusal(&report, "libdaytona.so");
    assert_eq!(kind, "untrusted_key");
    assert!(
        reason.contains(&format!("signed by key {id}, ")),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("{} (other.pub)", other.id)),
        "{reason}"
    );
}

/// Whether `/v1/plugins` lists `file` as loaded.
fn serves(server: &Server, file: &str) -> bool {
    loaded(&get(server, "/v1/plugins"), file).is_some()
}

#[test]
fn serve_refuses_a_hot_added_unsigned_file_while_the_rest_serves_and_admits_it_once_signed() {
    let key = Key::new();
    let keys = keys_dir(&[(&key, "release")]);
    let dir = PluginDir::with(&["daytona"]);
    key.sign(&dir.file("libdaytona.so"), "daytona");
    let server = Server::start(dir.path(), |c| {
        c.arg("--trusted-keys").arg(keys.path());
    });
    assert!(serves(&server, "libdaytona.so"));

    let mai = install(dir.path(), "mai", &library_file_name("mai"));
    wait_until("the unsigned file is reported", || {
        failed(&get(&server, "/v1/plugins"), "libmai.so").is_some()
    });
    let report = get(&server, "/v1/plugins");
    assert_eq!(refusal(&report, "libmai.so").0, "unsigned");
    let answer = client()
        .get(server.at("/v1/providers/daytona"))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200, "the rest keeps serving");

    key.sign(&mai, "mai, signed late");
    wait_until("the signed file is admitted", || {
        serves(&server, "libmai.so")
    });
    let report = get(&server, "/v1/plugins");
    assert!(failed(&report, "libmai.so").is_none(), "{report:#}");
    assert_eq!(
        loaded(&report, "libmai.so").unwrap()["trust"]["signature"]["trusted_comment"],
        "mai, signed late"
    );
}

/// `--trusted-keys KEYS` and `args`.
fn keyed<'a>(keys: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--trusted-keys", keys];
    all.extend_from_slice(args);
    all
}

#[test]
fn the_lock_file_pins_files_and_versions_and_lock_add_admits_new_ones() {
    let key = Key::new();
    let keys = keys_dir(&[(&key, "release")]);
    let keys_arg = keys.path().to_str().unwrap().to_owned();
    let dir = PluginDir::with(&["daytona"]);
    let greeter = library_file_name("greeter");
    install(dir.path(), "fixture-greeter-v2", &greeter);
    for name in ["libdaytona.so", greeter.as_str()] {
        key.sign(&dir.file(name), name);
    }
    let with_keys = |args: &[&'static str]| keyed(&keys_arg, args);

    // --locked without a lock file: a startup error.
    let out = run(connhost(dir.path()).args(with_keys(&["--locked", "plugins"])));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("there is no lock file"),
        "{}",
        out.stderr
    );

    let out = run(connhost(dir.path()).args(with_keys(&["lock"])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lock_path = dir.file("connhost.lock");
    let text = std::fs::read_to_string(&lock_path).unwrap();
    assert!(text.starts_with("# connhost.lock"), "{text}");
    let report = plugins(dir.path(), &with_keys(&["--locked"]));
    assert_eq!(
        names(&report),
        ["daytona", "fixture-greeter-v2"],
        "{report:#}"
    );
    let greeter_v2 = loaded(&report, &greeter).unwrap()["trust"].clone();
    assert_eq!(greeter_v2["locked"], true);
    let digest = greeter_v2["digest"].as_str().unwrap();
    assert!(text.contains(&format!("file = \"{greeter}\"\nplugin = \"fixture-greeter-v2\"\nversion = \"2.0.0\"\ndigest = \"{digest}\"")), "{text}");
    assert!(
        text.find("libdaytona.so") < text.find(&greeter),
        "stable order: {text}"
    );

    // An unlisted file, and a downgrade to an older, correctly signed file.
    install(dir.path(), "mai", "libmai.so");
    key.sign(&dir.file("libmai.so"), "mai");
    install(dir.path(), "fixture-greeter-v1", &greeter);
    key.sign(&dir.file(&greeter), "greeter 1.0.0");
    let report = plugins(dir.path(), &with_keys(&["--locked"]));
    assert_eq!(names(&report), ["daytona"], "{report:#}");
    let (kind, reason) = refusal(&report, "libmai.so");
    assert_eq!(kind, "not_locked");
    assert!(
        reason.contains(&format!(
            "libmai.so is not in the lock file {}",
            lock_path.display()
        )) && reason.contains("run connhost lock --add libmai.so"),
        "{reason}"
    );
    let (kind, reason) = refusal(&report, &greeter);
    assert_eq!(kind, "not_locked");
    assert!(
        reason.contains(&format!(
            "does not match the locked {digest} (fixture-greeter-v2 2.0.0)"
        )),
        "{reason}"
    );
    // Without --locked both load: the lock binds only when asked.
    assert_eq!(names(&plugins(dir.path(), &with_keys(&[]))).len(), 3);

    // lock --add admits the new file and the new version, one by one.
    let out = run(connhost(dir.path()).args(with_keys(&["lock", "--add", "libmai.so"])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = plugins(dir.path(), &with_keys(&["--locked"]));
    assert_eq!(names(&report), ["daytona", "mai"], "{report:#}");
    let out = run(connhost(dir.path())
        .args(with_keys(&["lock", "--add"]))
        .arg(dir.file(&greeter)));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = plugins(dir.path(), &with_keys(&["--locked"]));
    assert_eq!(
        names(&report),
        ["daytona", "fixture-greeter-v1", "mai"],
        "{report:#}"
    );
    assert_eq!(loaded(&report, &greeter).unwrap()["version"], "1.0.0");

    // A lock file broken by hand: the start stops, naming file and line.
    let text = std::fs::read_to_string(&lock_path).unwrap();
    std::fs::write(
        &lock_path,
        text.replacen("digest = \"sha256:", "digest = \"md5:", 1),
    )
    .unwrap();
    let out = run(connhost(dir.path()).args(["--locked", "plugins"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{}:", lock_path.display())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("is not sha256:"), "{}", out.stderr);
}

#[test]
fn serve_locked_admits_what_lock_add_adds_while_it_runs() {
    let dir = PluginDir::with(&["daytona"]);
    let lock_dir = tempfile::tempdir().unwrap();
    let lock_file = lock_dir.path().join("plugins.lock");
    let with_lock = |command: &mut Command| {
        command.arg("--lock-file").arg(&lock_file);
    };
    let mut lock = connhost(dir.path());
    with_lock(&mut lock);
    let out = run(lock.arg("lock"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let server = Server::start(dir.path(), |c| {
        with_lock(c);
        c.arg("--locked");
    });
    assert_eq!(
        loaded(&get(&server, "/v1/plugins"), "libdaytona.so").unwrap()["trust"]["locked"],
        true
    );

    install(dir.path(), "mai", "libmai.so");
    wait_until("the unlisted file is refused", || {
        failed(&get(&server, "/v1/plugins"), "libmai.so").is_some()
    });
    assert_eq!(
        refusal(&get(&server, "/v1/plugins"), "libmai.so").0,
        "not_locked"
    );

    let mut add = connhost(dir.path());
    with_lock(&mut add);
    let out = run(add.args(["lock", "--add", "libmai.so"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_until("the file lock --add admitted is served", || {
        serves(&server, "libmai.so")
    });
}
