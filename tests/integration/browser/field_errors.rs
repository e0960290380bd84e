//! A submission the host's form rules refuse (422): each message lands next
//! to its field, and the invalid inputs are marked and described by it.

use super::*;

#[test]
fn each_field_error_is_shown_at_its_input_and_marks_it_invalid() {
    let settings = Settings::serve(&["mai"]);
    settings.check(|page| {
        // mai, "Entra ID OAuth" with only the tenant.
        submit_mai_entra_with_only_the_tenant(page)?;
        page.expect_text(
            r#"[data-provider="mai"] [data-field-error="client_id"]"#,
            "Client ID (Entra ID OAuth) is required.",
        )?;
        page.expect_text(
            r#"[data-provider="mai"] [data-field-error="client_secret"]"#,
            "Client Secret (Entra ID OAuth) is required.",
        )?;
        page.expect(
            "the invalid inputs are marked and described by their errors; the others are not",
            r#"(() => {
                const marked = n => {
                    const i = test.input('mai', n);
                    const e = test.error('mai', n);
                    return i.getAttribute('aria-invalid') === 'true' && !!e && e.id === i.id + '-error'
                        && (i.getAttribute('aria-describedby') || '').split(' ').includes(e.id);
                };
                const tenant = test.input('mai', 'tenant_id');
                return marked('client_id') && marked('client_secret')
                    && !tenant.hasAttribute('aria-invalid')
                    && !test.error('mai', 'tenant_id');
            })()"#,
        )
    });
}
