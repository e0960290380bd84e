//! What the CLI writes, and how: text that came from a plugin (names,
//! descriptions, messages, load failure reasons) is escaped before a
//! terminal sees it, so a plugin cannot retitle the window, clear the
//! screen or reorder a line; and a reader that goes away (`connhost ... |
//! head`) is no error: as in ripgrep, the rest of the output is dropped
//! without a word, and the command ends with the status it would have had
//! (0, or a verdict's status: a closed pipe never turns "rejected" into
//! "valid"). The CLI never panics on a closed pipe, and SIGPIPE stays
//! ignored (Rust's default), so `serve` is never killed by a client or a
//! reader that went away.
//!
//! Human output goes through [`print`], which escapes everything but line
//! breaks; [`output`](super::output) escapes each single-line value with
//! [`escape`] as it formats it, so a line break inside a name cannot forge
//! a line either. `--json` goes through [`print_json`], byte for byte
//! serde_json's (which escapes C0 controls itself).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

/// Whether a terminal may act on `c` rather than show it: C0 controls,
/// DEL, C1 controls (U+0080 to U+009F, which some terminals obey in
/// UTF-8), and the bidirectional embeddings, overrides and isolates
/// (U+202A to U+202E, U+2066 to U+2069) that make a line read in another
/// order than it is written.
pub(crate) fn acts_on_terminal(c: char) -> bool {
    // `is_control` is Unicode's Cc: exactly C0, DEL and C1.
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as it is safe to show in one line of a terminal: every character
/// a terminal would act on is written as an escape, in the notation of a
/// Rust string literal:
///
/// - tab, line feed and carriage return as `\t`, `\n`, `\r`;
/// - other ASCII controls (C0 and DEL) as `\x` and two lower-case hex
///   digits: ESC is `\x1b`, BEL `\x07`, DEL `\x7f`;
/// - C1 controls and bidirectional controls as `\u{…}` and the code
///   point in lower-case hex: `\u{9b}`, `\u{202e}`.
///
/// Everything else is kept as it is, letters of any script ("é", "日本")
/// and backslashes included: this is a rendering for a terminal, not a
/// reversible encoding (a plugin may write the four characters `\x1b`
/// itself); `--json` gives the exact text. Borrowed when nothing needs
/// escaping, which is the usual case.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    escape_keeping(text, false)
}

/// [`escape`], except that line feeds are kept: for text the CLI prints
/// over several lines on purpose (a whole command's output, an error
/// chain, a multi-line layout difference). Carriage returns are still
/// escaped, so no line can be overwritten.
pub(crate) fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_keeping(text, true)
}

fn escape_keeping(text: &str, line_feeds: bool) -> Cow<'_, str> {
    let needs = |c: char| acts_on_terminal(c) && !(line_feeds && c == '\n');
    let Some(first) = text.find(needs) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if !needs(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\t' => out.write_str("\\t"),
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            c if c.is_ascii() => write!(out, "\\x{:02x}", u32::from(c)),
            c => write!(out, "\\u{{{:x}}}", u32::from(c)),
        };
    }
    Cow::Owned(out)
}

/// Writes human output to standard output, escaped with [`escape_lines`]
/// (values in it should already have been escaped one by one with
/// [`escape`]; this catches anything that was not). A reader that went
/// away is not an error ([`write_stdout`]).
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    write_stdout(escape_lines(text).as_bytes())
}

/// Writes `value` as pretty JSON and a line feed to standard output,
/// exactly as serde_json writes it (`--json` output does not change: C0
/// controls are already `\u001b`-style escapes in it).
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// Writes `value` as pretty JSON and a line feed to standard output, with
/// what serde_json leaves raw and a terminal would act on (DEL, C1 and
/// bidirectional controls) written as JSON escapes too (`\u202e`): the
/// same JSON value, safe to show. For commands whose only output is JSON
/// (`schema`), which are read on a terminal as often as by a program.
pub(crate) fn print_terminal_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = terminal_json(&serde_json::to_string_pretty(value)?);
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// `json` (serde_json's output, compact or pretty) with every character a
/// terminal would act on written as a `\uXXXX` escape. serde_json escapes
/// the C0 controls in strings itself, so a raw line feed is the layout's
/// and stays; outside strings JSON is plain ASCII, so every character
/// replaced is inside a string, where the escape means the same character.
pub(crate) fn terminal_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if acts_on_terminal(c) && c != '\n' {
            // All of them are in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes `bytes` to standard output and flushes them. A broken pipe (the
/// reader had what it wanted, as `head` does) drops them silently; any
/// other failure (a full disk) is an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("could not write to standard output"))
        }
        _ => Ok(()),
    }
}

