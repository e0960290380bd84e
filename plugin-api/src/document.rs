//! Credential documents.
//!
//! The host stores a connection's credentials as one opaque text document. A
//! lone API key is stored raw (which also keeps documents written before
//! multi-field forms existed readable); anything else is stored as a compact
//! JSON object of string values with sorted keys.
//!
//! [`assemble_credential_document`] turns submitted [`CredentialFields`] into a
//! document and [`parse_credential_document`] turns a stored document back into
//! fields.

use std::collections::BTreeMap;

use crate::schema::CredentialFields;

/// The field name whose lone value is stored raw rather than as JSON.
const API_KEY: &str = "api_key";

/// Builds the credential document for submitted fields.
///
/// Entries whose value is empty or whitespace-only are dropped (the remaining
/// values are kept exactly as given). If nothing is left, returns `None`; if the
/// only entry left is `api_key`, returns its raw value; otherwise returns a
/// compact JSON object of the remaining entries with keys sorted, e.g.
/// `{"a":"1","b":"2"}`.
pub fn assemble_credential_document(fields: &CredentialFields) -> Option<String> {
    let kept: BTreeMap<&str, &str> = fields
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    if kept.is_empty() {
        return None;
    }
    if kept.len() == 1 {
        if let Some(value) = kept.get(API_KEY) {
            return Some((*value).to_owned());
        }
    }
    Some(serde_json::to_string(&kept).expect("a map of strings always serialises"))
}

/// Reads a stored credential document back into fields.
///
/// `None` gives an empty map. A JSON object with at least one string value gives
/// its string-valued entries (other values are dropped). Anything else — a raw
/// key, legacy non-JSON text, JSON that is not an object, or an object without
/// string values — gives `{"api_key": document}` with the document unchanged.
pub fn parse_credential_document(document: Option<&str>) -> CredentialFields {
    let Some(document) = document else {
        return CredentialFields::new();
    };
    if let Ok(serde_json::Value::Object(object)) =
        serde_json::from_str::<serde_json::Value>(document)
    {
        let fields: CredentialFields = object
            .into_iter()
            .filter_map(|(key, value)| match value {
                serde_json::Value::String(text) => Some((key, text)),
                _ => None,
            })
            .collect();
        if !fields.is_empty() {
            return fields;
        }
    }
    CredentialFields::from([(API_KEY.to_owned(), document.to_owned())])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::fields;

    #[test]
    fn lone_api_key_stays_raw() {
        assert_eq!(
            assemble_credential_document(&fields(&[("api_key", "sk-123")])).as_deref(),
            Some("sk-123")
        );
        // Empty companions are dropped, so the key is still stored raw.
        assert_eq!(
            assemble_credential_document(&fields(&[("api_key", "sk-123"), ("endpoint", " ")]))
                .as_deref(),
            Some("sk-123")
        );
    }

    #[test]
    fn multi_field_becomes_sorted_json() {
        let submitted = fields(&[
            ("tenant_id", "t"),
            ("client_secret", " s "),
            ("client_id", "c"),
            ("endpoint", "   "),
            ("api_key", ""),
        ]);
        assert_eq!(
            assemble_credential_document(&submitted).as_deref(),
            Some(r#"{"client_id":"c","client_secret":" s ","tenant_id":"t"}"#)
        );
    }

    #[test]
    fn all_empty_is_none() {
        assert_eq!(
            assemble_credential_document(&fields(&[("api_key", ""), ("x", " \t")])),
            None
        );
    }

    #[test]
    fn empty_map_is_none() {
        assert_eq!(assemble_credential_document(&CredentialFields::new()), None);
    }

    #[test]
    fn lone_other_field_becomes_json() {
        assert_eq!(
            assemble_credential_document(&fields(&[("token", "abc")])).as_deref(),
            Some(r#"{"token":"abc"}"#)
        );
    }

    #[test]
    fn multi_field_round_trip() {
        let submitted = fields(&[
            ("api_key", "k\"ey"),
            ("endpoint", "https://example.com"),
            ("empty", " "),
        ]);
        let document = assemble_credential_document(&submitted).unwrap();
        assert_eq!(
            parse_credential_document(Some(&document)),
            fields(&[("api_key", "k\"ey"), ("endpoint", "https://example.com")])
        );
    }

    #[test]
    fn raw_key_parses_as_api_key() {
        assert_eq!(
            parse_credential_document(Some("sk-123")),
            fields(&[("api_key", "sk-123")])
        );
        let document = assemble_credential_document(&fields(&[("api_key", "sk-1")]));
        assert_eq!(
            parse_credential_document(document.as_deref()),
            fields(&[("api_key", "sk-1")])
        );
    }

    #[test]
    fn legacy_oauth_json_parses_into_fields() {
        let document = r#"{"access_token":"gho_x","token_type":"bearer","scope":"repo"}"#;
        assert_eq!(
            parse_credential_document(Some(document)),
            fields(&[
                ("access_token", "gho_x"),
                ("token_type", "bearer"),
                ("scope", "repo"),
            ])
        );
    }

    #[test]
    fn non_string_values_are_dropped() {
        assert_eq!(
            parse_credential_document(Some(r#"{"token":"t","expires_in":3600}"#)),
            fields(&[("token", "t")])
        );
    }

    #[test]
    fn numbers_only_object_falls_back_to_api_key() {
        let document = r#"{"a":1,"b":2.5}"#;
        assert_eq!(
            parse_credential_document(Some(document)),
            fields(&[("api_key", document)])
        );
    }

    #[test]
    fn json_array_falls_back_to_api_key() {
        let document = r#"["a","b"]"#;
        assert_eq!(
            parse_credential_document(Some(document)),
            fields(&[("api_key", document)])
        );
    }

    #[test]
    fn none_parses_to_empty() {
        assert!(parse_credential_document(None).is_empty());
    }
}
