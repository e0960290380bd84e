//! What a plugin supplies reaches the page as text: names, descriptions,
//! labels, placeholders and help exactly as the schemas have them; the
//! only HTML parsed into the page is the instructions' markdown, rendered
//! (and sanitised) by the server.

use serde_json::json;

use super::*;

#[test]
fn every_plugin_string_is_shown_as_plain_text_exactly_as_the_schema_has_it() {
    let settings = Settings::serve(EXAMPLES);
    settings.check(|page| {
        let problems = page.eval_async(
            r#"(async () => {
                const response = await fetch('v1/providers', { headers: { Accept: 'application/json' } });
                const providers = await response.json();
                const problems = [];
                const textOnly = (node, expected, what) => {
                    if (!node) problems.push(what + ': missing');
                    else if (node.textContent !== expected || node.children.length !== 0) {
                        problems.push(what + ': ' + JSON.stringify(node.innerHTML) + ' is not the text ' + JSON.stringify(expected));
                    }
                };
                if (!Array.isArray(providers) || providers.length < 5) return ['providers: ' + JSON.stringify(providers)];
                for (const p of providers) {
                    const id = p.provider_id;
                    const card = test.card(id);
                    if (!card) { problems.push(id + ': no card'); continue; }
                    textOnly(card.querySelector('h2'), p.display_name || id, id + ' name');
                    if (p.description) textOnly(card.querySelector('.description'), p.description, id + ' description');
                    if (p.connection_type === 'o_auth' || !p.form_schema) continue;
                    const fields = p.form_schema.fields || [];
                    const wrappers = [...card.querySelectorAll('[data-field]')];
                    if (wrappers.length !== fields.length) {
                        problems.push(id + ': ' + wrappers.length + ' fields shown, ' + fields.length + ' in the schema');
                        continue;
                    }
                    fields.forEach((f, i) => {
                        const what = id + ' field ' + f.name;
                        const wrapper = wrappers[i];
                        const input = wrapper.querySelector('input');
                        const label = wrapper.querySelector('label');
                        if (wrapper.dataset.field !== f.name) problems.push(what + ': data-field is ' + wrapper.dataset.field);
                        if (!input || !label || label.htmlFor !== input.id) { problems.push(what + ': no labelled input'); return; }
                        const first = label.firstChild;
                        if (label.textContent !== f.label + (f.required ? ' *' : '')
                            || !first || first.nodeType !== Node.TEXT_NODE || first.data !== f.label
                            || [...label.children].some(c => !c.classList.contains('required-mark'))) {
                            problems.push(what + ': label ' + JSON.stringify(label.innerHTML));
                        }
                        if (input.getAttribute('placeholder') !== (f.placeholder ?? null)) {
                            problems.push(what + ': placeholder ' + JSON.stringify(input.getAttribute('placeholder')));
                        }
                        const help = wrapper.querySelector('.help');
                        if (f.help_text) {
                            textOnly(help, f.help_text, what + ' help');
                            if (help && !(input.getAttribute('aria-describedby') || '').split(' ').includes(help.id)) {
                                problems.push(what + ': not described by its help');
                            }
                        } else if (help) {
                            problems.push(what + ': help text that the schema lacks');
                        }
                        if (typeof f.default_value === 'string' && input.value !== f.default_value) {
                            problems.push(what + ': holds ' + JSON.stringify(input.value) + ', not its default');
                        }
                    });
                }
                return problems;
            })()"#,
        )?;
        if problems != json!([]) {
            return Err(page.problem(&format!(
                "the page does not show the plugins' strings as the schemas have them: {problems:#}"
            )));
        }
        Ok(())
    });
}

#[test]
fn the_only_html_parsed_into_the_page_is_the_server_rendered_instructions() {
    let settings = Settings::serve(EXAMPLES);
    settings.check(|page| {
        // The server-rendered instructions: markdown became HTML with the link.
        page.expect(
            "daytona's instructions are rendered HTML with the dashboard link",
            r#"!!document.querySelector('[data-provider="daytona"] a[href="https://app.daytona.io/dashboard"]')"#,
        )?;
        // The only HTML parsed into the page is the instructions, each
        // assigned once to its box's innerHTML (`Settings::check` checks
        // this again after every browser test, interactions included).
        page.expect(
            "innerHTML (or any other HTML parsing) was used only for the instructions",
            r#"(() => {
                const parsed = window.__connhostTestHtml || [];
                const boxes = document.querySelectorAll('.instructions:not(.instructions-plain)').length;
                return boxes >= 1 && parsed.length === boxes
                    && parsed.every(p => p.what === 'innerHTML' && p.className === 'instructions');
            })()"#,
        )
    });
}
