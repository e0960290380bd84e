// The settings page of `connhost serve` in a real headless Chromium: forms from schemas, either-or methods, field errors, live validations (valid and rejected, by mouse and by keyboard), OAuth cards, plugin strings kept as text.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headless_chrome::browser::tab::element::Element;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::Page::{
    AddScriptToEvaluateOnNewDocument, CaptureScreenshotFormatOption,
};
use headless_chrome::types::Bounds;
use headless_chrome::util::Wait;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::{json, Value};

use crate::support::server::Server;
use crate::support::vendor::Vendor;
use crate::support::*;

const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// How long any one DOM condition may take to hold (the page, a validation
/// over loopback); generous for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(30);

/// Runs in the page before its own script: records every way of parsing
/// HTML into the page (so the test can tell that only the server-rendered
/// instructions ever are), and adds `test.input(provider, field)`,
/// `test.error(provider, field)` and `test.card(provider)`, which find
/// elements by their data attributes (the element ids are index-based).
const TEST_HOOKS: &str = r#"(() => {
    const parsed = [];
    window.__connhostTestHtml = parsed;
    const note = (what, node) => parsed.push({
        what,
        className: node && typeof node.className === 'string' ? node.className : '',
    });
    for (const name of ['innerHTML', 'outerHTML']) {
        for (const proto of [Element.prototype, ShadowRoot.prototype]) {
            const d = Object.getOwnPropertyDescriptor(proto, name);
            if (!d || !d.set) continue;
            Object.defineProperty(proto, name, {
                ...d,
                set(value) { note(name, this); return d.set.call(this, value); },
            });
        }
    }
    const wrap = (proto, name) => {
        const original = proto && proto[name];
        if (typeof original !== 'function') return;
        proto[name] = function (...args) { note(name, this); return original.apply(this, args); };
    };
    wrap(Element.prototype, 'insertAdjacentHTML');
    wrap(Element.prototype, 'setHTMLUnsafe');
    wrap(ShadowRoot.prototype, 'setHTMLUnsafe');
    wrap(Document.prototype, 'write');
    wrap(Document.prototype, 'writeln');
    wrap(Range.prototype, 'createContextualFragment');
    wrap(DOMParser.prototype, 'parseFromString');

    const card = p => [...document.querySelectorAll('[data-provider]')]
        .find(c => c.dataset.provider === p) || null;
    const within = (p, attr, f) => {
        const c = card(p);
        return c ? [...c.querySelectorAll('[' + attr + ']')]
            .find(n => n.getAttribute(attr) === f) || null : null;
    };
    window.test = {
        card,
        input: (p, f) => { const w = within(p, 'data-field', f); return w && w.querySelector('input'); },
        error: (p, f) => within(p, 'data-field-error', f),
    };
})();"#;

#[test]
fn the_settings_page_renders_forms_reports_field_errors_and_validates_a_key() {
    let chrome = Chrome::launch(); // first: fails fast without Chromium
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona", "mai", "github", "bedrock"]);
    let server = Server::start(dir.path(), |command| {
        command.env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url());
    });
    let screenshot = target_dir().join("test-output/browser/settings-page.png");

    if let Err(problem) = check_settings_page(&chrome, &format!("{}/", server.url()), &screenshot) {
        panic!("{problem}\n\nconnhost's log:\n{}", server.log());
    }
    // The daytona plugin checked both keys against the (fake) vendor, once
    // each: the wrong one, then the good one.
    assert_eq!(vendor.paths(), ["/sandbox", "/sandbox"], "{}", server.log());
}

