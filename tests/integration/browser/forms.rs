//! Forms are generated from the providers' schemas: labelled inputs of the
//! schema's types, required marks, help text, defaults; an OAuth provider
//! has no form at all.

use super::*;

#[test]
fn each_form_follows_its_schema() {
    let settings = Settings::serve(&["daytona", "mai", "bedrock"]);
    settings.check(|page| {
        // Labels tied to inputs, types, required marks, index-based ids.
        page.expect(
            "daytona's API key input is a required password field with its label and an index-based id",
            r#"(() => {
                const input = test.input('daytona', 'api_key');
                const label = input && document.querySelector('label[for="' + input.id + '"]');
                return !!input && !!label && /^p\d+-f\d+$/.test(input.id)
                    && input.type === 'password' && input.name === 'api_key'
                    && input.required && input.getAttribute('aria-required') === 'true'
                    && input.placeholder === 'dtn_...' && label.textContent.includes('API Key');
            })()"#,
        )?;
        // Help text linked with aria-describedby.
        page.expect(
            "mai's endpoint is an optional url field described by its help text",
            r#"(() => {
                const input = test.input('mai', 'endpoint');
                const help = input && document.getElementById(input.getAttribute('aria-describedby'));
                return !!input && input.type === 'url' && !input.required
                    && !!help && help.id === input.id + '-help'
                    && help.textContent.includes('Keys and Endpoint');
            })()"#,
        )?;
        // A default pre-fills its field.
        page.expect(
            "bedrock's region is pre-filled with us-east-1",
            r#"(() => {
                const region = test.input('bedrock', 'region');
                return !!region && region.value === 'us-east-1' && region.placeholder === 'us-east-1';
            })()"#,
        )
    });
}

#[test]
fn an_oauth_provider_says_so_and_has_no_form() {
    let settings = Settings::serve(&["github"]);
    settings.check(|page| {
        page.expect_text(
            r#"[data-provider="github"] .oauth-note"#,
            "Connects through OAuth — there is no form to fill in here.",
        )?;
        page.expect(
            "github (OAuth) has no form and no input",
            r#"!document.querySelector('[data-provider="github"] form, [data-provider="github"] input')"#,
        )
    });
}
