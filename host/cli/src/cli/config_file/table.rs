//! How a table of the file is declared: [`table!`] names each key once,
//! with its type (which checks the value as it is read), where its value
//! goes, and what wins over it; and [`Given`], what a command line gave.

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;
use connhost::{HostConfig, PluginPolicy};

use super::super::args::{RegistryArgs, ServeArgs};

/// Declares a table of the configuration file: the struct serde reads it
/// into (every key optional, unknown keys refused, in the order given,
/// which is the order an unknown key's error lists them in), and its
/// [`Table`] implementation, which fills in what each key sets.
///
/// ```text
/// table! {
///     /// The table.
///     pub(super) struct TableFile {
///         /// A key.
///         KEY: TYPE [relative] => SINK.FIELD.FIELD = CONVERSION,
///             unless flag "CLAP_ID", unless env VARIABLE;
///         ...
///     } tables {
///         /// A table within it, `[KEY]`.
///         KEY: TYPE,
///     }
/// }
/// ```
///
/// - `TYPE` checks the value where serde reads it (its error then names
///   the line and the key): a [`super::values`] type, or any
///   `Deserialize` one.
/// - `[relative]` (a `PathBuf` only): taken from the file's folder.
/// - `SINK` is what the value fills: `host` ([`HostConfig`]), `serve`
///   (`connhost serve`'s [`ServeArgs`]), `registry` (how `push`, `pull`
///   and `serve --sync` reach registries, [`RegistryArgs`]) or `policy`
///   (a plugin's [`PluginPolicy`]); the fields after it lead to the one
///   it sets.
/// - `= CONVERSION`: a function from `TYPE` to the field's type (without
///   it, the value as it is).
/// - `unless flag "ID"`: the clap argument (its id: the field's name in
///   [`super::super::args`]) whose flag or environment variable wins over
///   the file. `unless env VARIABLE`: a variable that, set and not empty,
///   wins as well.
///
/// `tables` (each `Default`, and a [`Table`]) come after the keys, in
/// the struct and in what is filled.
macro_rules! table {
    // The table.
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $key:ident: $ty:ty $([$flag:ident])?
                    => $sink:ident $(. $field:ident)+ $(= $conv:expr)?
                    $(, unless flag $id:literal)? $(, unless env $var:expr)?;
            )*
        } $(tables {
            $(
                $(#[doc = $table_doc:literal])*
                $table:ident: $table_ty:ty,
            )*
        })?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                pub(super) $key: Option<$ty>,
            )*
            $($(
                $(#[doc = $table_doc])*
                #[serde(default)]
                pub(super) $table: $table_ty,
            )*)?
        }

        impl $crate::cli::config_file::table::Table for $name {
            table!(@fill fill_host(host: connhost::HostConfig)
                [$({$key $sink [$($field)+] [$($conv)?] [$($id)?] [$($var)?]})*]
                [$($($table)*)?]);
            table!(@fill fill_serve(serve: $crate::cli::args::ServeArgs)
                [$({$key $sink [$($field)+] [$($conv)?] [$($id)?] [$($var)?]})*]
                [$($($table)*)?]);
            table!(@fill fill_registry(registry: $crate::cli::args::RegistryArgs)
                [$({$key $sink [$($field)+] [$($conv)?] [$($id)?] [$($var)?]})*]
                [$($($table)*)?]);
            table!(@fill fill_policy(policy: connhost::PluginPolicy)
                [$({$key $sink [$($field)+] [$($conv)?] [$($id)?] [$($var)?]})*]
                [$($($table)*)?]);

            #[allow(unused_variables)]
            fn resolve(&mut self, base: &std::path::Path) {
                $(table!(@relative [$($flag)?] {
                    if let Some(path) = self.$key.as_mut() {
                        *path = base.join(&*path);
                    }
                });)*
                $($($crate::cli::config_file::table::Table::resolve(&mut self.$table, base);)*)?
            }

            #[cfg(test)]
            const KEYS: &'static [$crate::cli::config_file::table::Key] = &[$(
                $crate::cli::config_file::table::Key {
                    name: stringify!($key),
                    sink: stringify!($sink),
                    flag: table!(@option $($id)?),
                },
            )*];
        }
    };

    // The method filling `$want`: the keys of that sink, each unless a
    // flag or variable gave it, then the tables.
    (@fill $method:ident($want:ident: $target:ty)
        [$({$key:ident $sink:ident [$($field:ident)+] [$($conv:expr)?] [$($id:literal)?] [$($var:expr)?]})*]
        [$($table:ident)*]
    ) => {
        #[allow(unused_variables)]
        fn $method(&self, sink: &mut $target, given: &$crate::cli::config_file::table::Given<'_>) {
            $(table!(@when $want $sink {
                if let Some(value) = self.$key.as_ref().cloned() {
                    let ids: &[&str] = &[$($id)?];
                    let variables: &[&str] = &[$($var)?];
                    if !$crate::cli::config_file::table::overridden(given, ids, variables) {
                        sink $(.$field)+ = table!(@convert value $(, $conv)?);
                    }
                }
            });)*
            $($crate::cli::config_file::table::Table::$method(&self.$table, sink, given);)*
        }
    };
    (@convert $value:ident) => { $value };
    (@convert $value:ident, $conv:expr) => {
        $crate::cli::config_file::table::convert($value, $conv)
    };

    // The keys of one sink, among a table's. A sink not named here is an
    // error.
    (@when host host $code:block) => { $code };
    (@when serve serve $code:block) => { $code };
    (@when registry registry $code:block) => { $code };
    (@when policy policy $code:block) => { $code };
    (@when host serve $code:block) => {};
    (@when host registry $code:block) => {};
    (@when host policy $code:block) => {};
    (@when serve host $code:block) => {};
    (@when serve registry $code:block) => {};
    (@when serve policy $code:block) => {};
    (@when registry host $code:block) => {};
    (@when registry serve $code:block) => {};
    (@when registry policy $code:block) => {};
    (@when policy host $code:block) => {};
    (@when policy serve $code:block) => {};
    (@when policy registry $code:block) => {};

    // A key's flag: `[relative]` or none.
    (@relative [relative] $code:block) => { $code };
    (@relative [] $code:block) => {};

    (@option) => { None };
    (@option $id:literal) => { Some($id) };
}

