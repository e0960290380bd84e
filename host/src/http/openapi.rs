//! The OpenAPI document, generated from the handlers and types.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "connhost",
        description = "Connection providers, built in and from plugin libraries, behind one schema-and-validation API. Every error connhost answers is a JSON body {\"error\": {\"code\", \"message\"}} (hyper's own answers to unparseable requests have an empty body). When the server has an access token, /v1 routes need `Authorization: Bearer <token>`."
    ),
    paths(
        routes::list_providers,
        routes::get_provider,
        routes::validate,
        routes::plugins,
        routes::rescan,
        routes::healthz,
        routes::readyz,
        routes::metrics,
    ),
    components(schemas(
        crate::validation::VerdictBody,
        crate::validation::FieldErrorBody,
        super::error::ErrorBody,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "providers", description = "The provider set, forms and validation"),
        (name = "plugins", description = "What loaded from the plugins folder"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON (built once).
pub(crate) fn document() -> String {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let mut doc = ApiDoc::openapi();
            doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
            doc.to_pretty_json()
                .expect("the OpenAPI document serialises")
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use connhost_plugin_api::{CredentialFormSchema, FormField};
    use serde_json::Value;

    fn schemas() -> Value {
        let doc: Value = serde_json::from_str(&super::document()).unwrap();
        doc["components"]["schemas"].clone()
    }

    fn property_names(schema: &Value) -> Vec<String> {
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_route_is_documented() {
        let doc: Value = serde_json::from_str(&super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/providers",
            "/v1/providers/{id}",
            "/v1/providers/{id}/validate",
            "/v1/plugins",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
    }

    #[test]
    fn the_documented_form_types_match_what_is_serialised() {
        let schemas = schemas();
        let field = FormField::password("a", "A")
            .required()
            .with_placeholder("p")
            .with_help("h")
            .with_default("d")
            .in_group("g");
        let mut field_keys: Vec<String> = serde_json::to_value(&field)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        field_keys.sort();
        assert_eq!(property_names(&schemas["FormField"]), field_keys);

        let form = serde_json::to_value(CredentialFormSchema::api_key("x")).unwrap();
        let mut form_keys: Vec<String> = form.as_object().unwrap().keys().cloned().collect();
        form_keys.sort();
        assert_eq!(property_names(&schemas["CredentialFormSchema"]), form_keys);

        let info_keys = property_names(&schemas["ProviderInfo"]);
        assert_eq!(
            info_keys,
            [
                "connection_type",
                "description",
                "display_name",
                "experimental",
                "form_schema",
                "icon",
                "origin",
                "provider_id"
            ]
        );
    }
}
