//! The page's structure for assistive technology: live regions that are
//! there (and quiet) before anything is announced, and element ids that
//! are unique, index-based and resolve wherever they are referenced.

use super::*;

#[test]
fn the_live_regions_are_present_rendered_and_empty_while_idle() {
    let settings = Settings::serve(EXAMPLES);
    settings.check(|page| {
        // In the DOM from the start and empty when idle (never hidden), so
        // that a message put in them is announced.
        page.expect(
            "the page status is a present, empty, rendered polite live region",
            r#"(() => {
                const status = document.getElementById('page-status');
                return !!status && status.getAttribute('role') === 'status'
                    && status.getAttribute('aria-live') === 'polite'
                    && !status.hidden && getComputedStyle(status).display !== 'none'
                    && status.textContent === '';
            })()"#,
        )?;
        page.expect(
            "every form has its result area, a present, empty, rendered live region",
            r#"(() => {
                const forms = [...document.querySelectorAll('[data-provider] form')];
                return forms.length >= 4 && forms.every(form => {
                    const result = form.querySelector('.result');
                    return !!result && result.getAttribute('role') === 'status'
                        && result.getAttribute('aria-live') === 'polite'
                        && !result.hidden && getComputedStyle(result).display !== 'none'
                        && result.textContent === '' && !result.hasAttribute('data-result');
                });
            })()"#,
        )
    });
}

#[test]
fn element_ids_are_unique_index_based_and_every_reference_resolves() {
    let settings = Settings::serve(EXAMPLES);
    settings.check(|page| {
        // Ids come from indexes, never from provider ids or field names: all
        // unique and without spaces, so aria-describedby lists stay intact.
        page.expect(
            "every element id is unique and index-based, and every reference resolves",
            r#"(() => {
                const ids = [...document.querySelectorAll('[id]')].map(n => n.id);
                if (new Set(ids).size !== ids.length || ids.some(id => /\s/.test(id))) return false;
                const cardIds = [...document.querySelectorAll('[data-provider] [id]')].map(n => n.id);
                if (!cardIds.every(id => /^p\d+(-[a-z]+\d*)*$/.test(id))) return false;
                const refs = [...document.querySelectorAll('[for], [aria-describedby], [aria-labelledby]')]
                    .flatMap(n => ['for', 'aria-describedby', 'aria-labelledby']
                        .flatMap(a => (n.getAttribute(a) || '').split(' ').filter(Boolean)));
                return refs.every(id => !!document.getElementById(id));
            })()"#,
        )
    });
}