/// A table of the file (or the file itself, its top level): what its keys
/// and its tables fill in. [`table!`] writes it; a table of another shape
/// (`[plugin.NAME]`s, a plugin's settings) fills what it needs by hand.
pub(super) trait Table {
    /// Fills the host's configuration.
    fn fill_host(&self, _config: &mut HostConfig, _given: &Given<'_>) {}

    /// Fills `connhost serve`'s flags.
    fn fill_serve(&self, _args: &mut ServeArgs, _given: &Given<'_>) {}

    /// Fills how `push`, `pull` and `serve` reach registries.
    fn fill_registry(&self, _args: &mut RegistryArgs, _given: &Given<'_>) {}

    /// Fills a plugin's policy.
    fn fill_policy(&self, _policy: &mut PluginPolicy, _given: &Given<'_>) {}

    /// Takes its relative paths from `base`, the file's folder.
    fn resolve(&mut self, _base: &Path) {}

    /// Its keys.
    #[cfg(test)]
    const KEYS: &'static [Key] = &[];
}

/// A key, as its table declares it (for the tests).
#[cfg(test)]
#[derive(Debug)]
pub(super) struct Key {
    /// Its name in the file.
    pub(super) name: &'static str,
    /// What it fills: `host`, `serve`, `registry` or `policy`.
    pub(super) sink: &'static str,
    /// The clap id of the option that wins over it.
    pub(super) flag: Option<&'static str>,
}

/// `value` converted by `conversion` (a key's `= CONVERSION`).
pub(super) fn convert<T, U>(value: T, conversion: impl FnOnce(T) -> U) -> U {
    conversion(value)
}

/// Whether one of `ids` was given (on the command line or in its
/// variable), or one of `variables` is set and not empty: then the file
/// gives way.
pub(super) fn overridden(given: &Given<'_>, ids: &[&str], variables: &[&str]) -> bool {
    ids.iter().any(|id| given.has(id))
        || variables
            .iter()
            .any(|variable| std::env::var_os(variable).is_some_and(|v| !v.is_empty()))
}

/// Which options a command line gave, itself or through an environment
/// variable: those the file must not change.
pub(crate) struct Given<'a>(pub(super) Option<&'a ArgMatches>);

impl<'a> Given<'a> {
    /// No options: the file fills in everything it sets.
    pub(super) const NONE: Given<'static> = Given(None);

    /// The options given in `matches`.
    pub(crate) fn new(matches: &'a ArgMatches) -> Self {
        Given(Some(matches))
    }

    /// Whether the option `id` (clap's id: the field's name) was given on
    /// the command line or in its environment variable.
    pub(crate) fn has(&self, id: &str) -> bool {
        self.0.is_some_and(|m| {
            matches!(
                m.try_get_raw(id).ok().and_then(|_| m.value_source(id)),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
    }
}
