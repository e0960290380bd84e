//! Microsoft AI: Azure OpenAI and the other models served by Microsoft's AI
//! platform.
//!
//! The form offers two either-or credential methods (form groups):
//!
//! - **API key**: `api_key`, a resource key;
//! - **Entra ID OAuth**: `tenant_id`, `client_id` and `client_secret` of an
//!   app registration (service principal);
//!
//! plus an optional, ungrouped `endpoint` (the resource URL).
//!
//! Validation is **offline**: it checks the shape of the values and makes no
//! request.
//!
//! | Method         | Checked                                                  | On success                                                            |
//! |----------------|----------------------------------------------------------|-----------------------------------------------------------------------|
//! | API key        | at least 16 characters, no whitespace                    | metadata `{"method": "api_key"}`                                      |
//! | Entra ID OAuth | tenant and client IDs are GUIDs, a client secret is given | username = client ID, metadata `{"method": "entra_id", "tenant_id": ...}` |
//!
//! When both methods are filled in, the API key wins. An endpoint, when
//! given, must be an `https://` URL. Values are trimmed of surrounding
//! whitespace before they are checked; error messages name the field at
//! fault and never repeat a secret.

use connhost_plugin_api::prelude::*;
use connhost_plugin_api::tracing::{debug, info};

/// The group label of the API-key method.
const API_KEY_GROUP: &str = "API key";

/// The group label of the Entra ID method.
const ENTRA_GROUP: &str = "Entra ID OAuth";

/// The shortest API key accepted.
const MIN_API_KEY_LEN: usize = 16;

/// Markdown shown above the form.
const INSTRUCTIONS: &str = "\
Connect Microsoft AI with **one** of two methods:

