//! Plugins as OCI artifacts, against a real registry (Debian's
//! `docker-registry` on loopback, `support::registry`): `connhost push`
//! then `connhost pull` gives the same bytes; a blob changed in the
//! registry's storage, an unsigned artifact under `--trusted-keys` and a
//! library the lock file does not list are refused, naming the reference,
//! the digest and why; basic authentication takes its credentials from
//! docker's config.json; and a second client (`skopeo`) reads and copies
//! what `push` wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::registry::{docker_config, skopeo, Registry};
use crate::support::{built_library, connhost, library_file_name, run, PluginDir, Run};
use crate::trust::{keys_dir, Key};

/// `connhost` over `plugins`, with the docker config folder `docker`.
fn connhost_with(plugins: &Path, docker: &Path) -> Command {
    let mut command = connhost(plugins);
    command
        .env("DOCKER_CONFIG", docker)
        .env_remove("CONNHOST_INSECURE_REGISTRIES");
    command
}

/// A vendor's build folder with the daytona library (signed by `key` if
/// given); returns the library's path.
fn vendor_build(dir: &Path, key: Option<&Key>) -> PathBuf {
    let file = dir.join(library_file_name("daytona"));
    std::fs::copy(built_library("daytona"), &file).expect("copy library");
    if let Some(key) = key {
        key.sign(&file, "daytona for the registry");
    }
    file
}

fn signature_of(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.minisig", file.display()))
}

/// `connhost push FILE REF --json`, which must work.
fn push(docker: &Path, file: &Path, reference: &str) -> Value {
    let out = run(connhost_with(file.parent().expect("a folder"), docker)
        .arg("push")
        .arg(file)
        .arg(reference)
        .arg("--json"));
    assert_eq!(out.code, 0, "push failed:\n{}", out.stderr);
    out.json()
}

/// `connhost [ARGS] pull REF --json` into `plugins`.
fn pull(docker: &Path, plugins: &Path, args: &[&str], reference: &str) -> Run {
    run(connhost_with(plugins, docker)
        .args(args)
        .args(["pull", reference, "--json"]))
}

/// The files in `dir`, by name (staging folders would show here too).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn skopeo_raw(reference: &str) -> Value {
    let out = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

fn skopeo_copy(args: &[&str], from: &str, to: &str) {
    let out = skopeo()
        .arg("copy")
        .args(args)
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{from}"))
        .arg(format!("docker://{to}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pulls `reference` into a new folder under `--trusted-keys keys` and
/// checks the library and its signature are `file`'s, byte for byte.
fn pulls_identical(docker: &Path, keys: &Path, reference: &str, file: &Path, key: &Key) {
    let plugins = PluginDir::empty();
    let keys = keys.to_str().expect("utf-8 path");
    let out = pull(docker, plugins.path(), &["--trusted-keys", keys], reference);
    assert_eq!(out.code, 0, "pull {reference}:\n{}", out.stderr);
    let report = out.json();
    assert_eq!(report["plugin"], "daytona");
    assert_eq!(report["signature"]["key_id"], key.id.as_str());
    let name = library_file_name("daytona");
    assert_eq!(
        names(plugins.path()),
        [name.clone(), format!("{name}.minisig")]
    );
    let pulled = plugins.file(&name);
    assert!(std::fs::read(&pulled).unwrap() == std::fs::read(file).unwrap());
    assert_eq!(
        std::fs::read(signature_of(&pulled)).unwrap(),
        std::fs::read(signature_of(file)).unwrap()
    );
}

#[test]
fn a_pushed_plugin_pulls_back_byte_for_byte_and_skopeo_reads_and_copies_it() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    let key = Key::new();
    let keys = keys_dir(&[(&key, "vendor")]);
    let file = vendor_build(vendor.path(), Some(&key));
    let reference = registry.reference("plugins/daytona:1");
    let pushed = push(docker.path(), &file, &reference);
    assert_eq!(pushed["plugin"], "daytona");
    assert_eq!(pushed["platforms"][0]["signed"], true);
    let digest = pushed["digest"].as_str().unwrap().to_owned();

    // A second client sees an OCI index of connhost plugins, one manifest
    // per platform, with the config, the library and the signature.
    let index = skopeo_raw(&reference);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["artifactType"], "application/vnd.connhost.plugin.v1");
    let entry = &index["manifests"][0];
    assert_eq!(entry["platform"]["os"], "linux");
    let manifest = skopeo_raw(&registry.reference(&format!(
        "plugins/daytona@{}",
        entry["digest"].as_str().unwrap()
    )));
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.connhost.plugin.v1"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.connhost.plugin.config.v1+json"
    );
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        [
            "application/vnd.connhost.plugin.library.v1",
            "application/vnd.connhost.plugin.signature.v1.minisign"
        ]
    );
    assert_eq!(
        manifest["layers"][0]["digest"],
        pushed["platforms"][0]["library"]
    );

    // By tag and by digest.
    pulls_identical(docker.path(), keys.path(), &reference, &file, &key);
    let by_digest = registry.reference(&format!("plugins/daytona@{digest}"));
    pulls_identical(docker.path(), keys.path(), &by_digest, &file, &key);

    // Copied by skopeo: this host's manifest alone, and the whole index
    // (skopeo 1.9 rewrites the index without its artifactType; the
    // manifests, which say what they are, keep their digests).
    let single = registry.reference("mirror/daytona:single");
    skopeo_copy(&[], &reference, &single);
    pulls_identical(docker.path(), keys.path(), &single, &file, &key);
    let all = registry.reference("mirror/daytona:all");
    skopeo_copy(&["--all"], &reference, &all);
    pulls_identical(docker.path(), keys.path(), &all, &file, &key);
}

