//! Pushing and pulling plugin artifacts.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference, RegistryOperation};

use crate::artifact::{
    build_index, build_manifest, digest_of, is_digest, Descriptor, Index, Manifest, PluginConfig,
    ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, LIBRARY_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
};
use crate::auth::{allows_plain_http, Auth, DockerCredentials};
use crate::platform::Platform;

/// The largest manifest, index or config blob read.
const MAX_SMALL_BLOB: u64 = 1024 * 1024;
/// The largest signature layer read (a minisign signature is a few
/// hundred bytes).
const MAX_SIGNATURE: u64 = 64 * 1024;
/// The largest library layer read unless [`Options::max_library_size`]
/// says otherwise.
pub const DEFAULT_MAX_LIBRARY_SIZE: u64 = 512 * 1024 * 1024;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct Options {
    /// Registries (`host:port`, or a host for all its ports) spoken to in
    /// plain HTTP although they are not on this machine. Loopback
    /// registries always are; every other one is spoken to in HTTPS.
    pub insecure_registries: Vec<String>,
    /// Where credentials come from (docker's config.json).
    pub credentials: DockerCredentials,
    /// Credentials to use instead of the config.json's, for every registry.
    pub auth: Option<Auth>,
    /// How long to wait for a connection, and then between reads.
    pub timeout: Duration,
    /// The largest library layer pulled.
    pub max_library_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure_registries: Vec::new(),
            credentials: DockerCredentials::default(),
            auth: None,
            timeout: Duration::from_secs(30),
            max_library_size: DEFAULT_MAX_LIBRARY_SIZE,
        }
    }
}

/// Why a push or a pull failed. Each names the reference; a refusal of
/// content names the digest and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference cannot be used.
    #[error("{reference}: {reason}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The registry wants credentials, or refused the ones sent.
    #[error("{reference}: {}", unauthorized(registry, credentials.as_deref(), detail))]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry (`host:port`).
        registry: String,
        /// Where the credentials sent came from; `None`: none were sent.
        credentials: Option<String>,
        /// What the registry said.
        detail: String,
    },
    /// Downloaded content does not have the digest it was asked by.
    #[error("{reference}: {what} was refused: its content has digest {found}, not the expected {expected} (changed in the registry's storage or on the way); nothing was written")]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// What was downloaded (`the library layer`, `the manifest for linux/amd64+gnu`).
        what: String,
        /// The digest it was asked by.
        expected: String,
        /// The digest of what came.
        found: String,
    },
    /// The content is not a connhost plugin this host can use.
    #[error("{reference} ({digest}): {reason}")]
    Refused {
        /// The reference.
        reference: String,
        /// The digest of the index or manifest refused.
        digest: String,
        /// Why.
        reason: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("{reference}: {action}: {detail}")]
    Registry {
        /// The reference.
        reference: String,
        /// What was being done.
        action: String,
        /// What went wrong.
        detail: String,
    },
}

fn unauthorized(registry: &str, credentials: Option<&str>, detail: &str) -> String {
    match credentials {
        None => format!(
            "the registry {registry} requires credentials, and there are none for it in docker's config.json (DOCKER_CONFIG/config.json or ~/.docker/config.json): run `docker login {registry}` or add an \"auths\" entry for {registry} ({detail})"
        ),
        Some(source) => format!(
            "the registry {registry} refused the credentials for it from {source} ({detail})"
        ),
    }
}

/// One platform's library to push.
#[derive(Debug, Clone)]
pub struct PlatformPush {
    /// What the config blob says (its `target` is the platform).
    pub config: PluginConfig,
    /// The library's bytes.
    pub library: Vec<u8>,
    /// Its detached minisign signature (the `.minisig` file's bytes).
    pub signature: Option<Vec<u8>>,
}

/// What a push wrote.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pushed to.
    pub reference: String,
    /// The index's digest: `REPOSITORY@DIGEST` pulls exactly this.
    pub digest: String,
    /// Each platform's manifest digest.
    pub manifests: Vec<(Platform, String)>,
}