/// Drives the page at `url`; every failed expectation is an `Err` that
/// carries what the page showed and logged at that moment.
fn check_settings_page(chrome: &Chrome, url: &str, screenshot: &Path) -> Result<(), String> {
    let page = Page { chrome };
    chrome
        .tab
        .call_method(AddScriptToEvaluateOnNewDocument {
            source: TEST_HOOKS.to_owned(),
            world_name: None,
            include_command_line_api: None,
            run_immediately: None,
        })
        .map_err(|e| page.problem(&format!("could not install the test hooks: {e:#}")))?;
    chrome
        .tab
        .navigate_to(url)
        .and_then(|tab| tab.wait_until_navigated())
        .map_err(|e| page.problem(&format!("could not open {url}: {e:#}")))?;

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
    // The server-rendered instructions: markdown became HTML with the link.
    page.expect(
        "daytona's instructions are rendered HTML with the dashboard link",
        r#"!!document.querySelector('[data-provider="daytona"] a[href="https://app.daytona.io/dashboard"]')"#,
    )?;

    // The live regions are in the DOM from the start and empty when idle
    // (never hidden), so that a message put in them is announced.
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
    )?;

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
    )?;

    // Everything a plugin supplies is rendered as text: each name,
    // description, label, placeholder and help text in the page is exactly
    // the string /v1/providers has (and the only HTML parsed into the page
    // is the server-rendered instructions, checked at the end).
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

    // bedrock's region comes pre-filled with its default.
    page.expect(
        "bedrock's region is pre-filled with us-east-1",
        r#"(() => {
            const region = test.input('bedrock', 'region');
            return !!region && region.value === 'us-east-1' && region.placeholder === 'us-east-1';
        })()"#,
    )?;

    // (3) An OAuth provider says so and has no form.
    page.expect_text(
        r#"[data-provider="github"] .oauth-note"#,
        "Connects through OAuth — there is no form to fill in here.",
    )?;
    page.expect(
        "github (OAuth) has no form and no input",
        r#"!document.querySelector('[data-provider="github"] form, [data-provider="github"] input')"#,
    )?;

    // The form is generated from the schema: labels tied to inputs, types,
    // required marks, help text linked with aria-describedby.
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

    // (1) mai, "Entra ID OAuth" with only the tenant: the host's form rules
    // answer 422 and each message lands next to its field.
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
    )?;
    page.record_posted_bodies()?;
    page.type_into(
        r#"[data-provider="mai"] [data-field="tenant_id"] input"#,
        TENANT_ID,
    )?;
    page.click(r#"[data-provider="mai"] button[type="submit"]"#)?;
    page.wait(r#"[data-provider="mai"] [data-result="invalid_fields"]"#)?;
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
    )?;
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

    // (2) daytona with a key the vendor refuses: a rejected verdict, with
    // the plugin's reason in sight.
    let daytona_key = r#"[data-provider="daytona"] [data-field="api_key"] input"#;
    page.type_into(daytona_key, "wrong-key")?;
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

    // daytona with a key the vendor accepts, by keyboard only: focus the
    // input, replace its text, press Enter.
    page.focus_and_type(daytona_key, "good-key")?;
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
    let posted = page.posted_bodies()?;
    let expected = [
        json!({"fields": {"api_key": "wrong-key"}}),
        json!({"fields": {"api_key": "good-key"}}),
    ];
    if posted.get(1..) != Some(&expected[..]) {
        return Err(page.problem(&format!(
            "daytona's form posted {posted:?}, expected {expected:?} after mai's"
        )));
    }

    // The only HTML ever parsed into the page is the instructions from the
    // server, each assigned once to its box's innerHTML.
    page.expect(
        "innerHTML (or any other HTML parsing) was used only for the instructions",
        r#"(() => {
            const parsed = window.__connhostTestHtml || [];
            const boxes = document.querySelectorAll('.instructions:not(.instructions-plain)').length;
            return boxes >= 1 && parsed.length === boxes
                && parsed.every(p => p.what === 'innerHTML' && p.className === 'instructions');
        })()"#,
    )?;

    // (4) A picture of the whole page, for people and for CI artifacts.
    page.screenshot(screenshot)?;

    let exceptions = chrome.exceptions();
    if !exceptions.is_empty() {
        return Err(page.problem(&format!("the page threw: {exceptions:#?}")));
    }
    Ok(())
}

