//! Keeping secrets out of logs, errors and `Debug` output.
//!
//! The form schema says which fields are secret (password fields; on a
//! provider without a form, every value). From a submission the host builds
//! a [`Secrets`] set once, and everything that comes back from the provider
//! during that validation (its error messages, panic messages, and the log
//! lines it emits while being polled) is scrubbed against it. Call sites do
//! not have to remember anything.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use connhost_plugin_api::{CredentialFields, CredentialFormSchema};

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Values shorter than this are not scrubbed from text: they would match
/// ordinary words. Forms do not accept such short secrets in practice.
const MIN_SCRUBBED_LEN: usize = 4;

/// The secret values of one submission.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// The secret values among `fields`, as `schema` defines them (all
    /// values when there is no schema, and values of unknown fields).
    pub fn of(schema: Option<&CredentialFormSchema>, fields: &CredentialFields) -> Self {
        let mut values: Vec<String> = fields
            .iter()
            .filter(|(name, _)| schema.is_none_or(|s| s.is_secret(name)))
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| value.len() >= MIN_SCRUBBED_LEN)
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
        // Longest first, so a secret containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    /// Scrubs every string inside a JSON value.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(scrubbed) = self.scrub(s) {
                    *s = scrubbed;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.scrub_json(v)),
            _ => {}
        }
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), REDACTED));
            }
        }
        out
    }
}

thread_local! {
    static ACTIVE: RefCell<Vec<Arc<Secrets>>> = const { RefCell::new(Vec::new()) };
}

/// Scrubs `text` against the secrets of every validation being polled on
/// this thread right now. The plugin log bridge uses it, so a provider that
/// logs a credential while being polled does not leak it.
pub fn scrub_active(text: &str) -> Cow<'_, str> {
    ACTIVE.with(|active| {
        let active = active.borrow();
        if active.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        for secrets in active.iter() {
            if let Cow::Owned(scrubbed) = secrets.scrub(&out) {
                out = Cow::Owned(scrubbed);
            }
        }
        out
    })
}

/// A future that makes its secrets active (see [`scrub_active`]) while it
/// is polled.
pub(crate) struct WithSecrets<F> {
    secrets: Arc<Secrets>,
    inner: Pin<Box<F>>,
}

impl<F: Future> WithSecrets<F> {
    pub(crate) fn new(secrets: Arc<Secrets>, inner: F) -> Self {
        Self {
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
pub struct RedactedFields<'a> {
    schema: Option<&'a CredentialFormSchema>,
    fields: &'a CredentialFields,
}

impl<'a> RedactedFields<'a> {
    /// Wraps a submission.
    pub fn new(schema: Option<&'a CredentialFormSchema>, fields: &'a CredentialFields) -> Self {
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
        let inside = WithSecrets::new(secrets, async {
            scrub_active("saw topsecret").into_owned()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(inside), "saw <redacted>");
        assert_eq!(scrub_active("saw topsecret"), "saw topsecret");
    }
}