/// The manifest chosen for a platform, and what it says, before the
/// library is downloaded.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The reference as given.
    pub reference: String,
    /// The digest the reference resolved to (the index's, or the
    /// manifest's when the reference names a single manifest).
    pub digest: String,
    /// The chosen platform manifest's digest.
    pub manifest_digest: String,
    /// The platform chosen.
    pub platform: Platform,
    /// The config blob.
    pub config: PluginConfig,
    /// The library layer (its digest is the SHA-256 of the file).
    pub library: Descriptor,
    /// The signature layer, if the artifact is signed.
    pub signature: Option<Descriptor>,
    /// The platforms the artifact offers.
    pub platforms: Vec<Platform>,
}

/// A pulled plugin: every byte checked against its digest.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// What was chosen.
    pub selected: Selected,
    /// The library's bytes.
    pub library: Vec<u8>,
    /// The signature's bytes, if the artifact is signed.
    pub signature: Option<Vec<u8>>,
}

/// A client for the registries a plugin is pushed to or pulled from.
///
/// It keeps one connection per registry (its HTTP connections, and the
/// credentials or token the registry asked for) from the first request to
/// that registry for as long as it, or a clone, lives: a caller that polls
/// ([`Self::resolve`]) keeps one `Registry` and makes one request per poll.
/// Use it within one async runtime (its connections belong to the runtime
/// they were opened on).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    options: Options,
    connections: Connections,
}

/// The [`Connection`]s of a [`Registry`] and its clones, by registry
/// (`host[:port]`).
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<HashMap<String, Connection>>>);

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_list().entries(connections.keys()).finish()
    }
}

/// What is kept of one registry between requests.
#[derive(Clone)]
struct Connection {
    /// oci-client's client: its connections, the credentials it was given
    /// and the tokens the registry handed out.
    client: Client,
    /// For [`Session::resolve_anonymously`]: an anonymous request of
    /// oci-client is preceded by a request for `/v2/` every time (it keeps
    /// a token, never the fact that none is needed), so a poll that went
    /// through it would be two requests. `None` if it could not be made.
    http: Option<reqwest::Client>,
    /// Whether the registry is spoken to in plain HTTP.
    plain_http: bool,
    /// Whether the registry refused an anonymous manifest request: its
    /// resolves go through `client` from then on, which answers the
    /// registry's challenge and keeps the token it gets.
    challenged: Arc<AtomicBool>,
}

impl Connection {
    fn new(options: &Options, registry: &str) -> Self {
        let plain_http = allows_plain_http(registry, &options.insecure_registries);
        let protocol = if plain_http {
            ClientProtocol::HttpsExcept(vec![registry.to_owned()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(options.timeout),
            read_timeout: Some(options.timeout),
            // No platform resolution by oci-client: indexes are read here.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent)
            .connect_timeout(options.timeout)
            .read_timeout(options.timeout)
            .redirect(no_downgrade())
            .build()
            .map_err(|error| {
                tracing::debug!(%registry, "no client of its own for resolving: {error}");
            })
            .ok();
        Connection {
            client: Client::new(config),
            http,
            plain_http,
            challenged: Arc::default(),
        }
    }
}

/// Redirects followed (as many as reqwest's default, 10) as long as none
/// leads from HTTPS to plain HTTP: a registry spoken to over HTTPS is never
/// left for a plain connection.
fn no_downgrade() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|url| url.scheme() == "https");
        if downgrade {
            attempt.error("a redirect from HTTPS to plain HTTP")
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// One reference, and the connection to its registry.
struct Session<'a> {
    text: &'a str,
    reference: Reference,
    connection: Connection,
    client: Client,
    auth: Auth,
    credentials: Option<String>,
}

/// A writer into memory that refuses more than `limit` bytes.
struct Capped {
    data: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.data.len() as u64 + buf.len() as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "more than the {} bytes expected",
                self.limit
            ))));
        }
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Whether the platform `offered` serves a host on `wanted`.
fn serves(offered: &Platform, wanted: &Platform) -> bool {
    let default_libc = |p: &Platform| {
        p.libc
            .clone()
            .or_else(|| (p.os == "linux").then(|| "gnu".to_owned()))
    };
    offered.os == wanted.os
        && offered.architecture == wanted.architecture
        && (offered.variant.is_none() || offered.variant == wanted.variant)
        && default_libc(offered) == default_libc(wanted)
}

/// Whether `name` is a plain file name to write in a folder.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