/// A headless Chromium with a fresh profile and one tab. The browser is
/// killed, then the profile removed, when this is dropped.
struct Chrome {
    tab: Arc<Tab>,
    events: Arc<Mutex<Events>>,
    _browser: Browser,
    _profile: tempfile::TempDir,
}

#[derive(Default)]
struct Events {
    /// Uncaught exceptions in the page.
    exceptions: Vec<String>,
    /// Everything the browser logged for the page (console, network, CSP).
    log: Vec<String>,
}

impl Chrome {
    /// `/usr/bin/chromium` (Debian's package), or the `CHROME` env var.
    fn binary() -> PathBuf {
        std::env::var_os("CHROME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
    }

    fn launch() -> Self {
        let binary = Self::binary();
        assert!(
            binary.is_file(),
            "the browser test needs Chromium, and there is none at {}: install it with \
             `apt-get update && apt-get install -y chromium` (Debian), or set CHROME to a \
             Chromium or Chrome binary",
            binary.display()
        );
        let profile = tempfile::Builder::new()
            .prefix("connhost-chromium-")
            .tempdir()
            .expect("temp dir for the browser profile");
        let args: Vec<&OsStr> = [
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ]
        .into_iter()
        .map(OsStr::new)
        .collect();
        let options = LaunchOptions::default_builder()
            .path(Some(binary.clone()))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1280, 900)))
            .user_data_dir(Some(profile.path().to_owned()))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(180))
            .build()
            .expect("browser launch options");
        let browser = Browser::new(options)
            .unwrap_or_else(|e| panic!("could not start {}: {e:#}", binary.display()));
        let tab = browser.new_tab().expect("open a browser tab");
        tab.set_default_timeout(WAIT);

        let events = Arc::new(Mutex::new(Events::default()));
        {
            let events = events.clone();
            tab.add_event_listener(Arc::new(move |event: &Event| {
                let mut events = events.lock().unwrap();
                match event {
                    Event::RuntimeExceptionThrown(thrown) => {
                        let details = &thrown.params.exception_details;
                        let what = details
                            .exception
                            .as_ref()
                            .and_then(|e| e.description.clone())
                            .unwrap_or_else(|| details.text.clone());
                        events.exceptions.push(format!(
                            "{what} ({}:{})",
                            details.url.as_deref().unwrap_or("?"),
                            details.line_number + 1
                        ));
                    }
                    Event::LogEntryAdded(entry) => {
                        let entry = &entry.params.entry;
                        events.log.push(format!(
                            "{:?} {:?}: {}",
                            entry.level, entry.source, entry.text
                        ));
                    }
                    _ => {}
                }
            }))
            .expect("listen to the tab's events");
        }
        tab.enable_runtime().expect("enable the Runtime domain");
        tab.enable_log().expect("enable the Log domain");

        Self {
            tab,
            events,
            _browser: browser,
            _profile: profile,
        }
    }

    fn exceptions(&self) -> Vec<String> {
        self.events.lock().unwrap().exceptions.clone()
    }
}

/// Small helpers over the tab whose errors describe the page's state.
struct Page<'a> {
    chrome: &'a Chrome,
}

