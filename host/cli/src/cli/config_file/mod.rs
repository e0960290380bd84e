//! The configuration file (`--config FILE`, env `CONNHOST_CONFIG`): the
//! global defaults, the `serve` command's options, the worker processes'
//! limits, and a table per plugin (`[plugin.NAME]`: isolation, bounds,
//! egress grants, settings). See `connhost.example.toml` at the repository's root.
//!
//! **Precedence.** A flag given on the command line, then its environment
//! variable, then the file, then the built-in default: the file only fills
//! in what no flag or variable gave ([`ConfigFile::fill_host`],
//! [`ConfigFile::fill_serve`], [`ConfigFile::fill_registry`]). A plugin's own table wins over the global
//! default wherever that came from.
//!
//! **Errors** name the file, the line and the key:
//! `connhost.toml:7: unknown key "isolaton" in [plugin.daytona]; expected
//! one of ...`. Every table refuses unknown keys, and every value is
//! checked where it is read, so the parser's span points at it.
//!
//! Relative paths in the file (`plugins`, `cache_dir`, `token_file`,
//! `trusted_keys`, `lock_file`) are taken from the file's own folder.
//!
//! **Where things are.** Each table is declared once, with [`table!`]: a
//! line per key naming its type (which checks the value), where its value
//! goes, and the flag (and variable) that wins over it.
//!
//! - [`table`]: [`table!`] itself, and [`Given`] (what wins over the file);
//! - [`global`]: the top-level keys, the trust keys and the registries
//!   spoken to in plain HTTP among them: the file as a whole,
//!   [`ConfigFile`];
//! - [`serve`], [`worker`], [`egress`], [`plugin`]: the tables `[serve]`,
//!   `[worker]`, `[egress]` and `[plugin.NAME]`, with the value types
//!   only they use;
//! - [`values`]: the value types the tables share (seconds, bounded
//!   integers);
//! - [`parse`]: reading the file, and its errors with their lines.

#[macro_use]
mod table;

mod egress;
mod global;
mod parse;
mod plugin;
mod serve;
mod values;
mod worker;

#[cfg(test)]
mod tests;

use connhost::HostConfig;

use super::args::{RegistryArgs, ServeArgs};

pub(crate) use global::ConfigFile;
pub(crate) use table::Given;

impl ConfigFile {
    /// Fills `config` (built from the flags) with what the file sets and no
    /// flag or environment variable gave. Settings: a `--setting` or a
    /// `CONNHOST_PLUGIN_<PLUGIN>_<KEY>` variable wins over the file.
    pub(crate) fn fill_host(&self, config: &mut HostConfig, given: &Given<'_>) {
        table::Table::fill_host(self, config, given);
    }

    /// Fills `args` (the `serve` flags) with what the file's `[serve]`
    /// table (and `cache_dir`) sets and no flag or variable gave.
    pub(crate) fn fill_serve(&self, args: &mut ServeArgs, given: &Given<'_>) {
        table::Table::fill_serve(self, args, given);
    }

    /// Fills `args` (how `push`, `pull` and `serve --sync` reach
    /// registries) with what the file sets and no flag or variable gave.
    pub(crate) fn fill_registry(&self, args: &mut RegistryArgs, given: &Given<'_>) {
        table::Table::fill_registry(self, args, given);
    }
}
