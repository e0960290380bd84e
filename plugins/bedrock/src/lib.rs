//! AWS Bedrock: foundation models hosted by Amazon Web Services.
//!
//! The user fills in IAM credentials: an access key ID, a secret access key,
//! an optional session token (for temporary credentials) and a region.
//!
//! Checking them against AWS would need SigV4 request signing, which this
//! provider does not implement, so validation is **offline**: it checks that
//! every value has the shape AWS gives it and makes no request. A credential
//! that passes may still be revoked or lack Bedrock permissions; the
//! metadata says so with `"checked": "format"`.
//!
//! | Field               | Required | Shape checked                                            |
//! |---------------------|----------|----------------------------------------------------------|
//! | `access_key_id`     | yes      | 20 uppercase letters/digits, starting `AKIA` or `ASIA`   |
//! | `secret_access_key` | yes      | 40 characters of `A-Z a-z 0-9 + /`                       |
//! | `session_token`     | `ASIA`   | no whitespace; required with (and only with) `ASIA` keys |
//! | `region`            | yes      | `xx-name-N`, e.g. `us-east-1`, `us-gov-west-1`           |
//!
//! Values are trimmed of surrounding whitespace before they are checked.
//! Error messages name the field at fault and never repeat its value.

use connhost_plugin_api::prelude::*;
use connhost_plugin_api::tracing::{debug, info};

/// The region pre-filled into the form.
const DEFAULT_REGION: &str = "us-east-1";

/// Partition qualifiers that may follow the country code of a region name
/// (`us-gov-west-1`, `us-iso-east-1`, ...).
const REGION_QUALIFIERS: &[&str] = &["gov", "iso", "isob", "isoe", "isof"];

/// Markdown shown above the form.
const INSTRUCTIONS: &str = "\
Connect AWS Bedrock with IAM credentials that may call Bedrock \
(for example through the `AmazonBedrockFullAccess` policy, or a narrower one \
allowing `bedrock:InvokeModel`):

- **Long-term credentials**: in the AWS console open **IAM → Users → \
*your user* → Security credentials** and choose **Create access key**. \
The access key ID starts with `AKIA`. Leave the session token empty.
- **Temporary credentials** (AWS SSO / IAM Identity Center, `aws sts \
assume-role`): copy the access key ID (starting with `ASIA`), the secret \
access key *and* the session token.

Set the region to one where the models you need are enabled in the \
Bedrock console (**Model access**).

The credentials are checked for format only: connhost does not call AWS \
to verify them.";

/// The AWS Bedrock provider. Checks IAM credentials offline (format only).
///
/// Build it with [`Bedrock::default()`]; it has no fields yet, and is
/// `#[non_exhaustive]` so that some can be added later.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Bedrock {}

/// Whether the credentials are long-term IAM user keys or temporary STS ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialType {
    /// An IAM user's access key (`AKIA...`), used without a session token.
    LongTerm,
    /// Temporary credentials from STS (`ASIA...`), used with a session token.
    Temporary,
}

impl CredentialType {
    /// The name stored in the metadata.
    fn as_str(self) -> &'static str {
        match self {
            CredentialType::LongTerm => "long_term",
            CredentialType::Temporary => "temporary",
        }
    }
}