#[test]
fn a_blob_changed_in_the_registry_is_refused_by_its_digest() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    let file = vendor_build(vendor.path(), None);
    let reference = registry.reference("plugins/daytona:1");
    let pushed = push(docker.path(), &file, &reference);
    let library = pushed["platforms"][0]["library"].as_str().unwrap();
    // One byte changed, the size kept: only the digest can tell.
    let blob = registry.blob_file(library);
    let mut bytes = std::fs::read(&blob).expect("the library's blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let found = crate::support::digest_of(&bytes);

    let plugins = PluginDir::empty();
    let out = pull(docker.path(), plugins.path(), &[], &reference);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for part in [reference.as_str(), library, "the library layer was refused"] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    assert!(out.stderr.contains(&found), "{}", out.stderr);
    assert!(
        names(plugins.path()).is_empty(),
        "{:?}",
        names(plugins.path())
    );

    // The platform's manifest changed in storage (a space added to its
    // JSON, so it still reads): refused by the digest the index names.
    let manifest = pushed["platforms"][0]["manifest"].as_str().unwrap();
    let blob = registry.blob_file(manifest);
    let mut bytes = std::fs::read(&blob).expect("the manifest's blob");
    bytes.insert(1, b' ');
    std::fs::write(&blob, &bytes).unwrap();
    let out = pull(docker.path(), plugins.path(), &[], &reference);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for part in [
        reference.as_str(),
        manifest,
        &crate::support::digest_of(&bytes),
        "the manifest for linux/",
    ] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    assert!(
        names(plugins.path()).is_empty(),
        "{:?}",
        names(plugins.path())
    );
}

#[test]
fn under_trusted_keys_only_an_artifact_signed_by_a_trusted_key_is_pulled() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let key = Key::new();
    let keys = keys_dir(&[(&key, "vendor")]);
    let keys_arg = keys.path().to_str().unwrap();
    let unsigned = tempfile::tempdir().unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let signed = tempfile::tempdir().unwrap();
    let cases = [
        ("unsigned", vendor_build(unsigned.path(), None)),
        ("stranger", vendor_build(stranger.path(), Some(&Key::new()))),
        ("signed", vendor_build(signed.path(), Some(&key))),
    ];
    for (tag, file) in &cases {
        push(
            docker.path(),
            file,
            &registry.reference(&format!("plugins/daytona:{tag}")),
        );
    }

    let plugins = PluginDir::empty();
    let reference = registry.reference("plugins/daytona:unsigned");
    let out = pull(
        docker.path(),
        plugins.path(),
        &["--trusted-keys", keys_arg],
        &reference,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&reference), "{}", out.stderr);
    assert!(out.stderr.contains("(sha256:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("is not signed (its manifest sha256:"),
        "{}",
        out.stderr
    );
    assert!(names(plugins.path()).is_empty());
    // Without --trusted-keys it is pulled, and says it is unsigned.
    let out = pull(docker.path(), plugins.path(), &[], &reference);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["signature"], Value::Null);

    let plugins = PluginDir::empty();
    let reference = registry.reference("plugins/daytona:stranger");
    let out = pull(
        docker.path(),
        plugins.path(),
        &["--trusted-keys", keys_arg],
        &reference,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("which is not a trusted key"),
        "{}",
        out.stderr
    );
    assert!(
        names(plugins.path()).is_empty(),
        "{:?}",
        names(plugins.path())
    );

    let reference = registry.reference("plugins/daytona:signed");
    let out = pull(
        docker.path(),
        plugins.path(),
        &["--trusted-keys", keys_arg],
        &reference,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["signature"]["key_id"], key.id.as_str());
    // And the host loads what was pulled, under the same keys.
    let out = run(connhost(plugins.path()).args(["--trusted-keys", keys_arg, "plugins", "--json"]));
    assert_eq!(
        out.json()["loaded"][0]["plugin"],
        "daytona",
        "{}",
        out.stdout
    );
}