impl Registry {
    /// A client with these options.
    pub fn new(options: Options) -> Self {
        Registry {
            options,
            connections: Connections::default(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    fn session<'a>(&self, text: &'a str) -> Result<Session<'a>, Error> {
        let reference: Reference = text.parse().map_err(|e| Error::Reference {
            reference: text.to_owned(),
            reason: format!("not a reference (REGISTRY/REPOSITORY[:TAG|@DIGEST]): {e}"),
        })?;
        let registry = reference.resolve_registry().to_owned();
        let connection = self
            .connections
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(registry.clone())
            .or_insert_with(|| Connection::new(&self.options, &registry))
            .clone();
        let client = connection.client.clone();
        let (auth, credentials) = match &self.options.auth {
            Some(auth) => (auth.clone(), Some("the credentials given".to_owned())),
            None => {
                let auth = self.options.credentials.for_registry(&registry);
                let source = self
                    .options
                    .credentials
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string());
                (auth, source)
            }
        };
        let credentials = if auth.is_anonymous() {
            None
        } else {
            credentials
        };
        Ok(Session {
            text,
            reference,
            connection,
            client,
            auth,
            credentials,
        })
    }

    /// Pushes a plugin: one manifest per platform, then the index, tagged
    /// with `reference`'s tag. Returns the index's digest.
    pub async fn push(
        &self,
        reference: &str,
        platforms: Vec<PlatformPush>,
    ) -> Result<Pushed, Error> {
        let session = self.session(reference)?;
        if session.reference.digest().is_some() {
            return Err(Error::Reference {
                reference: reference.to_owned(),
                reason: "push needs a tag (REGISTRY/REPOSITORY:TAG), not a digest".to_owned(),
            });
        }
        let Some(first) = platforms.first() else {
            return Err(Error::Reference {
                reference: reference.to_owned(),
                reason: "nothing to push".to_owned(),
            });
        };
        let (name, version) = (first.config.name.clone(), first.config.version.clone());
        for (i, p) in platforms.iter().enumerate() {
            if platforms[..i]
                .iter()
                .any(|q| q.config.target == p.config.target)
            {
                return Err(Error::Reference {
                    reference: reference.to_owned(),
                    reason: format!("the platform {} is given twice", p.config.target),
                });
            }
            if !plain_file_name(&p.config.file) {
                return Err(Error::Reference {
                    reference: reference.to_owned(),
                    reason: format!("{:?} is not a plain file name", p.config.file),
                });
            }
        }
        session
            .client
            .auth(
                &session.reference,
                &session.auth.to_oci(),
                RegistryOperation::Push,
            )
            .await
            .map_err(|e| session.error("authenticating", e))?;
        let mut entries = Vec::new();
        let mut manifests = Vec::new();
        for platform in platforms {
            let target = platform.config.target.clone();
            let built = build_manifest(&platform.config, platform.library, platform.signature);
            for blob in &built.blobs {
                session
                    .client
                    .push_blob(&session.reference, &blob.data, &blob.descriptor.digest)
                    .await
                    .map_err(|e| {
                        session.error(&format!("pushing blob {}", blob.descriptor.digest), e)
                    })?;
            }
            let by_digest = session
                .reference
                .clone_with_digest(built.entry.digest.clone());
            session
                .client
                .push_manifest_raw(
                    &by_digest,
                    built.manifest,
                    MANIFEST_MEDIA_TYPE
                        .parse()
                        .map_err(|_| session.internal())?,
                )
                .await
                .map_err(|e| session.error(&format!("pushing the manifest for {target}"), e))?;
            manifests.push((target, built.entry.digest.clone()));
            entries.push(built.entry);
        }
        let index = build_index(entries, &name, &version);
        let digest = digest_of(&index);
        session
            .client
            .push_manifest_raw(
                &session.reference,
                index,
                INDEX_MEDIA_TYPE.parse().map_err(|_| session.internal())?,
            )
            .await
            .map_err(|e| session.error("pushing the index", e))?;
        Ok(Pushed {
            reference: reference.to_owned(),
            digest,
            manifests,
        })
    }

