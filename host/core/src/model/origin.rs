//! Where a registered provider comes from.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Where a registered provider comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Compiled into the host (collected with `inventory`, or registered by
    /// an embedder in code).
    Builtin,
    /// Loaded from a plugin library.
    Plugin {
        /// The plugin's name (its crate name).
        plugin: String,
        /// The plugin's version.
        version: String,
        /// The file it was loaded from.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        path: PathBuf,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("the host (built in)"),
            Origin::Plugin {
                plugin,
                version,
                path,
            } => write!(f, "plugin {plugin} {version} ({})", path.display()),
        }
    }
}
