//! Keeping secrets out of logs, errors and `Debug` output.
//!
//! The form schema says which fields are secret (password fields; on a
//! provider without a form, every value). From a submission the host builds
//! a [`Secrets`] set once, and everything that comes back from the provider
//! during that validation (its error messages, panic messages, and the log
//! lines it emits) is scrubbed against it. Call sites do not have to
//! remember anything.
//!
//! A log line is scrubbed against the secrets of the validations polled on
//! the thread that emits it, and against those of every validation its
//! plugin has in flight: a plugin may log from a thread it spawned itself,
//! where no validation is being polled.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use connhost_plugin_api::{CredentialFields, CredentialFormSchema};

/// What replaces a secret that stands as a whole token.
pub(crate) const REDACTED: &str = "<redacted>";

/// What replaces a whole text in which a secret appears where cutting it
/// out would let the context give it away.
pub(crate) const WITHHELD: &str = "<withheld: the text may contain a submitted secret>";

/// Secrets at least this long (in characters) are replaced by [`REDACTED`]
/// where they stand as a whole token: the context of a cut-out token this
/// long does not tell what it was.
pub(crate) const MIN_REPLACED_LEN: usize = 8;

/// Secrets shorter than this are looked for as whole tokens only: inside
/// longer words they match ordinary text by chance ("a" in "cat").
pub(crate) const MIN_IN_WORD_LEN: usize = 4;

/// The secret values of one submission.
///
/// The rule, safe both ways (the secret never shows, and no redaction lets
/// the context give it away):
///
/// - a secret of [`MIN_REPLACED_LEN`] or more characters standing as a
///   whole token (not touching a letter or digit) is replaced by
///   [`REDACTED`];
/// - any other appearance withholds the whole text (it becomes
///   [`WITHHELD`]): a short secret as a token ("king" in "the king key"
///   would read "the `<redacted>` key"), or a secret inside a longer word
///   (`"chec<redacted>"` gives "king" away);
/// - secrets shorter than [`MIN_IN_WORD_LEN`] are looked for as whole
///   tokens only.
///
/// Every value is looked for as submitted (trimmed), and as `Debug` and JSON
/// would escape it.
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    /// Longest first, so a secret containing another is handled whole.
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

/// Where a secret appears in a text.
enum Appearance {
    /// Nowhere (or only where it cannot be told from ordinary text).
    Absent,
    /// Only as whole tokens long enough to cut out: at these byte offsets.
    Tokens(Vec<usize>),
    /// Somewhere cutting it out would give it away.
    Withhold,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Finds `value` in `text` and decides, by the rule of [`Secrets`], what to
/// do about it.
fn appearance(text: &str, value: &str) -> Appearance {
    let len = value.chars().count();
    let starts_in_word = value.chars().next().is_some_and(is_word_char);
    let ends_in_word = value.chars().next_back().is_some_and(is_word_char);
    let mut tokens = Vec::new();
    for (at, _) in text.match_indices(value) {
        let glued_before =
            starts_in_word && text[..at].chars().next_back().is_some_and(is_word_char);
        let glued_after = ends_in_word
            && text[at + value.len()..]
                .chars()
                .next()
                .is_some_and(is_word_char);
        if glued_before || glued_after {
            if len >= MIN_IN_WORD_LEN {
                return Appearance::Withhold;
            }
        } else if len >= MIN_REPLACED_LEN {
            tokens.push(at);
        } else {
            return Appearance::Withhold;
        }
    }
    if tokens.is_empty() {
        Appearance::Absent
    } else {
        Appearance::Tokens(tokens)
    }
}

impl Secrets {
    /// The secret values among `fields`, as `schema` defines them (all
    /// values when there is no schema, and values of unknown fields).
    pub(crate) fn of(schema: Option<&CredentialFormSchema>, fields: &CredentialFields) -> Self {
        let mut values: Vec<String> = fields
            .iter()
            .filter(|(name, _)| schema.is_none_or(|s| s.is_secret(name)))
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            // Also as `Debug` and JSON would escape it, which is how it shows
            // up in a formatted log field or an echoed JSON body.
            .flat_map(|value| {
                let debug = format!("{value:?}");
                let json = serde_json::to_string(&value).unwrap_or_default();
                [
                    value,
                    debug[1..debug.len() - 1].to_owned(),
                    json[1..json.len().saturating_sub(1)].to_owned(),
                ]
            })
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    /// Whether there is nothing to scrub.
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Scrubs every string inside a JSON value, object keys included.
    pub(crate) fn scrub_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(scrubbed) = self.scrub(s) {
                    *s = scrubbed;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            serde_json::Value::Object(map) => {
                if map.keys().any(|k| matches!(self.scrub(k), Cow::Owned(_))) {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, v)| (self.scrub(&k).into_owned(), v))
                        .collect();
                }
                map.values_mut().for_each(|v| self.scrub_json(v));
            }
            _ => {}
        }
    }

    /// `text` scrubbed by the rule of [`Secrets`]: secrets standing as
    /// whole tokens replaced by [`REDACTED`], or the whole text replaced by
    /// [`WITHHELD`].
    pub(crate) fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            match appearance(&out, value) {
                Appearance::Absent => {}
                // Owned, so callers that look for a change see one.
                Appearance::Withhold => return Cow::Owned(WITHHELD.to_owned()),
                Appearance::Tokens(offsets) => {
                    let mut scrubbed = String::with_capacity(out.len());
                    let mut last = 0;
                    for at in offsets {
                        scrubbed.push_str(&out[last..at]);
                        scrubbed.push_str(REDACTED);
                        last = at + value.len();
                    }
                    scrubbed.push_str(&out[last..]);
                    out = Cow::Owned(scrubbed);
                }
            }
        }
        out
    }
}

