//! The artifact's layout (OCI image-spec 1.1).
//!
//! A plugin is an **image index** (`application/vnd.oci.image.index.v1+json`,
//! `artifactType` [`ARTIFACT_TYPE`]) with one **image manifest** per
//! platform. Each index entry carries the platform: `os`, `architecture`,
//! `variant` when it matters, and on Linux the C library as the single
//! `os.features` entry (`gnu` or `musl`). Each manifest has
//! - `artifactType` [`ARTIFACT_TYPE`];
//! - a **config** blob ([`CONFIG_MEDIA_TYPE`], [`PluginConfig`] as JSON):
//!   the plugin's name, version, plugin API version, providers, the hosts
//!   they declare they call, the library's file name and the target;
//! - a first **layer** holding the library as is ([`LIBRARY_MEDIA_TYPE`],
//!   annotated with its file name as `org.opencontainers.image.title`, as
//!   ORAS does), whose digest is the SHA-256 of the file, the digest
//!   connhost's lock file records;
//! - when the library is signed, a second layer holding its detached
//!   minisign signature ([`SIGNATURE_MEDIA_TYPE`], titled `FILE.minisig`).
//!
//! The signature is a layer of the same manifest rather than an OCI 1.1
//! referrer (a manifest with a `subject`): registries without the
//! referrers API, such as the `docker-registry` 2.8 Debian ships, then need
//! no fallback tag schema, a copy by any client (`skopeo copy`, `oras cp`)
//! carries the signature along, and one manifest request fetches both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::platform::Platform;

/// The `artifactType` of a connhost plugin's index and manifests.
pub const ARTIFACT_TYPE: &str = "application/vnd.connhost.plugin.v1";
/// The media type of the config blob ([`PluginConfig`]).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.connhost.plugin.config.v1+json";
/// The media type of the layer holding the library.
pub const LIBRARY_MEDIA_TYPE: &str = "application/vnd.connhost.plugin.library.v1";
/// The media type of the layer holding the library's minisign signature.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.connhost.plugin.signature.v1.minisign";
/// OCI's image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// OCI's image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The annotation naming a layer's file (ORAS's convention).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The annotation with the plugin's version, on each manifest.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";

/// What the config blob says about one platform's library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// The plugin's name, as the library reports it.
    pub name: String,
    /// The plugin's version, as the library reports it.
    pub version: String,
    /// The plugin API version the library was built against.
    pub api_version: String,
    /// The library's file name (`libdaytona.so`): what `pull` writes it as.
    pub file: String,
    /// The platform the library is built for.
    pub target: Platform,
    /// The providers it offers.
    pub providers: Vec<ProviderSummary>,
}

/// One provider of a plugin, as the config blob lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSummary {
    /// The provider's id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// The hosts it declares it calls (its egress), if it declares any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    pub media_type: String,
    /// `sha256:` and the hex SHA-256 of the content.
    pub digest: String,
    /// The content's size in bytes.
    pub size: u64,
    /// The artifact type, on an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The platform, on an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<IndexPlatform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A platform as an index entry writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPlatform {
    /// The operating system.
    pub os: String,
    /// The CPU architecture.
    pub architecture: String,
    /// The CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Features of the system: here the C library on Linux.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl IndexPlatform {
    /// The platform this index entry describes.
    pub(crate) fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            libc: self.os_features.first().cloned(),
        }
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: Option<String>,
    /// [`ARTIFACT_TYPE`] for a connhost plugin.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers: the library, then its signature if any.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: Option<String>,
    /// [`ARTIFACT_TYPE`] for a connhost plugin.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// One manifest per platform.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Whether `text` is `sha256:` and 64 lower-case hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A blob with its descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub descriptor: Descriptor,
    pub data: Vec<u8>,
}

impl Blob {
    pub(crate) fn new(media_type: &str, data: Vec<u8>, title: Option<&str>) -> Self {
        let mut annotations = BTreeMap::new();
        if let Some(title) = title {
            annotations.insert(TITLE_ANNOTATION.to_owned(), title.to_owned());
        }
        Blob {
            descriptor: Descriptor {
                media_type: media_type.to_owned(),
                digest: digest_of(&data),
                size: data.len() as u64,
                artifact_type: None,
                platform: None,
                annotations,
            },
            data,
        }
    }
}

