//! Live validations from the page: the vendor's verdict is shown where the
//! form is, whether submitted by mouse or by keyboard alone.

use serde_json::json;

use super::*;

/// daytona's API key input.
const DAYTONA_KEY: &str = r#"[data-provider="daytona"] [data-field="api_key"] input"#;

/// Checks that the page posted exactly `expected` and that the (fake)
/// vendor was asked once.
fn sent_once(page: &Page<'_>, settings: &Settings, expected: &[Value]) -> Result<(), String> {
    let posted = page.posted_bodies()?;
    if posted != expected {
        return Err(page.problem(&format!(
            "daytona's form posted {posted:?}, expected {expected:?}"
        )));
    }
    let asked = settings.vendor.paths();
    if asked != ["/sandbox"] {
        return Err(page.problem(&format!(
            "the daytona plugin should have checked the key with the vendor once, not {asked:?}"
        )));
    }
    Ok(())
}

#[test]
fn a_key_the_vendor_refuses_is_shown_rejected_with_the_plugins_reason() {
    let settings = Settings::serve(&["daytona"]);
    settings.check(|page| {
        page.record_posted_bodies()?;
        page.type_into(DAYTONA_KEY, "wrong-key")?;
        page.click(r#"[data-provider="daytona"] button[type="submit"]"#)?;
        page.wait(r#"[data-provider="daytona"] [data-result="rejected"]"#)?;
        page.expect(
            "daytona's rejection and its reason are visible",
            r#"(() => {
                const result = document.querySelector('[data-provider="daytona"] [data-result]');
                return result.checkVisibility() && result.textContent.startsWith('Rejected')
                    && result.textContent.includes('Daytona refused the API key');
            })()"#,
        )?;
        sent_once(
            page,
            &settings,
            &[json!({"fields": {"api_key": "wrong-key"}})],
        )
    });
}

#[test]
fn a_good_key_entered_by_keyboard_alone_is_shown_valid() {
    let settings = Settings::serve(&["daytona"]);
    settings.check(|page| {
        page.record_posted_bodies()?;
        // Focus the input, type the key, press Enter: no mouse.
        page.focus_and_type(DAYTONA_KEY, "good-key")?;
        page.press_key("Enter")?;
        page.wait(r#"[data-provider="daytona"] [data-result="valid"]"#)?;
        page.expect_text_contains(r#"[data-provider="daytona"] [data-result]"#, "Valid")?;
        page.expect(
            "the result area is a polite live region and the button is enabled again",
            r#"(() => {
                const result = document.querySelector('[data-provider="daytona"] [data-result]');
                const button = document.querySelector('[data-provider="daytona"] button[type="submit"]');
                return result.getAttribute('role') === 'status'
                    && result.getAttribute('aria-live') === 'polite' && !button.disabled;
            })()"#,
        )?;
        sent_once(page, &settings, &[json!({"fields": {"api_key": "good-key"}})])
    });
}
