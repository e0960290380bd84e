//! Plugin names as the operator writes them, matched by one rule: `-` and
//! `_` are the same character (cargo writes `foo-bar`'s library file as
//! `libfoo_bar.so`), and an exact match wins over a loose one.

use std::collections::BTreeMap;
use std::path::Path;

/// `name` as matched: `-` written as `_`.
fn key(name: &str) -> String {
    name.replace('-', "_")
}

/// The entry of `map` (keyed by plugin names) for the plugin `name`: the
/// exact key, else one equal to it with `-` and `_` taken as equal.
pub(crate) fn find<'a, V>(map: &'a BTreeMap<String, V>, name: &str) -> Option<&'a V> {
    if let Some(found) = map.get(name) {
        return Some(found);
    }
    let wanted = key(name);
    map.iter()
        .find(|(candidate, _)| key(candidate) == wanted)
        .map(|(_, found)| found)
}

/// The plugin a library file stands for, by the file's name (before it is
/// opened): `libfoo_bar.so` is plugin `foo_bar` (and `foo-bar`).
pub(crate) fn of_file(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = if cfg!(windows) {
        stem.as_str()
    } else {
        stem.strip_prefix("lib").unwrap_or(&stem)
    };
    key(stem)
}

/// The environment variable an operator sets for a plugin's setting:
/// `CONNHOST_PLUGIN_<PLUGIN>_<KEY>`, upper-cased, other characters as `_`.
pub fn setting_env_var(plugin: &str, key: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("CONNHOST_PLUGIN_{}_{}", clean(plugin), clean(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_name_wins_and_dashes_match_underscores() {
        let map: BTreeMap<String, u8> = [
            ("foo-bar".into(), 1),
            ("foo_bar".into(), 2),
            ("baz".into(), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(find(&map, "foo-bar"), Some(&1));
        assert_eq!(find(&map, "foo_bar"), Some(&2));
        assert_eq!(find(&map, "ba-z"), None);
        let loose: BTreeMap<String, u8> = [("my-plugin".into(), 7)].into_iter().collect();
        assert_eq!(find(&loose, "my_plugin"), Some(&7));
    }

    #[test]
    fn a_file_names_its_plugin_as_cargo_writes_it() {
        assert_eq!(of_file(Path::new("/p/libfoo_bar.so")), "foo_bar");
        assert_eq!(of_file(Path::new("/p/libfoo-bar.so")), "foo_bar");
        assert_eq!(
            setting_env_var("foo-bar", "api.key"),
            "CONNHOST_PLUGIN_FOO_BAR_API_KEY"
        );
    }
}
