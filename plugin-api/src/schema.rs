//! Credential form schemas.
//!
//! A provider describes the credentials it needs as a [`CredentialFormSchema`]:
//! an ordered list of [`FormField`]s plus Markdown instructions. Frontends render
//! the form from the schema's JSON (the field and key names are a contract), and
//! the host validates submitted [`CredentialFields`] against it with
//! [`CredentialFormSchema::check`] / [`CredentialFormSchema::validate`].
//!
//! Fields that share a [`FormField::group`] label form one either-or credential
//! method (for example "API key" versus "Entra ID OAuth"): the user fills in one
//! group completely and may leave the others empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Submitted credential values: field name -> value.
pub type CredentialFields = BTreeMap<String, String>;

/// The kind of input a [`FormField`] asks for.
///
/// Serialised in lowercase: `"password"`, `"text"`, `"url"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A secret value; frontends mask it and hosts never echo it back.
    Password,
    /// Free, non-secret text.
    Text,
    /// A URL, such as a custom endpoint.
    Url,
}

impl FieldType {
    /// Whether values of this type are secret (true only for [`FieldType::Password`]).
    pub fn is_secret(self) -> bool {
        matches!(self, FieldType::Password)
    }
}

/// One input of a credential form.
///
/// The JSON keys are exactly the field names; the optional keys are omitted when
/// `None`, and `required` defaults to `false` when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormField {
    /// The key the value is submitted under.
    pub name: String,
    /// The human-readable label shown next to the input.
    pub label: String,
    /// The kind of input.
    pub field_type: FieldType,
    /// Whether the value must be filled in (within its group, if it has one).
    #[serde(default)]
    pub required: bool,
    /// Placeholder text shown in an empty input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Help text shown below the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_text: Option<String>,
    /// A value pre-filled into the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// The either-or credential method this field belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl FormField {
    fn new(name: impl Into<String>, label: impl Into<String>, field_type: FieldType) -> Self {
        Self {
            name: name.into(),
            label: label.into(),
            field_type,
            required: false,
            placeholder: None,
            help_text: None,
            default_value: None,
            group: None,
        }
    }

    /// An optional, ungrouped [`FieldType::Password`] field.
    pub fn password(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldType::Password)
    }

    /// An optional, ungrouped [`FieldType::Text`] field.
    pub fn text(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldType::Text)
    }

    /// An optional, ungrouped [`FieldType::Url`] field.
    pub fn url(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldType::Url)
    }

    /// Marks the field as required.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Sets the placeholder text.
    #[must_use]
    pub fn with_placeholder(mut self, placeholder: impl Into<String>) -> Self {
        self.placeholder = Some(placeholder.into());
        self
    }

    /// Sets the help text.
    #[must_use]
    pub fn with_help(mut self, help_text: impl Into<String>) -> Self {
        self.help_text = Some(help_text.into());
        self
    }

    /// Sets the pre-filled default value.
    #[must_use]
    pub fn with_default(mut self, default_value: impl Into<String>) -> Self {
        self.default_value = Some(default_value.into());
        self
    }

    /// Puts the field into the either-or credential method labelled `group`.
    #[must_use]
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Whether the field holds a secret (it is a [`FieldType::Password`] field).
    pub fn is_secret(&self) -> bool {
        self.field_type.is_secret()
    }
}

/// One validation problem with submitted credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The name of the field the message is about; `None` for the schema-wide
    /// "Provide credentials for one of the available methods." message.
    pub field: Option<String>,
    /// The human-readable message.
    pub message: String,
}

/// The credential form a provider asks the user to fill in.
///
/// JSON keys are exactly `fields` and `instructions_markdown`; both default when
/// absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CredentialFormSchema {
    /// The inputs, in display order.
    pub fields: Vec<FormField>,
    /// Markdown instructions shown above the form.
    pub instructions_markdown: String,
}

/// Message produced when the schema has groups and none of them is complete.
const NO_METHOD_MESSAGE: &str = "Provide credentials for one of the available methods.";

/// Whether the field `name` is filled: present and not only whitespace.
/// The one emptiness rule for schema validation, documents and defaults.
pub fn is_filled(fields: &CredentialFields, name: &str) -> bool {
    fields
        .get(name)
        .is_some_and(|value| !value.trim().is_empty())
}

