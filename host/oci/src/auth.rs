//! Credentials and transport: who we are to a registry, and whether we
//! may speak plain HTTP to it.
//!
//! Credentials come from docker's `config.json` (the folder
//! `DOCKER_CONFIG` names, else `~/.docker/`): its `auths` entries, keyed by
//! registry (`127.0.0.1:5000`, `registry.example.com`, or a URL such as
//! `https://registry.example.com/v1/`, read as its host), with `auth` the
//! base64 of
//! `USER:PASSWORD` (what `docker login` writes) or `registrytoken` a
//! bearer token. Credential helpers (`credsStore`, `credHelpers`) are not
//! run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// How to authenticate to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    Anonymous,
    /// HTTP basic authentication, or the password exchanged for a token
    /// when the registry asks for one.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Auth {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth;
        match self {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Auth::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }

    /// Whether these are credentials at all.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Auth::Anonymous)
    }
}

/// Why docker's config.json could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CredentialsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The credentials of docker's config.json, by registry.
#[derive(Clone, Default)]
pub struct DockerCredentials {
    /// The file read, if there was one.
    pub path: Option<PathBuf>,
    auths: BTreeMap<String, Auth>,
}

impl std::fmt::Debug for DockerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerCredentials")
            .field("path", &self.path)
            .field("registries", &self.auths.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The registry part of a config.json key: `https://host:port/v1/` and
/// `host:port` both give `host:port`.
fn registry_of_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

impl DockerCredentials {
    /// Where docker keeps its config.json: `$DOCKER_CONFIG/config.json`,
    /// else `$HOME/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// Reads docker's config.json from [`Self::default_path`]; none there
    /// means no credentials.
    pub fn load_default() -> Result<Self, CredentialsError> {
        match Self::default_path() {
            Some(path) if path.exists() => Self::load(&path),
            _ => Ok(Self::default()),
        }
    }

    /// Reads the config.json at `path`.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let error = |reason: String| CredentialsError {
            path: path.to_owned(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(format!("cannot be read: {e}")))?;
        Self::parse(&text, path).map_err(error)
    }

    /// Reads the text of a config.json (`path` is only remembered).
    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let config: ConfigJson =
            serde_json::from_str(text).map_err(|e| format!("not a docker config.json: {e}"))?;
        let mut auths = BTreeMap::new();
        for (key, entry) in config.auths {
            let auth = if let Some(token) = entry.registrytoken.filter(|t| !t.is_empty()) {
                Auth::Bearer(token)
            } else if let Some(encoded) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| format!("the auth of {key} is not base64 of USER:PASSWORD"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("the auth of {key} is not base64 of USER:PASSWORD"))?;
                Auth::Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Auth::Basic { username, password }
            } else {
                continue;
            };
            auths.insert(registry_of_key(&key), auth);
        }
        Ok(DockerCredentials {
            path: Some(path.to_owned()),
            auths,
        })
    }

    /// The credentials for `registry` (`host[:port]`, as the reference
    /// names it), or anonymous.
    pub fn for_registry(&self, registry: &str) -> Auth {
        self.auths
            .get(&registry.to_ascii_lowercase())
            .cloned()
            .unwrap_or(Auth::Anonymous)
    }

    /// Whether the file has credentials for `registry`.
    pub fn has(&self, registry: &str) -> bool {
        !self.for_registry(registry).is_anonymous()
    }
}

/// The host of a `host[:port]` registry, without brackets around an IPv6
/// address.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => registry,
    }
}

/// Whether `registry` (`host[:port]`) is on this machine: `localhost`,
/// 127.0.0.0/8 or ::1. Such a registry is spoken to in plain HTTP, as
/// docker does.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `registry` may be spoken to in plain HTTP: a loopback registry,
/// or one `insecure` lists (by `host:port`, or by host for every port).
pub fn allows_plain_http(registry: &str, insecure: &[String]) -> bool {
    is_loopback(registry)
        || insecure.iter().any(|listed| {
            listed.eq_ignore_ascii_case(registry) || listed.eq_ignore_ascii_case(host_of(registry))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_auths_of_config_json() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let text = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://registry.example.com/v1/": {{"auth": "{auth}"}},
                "tokens.example": {{"registrytoken": "tok"}},
                "empty.example": {{}}}}, "credsStore": "desktop"}}"#
        );
        let creds = DockerCredentials::parse(&text, Path::new("config.json")).unwrap();
        assert_eq!(
            creds.for_registry("127.0.0.1:5000"),
            Auth::Basic {
                username: "alice".into(),
                password: "s3cret:x".into()
            }
        );
        assert!(creds.has("registry.example.com"));
        assert_eq!(
            creds.for_registry("tokens.example"),
            Auth::Bearer("tok".into())
        );
        assert!(!creds.has("empty.example"));
        assert!(!creds.has("127.0.0.1:5001"));
        assert!(!format!("{:?}", creds.for_registry("127.0.0.1:5000")).contains("s3cret"));
        let err = DockerCredentials::parse(r#"{"auths": {"x": {"auth": "!!"}}}"#, Path::new("c"))
            .unwrap_err();
        assert!(err.contains("not base64"), "{err}");
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        for registry in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(registry), "{registry}");
        }
        for registry in [
            "10.0.0.1:5000",
            "registry.example.com",
            "[fe80::1]:5000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(registry), "{registry}");
        }
        let insecure = vec!["lab.internal:5000".to_owned(), "other.internal".to_owned()];
        assert!(allows_plain_http("lab.internal:5000", &insecure));
        assert!(!allows_plain_http("lab.internal:5001", &insecure));
        assert!(allows_plain_http("other.internal:443", &insecure));
        assert!(!allows_plain_http("registry.example.com", &insecure));
    }
}
