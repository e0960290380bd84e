//! OpenAPI descriptions of the plugin API's wire types, which live in
//! `connhost-plugin-api` and so cannot derive `utoipa::ToSchema` there
//! (plugin authors must not depend on utoipa). Documentation only: a test
//! checks that they name exactly the keys the real types serialise.

#![allow(dead_code)]

use utoipa::ToSchema;

/// How a user connects: an OAuth flow run by the platform, or a form.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub(crate) enum ConnectionType {
    /// OAuth; the provider has no form.
    #[schema(rename = "o_auth")]
    Oauth,
    /// The user fills in the provider's form.
    ApiKey,
}

/// A provider's credential form.
#[derive(ToSchema)]
pub(crate) struct CredentialFormSchema {
    /// The form's fields, in display order.
    fields: Vec<FormField>,
    /// Markdown shown above the form.
    instructions_markdown: String,
}

/// One input of a credential form.
#[derive(ToSchema)]
pub(crate) struct FormField {
    /// The key the value is submitted under.
    name: String,
    /// The label shown to users.
    label: String,
    /// `password` values are secret and shown masked.
    field_type: FieldType,
    /// Required (within its group, for a grouped field).
    required: bool,
    /// Placeholder text.
    placeholder: Option<String>,
    /// Help shown under the input.
    help_text: Option<String>,
    /// Value pre-filled, and used when the field is submitted empty.
    default_value: Option<String>,
    /// Fields sharing a group are one either-or credential method.
    group: Option<String>,
}

/// The kind of an input.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum FieldType {
    /// A secret, masked.
    Password,
    /// Plain text.
    Text,
    /// A URL.
    Url,
}