#[test]
fn under_locked_only_the_locked_library_is_pulled() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    let file = vendor_build(vendor.path(), None);
    push(
        docker.path(),
        &file,
        &registry.reference("plugins/daytona:1"),
    );
    // Another library under the same file name.
    let other = tempfile::tempdir().unwrap();
    let other_file = other.path().join(library_file_name("daytona"));
    std::fs::copy(built_library("github"), &other_file).unwrap();
    push(
        docker.path(),
        &other_file,
        &registry.reference("plugins/daytona:2"),
    );

    let plugins = PluginDir::empty();
    let out = pull(
        docker.path(),
        plugins.path(),
        &[],
        &registry.reference("plugins/daytona:1"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(connhost(plugins.path()).arg("lock"));
    assert_eq!(out.code, 0, "{}", out.stderr);

    let moved = registry.reference("plugins/daytona:2");
    let out = pull(docker.path(), plugins.path(), &["--locked"], &moved);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&moved), "{}", out.stderr);
    assert!(
        out.stderr.contains("does not match the locked"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read(plugins.file(&library_file_name("daytona"))).unwrap()
            == std::fs::read(&file).unwrap()
    );

    let out = pull(
        docker.path(),
        plugins.path(),
        &["--locked"],
        &registry.reference("plugins/daytona:1"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn basic_auth_takes_credentials_from_docker_config_json() {
    let registry = Registry::with_basic_auth("vendor", "s3cret-pass");
    let vendor = tempfile::tempdir().unwrap();
    let file = vendor_build(vendor.path(), None);
    let reference = registry.reference("plugins/daytona:1");

    let none = docker_config(registry.host(), None);
    let out = run(connhost_with(vendor.path(), none.path())
        .arg("push")
        .arg(&file)
        .arg(&reference));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let wanted = format!(
        "the registry {} requires credentials, and there are none for it in docker's config.json",
        registry.host()
    );
    assert!(out.stderr.contains(&wanted), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("docker login {}", registry.host())),
        "{}",
        out.stderr
    );

    let wrong = docker_config(registry.host(), Some(("vendor", "Wr0ng-Passw0rd")));
    let out = run(connhost_with(vendor.path(), wrong.path())
        .arg("push")
        .arg(&file)
        .arg(&reference));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("refused the credentials for it from"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Wr0ng-Passw0rd"), "{}", out.stderr);

    let good = docker_config(registry.host(), Some(("vendor", "s3cret-pass")));
    push(good.path(), &file, &reference);
    let plugins = PluginDir::empty();
    let out = pull(good.path(), plugins.path(), &[], &reference);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        std::fs::read(plugins.file(&library_file_name("daytona"))).unwrap()
            == std::fs::read(&file).unwrap()
    );

    let out = pull(none.path(), plugins.path(), &[], &reference);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&wanted), "{}", out.stderr);
}