    /// The digest `reference` resolves to now, for callers that poll a
    /// tag: one manifest request (`GET`: the digest is the content's, as
    /// [`Self::select`] computes it), on the connection this `Registry`
    /// keeps to the registry. Only the first resolve of a registry that
    /// asks for credentials, and one whose token expired, make more: the
    /// registry's challenge and its token service.
    pub async fn resolve(&self, reference: &str) -> Result<String, Error> {
        let session = self.session(reference)?;
        if session.auth.is_anonymous() && !session.connection.challenged.load(Ordering::Relaxed) {
            if let Some(digest) = session.resolve_anonymously().await? {
                return Ok(digest);
            }
            session.connection.challenged.store(true, Ordering::Relaxed);
        }
        let (_, digest) = session.manifest(&session.reference, "the index").await?;
        Ok(digest)
    }

    /// Reads the index `reference` names (or a single manifest), chooses
    /// the manifest for `platform`, and reads its config: everything but
    /// the library and its signature, each checked against its digest.
    pub async fn select(&self, reference: &str, platform: &Platform) -> Result<Selected, Error> {
        let session = self.session(reference)?;
        session.select(platform).await
    }

    /// Downloads the library and signature `selected` names, each checked
    /// against its digest and size.
    pub async fn download(&self, selected: Selected) -> Result<Pulled, Error> {
        let reference = selected.reference.clone();
        let session = self.session(&reference)?;
        session
            .download(selected, self.options.max_library_size)
            .await
    }

    /// [`Self::select`] then [`Self::download`].
    pub async fn pull(&self, reference: &str, platform: &Platform) -> Result<Pulled, Error> {
        let session = self.session(reference)?;
        let selected = session.select(platform).await?;
        session
            .download(selected, self.options.max_library_size)
            .await
    }
}

