//! Every provider, from a plugin or built in, gets a card with its origin,
//! name and icon; and a picture of the whole page is kept.

use super::*;

#[test]
fn every_provider_gets_a_card_with_its_origin_name_and_icon() {
    let settings = Settings::serve(EXAMPLES);
    let screenshot = target_dir().join("test-output/browser/settings-page.png");
    settings.check(|page| {
        // Every provider gets a card once /v1/providers answered.
        page.wait(r#"[data-provider="mai"] form"#)?;
        page.wait(r#"[data-provider="daytona"] form"#)?;
        page.wait(r#"[data-provider="bedrock"] form"#)?;
        page.wait(r#"[data-provider="github"]"#)?;
        page.wait(r#"[data-provider="openai"] form"#)?; // built in
        page.expect_text_contains(
            r#"[data-provider="daytona"] .origin"#,
            "Plugin daytona 0.1.0",
        )?;
        page.expect_text_contains(r#"[data-provider="openai"] .origin"#, "Built in")?;
        page.expect_text_contains(r#"[data-provider="daytona"] h2"#, "Daytona")?;
        page.expect(
            "the icon placeholder is decorative and names the Lucide icon",
            r#"(() => {
                const icon = document.querySelector('[data-provider="daytona"] [data-icon]');
                return !!icon && icon.getAttribute('data-icon') === 'container'
                    && icon.getAttribute('aria-hidden') === 'true';
            })()"#,
        )?;
        // A picture of the whole page, for people and for CI artifacts.
        page.screenshot(&screenshot)
    });
}