thread_local! {
    static ACTIVE: RefCell<Vec<Arc<Secrets>>> = const { RefCell::new(Vec::new()) };
}

/// Scrubs `text` against every one of `all`.
pub(crate) fn scrub_all<'a, 's>(
    all: impl IntoIterator<Item = &'s Arc<Secrets>>,
    text: &'a str,
) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secrets in all {
        if let Cow::Owned(scrubbed) = secrets.scrub(&out) {
            out = Cow::Owned(scrubbed);
        }
    }
    out
}

/// Scrubs `text` against the secrets of every validation being polled on
/// this thread right now. The plugin log bridge uses it, so a provider that
/// logs a credential while being polled does not leak it.
pub(crate) fn scrub_active(text: &str) -> Cow<'_, str> {
    ACTIVE.with(|active| {
        let active = active.borrow();
        scrub_all(active.iter(), text)
    })
}

/// The secrets of the validations in flight, by the name of the plugin
/// running them ([`crate::capabilities::BUILTIN_SCOPE`] for compiled-in
/// providers). A validation is in flight from the moment its future is
/// built until that future is dropped (it finished, or was cancelled); one
/// whose thread outlives its timeout stays in flight with it.
/// Process-wide, as the plugin log callback that reads it, which knows
/// only the plugin's name: two hosts with a plugin of one name scrub each
/// other's secrets too (more scrubbing, never less).
static IN_FLIGHT: Mutex<BTreeMap<String, Vec<Arc<Secrets>>>> = Mutex::new(BTreeMap::new());

fn in_flight() -> std::sync::MutexGuard<'static, BTreeMap<String, Vec<Arc<Secrets>>>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Scrubs a log line of plugin `plugin` against the secrets polled on this
/// thread ([`scrub_active`]) and those of every validation of that plugin
/// in flight, wherever it runs: a line from a thread the plugin spawned is
/// scrubbed too.
pub(crate) fn scrub_plugin_line<'a>(plugin: &str, text: &'a str) -> Cow<'a, str> {
    let active = scrub_active(text);
    let in_flight = in_flight();
    match scrub_all(in_flight.get(plugin).into_iter().flatten(), &active) {
        Cow::Owned(scrubbed) => Cow::Owned(scrubbed),
        Cow::Borrowed(_) => active,
    }
}

/// Registers one validation's secrets as in flight for `plugin` until it
/// is dropped.
struct InFlightSecrets {
    plugin: String,
    secrets: Arc<Secrets>,
}

impl InFlightSecrets {
    fn register(plugin: &str, secrets: Arc<Secrets>) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        in_flight()
            .entry(plugin.to_owned())
            .or_default()
            .push(secrets.clone());
        Some(Self {
            plugin: plugin.to_owned(),
            secrets,
        })
    }
}

impl Drop for InFlightSecrets {
    fn drop(&mut self) {
        let mut in_flight = in_flight();
        if let Some(list) = in_flight.get_mut(&self.plugin) {
            if let Some(at) = list.iter().position(|s| Arc::ptr_eq(s, &self.secrets)) {
                list.swap_remove(at);
            }
            if list.is_empty() {
                in_flight.remove(&self.plugin);
            }
        }
    }
}

