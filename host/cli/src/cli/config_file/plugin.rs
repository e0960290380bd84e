//! The `[plugin.NAME]` tables: a plugin's [`PluginPolicy`] (where it
//! runs, its bounds, its egress grant) and its settings.

use std::collections::BTreeMap;
use std::fmt;

use connhost::{HostConfig, Isolation, PluginPolicy};
use serde::{Deserialize, Deserializer};

use super::parse::line_of;
use super::table::{Given, Table};
use super::values::{InFlightBound, Seconds};

/// The settings scope of the built-in providers, `[plugin.builtin]`.
const BUILTIN: &str = "builtin";

table! {
    /// A `[plugin.NAME]` table: [`PluginPolicy`] and the plugin's settings.
    pub(super) struct PluginFile {
        isolation: Isolation
            => policy.isolation = Some;
        validation_timeout: Seconds
            => policy.validation_timeout = |s| Some(s.0);
        max_in_flight: InFlightBound
            => policy.max_in_flight = |n| Some(n.to_usize());
        max_concurrent: InFlightBound
            => policy.max_concurrent = |n| Some(n.to_usize());
        /// The hosts the plugin may call ([`connhost::EgressPattern`]s),
        /// instead of those its providers declare.
        egress: Vec<EgressPattern>
            => policy.egress = |hosts| Some(hosts.into_iter().map(|h| h.0).collect());
    } tables {
        /// `[plugin.NAME.settings]`.
        settings: Settings,
    }
}

impl PluginFile {
    /// The table's policy.
    fn policy(&self) -> PluginPolicy {
        let mut policy = PluginPolicy::default();
        self.fill_policy(&mut policy, &Given::NONE);
        policy
    }
}

/// The `[plugin.NAME]` tables, by name.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(super) struct Plugins(BTreeMap<String, toml::Spanned<PluginFile>>);

impl Plugins {
    /// Refuses a `[plugin.builtin]` that sets more than settings and
    /// egress (the only policy the built-in providers take). `text` is the
    /// file's, for the line.
    pub(super) fn check(&self, text: &str) -> Result<(), String> {
        let Some(builtin) = self.0.get(BUILTIN) else {
            return Ok(());
        };
        let mut rest = builtin.get_ref().policy();
        rest.egress = None;
        if rest != PluginPolicy::default() {
            return Err(format!(
                "{}: [plugin.{BUILTIN}] takes only settings and egress: the built-in providers run in the host, with the global isolation and bounds",
                line_of(text, builtin.span().start)
            ));
        }
        Ok(())
    }
}

impl Table for Plugins {
    fn fill_host(&self, config: &mut HostConfig, _given: &Given<'_>) {
        for (name, table) in &self.0 {
            let table = table.get_ref();
            let policy = table.policy();
            if name != BUILTIN || policy.egress.is_some() {
                config.plugins.insert(name.clone(), policy);
            }
            table.settings.fill(name, config);
        }
    }
}

/// `[plugin.NAME.settings]`: the plugin's settings, any keys.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(super) struct Settings(BTreeMap<String, SettingValue>);

impl Table for Settings {}

impl Settings {
    /// Fills in the settings of `plugin` that neither a `--setting` nor a
    /// `CONNHOST_PLUGIN_<PLUGIN>_<KEY>` variable gave.
    fn fill(&self, plugin: &str, config: &mut HostConfig) {
        for (key, value) in &self.0 {
            let variable = connhost::setting_env_var(plugin, key);
            if std::env::var_os(variable).is_some() {
                continue;
            }
            config
                .settings
                .entry(plugin.to_owned())
                .or_default()
                .entry(key.clone())
                .or_insert_with(|| value.0.clone());
        }
    }
}

/// An egress pattern, checked where it is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct EgressPattern(String);

impl TryFrom<String> for EgressPattern {
    type Error = String;

    fn try_from(pattern: String) -> Result<Self, String> {
        pattern.parse::<connhost::EgressPattern>()?;
        Ok(EgressPattern(pattern))
    }
}

/// A plugin setting: a string, or a number or boolean taken as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SettingValue(String);

impl<'de> Deserialize<'de> for SettingValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SettingValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