impl Session<'_> {
    fn internal(&self) -> Error {
        Error::Registry {
            reference: self.text.to_owned(),
            action: "preparing a request".to_owned(),
            detail: "a media type is not a valid header".to_owned(),
        }
    }

    /// The error for `error` met while doing `action`.
    fn error(&self, action: &str, error: OciDistributionError) -> Error {
        let unauthorized_code = |errors: &[oci_client::errors::OciError]| {
            errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
        };
        let is_unauthorized = match &error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => true,
            OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
            OciDistributionError::RegistryError { envelope, .. } => {
                unauthorized_code(&envelope.errors)
            }
            OciDistributionError::RequestError(e) => e
                .status()
                .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403),
            _ => false,
        };
        if is_unauthorized {
            return Error::Unauthorized {
                reference: self.text.to_owned(),
                registry: self.reference.resolve_registry().to_owned(),
                credentials: self.credentials.clone(),
                detail: format!("{action}: {}", one_line(&error)),
            };
        }
        Error::Registry {
            reference: self.text.to_owned(),
            action: action.to_owned(),
            detail: one_line(&error),
        }
    }

    /// The digest the reference resolves to, from one anonymous manifest
    /// request of this session's own (see [`Connection::http`]), checked
    /// against the digest it was asked by and the one the registry gives;
    /// `None` when the registry wants credentials (401, 403), or there is
    /// no client for it.
    async fn resolve_anonymously(&self) -> Result<Option<String>, Error> {
        const WHAT: &str = "the index";
        let Some(http) = &self.connection.http else {
            return Ok(None);
        };
        let registry = self.reference.resolve_registry();
        let url = format!(
            "{scheme}://{registry}/v2/{repository}/manifests/{name}{namespace}",
            scheme = if self.connection.plain_http {
                "http"
            } else {
                "https"
            },
            repository = self.reference.repository(),
            name = match self.reference.digest() {
                Some(digest) => digest,
                None => self.reference.tag().unwrap_or("latest"),
            },
            namespace = self
                .reference
                .namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default(),
        );
        let failed = |detail: String| Error::Registry {
            reference: self.text.to_owned(),
            action: format!("fetching {WHAT}"),
            detail,
        };
        let mut response = http
            .get(&url)
            .header(
                reqwest::header::ACCEPT,
                format!("{INDEX_MEDIA_TYPE}, {MANIFEST_MEDIA_TYPE}"),
            )
            .send()
            .await
            .map_err(|e| failed(one_line(&e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(None);
        }
        let given = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(one_line(&e)))? {
            if body.len() as u64 + chunk.len() as u64 > MAX_SMALL_BLOB {
                return Err(failed(format!(
                    "more than the {MAX_SMALL_BLOB} bytes a manifest ever holds"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(failed(registry_answered(status, &body, &url)));
        }
        let found = digest_of(&body);
        // The digest asked by, then the one the registry says it sent
        // (a sha256 one: another algorithm cannot be compared).
        let expected = self
            .reference
            .digest()
            .map(str::to_owned)
            .or(given.filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected.filter(|expected| *expected != found) {
            return Err(Error::DigestMismatch {
                reference: self.text.to_owned(),
                what: WHAT.to_owned(),
                expected,
                found,
            });
        }
        Ok(Some(found))
    }

    /// The raw manifest (or index) `reference` names, with the digest of
    /// its content, checked against the digest it was asked by.
    async fn manifest(
        &self,
        reference: &Reference,
        what: &str,
    ) -> Result<(Vec<u8>, String), Error> {
        let result = self
            .client
            .pull_manifest_raw(
                reference,
                &self.auth.to_oci(),
                &[INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE],
            )
            .await;
        let body = match result {
            Ok((body, _)) => body,
            Err(OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            )) => {
                return Err(Error::DigestMismatch {
                    reference: self.text.to_owned(),
                    what: what.to_owned(),
                    expected,
                    found: actual,
                })
            }
            Err(e) => return Err(self.error(&format!("fetching {what}"), e)),
        };
        if body.len() as u64 > MAX_SMALL_BLOB {
            return Err(Error::Registry {
                reference: self.text.to_owned(),
                action: format!("fetching {what}"),
                detail: format!("{} bytes, more than a manifest ever holds", body.len()),
            });
        }
        let found = digest_of(&body);
        if let Some(expected) = reference.digest() {
            if expected != found {
                return Err(Error::DigestMismatch {
                    reference: self.text.to_owned(),
                    what: what.to_owned(),
                    expected: expected.to_owned(),
                    found,
                });
            }
        }
        Ok((body, found))
    }

    /// Downloads the blob `descriptor`, at most `limit` bytes, checked
    /// against its digest and size.
    async fn blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        if !is_digest(&descriptor.digest) {
            return Err(Error::Refused {
                reference: self.text.to_owned(),
                digest: descriptor.digest.clone(),
                reason: format!(
                    "{what} is named by a digest that is not sha256: and 64 hex digits"
                ),
            });
        }
        if descriptor.size > limit {
            return Err(Error::Refused {
                reference: self.text.to_owned(),
                digest: descriptor.digest.clone(),
                reason: format!(
                    "{what} is {} bytes, more than the {limit} allowed",
                    descriptor.size
                ),
            });
        }
        let oci = OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size as i64,
            ..OciDescriptor::default()
        };
        // A session that has not fetched a manifest yet has not given the
        // client its credentials.
        self.client
            .store_auth_if_needed(self.reference.resolve_registry(), &self.auth.to_oci())
            .await;
        let mut out = Capped {
            data: Vec::new(),
            limit: descriptor.size,
        };
        match self.client.pull_blob(&self.reference, &oci, &mut out).await {
            Ok(()) => {}
            // The registry's own digest header or the descriptor's: either
            // way the content is not what was asked for.
            Err(OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { .. },
            )) => {}
            Err(OciDistributionError::IoError(e)) => {
                return Err(Error::Refused {
                    reference: self.text.to_owned(),
                    digest: descriptor.digest.clone(),
                    reason: format!("{what} was refused: {e}, the size its manifest gives"),
                })
            }
            Err(e) => return Err(self.error(&format!("fetching {what} {}", descriptor.digest), e)),
        }
        let found = digest_of(&out.data);
        if found != descriptor.digest {
            return Err(Error::DigestMismatch {
                reference: self.text.to_owned(),
                what: what.to_owned(),
                expected: descriptor.digest.clone(),
                found,
            });
        }
        if out.data.len() as u64 != descriptor.size {
            return Err(Error::Refused {
                reference: self.text.to_owned(),
                digest: descriptor.digest.clone(),
                reason: format!(
                    "{what} is {} bytes, not the {} its manifest gives",
                    out.data.len(),
                    descriptor.size
                ),
            });
        }
        Ok(out.data)
    }

    async fn select(&self, wanted: &Platform) -> Result<Selected, Error> {
        let (body, digest) = self.manifest(&self.reference, "the index").await?;
        let refused = |digest: &str, reason: String| Error::Refused {
            reference: self.text.to_owned(),
            digest: digest.to_owned(),
            reason,
        };
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let (manifest_digest, manifest_body, platforms) = if media_type == INDEX_MEDIA_TYPE {
            let index: Index = serde_json::from_slice(&body)
                .map_err(|e| refused(&digest, format!("not an image index: {e}")))?;
            // An index without an artifactType is read on: clients of
            // image-spec 1.0 (skopeo 1.9's `copy --all`) rewrite the index
            // without it, and each manifest says what it is anyway.
            if let Some(other) = index
                .artifact_type
                .as_deref()
                .filter(|t| *t != ARTIFACT_TYPE)
            {
                return Err(refused(
                    &digest,
                    format!(
                        "not a connhost plugin: its artifactType is {other}, not {ARTIFACT_TYPE}"
                    ),
                ));
            }
            let offered: Vec<(Platform, &Descriptor)> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| (p.platform(), m)))
                .collect();
            let platforms: Vec<Platform> = offered.iter().map(|(p, _)| p.clone()).collect();
            let Some((_, entry)) = offered.iter().find(|(p, _)| serves(p, wanted)) else {
                let list = platforms
                    .iter()
                    .map(Platform::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(refused(
                    &digest,
                    format!(
                        "there is no library for this host's platform {wanted} (it offers: {list})"
                    ),
                ));
            };
            if !is_digest(&entry.digest) {
                return Err(refused(
                    &digest,
                    format!(
                        "its entry for {wanted} has the malformed digest {:?}",
                        entry.digest
                    ),
                ));
            }
            let what = format!("the manifest for {wanted}");
            let by_digest = self.reference.clone_with_digest(entry.digest.clone());
            let (manifest_body, _) = self.manifest(&by_digest, &what).await?;
            (entry.digest.clone(), manifest_body, platforms)
        } else {
            (digest.clone(), body, Vec::new())
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_body)
            .map_err(|e| refused(&manifest_digest, format!("not an image manifest: {e}")))?;
        if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
            || manifest.config.media_type != CONFIG_MEDIA_TYPE
        {
            return Err(refused(
                &manifest_digest,
                format!("not a connhost plugin: its manifest's artifactType is {} and its config's media type {}, not {ARTIFACT_TYPE} and {CONFIG_MEDIA_TYPE}",
                    manifest.artifact_type.as_deref().unwrap_or("missing"), manifest.config.media_type),
            ));
        }
        let config_body = self
            .blob(&manifest.config, "the config blob", MAX_SMALL_BLOB)
            .await?;
        let config: PluginConfig = serde_json::from_slice(&config_body).map_err(|e| {
            refused(
                &manifest.config.digest,
                format!("its config blob is not a connhost plugin config: {e}"),
            )
        })?;
        if !serves(&config.target, wanted) {
            return Err(refused(
                &manifest_digest,
                format!(
                    "its config says the library is for {}, not this host's {wanted}",
                    config.target
                ),
            ));
        }
        if !plain_file_name(&config.file) {
            return Err(refused(
                &manifest_digest,
                format!(
                    "its config names the library {:?}, which is not a plain file name",
                    config.file
                ),
            ));
        }
        let of_type = |media_type: &str| -> Vec<&Descriptor> {
            manifest
                .layers
                .iter()
                .filter(|l| l.media_type == media_type)
                .collect()
        };
        let (libraries, signatures) = (of_type(LIBRARY_MEDIA_TYPE), of_type(SIGNATURE_MEDIA_TYPE));
        if libraries.len() != 1 || signatures.len() > 1 {
            return Err(refused(
                &manifest_digest,
                format!("its manifest has {} library layers and {} signature layers; a plugin has one library and at most one signature", libraries.len(), signatures.len()),
            ));
        }
        let platforms = if platforms.is_empty() {
            vec![config.target.clone()]
        } else {
            platforms
        };
        Ok(Selected {
            reference: self.text.to_owned(),
            digest,
            manifest_digest,
            platform: config.target.clone(),
            library: libraries[0].clone(),
            signature: signatures.first().map(|d| (*d).clone()),
            config,
            platforms,
        })
    }

    async fn download(&self, selected: Selected, max_library: u64) -> Result<Pulled, Error> {
        let signature = match &selected.signature {
            Some(descriptor) => Some(
                self.blob(descriptor, "the signature layer", MAX_SIGNATURE)
                    .await?,
            ),
            None => None,
        };
        let library = self
            .blob(&selected.library, "the library layer", max_library)
            .await?;
        Ok(Pulled {
            selected,
            library,
            signature,
        })
    }
}