/// Several platforms in one artifact: the library for another CPU is
/// described as FILE is (it cannot be loaded here), its ELF header must
/// name the CPU its --platform names, and `pull` picks this host's.
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn one_artifact_holds_a_library_per_platform_and_pull_picks_this_hosts() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    let file = vendor_build(vendor.path(), None);
    // The same library with an AArch64 ELF header (e_machine 183): a
    // stand-in for a cross-compiled build, never loaded.
    let arm = tempfile::tempdir().unwrap();
    let arm_file = arm.path().join(library_file_name("daytona"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    std::fs::write(&arm_file, &bytes).unwrap();
    let reference = registry.reference("plugins/daytona:multi");

    // A library for this CPU named as another's is refused.
    let out = run(connhost_with(vendor.path(), docker.path())
        .arg("push")
        .arg(&file)
        .arg(&reference)
        .arg("--platform")
        .arg(format!("linux/arm64={}", file.display())));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is built for x86-64, not for linux/arm64+gnu"),
        "{}",
        out.stderr
    );

    let out = run(connhost_with(vendor.path(), docker.path())
        .arg("push")
        .arg(&file)
        .arg(&reference)
        .arg("--platform")
        .arg(format!("linux/arm64={}", arm_file.display()))
        .arg("--json"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pushed = out.json();
    assert_eq!(pushed["platforms"][1]["platform"], "linux/arm64+gnu");
    assert_eq!(pushed["platforms"][1]["inspected"], false);

    let index = skopeo_raw(&reference);
    let platforms: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["os.features"][0].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(platforms, [("amd64", "gnu"), ("arm64", "gnu")]);

    let plugins = PluginDir::empty();
    let out = pull(docker.path(), plugins.path(), &[], &reference);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["platform"], "linux/amd64+gnu");
    assert!(
        std::fs::read(plugins.file(&library_file_name("daytona"))).unwrap()
            == std::fs::read(&file).unwrap()
    );
}

/// A registry named `registry.invalid:PORT` in the reference: not
/// loopback to connhost (it is no loopback address, nor `localhost`), and
/// reached only through the proxy the environment names (reqwest follows
/// `http_proxy` and `https_proxy`), which is the registry itself: it
/// answers a request in absolute form (`GET http://registry.invalid:PORT/v2/...`)
/// as it answers one by path, and refuses the `CONNECT` of HTTPS. So no
/// name is looked up, and the pull works only in plain HTTP.
#[test]
fn insecure_registries_in_the_config_file_allow_plain_http_to_a_registry_not_on_loopback() {
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor = tempfile::tempdir().unwrap();
    push(
        docker.path(),
        &vendor_build(vendor.path(), None),
        &registry.reference("plugins/daytona:1"),
    );
    let port = registry
        .host()
        .rsplit_once(':')
        .map(|(_, port)| port)
        .expect("HOST:PORT");
    let name = format!("registry.invalid:{port}");
    let reference = format!("{name}/plugins/daytona:1");
    let proxy = format!("http://{}", registry.host());
    let config = tempfile::tempdir().unwrap();
    let file_listing = |listed: &str| {
        let path = config.path().join(format!("{}.toml", listed.len()));
        std::fs::write(&path, format!("insecure_registries = [\"{listed}\"]\n"))
            .expect("write config");
        path
    };
    let pull_with = |config: Option<&Path>, env: Option<&str>| {
        let plugins = PluginDir::empty();
        let mut command = connhost_with(plugins.path(), docker.path());
        for variable in [
            "no_proxy",
            "NO_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "HTTP_PROXY",
            "HTTPS_PROXY",
        ] {
            command.env_remove(variable);
        }
        command.env("http_proxy", &proxy).env("https_proxy", &proxy);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        if let Some(listed) = env {
            command.env("CONNHOST_INSECURE_REGISTRIES", listed);
        }
        let out = run(command.args(["pull", &reference, "--json"]));
        let written = plugins.file(&library_file_name("daytona")).exists();
        (out, written)
    };

    // Not listed: HTTPS, which the registry does not speak.
    let (out, written) = pull_with(None, None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&reference), "{}", out.stderr);
    assert!(!written);

    // Listed in the configuration file: plain HTTP, and the pull works.
    let listed = file_listing(&name);
    let (out, written) = pull_with(Some(&listed), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(written);
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.contains("http://registry.invalid:") && r.contains("/manifests/1")),
        "the registry was asked for the manifest by its name, in plain HTTP: {:#?}",
        registry.requests()
    );
    // By host alone, for every port.
    let (out, written) = pull_with(Some(&file_listing("registry.invalid")), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(written);

    // The variable replaces the file's list, as the flag does.
    let (out, written) = pull_with(Some(&listed), Some("other.invalid"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!written);
}
