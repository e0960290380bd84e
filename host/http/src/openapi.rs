//! The OpenAPI document, generated from the handlers and types.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ArrayBuilder, ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi};

use super::error::ErrorCode;
use super::{routes, ui};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "connhost",
        description = "Connection providers, built in and from plugin libraries, behind one schema-and-validation API. Every error connhost answers is a JSON body {\"error\": {\"code\", \"message\"}} (hyper's own answers to unparseable requests have an empty body). A path not listed here answers 404 (`#/components/responses/NotFound`); a listed path asked with a method it does not list answers 405 (`#/components/responses/MethodNotAllowed`). Any route refuses a declared `Content-Length` over the body limit with 413 `payload_too_large` before reading the body. When the server has an access token, /v1 routes, /ui/instructions and (unless the server runs with `--metrics-open`) /metrics need `Authorization: Bearer <token>`."
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
        routes::openapi,
        ui::index,
        ui::app_js,
        ui::api_js,
        ui::dom_js,
        ui::forms_js,
        ui::plugins_js,
        ui::providers_js,
        ui::app_css,
        ui::instructions,
    ),
    components(schemas(
        crate::wire::VerdictBody,
        crate::wire::FieldErrorBody,
        super::error::ErrorBody,
        crate::sync::SyncStatus,
        crate::sync::PluginSource,
    )),
    modifiers(&BearerScheme, &FallbackResponses, &ErrorCodeStatuses, &SyncFields),
    tags(
        (name = "providers", description = "The provider set, forms and validation"),
        (name = "plugins", description = "What loaded from the plugins folder"),
        (name = "operations", description = "Probes, metrics and this document"),
        (name = "ui", description = "The settings page"),
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

/// The answers of the router's fallbacks, which no path lists: `NotFound`
/// (a path not in the document) and `MethodNotAllowed` (a listed path with
/// another method).
struct FallbackResponses;

impl Modify for FallbackResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.responses.insert(
            "NotFound".to_owned(),
            error("No such route (`not_found`): any path this document does not list").into(),
        );
        components.responses.insert(
            "MethodNotAllowed".to_owned(),
            error("The path exists, the method does not (`method_not_allowed`)").into(),
        );
    }
}

/// Each error code's status, in the `ErrorCode` schema's description,
/// from [`ErrorCode::status`] (the schema's list of codes is derived from
/// the same enum).
struct ErrorCodeStatuses;

impl Modify for ErrorCodeStatuses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let statuses: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|code| format!("`{code}` {}", code.status().as_u16()))
            .collect();
        let schema = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("ErrorCode"));
        if let Some(RefOr::T(Schema::Object(object))) = schema {
            object.description = Some(format!(
                "A stable machine-readable error code; each comes with one status: {}.",
                statuses.join(", ")
            ));
        }
    }
}

/// The optional keys a server that syncs its plugins folder
/// (`serve --sync`) adds to the load report (`crate::sync`): `sync` on the
/// report, `source` on each synced plugin. The report's types are the
/// core's; the keys are the HTTP service's.
struct SyncFields;

impl Modify for SyncFields {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let mut add = |schema: &str, key: &str, property: RefOr<Schema>| {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema) {
                object.properties.insert(key.to_owned(), property);
            }
        };
        add(
            "LoadReport",
            "sync",
            ArrayBuilder::new()
                .items(Ref::from_schema_name("SyncStatus"))
                .description(Some(
                    "Only on a server that syncs its plugins folder with OCI references (`connhost serve --sync`): each reference's status.",
                ))
                .into(),
        );
        add(
            "LoadedPlugin",
            "source",
            utoipa::openapi::schema::RefBuilder::new()
                .ref_location_from_schema_name("PluginSource")
                .description(Some(
                    "Only for a file `connhost serve --sync` wrote (and the copy loaded is that file): the reference and digest it came from.",
                ))
                .into(),
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
    use serde_json::{json, Value};

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

    /// Every documented route the router serves is in the document (as a
    /// method on a path), and nothing else: a new route without
    /// documentation fails here.
    #[test]
    fn every_route_is_documented() {
        let doc: Value = serde_json::from_str(&super::document()).unwrap();
        let mut documented: Vec<String> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        let mut served: Vec<String> = crate::routes()
            .filter(|route| route.undocumented.is_none())
            .map(|route| format!("{} {}", route.method, route.path))
            .collect();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }

    /// The two verdict shapes are told apart by `valid` alone, so a verdict
    /// matches exactly one branch of `VerdictBody`'s `oneOf`.
    #[test]
    fn verdict_branches_are_exclusive() {
        let schemas = schemas();
        for (name, literal) in [("ValidBody", true), ("NotValidBody", false)] {
            let schema = &schemas[name];
            assert_eq!(
                schema["properties"]["valid"]["enum"],
                json!([literal]),
                "{name}"
            );
            assert!(
                schema["required"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("valid")),
                "{name}"
            );
        }
    }

    /// The keys `serve --sync` adds to the load report are documented, and
    /// optional.
    #[test]
    fn the_sync_keys_are_optional_in_the_load_report() {
        let schemas = schemas();
        assert_eq!(
            schemas["LoadReport"]["properties"]["sync"]["items"]["$ref"],
            "#/components/schemas/SyncStatus"
        );
        assert!(!schemas["LoadReport"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("sync")));
        assert_eq!(
            schemas["LoadedPlugin"]["properties"]["source"]["$ref"],
            "#/components/schemas/PluginSource"
        );
        assert!(!schemas["LoadedPlugin"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("source")));
        let status = serde_json::to_value(crate::sync::SyncStatus::new("r/p:1")).unwrap();
        for key in status.as_object().unwrap().keys() {
            assert!(
                schemas["SyncStatus"]["properties"].get(key).is_some(),
                "{key}"
            );
        }
        assert_eq!(
            property_names(&schemas["SyncStatus"]),
            [
                "digest",
                "errors",
                "file",
                "last_error",
                "last_success",
                "library",
                "reference"
            ]
        );
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