/// Writes to standard output for a server's status lines (`listening`,
/// `ready`): escaped, and best effort, since a server keeps serving when
/// whoever started it stops reading its output.
pub(crate) fn print_status(text: &str) {
    let _ = write_stdout(escape_lines(text).as_bytes());
}

/// Writes human text to standard error, escaped with [`escape_lines`].
/// Best effort: when standard error cannot be written, there is nowhere
/// left to say so.
pub(crate) fn eprint(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(escape_lines(text).as_bytes());
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `input` escapes to `single` on one line and to `lines`
    /// over several.
    fn check(input: &str, single: &str, lines: &str) {
        assert_eq!(escape(input), single, "escape({input:?})");
        assert_eq!(escape_lines(input), lines, "escape_lines({input:?})");
        // Escaped text has nothing left to escape.
        assert_eq!(escape(single), single);
        assert_eq!(escape_lines(lines), lines);
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "OpenAI",
            "Café — naïve 日本 \\x1b C:\\path",
            "a\u{200d}b",
        ] {
            assert!(
                matches!(escape(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
            assert!(matches!(escape_lines(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn terminal_sequences_are_escaped() {
        check(
            "\x1b]0;pwned\x07",
            "\\x1b]0;pwned\\x07",
            "\\x1b]0;pwned\\x07",
        );
        check("\x1b[2Jcleared", "\\x1b[2Jcleared", "\\x1b[2Jcleared");
        check("\0\x01\x7f", "\\x00\\x01\\x7f", "\\x00\\x01\\x7f");
        // C1: CSI (U+009B) and the ends of the range; U+00A0 is a space.
        check(
            "\u{80}\u{9b}2J\u{9f}\u{a0}",
            "\\u{80}\\u{9b}2J\\u{9f}\u{a0}",
            "\\u{80}\\u{9b}2J\\u{9f}\u{a0}",
        );
    }

    #[test]
    fn bidirectional_controls_are_escaped() {
        check(
            "user\u{202e}gpj.exe",
            "user\\u{202e}gpj.exe",
            "user\\u{202e}gpj.exe",
        );
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2066}', '\u{2069}',
        ] {
            let escaped = format!("\\u{{{:x}}}", u32::from(c));
            assert_eq!(escape(&c.to_string()), escaped);
        }
        // Next to the ranges, ordinary punctuation stays.
        check(
            "\u{2029}\u{2065}\u{206a}",
            "\u{2029}\u{2065}\u{206a}",
            "\u{2029}\u{2065}\u{206a}",
        );
    }

    #[test]
    fn line_breaks_are_escaped_in_one_line_and_kept_in_several() {
        check("a\nb", "a\\nb", "a\nb");
        check("a\r\nb\tc", "a\\r\\nb\\tc", "a\\r\nb\\tc");
        check("fake\rvalid: yes", "fake\\rvalid: yes", "fake\\rvalid: yes");
    }

    #[test]
    fn terminal_json_is_the_same_value_without_what_a_terminal_acts_on() {
        let value = serde_json::json!({
            "name": "a\x1b[2J\u{202e}b\u{9b}\x7f",
            "label": "Café \\ \"quoted\"",
        });
        let plain = serde_json::to_string_pretty(&value).unwrap();
        let safe = terminal_json(&plain);
        assert!(
            !safe.chars().any(|c| acts_on_terminal(c) && c != '\n'),
            "{safe}"
        );
        assert_eq!(safe.lines().count(), plain.lines().count(), "{safe}");
        assert!(safe.contains(r"a\u001b[2J\u202eb\u009b\u007f"), "{safe}");
        assert!(safe.contains("Café"), "{safe}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
        // What serde_json already made safe is left byte for byte.
        let tame = serde_json::json!({"id": "openai", "x": "\x1b"});
        let tame = serde_json::to_string_pretty(&tame).unwrap();
        assert_eq!(terminal_json(&tame), tame);
    }
}