impl Page<'_> {
    fn tab(&self) -> &Tab {
        &self.chrome.tab
    }

    /// `message`, then what the page shows and what the browser logged.
    fn problem(&self, message: &str) -> String {
        let text = self
            .eval_raw("document.body ? document.body.innerText : '(no body)'")
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "(could not read the page)".to_owned());
        let events = self.chrome.events.lock().unwrap();
        format!(
            "{message}\n\n--- the page's text ---\n{text}\n--- exceptions ---\n{:#?}\n--- browser log ---\n{}",
            events.exceptions,
            events.log.join("\n")
        )
    }

    /// Waits until an element matches `selector`.
    fn wait(&self, selector: &str) -> Result<Element<'_>, String> {
        self.tab()
            .wait_for_element_with_custom_timeout(selector, WAIT)
            .map_err(|e| {
                self.problem(&format!(
                    "no element matched {selector} within {WAIT:?}: {e:#}"
                ))
            })
    }

    /// Evaluates an expression whose value is JSON-serialisable.
    fn eval_raw(&self, expression: &str) -> Result<Value, String> {
        self.evaluate(&format!("JSON.stringify({expression})"), false, expression)
    }

    /// Evaluates an expression whose value is a promise of something
    /// JSON-serialisable, and waits for it.
    fn eval_async(&self, expression: &str) -> Result<Value, String> {
        let wrapped = format!("(async () => JSON.stringify(await ({expression})))()");
        self.evaluate(&wrapped, true, expression)
            .map_err(|e| self.problem(&e))
    }

    fn evaluate(
        &self,
        wrapped: &str,
        await_promise: bool,
        expression: &str,
    ) -> Result<Value, String> {
        let object = self
            .tab()
            .evaluate(wrapped, await_promise)
            .map_err(|e| format!("evaluating {expression}: {e:#}"))?;
        let text = object
            .value
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{expression} evaluated to no JSON value: {object:?}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{expression} gave bad JSON ({e}): {text}"))
    }

    fn eval(&self, expression: &str) -> Result<Value, String> {
        self.eval_raw(expression).map_err(|e| self.problem(&e))
    }

    /// Checks that a JavaScript expression is `true`.
    fn expect(&self, what: &str, expression: &str) -> Result<(), String> {
        match self.eval(expression)? {
            Value::Bool(true) => Ok(()),
            other => Err(self.problem(&format!(
                "expected {what}, but got {other} from\n{expression}"
            ))),
        }
    }

    fn text(&self, selector: &str) -> Result<String, String> {
        self.wait(selector)?;
        let query = serde_json::to_string(selector).expect("a string");
        match self.eval(&format!(
            "document.querySelector({query}).textContent.trim()"
        ))? {
            Value::String(text) => Ok(text),
            other => Err(self.problem(&format!("{selector} has no text: {other}"))),
        }
    }

    fn expect_text(&self, selector: &str, expected: &str) -> Result<(), String> {
        let text = self.text(selector)?;
        if text == expected {
            Ok(())
        } else {
            Err(self.problem(&format!("{selector} says {text:?}, expected {expected:?}")))
        }
    }

    fn expect_text_contains(&self, selector: &str, needle: &str) -> Result<(), String> {
        let text = self.text(selector)?;
        if text.contains(needle) {
            Ok(())
        } else {
            Err(self.problem(&format!("{selector} says {text:?}, which lacks {needle:?}")))
        }
    }

    /// A real mouse click in the middle of the element.
    fn click(&self, selector: &str) -> Result<(), String> {
        self.wait(selector)?
            .click()
            .map(|_| ())
            .map_err(|e| self.problem(&format!("could not click {selector}: {e:#}")))
    }

    /// Clicks into the element and enters `text` as typed text (`input`
    /// events, like a paste: one call, where key presses would cost two
    /// round trips to the browser per character).
    fn type_into(&self, selector: &str, text: &str) -> Result<(), String> {
        self.click(selector)?;
        self.tab()
            .send_character(text)
            .map(|_| ())
            .map_err(|e| self.problem(&format!("could not type into {selector}: {e:#}")))?;
        let query = serde_json::to_string(selector).expect("a string");
        let entered = self.eval(&format!("document.querySelector({query}).value"))?;
        if entered != Value::String(text.to_owned()) {
            return Err(self.problem(&format!(
                "typed {text:?} into {selector}, which holds {entered}"
            )));
        }
        Ok(())
    }

    /// Focuses the element from script (no click), selects its text, and
    /// types `text` over it: the keyboard-only way into a field.
    fn focus_and_type(&self, selector: &str, text: &str) -> Result<(), String> {
        self.wait(selector)?;
        let query = serde_json::to_string(selector).expect("a string");
        self.expect(
            &format!("{selector} to take the focus"),
            &format!(
                "(() => {{ const i = document.querySelector({query}); i.focus(); i.select(); \
                 return document.activeElement === i; }})()"
            ),
        )?;
        self.tab()
            .send_character(text)
            .map(|_| ())
            .map_err(|e| self.problem(&format!("could not type into {selector}: {e:#}")))?;
        let entered = self.eval(&format!("document.querySelector({query}).value"))?;
        if entered != Value::String(text.to_owned()) {
            return Err(self.problem(&format!(
                "typed {text:?} over {selector}, which holds {entered}"
            )));
        }
        Ok(())
    }

    /// Presses and releases a key (`"Enter"`, `"Tab"`) where the focus is.
    fn press_key(&self, key: &str) -> Result<(), String> {
        self.tab()
            .press_key(key)
            .map(|_| ())
            .map_err(|e| self.problem(&format!("could not press {key}: {e:#}")))
    }

    /// From now on, remembers the body of every POST the page sends with
    /// `fetch` (the page calls the global `fetch` each time).
    fn record_posted_bodies(&self) -> Result<(), String> {
        self.eval(
            r#"(() => {
                if (!window.__connhostTestPosted) {
                    window.__connhostTestPosted = [];
                    const original = window.fetch;
                    window.fetch = function (input, init) {
                        if (init && String(init.method).toUpperCase() === 'POST') {
                            window.__connhostTestPosted.push(String(init.body));
                        }
                        return original.apply(this, arguments);
                    };
                }
                return true;
            })()"#,
        )
        .map(|_| ())
    }

    /// The bodies recorded since [`record_posted_bodies`], parsed.
    fn posted_bodies(&self) -> Result<Vec<Value>, String> {
        let Value::Array(bodies) = self.eval("window.__connhostTestPosted || []")? else {
            return Err(self.problem("the recorded POST bodies are not a list"));
        };
        bodies
            .iter()
            .map(|body| {
                let text = body.as_str().unwrap_or_default();
                serde_json::from_str(text).map_err(|e| {
                    self.problem(&format!("the page posted a non-JSON body ({e}): {text}"))
                })
            })
            .collect()
    }

    /// Waits until a JavaScript expression is `true`.
    fn wait_until(&self, what: &str, expression: &str) -> Result<(), String> {
        Wait::with_timeout(WAIT)
            .until(|| match self.eval_raw(expression) {
                Ok(Value::Bool(true)) => Some(()),
                _ => None,
            })
            .map_err(|_| self.problem(&format!("waited {WAIT:?} for {what}: {expression}")))
    }

    /// Saves a PNG of the whole page (the window is made as tall as the
    /// page first) to `path`.
    fn screenshot(&self, path: &Path) -> Result<(), String> {
        self.eval("(window.scrollTo(0, 0), true)")?;
        // The window's outer height includes (headless) browser chrome.
        let size = self.eval(
            "[window.outerWidth, document.documentElement.scrollHeight + window.outerHeight - window.innerHeight]",
        )?;
        let (width, height) = (size[0].as_f64(), size[1].as_f64());
        self.tab()
            .set_bounds(Bounds::Normal {
                left: None,
                top: None,
                width,
                height,
            })
            .map_err(|e| self.problem(&format!("could not resize the window: {e:#}")))?;
        self.wait_until(
            "the window to show the whole page",
            "window.innerHeight >= document.documentElement.scrollHeight",
        )?;
        let png = self
            .tab()
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .map_err(|e| self.problem(&format!("could not take a screenshot: {e:#}")))?;
        let dir = path.parent().expect("the screenshot's folder");
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::write(path, &png).map_err(|e| format!("writing {}: {e}", path.display()))?;
        let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if written == 0 {
            return Err(format!("the screenshot {} is empty", path.display()));
        }
        Ok(())
    }
}
