//! The platform a plugin library is built for: operating system, CPU
//! architecture (in OCI's words, which are Go's: `amd64`, `arm64`), an
//! optional CPU variant, and on Linux the C library it links against,
//! since a library built against glibc does not load on musl and the
//! reverse.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A plugin library's target platform.
///
/// Written `OS/ARCH[/VARIANT][+LIBC]`: `linux/amd64`, `linux/arm64+musl`,
/// `linux/arm/v7`. On Linux the C library defaults to `gnu` (glibc); on
/// other systems there is none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// The operating system, as OCI names it (`linux`, `darwin`, `windows`).
    pub os: String,
    /// The CPU architecture, as OCI names it (`amd64`, `arm64`, `386`).
    pub architecture: String,
    /// The CPU variant (`v7` for `arm`), when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The C library on Linux (`gnu` or `musl`, as Rust's target triples
    /// name them); carried in the index as the platform's `os.features`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libc: Option<String>,
}

/// Why a platform could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a platform: {reason} (write OS/ARCH[/VARIANT][+LIBC], e.g. linux/amd64 or linux/arm64+musl)")]
pub struct PlatformError {
    text: String,
    reason: &'static str,
}

fn word_ok(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason| PlatformError {
            text: text.to_owned(),
            reason,
        };
        let (path, libc) = match text.split_once('+') {
            Some((path, libc)) => (path, Some(libc)),
            None => (text, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (os, architecture, variant) = match parts[..] {
            [os, arch] => (os, arch, None),
            [os, arch, variant] => (os, arch, Some(variant)),
            _ => return Err(error("expected two or three parts separated by /")),
        };
        if ![os, architecture]
            .iter()
            .chain(variant.iter())
            .all(|w| word_ok(w))
        {
            return Err(error("each part is lower-case letters, digits, - or _"));
        }
        let libc = match (os, libc) {
            (_, Some(libc)) if !word_ok(libc) => {
                return Err(error("the C library is lower-case letters and digits"))
            }
            (_, Some(libc)) => Some(libc.to_owned()),
            ("linux", None) => Some("gnu".to_owned()),
            (_, None) => None,
        };
        Ok(Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            libc,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        if let Some(libc) = &self.libc {
            write!(f, "+{libc}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform this program was built for (and so the one whose
    /// libraries it can load).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        };
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let libc = if os == "linux" {
            Some(
                if cfg!(target_env = "musl") {
                    "musl"
                } else {
                    "gnu"
                }
                .to_owned(),
            )
        } else {
            None
        };
        let variant = if architecture == "arm" {
            Some(
                if cfg!(target_feature = "v7") {
                    "v7"
                } else {
                    "v6"
                }
                .to_owned(),
            )
        } else {
            None
        };
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
            libc,
        }
    }

    /// The `os.features` this platform is written with in an index.
    pub(crate) fn os_features(&self) -> Vec<String> {
        self.libc.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_and_write_the_same() {
        for text in [
            "linux/amd64+gnu",
            "linux/arm64+musl",
            "linux/arm/v7+gnu",
            "darwin/arm64",
        ] {
            let platform: Platform = text.parse().unwrap();
            assert_eq!(platform.to_string(), text);
        }
        let linux: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(linux.libc.as_deref(), Some("gnu"));
        assert_eq!(linux.to_string(), "linux/amd64+gnu");
        for bad in [
            "linux",
            "linux/",
            "Linux/amd64",
            "linux/amd64/v1/x",
            "linux/amd64+",
        ] {
            let err = bad.parse::<Platform>().unwrap_err().to_string();
            assert!(err.contains("is not a platform"), "{err}");
        }
    }

    #[test]
    fn the_host_platform_is_written_in_oci_words() {
        let host = Platform::host();
        if cfg!(all(
            target_os = "linux",
            target_arch = "x86_64",
            target_env = "gnu"
        )) {
            assert_eq!(host.to_string(), "linux/amd64+gnu");
        }
        assert_eq!(host.to_string().parse::<Platform>().unwrap(), host);
    }
}