/// One platform's manifest and the blobs it refers to, ready to push.
pub(crate) struct Built {
    pub blobs: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub entry: Descriptor,
}

/// Serialises `value` as the bytes pushed (and so digested).
pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // These types serialise infallibly (strings, numbers, maps of strings).
    serde_json::to_vec(value).unwrap_or_default()
}

/// Builds one platform's manifest.
pub(crate) fn build_manifest(
    config: &PluginConfig,
    library: Vec<u8>,
    signature: Option<Vec<u8>>,
) -> Built {
    let config_blob = Blob::new(CONFIG_MEDIA_TYPE, to_bytes(config), None);
    let mut layers = vec![Blob::new(LIBRARY_MEDIA_TYPE, library, Some(&config.file))];
    if let Some(signature) = signature {
        let title = format!("{}.minisig", config.file);
        layers.push(Blob::new(SIGNATURE_MEDIA_TYPE, signature, Some(&title)));
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(VERSION_ANNOTATION.to_owned(), config.version.clone());
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: config_blob.descriptor.clone(),
        layers: layers.iter().map(|b| b.descriptor.clone()).collect(),
        annotations,
    };
    let bytes = to_bytes(&manifest);
    let entry = Descriptor {
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        digest: digest_of(&bytes),
        size: bytes.len() as u64,
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        platform: Some(IndexPlatform {
            os: config.target.os.clone(),
            architecture: config.target.architecture.clone(),
            variant: config.target.variant.clone(),
            os_features: config.target.os_features(),
        }),
        annotations: BTreeMap::new(),
    };
    let mut blobs = vec![config_blob];
    blobs.extend(layers);
    Built {
        blobs,
        manifest: bytes,
        entry,
    }
}

/// Builds the index over the platforms' manifest entries.
pub(crate) fn build_index(entries: Vec<Descriptor>, name: &str, version: &str) -> Vec<u8> {
    let mut annotations = BTreeMap::new();
    annotations.insert(TITLE_ANNOTATION.to_owned(), name.to_owned());
    annotations.insert(VERSION_ANNOTATION.to_owned(), version.to_owned());
    to_bytes(&Index {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.to_owned()),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        manifests: entries,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config(target: &str) -> PluginConfig {
        PluginConfig {
            name: "daytona".into(),
            version: "1.2.0".into(),
            api_version: "0.1.1".into(),
            file: "libdaytona.so".into(),
            target: target.parse().unwrap(),
            providers: vec![ProviderSummary {
                id: "daytona".into(),
                name: "Daytona".into(),
                egress: vec!["app.daytona.io".into()],
            }],
        }
    }

    #[test]
    fn a_manifest_holds_the_config_the_library_and_its_signature() {
        let built = build_manifest(
            &config("linux/amd64"),
            b"\x7fELF library".to_vec(),
            Some(b"sig".to_vec()),
        );
        let manifest: Manifest = serde_json::from_slice(&built.manifest).unwrap();
        assert_eq!(manifest.artifact_type.as_deref(), Some(ARTIFACT_TYPE));
        assert_eq!(manifest.config.media_type, CONFIG_MEDIA_TYPE);
        assert_eq!(manifest.layers.len(), 2);
        assert_eq!(manifest.layers[0].media_type, LIBRARY_MEDIA_TYPE);
        assert_eq!(manifest.layers[0].digest, digest_of(b"\x7fELF library"));
        assert_eq!(
            manifest.layers[1].annotations[TITLE_ANNOTATION],
            "libdaytona.so.minisig"
        );
        assert_eq!(built.entry.digest, digest_of(&built.manifest));
        let platform = built.entry.platform.unwrap();
        assert_eq!(platform.os_features, ["gnu"]);
        assert_eq!(platform.platform().to_string(), "linux/amd64+gnu");
        let config_json: serde_json::Value = serde_json::from_slice(&built.blobs[0].data).unwrap();
        assert_eq!(config_json["apiVersion"], "0.1.1");
        assert_eq!(config_json["target"]["architecture"], "amd64");
        assert_eq!(config_json["providers"][0]["egress"][0], "app.daytona.io");
    }

    #[test]
    fn digests_are_sha256_in_lower_case_hex() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_digest(&digest_of(b"x")));
        assert!(!is_digest("sha256:E3B0"));
        assert!(!is_digest("md5:00"));
    }
}