/// The trimmed value of `name`, or `None` when it is missing or blank.
fn filled<'a>(fields: &'a CredentialFields, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// Checks the shape of an access key ID and says which kind it is.
fn check_access_key_id(id: &str) -> Result<CredentialType, ValidationError> {
    if id.len() != 20 {
        return Err(ValidationError::rejected(
            "Access Key ID must be exactly 20 characters long.",
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(ValidationError::rejected(
            "Access Key ID may contain only uppercase letters and digits.",
        ));
    }
    if id.starts_with("AKIA") {
        Ok(CredentialType::LongTerm)
    } else if id.starts_with("ASIA") {
        Ok(CredentialType::Temporary)
    } else {
        Err(ValidationError::rejected(
            "Access Key ID must start with AKIA (an IAM user's key) or ASIA (temporary credentials).",
        ))
    }
}

/// Checks the shape of a secret access key.
fn check_secret_access_key(secret: &str) -> Result<(), ValidationError> {
    if secret.len() != 40 {
        return Err(ValidationError::rejected(
            "Secret Access Key must be exactly 40 characters long.",
        ));
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err(ValidationError::rejected(
            "Secret Access Key may contain only letters, digits, '+' and '/'.",
        ));
    }
    Ok(())
}

/// Checks that the session token fits the kind of access key.
fn check_session_token(
    credential_type: CredentialType,
    token: Option<&str>,
) -> Result<(), ValidationError> {
    match (credential_type, token) {
        (CredentialType::Temporary, None) => Err(ValidationError::rejected(
            "Session Token is required with temporary credentials (an Access Key ID starting with ASIA).",
        )),
        (CredentialType::LongTerm, Some(_)) => Err(ValidationError::rejected(
            "Session Token is only used with temporary credentials (an Access Key ID starting with ASIA); leave it empty for an AKIA key.",
        )),
        (_, Some(token)) if token.chars().any(char::is_whitespace) => Err(
            ValidationError::rejected("Session Token must not contain spaces or line breaks."),
        ),
        _ => Ok(()),
    }
}

/// Whether `region` looks like an AWS region name: two lowercase letters, an
/// optional partition qualifier (`gov`, `iso`, ...), a lowercase name and a
/// number, joined by dashes (`us-east-1`, `us-gov-west-1`, `ap-southeast-2`).
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let (country, name, number) = match parts.as_slice() {
        [country, name, number] => (*country, *name, *number),
        [country, qualifier, name, number] if REGION_QUALIFIERS.contains(qualifier) => {
            (*country, *name, *number)
        }
        _ => return false,
    };
    let lowercase = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    country.len() == 2
        && lowercase(country)
        && lowercase(name)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the region name.
fn check_region(region: &str) -> Result<(), ValidationError> {
    if is_region(region) {
        Ok(())
    } else {
        Err(ValidationError::rejected(
            "Region must be an AWS region name such as us-east-1 or eu-central-1.",
        ))
    }
}

/// Checks submitted credentials offline.
fn check_fields(fields: &CredentialFields) -> ValidationResult {
    let access_key_id = filled(fields, "access_key_id")
        .ok_or_else(|| ValidationError::rejected("Access Key ID is required."))?;
    let secret_access_key = filled(fields, "secret_access_key")
        .ok_or_else(|| ValidationError::rejected("Secret Access Key is required."))?;
    let session_token = filled(fields, "session_token");
    let region =
        filled(fields, "region").ok_or_else(|| ValidationError::rejected("Region is required."))?;

    let credential_type = check_access_key_id(access_key_id)?;
    check_secret_access_key(secret_access_key)?;
    check_session_token(credential_type, session_token)?;
    check_region(region)?;

    Ok(
        ConnectionValidation::valid().with_metadata(serde_json::json!({
            "region": region,
            "credential_type": credential_type.as_str(),
            "checked": "format",
        })),
    )
}

#[async_trait]
impl ConnectionProvider for Bedrock {
    fn provider_id(&self) -> &str {
        "bedrock"
    }

    fn display_name(&self) -> &str {
        "AWS Bedrock"
    }

    fn description(&self) -> &str {
        "Foundation models hosted on Amazon Web Services"
    }

    fn icon(&self) -> &str {
        "cloud"
    }

    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }

    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(
            CredentialFormSchema::new(INSTRUCTIONS)
                .with_field(
                    FormField::password("access_key_id", "Access Key ID")
                        .required()
                        .with_placeholder("AKIA..."),
                )
                .with_field(
                    FormField::password("secret_access_key", "Secret Access Key").required(),
                )
                .with_field(
                    FormField::password("session_token", "Session Token").with_help(
                        "Only for temporary credentials (an access key ID starting with ASIA); \
                         leave empty for an IAM user's access key.",
                    ),
                )
                .with_field(
                    FormField::text("region", "Region")
                        .required()
                        .with_default(DEFAULT_REGION)
                        .with_placeholder(DEFAULT_REGION),
                ),
        )
    }

    /// A single value cannot hold AWS credentials: always rejected.
    async fn validate(&self, _credential: &str) -> ValidationResult {
        Err(ValidationError::rejected(
            "AWS Bedrock needs the multi-field form: an Access Key ID, a Secret Access Key, \
             a Region and, for temporary credentials, a Session Token.",
        ))
    }

    async fn validate_fields(&self, fields: &CredentialFields) -> ValidationResult {
        info!("checking AWS Bedrock credentials (format only, no request to AWS)");
        let verdict = check_fields(fields);
        match &verdict {
            Ok(validation) => debug!(
                metadata = ?validation.provider_metadata,
                "AWS Bedrock credentials are well formed"
            ),
            Err(error) => debug!(reason = %error, "AWS Bedrock credentials are malformed"),
        }
        verdict
    }
}