impl CredentialFormSchema {
    /// A schema with no fields and no instructions.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A schema with the given instructions and no fields.
    pub fn new(instructions: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            instructions_markdown: instructions.into(),
        }
    }

    /// A schema with one required password field named `api_key`, labelled `API Key`.
    pub fn api_key(instructions: impl Into<String>) -> Self {
        Self::new(instructions).with_field(FormField::password("api_key", "API Key").required())
    }

    /// Appends a field.
    #[must_use]
    pub fn with_field(mut self, field: FormField) -> Self {
        self.fields.push(field);
        self
    }

    /// The first field named `name`, if any.
    pub fn field(&self, name: &str) -> Option<&FormField> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Whether the value submitted under `name` must be treated as secret.
    ///
    /// True for password fields, and also for names not in the schema: unknown
    /// values are treated as secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.field(name).is_none_or(FormField::is_secret)
    }

    /// The distinct group labels, in order of first appearance.
    pub fn groups(&self) -> Vec<&str> {
        let mut groups: Vec<&str> = Vec::new();
        for group in self
            .fields
            .iter()
            .filter_map(|field| field.group.as_deref())
        {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        groups
    }

    /// Validates submitted values, returning one [`FieldError`] per problem.
    ///
    /// A value that is missing or only whitespace is empty; keys not in the
    /// schema are ignored. Errors are produced in this order:
    ///
    /// 1. each empty required ungrouped field: `"{label} is required."`;
    /// 2. for each group with at least one filled field (in order of first
    ///    appearance), each empty required field of that group:
    ///    `"{label} ({group}) is required."`;
    /// 3. if the schema has groups, none is complete (touched with all its
    ///    required fields filled) and nothing else was reported, the single
    ///    schema-wide error `"Provide credentials for one of the available methods."`.
    pub fn check(&self, fields: &CredentialFields) -> Vec<FieldError> {
        let mut errors: Vec<FieldError> = self
            .fields
            .iter()
            .filter(|field| field.group.is_none() && field.required)
            .filter(|field| !is_filled(fields, &field.name))
            .map(|field| FieldError {
                field: Some(field.name.clone()),
                message: format!("{} is required.", field.label),
            })
            .collect();

        // Each group in order of first appearance, its members in order,
        // without collecting either (a form is checked on every request).
        let mut has_groups = false;
        let mut any_complete = false;
        for (at, first) in self.fields.iter().enumerate() {
            let Some(group) = first.group.as_deref() else {
                continue;
            };
            has_groups = true;
            let in_group = |field: &&FormField| field.group.as_deref() == Some(group);
            if self.fields[..at].iter().any(|field| in_group(&field)) {
                continue;
            }
            let members = || self.fields[at..].iter().filter(in_group);
            let touched = members().any(|field| is_filled(fields, &field.name));
            if !touched {
                continue;
            }
            let mut complete = true;
            for field in members().filter(|field| field.required) {
                if !is_filled(fields, &field.name) {
                    complete = false;
                    errors.push(FieldError {
                        field: Some(field.name.clone()),
                        message: format!("{} ({group}) is required.", field.label),
                    });
                }
            }
            any_complete |= complete;
        }

        if has_groups && !any_complete && errors.is_empty() {
            errors.push(FieldError {
                field: None,
                message: NO_METHOD_MESSAGE.to_owned(),
            });
        }
        errors
    }

    /// Validates submitted values, returning the messages of [`Self::check`].
    pub fn validate(&self, fields: &CredentialFields) -> Vec<String> {
        self.check(fields)
            .into_iter()
            .map(|error| error.message)
            .collect()
    }

    /// Structural problems a host should refuse the schema for: fields with an
    /// empty (or whitespace-only) name, duplicate field names and empty labels.
    ///
    /// Returns an empty vector when the schema is well formed.
    pub fn lint(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut reported: Vec<&str> = Vec::new();
        for (index, field) in self.fields.iter().enumerate() {
            let name = field.name.as_str();
            if name.trim().is_empty() {
                problems.push(format!("field #{} has an empty name", index + 1));
            } else if seen.contains(&name) {
                if !reported.contains(&name) {
                    problems.push(format!("duplicate field name {name:?}"));
                    reported.push(name);
                }
            } else {
                seen.push(name);
            }
            if field.label.trim().is_empty() {
                problems.push(format!(
                    "field #{} ({name:?}) has an empty label",
                    index + 1
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::testing::fields;

    fn microsoft_ai() -> CredentialFormSchema {
        CredentialFormSchema::new("Use an API key or an Entra ID app registration.")
            .with_field(
                FormField::password("api_key", "API Key")
                    .required()
                    .in_group("API key"),
            )
            .with_field(
                FormField::text("tenant_id", "Tenant ID")
                    .required()
                    .in_group("Entra ID OAuth"),
            )
            .with_field(
                FormField::text("client_id", "Client ID")
                    .required()
                    .in_group("Entra ID OAuth"),
            )
            .with_field(
                FormField::password("client_secret", "Client Secret")
                    .required()
                    .in_group("Entra ID OAuth"),
            )
            .with_field(FormField::url("endpoint", "Endpoint"))
    }

    #[test]
    fn field_type_secrecy() {
        assert!(FieldType::Password.is_secret());
        assert!(!FieldType::Text.is_secret());
        assert!(!FieldType::Url.is_secret());
        assert_eq!(serde_json::to_value(FieldType::Url).unwrap(), json!("url"));
    }

    #[test]
    fn minimal_field_json_shape() {
        let value = serde_json::to_value(FormField::text("region", "Region")).unwrap();
        assert_eq!(
            value,
            json!({"name": "region", "label": "Region", "field_type": "text", "required": false})
        );
    }

    #[test]
    fn full_field_json_shape() {
        let field = FormField::url("endpoint", "Endpoint")
            .required()
            .with_placeholder("https://example.com")
            .with_help("Your endpoint")
            .with_default("https://api.example.com")
            .in_group("Custom");
        let value = serde_json::to_value(&field).unwrap();
        assert_eq!(
            value,
            json!({
                "name": "endpoint",
                "label": "Endpoint",
                "field_type": "url",
                "required": true,
                "placeholder": "https://example.com",
                "help_text": "Your endpoint",
                "default_value": "https://api.example.com",
                "group": "Custom",
            })
        );
    }

    #[test]
    fn minimal_field_deserialises() {
        let field: FormField =
            serde_json::from_str(r#"{"name":"token","label":"Token","field_type":"password"}"#)
                .unwrap();
        assert_eq!(field, FormField::password("token", "Token"));
        assert!(!field.required);
        assert!(field.is_secret());
    }

    #[test]
    fn schema_round_trips_through_json() {
        let schema = microsoft_ai();
        let text = serde_json::to_string(&schema).unwrap();
        let back: CredentialFormSchema = serde_json::from_str(&text).unwrap();
        assert_eq!(back, schema);
        let value = serde_json::to_value(&schema).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 2);
        assert!(object.contains_key("fields"));
        assert!(object.contains_key("instructions_markdown"));
    }

    #[test]
    fn empty_schema_json_deserialises_to_default() {
        let schema: CredentialFormSchema = serde_json::from_str("{}").unwrap();
        assert_eq!(schema, CredentialFormSchema::empty());
    }

    #[test]
    fn api_key_shape() {
        let schema = CredentialFormSchema::api_key("Paste your key.");
        assert_eq!(schema.instructions_markdown, "Paste your key.");
        assert_eq!(schema.fields.len(), 1);
        let field = schema.field("api_key").unwrap();
        assert_eq!(field.label, "API Key");
        assert_eq!(field.field_type, FieldType::Password);
        assert!(field.required);
        assert_eq!(field.group, None);
        assert!(schema.is_secret("api_key"));
    }

    #[test]
    fn constructors() {
        assert!(CredentialFormSchema::empty().fields.is_empty());
        assert!(CredentialFormSchema::empty()
            .instructions_markdown
            .is_empty());
        let schema = CredentialFormSchema::new("hi");
        assert!(schema.fields.is_empty());
        assert_eq!(schema.instructions_markdown, "hi");
    }

    #[test]
    fn secrecy_and_groups() {
        let schema = microsoft_ai();
        assert!(schema.is_secret("client_secret"));
        assert!(!schema.is_secret("tenant_id"));
        assert!(!schema.is_secret("endpoint"));
        assert!(schema.is_secret("not_in_schema"));
        assert_eq!(schema.groups(), vec!["API key", "Entra ID OAuth"]);
        assert!(CredentialFormSchema::api_key("").groups().is_empty());
    }

    #[test]
    fn missing_required_field_is_named() {
        let schema = CredentialFormSchema::api_key("");
        assert_eq!(
            schema.validate(&CredentialFields::new()),
            vec!["API Key is required."]
        );
        assert!(schema.validate(&fields(&[("api_key", "sk-1")])).is_empty());
    }

    #[test]
    fn whitespace_counts_as_empty() {
        let schema = CredentialFormSchema::api_key("");
        assert_eq!(
            schema.validate(&fields(&[("api_key", "  \t\n")])),
            vec!["API Key is required."]
        );
    }

    #[test]
    fn unknown_keys_ignored() {
        let schema = CredentialFormSchema::api_key("");
        assert!(schema
            .validate(&fields(&[("api_key", "k"), ("extra", "")]))
            .is_empty());
        assert_eq!(
            schema.validate(&fields(&[("extra", "value")])),
            vec!["API Key is required."]
        );
    }

    #[test]
    fn grouped_none_filled() {
        assert_eq!(
            microsoft_ai().validate(&CredentialFields::new()),
            vec!["Provide credentials for one of the available methods."]
        );
        // An ungrouped optional value alone does not satisfy any method.
        assert_eq!(
            microsoft_ai().validate(&fields(&[("endpoint", "https://x"), ("api_key", " ")])),
            vec!["Provide credentials for one of the available methods."]
        );
    }

    #[test]
    fn grouped_api_key_complete() {
        assert!(microsoft_ai()
            .validate(&fields(&[("api_key", "k")]))
            .is_empty());
    }

    #[test]
    fn grouped_other_method_complete() {
        let submitted = fields(&[
            ("tenant_id", "t"),
            ("client_id", "c"),
            ("client_secret", "s"),
            ("endpoint", "https://example.com"),
        ]);
        assert!(microsoft_ai().validate(&submitted).is_empty());
    }

    #[test]
    fn grouped_partial_method() {
        assert_eq!(
            microsoft_ai().validate(&fields(&[("tenant_id", "t")])),
            vec![
                "Client ID (Entra ID OAuth) is required.",
                "Client Secret (Entra ID OAuth) is required.",
            ]
        );
    }

    #[test]
    fn grouped_one_complete_other_partial() {
        assert_eq!(
            microsoft_ai().validate(&fields(&[("api_key", "k"), ("client_id", "c")])),
            vec![
                "Tenant ID (Entra ID OAuth) is required.",
                "Client Secret (Entra ID OAuth) is required.",
            ]
        );
    }

    #[test]
    fn ungrouped_required_missing_and_no_group() {
        let schema = microsoft_ai().with_field(FormField::text("project", "Project").required());
        assert_eq!(
            schema.validate(&CredentialFields::new()),
            vec!["Project is required."]
        );
    }

    #[test]
    fn touched_group_without_required_fields_is_complete() {
        let schema = CredentialFormSchema::empty()
            .with_field(FormField::text("a", "A").in_group("Optional"))
            .with_field(FormField::text("b", "B").required().in_group("Other"));
        assert!(schema.validate(&fields(&[("a", "x")])).is_empty());
        assert_eq!(
            schema.validate(&CredentialFields::new()),
            vec!["Provide credentials for one of the available methods."]
        );
    }

    #[test]
    fn check_returns_field_names() {
        let errors = microsoft_ai().check(&fields(&[("tenant_id", "t")]));
        assert_eq!(
            errors,
            vec![
                FieldError {
                    field: Some("client_id".to_owned()),
                    message: "Client ID (Entra ID OAuth) is required.".to_owned(),
                },
                FieldError {
                    field: Some("client_secret".to_owned()),
                    message: "Client Secret (Entra ID OAuth) is required.".to_owned(),
                },
            ]
        );
        let errors = microsoft_ai().check(&CredentialFields::new());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, None);
        let errors = CredentialFormSchema::api_key("").check(&CredentialFields::new());
        assert_eq!(errors[0].field.as_deref(), Some("api_key"));
    }

    #[test]
    fn lint_finds_problems() {
        assert!(microsoft_ai().lint().is_empty());
        let schema = CredentialFormSchema::empty()
            .with_field(FormField::text("x", "X"))
            .with_field(FormField::text("x", "X again"))
            .with_field(FormField::text("x", "X thrice"))
            .with_field(FormField::text("  ", "Blank"))
            .with_field(FormField::text("y", ""));
        let problems = schema.lint();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.contains(&r#"duplicate field name "x""#.to_owned()));
        assert!(problems.iter().any(|p| p.contains("empty name")));
        assert!(problems.iter().any(|p| p.contains("empty label")));
    }

    #[test]
    fn empty_schema_validates_anything() {
        let schema = CredentialFormSchema::empty();
        assert!(schema.validate(&CredentialFields::new()).is_empty());
        assert!(schema
            .validate(&fields(&[("a", "b"), ("c", "")]))
            .is_empty());
        assert!(schema.lint().is_empty());
    }
}