/// The secrets active on this thread right now (see [`scrub_active`]):
/// an isolated backend takes them along to scrub its worker's output.
pub(crate) fn active_secrets() -> Vec<Arc<Secrets>> {
    ACTIVE.with(|active| active.borrow().clone())
}

/// A validation's future: its secrets are active (see [`scrub_active`])
/// while it is polled, and in flight for its plugin (see
/// [`scrub_plugin_line`]) for as long as it exists.
pub(crate) struct WithSecrets<F> {
    secrets: Arc<Secrets>,
    inner: Pin<Box<F>>,
    _in_flight: Option<InFlightSecrets>,
}

impl<F: Future> WithSecrets<F> {
    /// Wraps the validation `inner` of a provider of plugin `plugin`.
    pub(crate) fn new(plugin: &str, secrets: Arc<Secrets>, inner: F) -> Self {
        Self {
            _in_flight: InFlightSecrets::register(plugin, secrets.clone()),
            secrets,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for WithSecrets<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        struct Pop;
        impl Drop for Pop {
            fn drop(&mut self) {
                ACTIVE.with(|active| active.borrow_mut().pop());
            }
        }
        ACTIVE.with(|active| active.borrow_mut().push(self.secrets.clone()));
        let _pop = Pop;
        self.inner.as_mut().poll(cx)
    }
}

/// Shows a submission with secret values replaced, for `Debug` and logs.
pub(crate) struct RedactedFields<'a> {
    schema: Option<&'a CredentialFormSchema>,
    fields: &'a CredentialFields,
}

impl<'a> RedactedFields<'a> {
    /// Wraps a submission.
    pub(crate) fn new(
        schema: Option<&'a CredentialFormSchema>,
        fields: &'a CredentialFields,
    ) -> Self {
        Self { schema, fields }
    }
}