- **API key**: in the [Azure portal](https://portal.azure.com) open your \
Azure OpenAI (or Azure AI services) resource, go to **Keys and Endpoint** and \
copy *KEY 1* or *KEY 2*.
- **Entra ID OAuth**: register an application under **Microsoft Entra ID → \
App registrations**, create a client secret under **Certificates & secrets**, \
and grant the app the *Cognitive Services OpenAI User* role on the resource. \
Copy the **Directory (tenant) ID**, the **Application (client) ID** and the \
secret's **Value**.

Optionally set the **Endpoint** shown next to the keys, such as \
`https://my-resource.openai.azure.com`.

The credentials are checked for format only: connhost does not call \
Microsoft to verify them.";

/// The Microsoft AI provider. Checks API keys or Entra ID app credentials
/// offline (format only).
///
/// Build it with [`MicrosoftAi::default()`]; it has no fields yet, and is
/// `#[non_exhaustive]` so that some can be added later.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct MicrosoftAi {}

/// The trimmed value of `name`, or `None` when it is missing or blank.
fn filled<'a>(fields: &'a CredentialFields, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// Whether `value` is a GUID in its usual 8-4-4-4-12 hexadecimal form
/// (either case, no braces).
fn is_guid(value: &str) -> bool {
    value.len() == 36
        && value.bytes().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// Checks an API key's shape and accepts it.
fn check_api_key(api_key: &str) -> ValidationResult {
    let api_key = api_key.trim();
    if api_key.is_empty() {
        return Err(ValidationError::rejected("API Key is required."));
    }
    if api_key.chars().any(char::is_whitespace) {
        return Err(ValidationError::rejected(
            "API Key must not contain spaces or line breaks.",
        ));
    }
    if api_key.chars().count() < MIN_API_KEY_LEN {
        return Err(ValidationError::rejected(format!(
            "API Key is too short (at least {MIN_API_KEY_LEN} characters expected)."
        )));
    }
    Ok(ConnectionValidation::valid().with_metadata(serde_json::json!({ "method": "api_key" })))
}

/// Checks the Entra ID fields and accepts them.
fn check_entra_id(fields: &CredentialFields) -> ValidationResult {
    let required = |name: &str, label: &str| {
        filled(fields, name).ok_or_else(|| {
            ValidationError::rejected(format!("{label} ({ENTRA_GROUP}) is required."))
        })
    };
    let tenant_id = required("tenant_id", "Tenant ID")?;
    let client_id = required("client_id", "Client ID")?;
    required("client_secret", "Client Secret")?;
    if !is_guid(tenant_id) {
        return Err(ValidationError::rejected(
            "Tenant ID must be a GUID such as 00000000-0000-0000-0000-000000000000 \
             (the Directory (tenant) ID of your Entra ID tenant).",
        ));
    }
    if !is_guid(client_id) {
        return Err(ValidationError::rejected(
            "Client ID must be a GUID such as 00000000-0000-0000-0000-000000000000 \
             (the Application (client) ID of your app registration).",
        ));
    }
    Ok(ConnectionValidation::valid()
        .with_username(client_id)
        .with_metadata(serde_json::json!({ "method": "entra_id", "tenant_id": tenant_id })))
}

/// Checks the optional endpoint.
fn check_endpoint(endpoint: Option<&str>) -> Result<(), ValidationError> {
    let Some(endpoint) = endpoint else {
        return Ok(());
    };
    let scheme = "https://";
    let secure = endpoint
        .get(..scheme.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(scheme));
    if secure && endpoint.len() > scheme.len() {
        Ok(())
    } else {
        Err(ValidationError::rejected(
            "Endpoint must be an https:// URL, such as https://my-resource.openai.azure.com.",
        ))
    }
}

/// Checks submitted credentials offline.
fn check_fields(fields: &CredentialFields) -> ValidationResult {
    let entra_fields = ["tenant_id", "client_id", "client_secret"];
    let validation = if let Some(api_key) = filled(fields, "api_key") {
        check_api_key(api_key)?
    } else if entra_fields
        .iter()
        .any(|name| filled(fields, name).is_some())
    {
        check_entra_id(fields)?
    } else {
        return Err(ValidationError::rejected(
            "Provide an API Key, or a Tenant ID, Client ID and Client Secret for Entra ID.",
        ));
    };
    check_endpoint(filled(fields, "endpoint"))?;
    Ok(validation)
}

#[async_trait]
impl ConnectionProvider for MicrosoftAi {
    fn provider_id(&self) -> &str {
        "mai"
    }

    fn display_name(&self) -> &str {
        "Microsoft AI"
    }

    fn description(&self) -> &str {
        "Azure OpenAI and other models served by Microsoft"
    }

    fn icon(&self) -> &str {
        "brain"
    }

    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }

    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(
            CredentialFormSchema::new(INSTRUCTIONS)
                .with_field(
                    FormField::password("api_key", "API Key")
                        .required()
                        .in_group(API_KEY_GROUP),
                )
                .with_field(
                    FormField::text("tenant_id", "Tenant ID")
                        .required()
                        .with_placeholder("00000000-0000-0000-0000-000000000000")
                        .in_group(ENTRA_GROUP),
                )
                .with_field(
                    FormField::text("client_id", "Client ID")
                        .required()
                        .with_placeholder("00000000-0000-0000-0000-000000000000")
                        .in_group(ENTRA_GROUP),
                )
                .with_field(
                    FormField::password("client_secret", "Client Secret")
                        .required()
                        .in_group(ENTRA_GROUP),
                )
                .with_field(
                    FormField::url("endpoint", "Endpoint")
                        .with_placeholder("https://<resource>.openai.azure.com")
                        .with_help("Optional: the resource's endpoint from Keys and Endpoint."),
                ),
        )
    }

    /// Checks a lone API key (the API-key method without an endpoint).
    async fn validate(&self, api_key: &str) -> ValidationResult {
        info!("checking a Microsoft AI API key (format only, no request to Microsoft)");
        let verdict = check_api_key(api_key);
        debug!(valid = verdict.is_ok(), "Microsoft AI API key checked");
        verdict
    }

    async fn validate_fields(&self, fields: &CredentialFields) -> ValidationResult {
        info!("checking Microsoft AI credentials (format only, no request to Microsoft)");
        let verdict = check_fields(fields);
        match &verdict {
            Ok(validation) => debug!(
                metadata = ?validation.provider_metadata,
                "Microsoft AI credentials are well formed"
            ),
            Err(error) => debug!(reason = %error, "Microsoft AI credentials are malformed"),
        }
        verdict
    }
}

connhost_plugin_api::export_plugin!(MicrosoftAi::default());

#[cfg(test)]
mod tests {
    use connhost_plugin_api::schema::FieldType;
    use connhost_plugin_api::{ProviderDescriptor, ValidationErrorKind};

    use super::*;
    use connhost_plugin_api::testing::{block_on, fields};