connhost_plugin_api::export_plugin!(Bedrock::default());

#[cfg(test)]
mod tests {
    use connhost_plugin_api::schema::FieldType;
    use connhost_plugin_api::{ProviderDescriptor, ValidationErrorKind};

    use super::*;
    use connhost_plugin_api::testing::{block_on, fields};

    // AWS's documented example credentials.
    const LONG_TERM_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const TEMPORARY_ID: &str = "ASIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE+/TOKEN==";

    fn long_term() -> CredentialFields {
        fields(&[
            ("access_key_id", LONG_TERM_ID),
            ("secret_access_key", SECRET),
            ("region", "us-east-1"),
        ])
    }

    fn validate(fields: &CredentialFields) -> ValidationResult {
        block_on(Bedrock::default().validate_fields(fields))
    }

    /// Asserts a rejection whose message names `label` and repeats none of
    /// the submitted values.
    fn assert_rejected(fields: &CredentialFields, label: &str) {
        let error = validate(fields).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Rejected, "{error}");
        assert!(error.message.contains(label), "{label}: {error}");
        for value in fields.values().filter(|v| v.trim().len() > 3) {
            assert!(
                !error.message.contains(value.trim()),
                "echoed a value: {error}"
            );
        }
    }

    #[test]
    fn descriptor() {
        let descriptor = ProviderDescriptor::capture(&Bedrock::default());
        assert_eq!(descriptor.provider_id, "bedrock");
        assert_eq!(descriptor.display_name, "AWS Bedrock");
        assert_eq!(descriptor.icon, "cloud");
        assert_eq!(descriptor.connection_type, ConnectionType::ApiKey);
        assert!(
            descriptor.problems().is_empty(),
            "{:?}",
            descriptor.problems()
        );
    }

    #[test]
    fn schema_shape() {
        let schema = Bedrock::default().form_schema().unwrap();
        let shape: Vec<(&str, &str, FieldType, bool)> = schema
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.label.as_str(), f.field_type, f.required))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("access_key_id", "Access Key ID", FieldType::Password, true),
                (
                    "secret_access_key",
                    "Secret Access Key",
                    FieldType::Password,
                    true
                ),
                ("session_token", "Session Token", FieldType::Password, false),
                ("region", "Region", FieldType::Text, true),
            ]
        );
        assert!(schema.fields.iter().all(|f| f.group.is_none()));
        assert!(schema.groups().is_empty());
        let access_key_id = schema.field("access_key_id").unwrap();
        assert_eq!(access_key_id.placeholder.as_deref(), Some("AKIA..."));
        let session_token = schema.field("session_token").unwrap();
        assert!(session_token
            .help_text
            .as_deref()
            .unwrap()
            .contains("temporary credentials"));
        let region = schema.field("region").unwrap();
        assert_eq!(region.default_value.as_deref(), Some("us-east-1"));
        assert!(!schema.is_secret("region"));
        assert!(schema.is_secret("secret_access_key"));
        assert!(!schema.instructions_markdown.is_empty());
        assert!(schema.lint().is_empty());
        // The form's own rules: a complete long-term credential passes them.
        assert!(schema.validate(&long_term()).is_empty());
        assert_eq!(
            schema.validate(&CredentialFields::new()),
            vec![
                "Access Key ID is required.",
                "Secret Access Key is required.",
                "Region is required.",
            ]
        );
    }

    #[test]
    fn single_value_is_rejected() {
        let error = block_on(Bedrock::default().validate(LONG_TERM_ID)).unwrap_err();
        assert_eq!(error.kind, ValidationErrorKind::Rejected);
        assert!(error.message.contains("multi-field form"));
        assert!(!error.message.contains(LONG_TERM_ID));
    }

    #[test]
    fn long_term_credentials_are_valid() {
        let validation = validate(&long_term()).unwrap();
        assert_eq!(validation.provider_username, None);
        assert_eq!(
            validation.provider_metadata,
            Some(serde_json::json!({
                "region": "us-east-1",
                "credential_type": "long_term",
                "checked": "format",
            }))
        );
    }

    #[test]
    fn temporary_credentials_are_valid() {
        let submitted = fields(&[
            ("access_key_id", TEMPORARY_ID),
            ("secret_access_key", SECRET),
            ("session_token", TOKEN),
            ("region", "eu-central-1"),
        ]);
        let validation = validate(&submitted).unwrap();
        assert_eq!(validation.provider_username, None);
        assert_eq!(
            validation.provider_metadata,
            Some(serde_json::json!({
                "region": "eu-central-1",
                "credential_type": "temporary",
                "checked": "format",
            }))
        );
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let submitted = fields(&[
            ("access_key_id", " AKIAIOSFODNN7EXAMPLE\n"),
            (
                "secret_access_key",
                "\twJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ",
            ),
            ("session_token", "   "),
            ("region", " us-west-2 "),
        ]);
        let validation = validate(&submitted).unwrap();
        assert_eq!(
            validation.provider_metadata.unwrap()["region"],
            serde_json::json!("us-west-2")
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let mut submitted = long_term();
        submitted.remove("access_key_id");
        assert_rejected(&submitted, "Access Key ID");
        let mut submitted = long_term();
        submitted.insert("secret_access_key".into(), "  ".into());
        assert_rejected(&submitted, "Secret Access Key");
        let mut submitted = long_term();
        submitted.remove("region");
        assert_rejected(&submitted, "Region");
    }

    #[test]
    fn malformed_access_key_ids_are_rejected() {
        for id in [
            "AKIAIOSFODNN7EXAMPL",   // 19 characters
            "AKIAIOSFODNN7EXAMPLEX", // 21 characters
            "AKIAiosfodnn7example",  // lowercase
            "AKIAIOSFODNN7EXAMPL_",  // punctuation
            "AKIAIOSFODNN7 XAMPLE",  // space
            "AROAIOSFODNN7EXAMPLE",  // a role ID, not an access key
            "AIDAIOSFODNN7EXAMPLE",  // a user ID, not an access key
            "ÄKIAIOSFODNN7EXAMPL",   // 20 bytes, not ASCII
        ] {
            let mut submitted = long_term();
            submitted.insert("access_key_id".into(), id.into());
            assert_rejected(&submitted, "Access Key ID");
        }
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        for secret in [
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE", // 39 characters
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYY", // 41 characters
            "wJalrXUtnFEMI-K7MDENG/bPxRfiCYEXAMPLEKEY", // '-'
            "wJalrXUtnFEMI=K7MDENG/bPxRfiCYEXAMPLEKEY", // '='
            "wJalrXUtnFEMI K7MDENG/bPxRfiCYEXAMPLEKEY", // space
        ] {
            let mut submitted = long_term();
            submitted.insert("secret_access_key".into(), secret.into());
            assert_rejected(&submitted, "Secret Access Key");
        }
    }

    #[test]
    fn session_token_must_match_the_key_kind() {
        // ASIA without a token.
        let mut submitted = long_term();
        submitted.insert("access_key_id".into(), TEMPORARY_ID.into());
        assert_rejected(&submitted, "Session Token");
        submitted.insert("session_token".into(), " ".into());
        assert_rejected(&submitted, "Session Token");
        // AKIA with a token.
        let mut submitted = long_term();
        submitted.insert("session_token".into(), TOKEN.into());
        assert_rejected(&submitted, "Session Token");
        // A token broken across lines.
        let mut submitted = long_term();
        submitted.insert("access_key_id".into(), TEMPORARY_ID.into());
        submitted.insert("session_token".into(), "IQoJb3JpZ2lu\nX2VjEXAMPLE".into());
        assert_rejected(&submitted, "Session Token");
    }

    #[test]
    fn region_shapes() {
        for region in [
            "us-east-1",
            "us-west-2",
            "eu-central-1",
            "ap-southeast-2",
            "ap-northeast-3",
            "ca-central-1",
            "sa-east-1",
            "il-central-1",
            "us-gov-west-1",
            "us-iso-east-1",
            "cn-northwest-1",
        ] {
            assert!(is_region(region), "{region}");
        }
        for region in [
            "",
            "us-east",
            "us-east-",
            "useast1",
            "US-EAST-1",
            "usa-east-1",
            "u-east-1",
            "us--1",
            "us-east-1a",
            "us-east-one",
            "us-gov-west",
            "us-foo-west-1",
            "us-east-1-",
            "-us-east-1",
            "us east 1",
            "us-éast-1",
        ] {
            assert!(!is_region(region), "{region:?}");
        }
        let mut submitted = long_term();
        submitted.insert("region".into(), "moon-base-1".into());
        assert_rejected(&submitted, "Region");
    }
}