impl fmt::Debug for RedactedFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.fields {
            if self.schema.is_none_or(|s| s.is_secret(name)) {
                map.entry(name, &REDACTED);
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhost_plugin_api::testing::fields;
    use connhost_plugin_api::FormField;

    fn schema() -> CredentialFormSchema {
        CredentialFormSchema::new("")
            .with_field(FormField::text("region", "Region"))
            .with_field(FormField::password("secret", "Secret"))
    }

    #[test]
    fn password_values_are_scrubbed_and_text_values_kept() {
        let submitted = fields(&[("region", "eu-west-1"), ("secret", "s3cr3t-value")]);
        let secrets = Secrets::of(Some(&schema()), &submitted);
        assert_eq!(
            secrets.scrub("key s3cr3t-value refused in eu-west-1"),
            "key <redacted> refused in eu-west-1"
        );
    }

    fn scrub_with(secret: &str, text: &str) -> String {
        Secrets::of(None, &fields(&[("k", secret)]))
            .scrub(text)
            .into_owned()
    }

    #[test]
    fn a_short_secret_inside_a_word_withholds_the_text_instead_of_cutting_the_word() {
        // "chec<redacted>" would give "king" away.
        assert_eq!(scrub_with("king", "checking a Daytona API key"), WITHHELD);
        assert_eq!(scrub_with("king", "the king key failed"), WITHHELD);
        assert_eq!(scrub_with("king", "nothing to see"), "nothing to see");
    }

    #[test]
    fn secrets_of_one_to_three_characters_are_found_as_whole_tokens() {
        assert_eq!(scrub_with("a", "checking a Daytona API key"), WITHHELD);
        assert_eq!(scrub_with("x9", "key x9 refused"), WITHHELD);
        assert_eq!(scrub_with("x9", "key=x9"), WITHHELD);
        // Inside words they are ordinary text, and reveal nothing.
        assert_eq!(scrub_with("a", "cat"), "cat");
        assert_eq!(scrub_with("abc", "abcdef refused"), "abcdef refused");
    }

    #[test]
    fn long_secrets_are_cut_out_as_whole_tokens_and_withhold_the_text_inside_words() {
        let secret = "s3cr3t-value";
        assert_eq!(
            scrub_with(secret, "key s3cr3t-value refused (s3cr3t-value)"),
            "key <redacted> refused (<redacted>)"
        );
        assert_eq!(
            scrub_with(secret, "Bearer:s3cr3t-value."),
            "Bearer:<redacted>."
        );
        assert_eq!(scrub_with(secret, "xs3cr3t-value"), WITHHELD);
        assert_eq!(scrub_with(secret, "s3cr3t-valueZ"), WITHHELD);
        // A secret starting or ending with punctuation cannot be inside a
        // word on that side.
        assert_eq!(
            scrub_with("-----secret-key", "pem:x-----secret-key"),
            "pem:x<redacted>"
        );
    }

    #[test]
    fn no_secret_no_change_and_whitespace_only_values_are_not_secrets() {
        let secrets = Secrets::of(None, &fields(&[("k", "   ")]));
        assert!(secrets.is_empty());
        assert!(matches!(secrets.scrub("a b c"), Cow::Borrowed("a b c")));
    }

    #[test]
    fn withheld_text_wins_over_redacted_tokens() {
        let secrets = Secrets::of(None, &fields(&[("a", "long-secret-1"), ("b", "pin")]));
        assert_eq!(secrets.scrub("long-secret-1 then pin"), WITHHELD);
        let mut json = serde_json::json!({"m": "pin 1", "n": "long-secret-1"});
        secrets.scrub_json(&mut json);
        assert_eq!(json, serde_json::json!({"m": WITHHELD, "n": REDACTED}));
        // Keys are text too.
        let mut keyed = serde_json::json!({"long-secret-1": "ok", "k": {"x long-secret-1": 1}});
        secrets.scrub_json(&mut keyed);
        assert_eq!(
            keyed,
            serde_json::json!({"<redacted>": "ok", "k": {"x <redacted>": 1}})
        );
    }

    #[test]
    fn escaped_forms_of_a_secret_are_scrubbed_too() {
        let submitted = fields(&[("secret", "sec\"ret\\value")]);
        let secrets = Secrets::of(Some(&schema()), &submitted);
        let logged = format!("key={:?}", "sec\"ret\\value");
        assert_eq!(secrets.scrub(&logged), "key=\"<redacted>\"");
        let mut echoed = serde_json::json!({"echo": ["sec\"ret\\value"], "n": 1});
        secrets.scrub_json(&mut echoed);
        assert_eq!(echoed, serde_json::json!({"echo": ["<redacted>"], "n": 1}));
    }

    #[test]
    fn without_a_schema_every_value_is_secret() {
        let submitted = fields(&[("token", "gho_abcdef")]);
        let secrets = Secrets::of(None, &submitted);
        assert_eq!(secrets.scrub("bad gho_abcdef"), "bad <redacted>");
    }

    #[test]
    fn unknown_fields_count_as_secret() {
        let submitted = fields(&[("surprise", "hidden-value")]);
        let secrets = Secrets::of(Some(&schema()), &submitted);
        assert_eq!(secrets.scrub("x hidden-value"), "x <redacted>");
    }

    #[test]
    fn debug_of_a_submission_hides_secrets() {
        let submitted = fields(&[("region", "eu-west-1"), ("secret", "s3cr3t-value")]);
        let shown = format!("{:?}", RedactedFields::new(Some(&schema()), &submitted));
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("eu-west-1"), "{shown}");
    }

    #[test]
    fn active_secrets_apply_only_while_polled() {
        let secrets = Arc::new(Secrets::of(None, &fields(&[("k", "topsecret")])));
        let inside = WithSecrets::new("test-plugin", secrets, async {
            scrub_active("saw topsecret").into_owned()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(inside), "saw <redacted>");
        assert_eq!(scrub_active("saw topsecret"), "saw topsecret");
    }

    #[test]
    fn a_plugin_line_from_any_thread_is_scrubbed_while_the_validation_is_in_flight() {
        let secrets = Arc::new(Secrets::of(None, &fields(&[("k", "in-flight-secret")])));
        let validation = WithSecrets::new("spawning-plugin", secrets, async {});
        let from_a_thread = || {
            std::thread::spawn(|| {
                scrub_plugin_line("spawning-plugin", "thread saw in-flight-secret").into_owned()
            })
            .join()
            .unwrap()
        };
        assert_eq!(from_a_thread(), "thread saw <redacted>");
        // Another plugin's lines are not scrubbed against it.
        assert_eq!(
            scrub_plugin_line("another-plugin", "saw in-flight-secret"),
            "saw in-flight-secret"
        );
        drop(validation);
        assert_eq!(from_a_thread(), "thread saw in-flight-secret");
    }
}