/// What a registry answered with an error status: the status and the
/// codes and messages of its OCI error body, if it has one.
fn registry_answered(status: reqwest::StatusCode, body: &[u8], url: &str) -> String {
    let errors: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let text = |key: &str| e.get(key).and_then(|v| v.as_str()).unwrap_or_default();
            format!("{}: {}", text("code"), text("message"))
        })
        .collect();
    let text = if errors.is_empty() {
        format!("the registry answered {status} for {url}")
    } else {
        format!(
            "the registry answered {status} for {url}: {}",
            errors.join("; ")
        )
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its causes on one line.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_serves_hosts_of_the_same_system_cpu_and_c_library() {
        let p = |t: &str| t.parse::<Platform>().unwrap();
        assert!(serves(&p("linux/amd64"), &p("linux/amd64+gnu")));
        assert!(!serves(&p("linux/amd64+musl"), &p("linux/amd64")));
        assert!(!serves(&p("linux/arm64"), &p("linux/amd64")));
        assert!(serves(&p("linux/arm"), &p("linux/arm/v7")));
        assert!(!serves(&p("linux/arm/v6"), &p("linux/arm/v7")));
    }

    #[test]
    fn only_plain_file_names_are_written() {
        assert!(plain_file_name("libdaytona.so"));
        for bad in ["", ".hidden.so", "../x.so", "a/b.so", "a\\b", "x\u{1b}.so"] {
            assert!(!plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_registry_and_its_clones_keep_one_connection_per_registry() {
        let registry = Registry::default();
        let session = |r: &Registry, reference| r.session(reference).unwrap();
        let first = session(&registry, "127.0.0.1:5000/plugins/a:1");
        let kept = |a: &Session<'_>, b: &Session<'_>| {
            Arc::ptr_eq(&a.connection.challenged, &b.connection.challenged)
        };
        assert!(kept(&first, &session(&registry, "127.0.0.1:5000/plugins/b@sha256:0000000000000000000000000000000000000000000000000000000000000000")));
        assert!(kept(
            &first,
            &session(&registry.clone(), "127.0.0.1:5000/plugins/a:2")
        ));
        assert!(!kept(
            &first,
            &session(&registry, "127.0.0.1:5001/plugins/a:1")
        ));
        assert!(!kept(
            &first,
            &session(&Registry::default(), "127.0.0.1:5000/plugins/a:1")
        ));
        assert!(first.connection.plain_http, "loopback");
        assert!(
            !session(&registry, "registry.example.com/plugins/a:1")
                .connection
                .plain_http
        );
    }

    #[test]
    fn a_registry_error_is_its_status_and_its_oci_errors() {
        let url = "http://127.0.0.1:5000/v2/a/manifests/1";
        let body = br#"{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest\nunknown", "detail": {}}]}"#;
        assert_eq!(
            registry_answered(reqwest::StatusCode::NOT_FOUND, body, url),
            format!(
                "the registry answered 404 Not Found for {url}: MANIFEST_UNKNOWN: manifest unknown"
            )
        );
        assert_eq!(
            registry_answered(reqwest::StatusCode::BAD_GATEWAY, b"<html>", url),
            format!("the registry answered 502 Bad Gateway for {url}")
        );
    }

    #[test]
    fn unauthorized_messages_say_where_credentials_come_from() {
        let none = unauthorized("127.0.0.1:5000", None, "401");
        assert!(none.contains("docker login 127.0.0.1:5000"), "{none}");
        let some = unauthorized("127.0.0.1:5000", Some("/h/.docker/config.json"), "401");
        assert!(
            some.contains("refused the credentials for it from /h/.docker/config.json"),
            "{some}"
        );
    }
}