    const API_KEY: &str = "0123456789abcdef0123456789abcdef";
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "4A1AA1D5-C567-49D0-AD0B-CD957A47F842";
    const SECRET: &str = "s3cr3t~Value.With_Chars";

    fn entra() -> CredentialFields {
        fields(&[
            ("tenant_id", TENANT),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
        ])
    }

    fn validate(fields: &CredentialFields) -> ValidationResult {
        block_on(MicrosoftAi::default().validate_fields(fields))
    }

    /// Asserts a rejection whose message names `label` and repeats no secret.
    fn assert_rejected(fields: &CredentialFields, label: &str) {
        let error = validate(fields).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Rejected, "{error}");
        assert!(error.message.contains(label), "{label}: {error}");
        for name in ["api_key", "client_secret"] {
            if let Some(value) = filled(fields, name) {
                assert!(!error.message.contains(value), "echoed {name}: {error}");
            }
        }
    }

    #[test]
    fn descriptor() {
        let descriptor = ProviderDescriptor::capture(&MicrosoftAi::default());
        assert_eq!(descriptor.provider_id, "mai");
        assert_eq!(descriptor.display_name, "Microsoft AI");
        assert_eq!(descriptor.icon, "brain");
        assert_eq!(descriptor.connection_type, ConnectionType::ApiKey);
        assert!(
            descriptor.problems().is_empty(),
            "{:?}",
            descriptor.problems()
        );
    }

    #[test]
    fn schema_shape() {
        let schema = MicrosoftAi::default().form_schema().unwrap();
        let shape: Vec<(&str, &str, FieldType, bool, Option<&str>)> = schema
            .fields
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.label.as_str(),
                    f.field_type,
                    f.required,
                    f.group.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    "api_key",
                    "API Key",
                    FieldType::Password,
                    true,
                    Some("API key")
                ),
                (
                    "tenant_id",
                    "Tenant ID",
                    FieldType::Text,
                    true,
                    Some("Entra ID OAuth")
                ),
                (
                    "client_id",
                    "Client ID",
                    FieldType::Text,
                    true,
                    Some("Entra ID OAuth")
                ),
                (
                    "client_secret",
                    "Client Secret",
                    FieldType::Password,
                    true,
                    Some("Entra ID OAuth")
                ),
                ("endpoint", "Endpoint", FieldType::Url, false, None),
            ]
        );
        assert_eq!(schema.groups(), vec!["API key", "Entra ID OAuth"]);
        assert_eq!(
            schema.field("endpoint").unwrap().placeholder.as_deref(),
            Some("https://<resource>.openai.azure.com")
        );
        assert!(schema.fields.iter().all(|f| f.default_value.is_none()));
        assert!(schema.instructions_markdown.contains("API key"));
        assert!(schema.instructions_markdown.contains("Entra ID"));
        assert!(schema.lint().is_empty());
        // The form's own either-or rules.
        assert!(schema.validate(&fields(&[("api_key", API_KEY)])).is_empty());
        assert!(schema.validate(&entra()).is_empty());
        assert_eq!(
            schema.validate(&fields(&[("endpoint", "https://x.openai.azure.com")])),
            vec!["Provide credentials for one of the available methods."]
        );
    }

    #[test]
    fn api_key_method() {
        let expected =
            ConnectionValidation::valid().with_metadata(serde_json::json!({ "method": "api_key" }));
        assert_eq!(
            validate(&fields(&[("api_key", API_KEY)])).unwrap(),
            expected
        );
        // Exactly the minimum length, with surrounding whitespace.
        assert_eq!(
            validate(&fields(&[("api_key", " 0123456789abcdef\n")])).unwrap(),
            expected
        );
        // With an endpoint.
        let submitted = fields(&[
            ("api_key", API_KEY),
            ("endpoint", "https://my-resource.openai.azure.com/"),
        ]);
        assert_eq!(validate(&submitted).unwrap(), expected);
        // The single-value entry point takes the same path.
        assert_eq!(
            block_on(MicrosoftAi::default().validate(API_KEY)).unwrap(),
            expected
        );
    }

    #[test]
    fn api_key_wins_over_entra_id() {
        let mut submitted = entra();
        submitted.insert("api_key".into(), API_KEY.into());
        submitted.insert("tenant_id".into(), "not-a-guid".into());
        let validation = validate(&submitted).unwrap();
        assert_eq!(validation.provider_username, None);
        assert_eq!(
            validation.provider_metadata,
            Some(serde_json::json!({ "method": "api_key" }))
        );
    }

    #[test]
    fn malformed_api_keys_are_rejected() {
        for key in [
            "0123456789abcde",
            "k3y-tiny",
            "0123456789 abcdef0123",
            "0123456789abcdef\t0123",
        ] {
            assert_rejected(&fields(&[("api_key", key)]), "API Key");
        }
        let error = block_on(MicrosoftAi::default().validate("   ")).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Rejected);
        assert!(error.message.contains("API Key"));
    }

    #[test]
    fn entra_id_method() {
        let validation = validate(&entra()).unwrap();
        assert_eq!(validation.provider_username.as_deref(), Some(CLIENT));
        assert_eq!(
            validation.provider_metadata,
            Some(serde_json::json!({ "method": "entra_id", "tenant_id": TENANT }))
        );
        // Blank API key, padded values and an endpoint.
        let submitted = fields(&[
            ("api_key", "  "),
            ("tenant_id", &format!(" {TENANT} ")),
            ("client_id", &format!("{CLIENT}\n")),
            ("client_secret", SECRET),
            ("endpoint", "HTTPS://my-resource.openai.azure.com"),
        ]);
        let validation = validate(&submitted).unwrap();
        assert_eq!(validation.provider_username.as_deref(), Some(CLIENT));
        assert_eq!(
            validation.provider_metadata.unwrap()["tenant_id"],
            serde_json::json!(TENANT)
        );
    }

    #[test]
    fn entra_id_ids_must_be_guids() {
        for bad in [
            "contoso.onmicrosoft.com",
            "72f988bf86f141af91ab2d7cd011db47",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "72f988bf-86f1-41af-91ab-2d7cd011db4",
            "72f988bf-86f1-41af-91ab-2d7cd011db47a",
            "72f988bg-86f1-41af-91ab-2d7cd011db47",
            "72f988bf_86f1_41af_91ab_2d7cd011db47",
            "72f988bf-86f1-41af-91ab2-d7cd011db47",
        ] {
            let mut submitted = entra();
            submitted.insert("tenant_id".into(), bad.into());
            assert_rejected(&submitted, "Tenant ID");
            let mut submitted = entra();
            submitted.insert("client_id".into(), bad.into());
            assert_rejected(&submitted, "Client ID");
        }
    }

    #[test]
    fn incomplete_entra_id_names_the_missing_field() {
        for (name, label) in [
            ("tenant_id", "Tenant ID"),
            ("client_id", "Client ID"),
            ("client_secret", "Client Secret"),
        ] {
            let mut submitted = entra();
            submitted.remove(name);
            assert_rejected(&submitted, label);
            let mut submitted = entra();
            submitted.insert(name.into(), " ".into());
            assert_rejected(&submitted, label);
        }
    }

    #[test]
    fn no_method_is_rejected() {
        for submitted in [
            CredentialFields::new(),
            fields(&[("api_key", " "), ("endpoint", "https://x.openai.azure.com")]),
        ] {
            let error = validate(&submitted).unwrap_err();
            assert_eq!(error.kind, ValidationErrorKind::Rejected);
            assert!(error.message.contains("API Key"), "{error}");
            assert!(error.message.contains("Tenant ID"), "{error}");
        }
    }

    #[test]
    fn endpoint_must_be_https() {
        for endpoint in [
            "http://my-resource.openai.azure.com",
            "my-resource.openai.azure.com",
            "https://",
            "ftp://example.com",
            "https:/x",
        ] {
            assert_rejected(
                &fields(&[("api_key", API_KEY), ("endpoint", endpoint)]),
                "Endpoint",
            );
            let mut submitted = entra();
            submitted.insert("endpoint".into(), endpoint.into());
            assert_rejected(&submitted, "Endpoint");
        }
        // Blank means "not given".
        assert!(validate(&fields(&[("api_key", API_KEY), ("endpoint", "  ")])).is_ok());
    }

    #[test]
    fn guid_check() {
        assert!(is_guid(TENANT));
        assert!(is_guid(CLIENT));
        assert!(is_guid("00000000-0000-0000-0000-000000000000"));
        assert!(!is_guid(""));
        assert!(!is_guid("00000000-0000-0000-0000-00000000000é"));
    }
}
