//! Either-or credential methods (mai: an API key, or Entra ID OAuth): a
//! radio group; only the chosen method's fields are shown, enabled and
//! sent.

use serde_json::json;

use super::*;

#[test]
fn choosing_a_method_shows_and_enables_only_its_fields() {
    let settings = Settings::serve(&["mai"]);
    settings.check(|page| {
        page.expect(
            "mai's methods are radios in a fieldset sharing one name, the first one chosen",
            r#"(() => {
                const radios = [...document.querySelectorAll('[data-provider="mai"] fieldset input[type=radio]')];
                const legend = document.querySelector('[data-provider="mai"] fieldset legend');
                return radios.map(r => r.value).join('|') === 'API key|Entra ID OAuth'
                    && new Set(radios.map(r => r.name)).size === 1 && /^p\d+-method$/.test(radios[0].name)
                    && radios[0].checked && !radios[1].checked
                    && !!legend && legend.textContent === 'Credential method';
            })()"#,
        )?;
        page.click(r#"[data-provider="mai"] input[type="radio"][value="Entra ID OAuth"]"#)?;
        page.expect(
            "after choosing Entra ID OAuth, mai's API key input is hidden and disabled",
            r#"(() => {
                const key = test.input('mai', 'api_key');
                return key.disabled && !key.checkVisibility();
            })()"#,
        )?;
        page.expect(
            "after choosing Entra ID OAuth, its fields and the ungrouped endpoint show",
            r#"['tenant_id', 'client_id', 'client_secret', 'endpoint']
                .map(n => test.input('mai', n))
                .every(i => !!i && !i.disabled && i.checkVisibility())"#,
        )
    });
}

#[test]
fn only_the_chosen_methods_fields_are_sent() {
    let settings = Settings::serve(&["mai"]);
    settings.check(|page| {
        submit_mai_entra_with_only_the_tenant(page)?;
        // Only the chosen method's fields (and the ungrouped endpoint) were
        // sent, empty ones as "": never the hidden API key.
        let posted = page.posted_bodies()?;
        let expected = json!({"fields": {
            "tenant_id": TENANT_ID,
            "client_id": "",
            "client_secret": "",
            "endpoint": "",
        }});
        if posted != [expected.clone()] {
            return Err(page.problem(&format!(
                "mai's form posted {posted:?}, expected exactly [{expected}]"
            )));
        }
        Ok(())
    });
}
