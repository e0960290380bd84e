//! Reading the file: its text, parsed and checked, and an error naming
//! the line, the key and its table.

use std::path::Path;

use anyhow::Context as _;

use super::table::Table as _;
use super::ConfigFile;

impl ConfigFile {
    /// Reads and checks the file at `path`. Its errors name the file, and
    /// for what is in it the line and the key.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the configuration file {}", path.display()))?;
        let mut file = Self::parse(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        file.resolve(path.parent().unwrap_or(Path::new("")));
        Ok(file)
    }

    /// Parses the text of a file; an error is `LINE: message` (or
    /// ` message` when the parser knows no place).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let file: Self = toml::from_str(text).map_err(|e| describe(text, &e))?;
        file.plugin.check(text)?;
        Ok(file)
    }
}

/// A parse error as `LINE: message`, naming the key and its table.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return format!(" {message}");
    };
    let line = line_of(text, span.start);
    let table = table_at(text, span.start);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(',').trim();
        let expected = if expected.starts_with("there are no fields") {
            "this table takes no keys".to_owned()
        } else {
            expected.replace('`', "")
        };
        let place = table.map_or_else(|| "at the top level".to_owned(), |t| format!("in {t}"));
        return format!("{line}: unknown key \"{key}\" {place}; {expected}");
    }
    match (key_at(text, span.start), table) {
        (Some(key), Some(table)) => format!("{line}: {key} in {table}: {message}"),
        (Some(key), None) => format!("{line}: {key}: {message}"),
        (None, _) => format!("{line}: {message}"),
    }
}

/// The 1-based line number of byte `offset`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The text of the line holding byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    &text[start..end]
}

/// The key of the `key = value` line holding byte `offset`, if it is one.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line = line_at(text, offset).trim_start();
    if line.starts_with('[') {
        return None;
    }
    let (key, _) = line.split_once('=')?;
    Some(key.trim().trim_matches('"').to_owned())
}

/// The table that byte `offset` is in, as its header (`[plugin.daytona]`);
/// `None` at the top level.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| {
            // Without a trailing comment.
            let end = header.find(']').map_or(header.len(), |i| i + 1);
            header[..end].to_owned()
        })
}
