//! The settings page of `connhost serve` in a real headless Chromium, one
//! concern per file: the provider cards (`cards`), forms generated from
//! schemas (`forms`), either-or credential methods (`either_or`), the form
//! errors of a 422 (`field_errors`), live verdicts by mouse and by keyboard
//! (`verdicts`), accessibility of the page's structure (`accessibility`),
//! plugin strings kept as text next to sanitised markdown
//! (`plugin_text`), the operator's view of the plugins
//! (`plugins_view`), and of the references a server syncs from a registry
//! (`sync_view`).
//!
//! Every test starts its own `connhost serve` (with only the plugins its
//! concern needs, and its own fake vendor) and opens its own tab, in one
//! Chromium shared by the tests that run at the same time; one tab at a
//! time is open and driven (focus and window size are the browser's).

mod accessibility;
mod cards;
mod either_or;
mod field_errors;
mod forms;
mod plugin_text;
mod plugins_view;
mod sync_view;
mod verdicts;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use headless_chrome::browser::tab::element::Element;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::Page::{
    AddScriptToEvaluateOnNewDocument, CaptureScreenshotFormatOption,
};
use headless_chrome::types::Bounds;
use headless_chrome::util::Wait;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use crate::support::server::Server;
use crate::support::vendor::Vendor;
use crate::support::*;

/// A tenant id in the form Microsoft Entra ID uses.
const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// The example plugins, each serving the provider of the same name.
const EXAMPLES: &[&str] = &["daytona", "mai", "github", "bedrock"];

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

/// A `connhost serve` over some example plugins, daytona's pointed at a
/// fake vendor, and a browser tab to look at its settings page with.
struct Settings {
    chromium: Arc<Chromium>,
    providers: Vec<String>,
    vendor: Vendor,
    server: Server,
    _plugins: PluginDir,
}

impl Settings {
    /// Serves these example plugins (plus the built-in providers). The
    /// browser comes first: without Chromium the test fails at once,
    /// saying how to install it.
    fn serve(plugins: &[&str]) -> Self {
        let chromium = Chromium::shared();
        let vendor = Vendor::start();
        let dir = PluginDir::with(plugins);
        let server = Server::start(dir.path(), |command| {
            command
                .env("CONNHOST_PLUGIN_DAYTONA_API_URL", vendor.url())
                .env("CONNHOST_CONFIG", vendor.grants_file(&["daytona"]));
        });
        let mut providers: Vec<String> = plugins.iter().map(|p| (*p).to_owned()).collect();
        providers.push("openai".to_owned()); // built in
        Self {
            chromium,
            providers,
            vendor,
            server,
            _plugins: dir,
        }
    }

    /// Opens the settings page (hooks installed, every provider's card
    /// shown) and runs `checks` on it; then checks what must hold after
    /// anything a test does: the page threw nothing, and parsed no HTML
    /// but the server-rendered instructions (so verdicts and field errors,
    /// too, were shown as text). Panics with what the page showed, what
    /// the browser logged and connhost's log if anything failed.
    fn check(&self, checks: impl FnOnce(&Page<'_>) -> Result<(), String>) {
        // One tab at a time: a new tab would take the focus (and the
        // window) from the one a test is typing into.
        let _turn = BROWSING.lock().unwrap_or_else(|e| e.into_inner());
        let chrome = Chrome::open(self.chromium.clone());
        let page = Page { chrome: &chrome };
        let outcome = page
            .open(&format!("{}/", self.server.url()), &self.providers)
            .and_then(|()| checks(&page))
            .and_then(|()| page.threw_nothing())
            .and_then(|()| page.parsed_only_the_instructions());
        if let Err(problem) = outcome {
            panic!("{problem}\n\nconnhost's log:\n{}", self.server.log());
        }
    }
}

/// On mai's card: chooses the "Entra ID OAuth" method, records what the
/// page posts from then on, fills in only the tenant and submits, and
/// waits for the form's errors (the host's form rules answer 422).
fn submit_mai_entra_with_only_the_tenant(page: &Page<'_>) -> Result<(), String> {
    page.click(r#"[data-provider="mai"] input[type="radio"][value="Entra ID OAuth"]"#)?;
    page.record_posted_bodies()?;
    page.type_into(
        r#"[data-provider="mai"] [data-field="tenant_id"] input"#,
        TENANT_ID,
    )?;
    page.click(r#"[data-provider="mai"] button[type="submit"]"#)?;
    page.wait(r#"[data-provider="mai"] [data-result="invalid_fields"]"#)?;
    Ok(())
}

/// A headless Chromium with a fresh profile. The browser is killed, then
/// the profile removed, when this is dropped.
struct Chromium {
    browser: Browser,
    _profile: tempfile::TempDir,
}

/// The Chromium that tests running at the same time share; it goes when
/// the last of them is done.
static SHARED: Mutex<Weak<Chromium>> = Mutex::new(Weak::new());

/// Held while a test has its tab open.
static BROWSING: Mutex<()> = Mutex::new(());

/// One tab of the shared Chromium, listening to its page's exceptions and
/// log. The tab is closed when this is dropped.
struct Chrome {
    tab: Arc<Tab>,
    events: Arc<Mutex<Events>>,
    _chromium: Arc<Chromium>,
}

#[derive(Default)]
struct Events {
    /// Uncaught exceptions in the page.
    exceptions: Vec<String>,
    /// Everything the browser logged for the page (console, network, CSP).
    log: Vec<String>,
}

impl Chromium {
    /// `/usr/bin/chromium` (Debian's package), or the `CHROME` env var.
    fn binary() -> PathBuf {
        std::env::var_os("CHROME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
    }

    /// The running shared Chromium, or a new one.
    fn shared() -> Arc<Chromium> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(chromium) = shared.upgrade() {
            return chromium;
        }
        let chromium = Arc::new(Self::launch());
        *shared = Arc::downgrade(&chromium);
        chromium
    }

    /// Starts Chromium; fails the test, saying how to install it, when
    /// there is none.
    fn launch() -> Chromium {
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
        Chromium {
            browser,
            _profile: profile,
        }
    }
}

impl Chrome {
    /// A new tab in `chromium`.
    fn open(chromium: Arc<Chromium>) -> Self {
        let tab = chromium.browser.new_tab().expect("open a browser tab");
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
            _chromium: chromium,
        }
    }

    fn exceptions(&self) -> Vec<String> {
        self.events.lock().unwrap().exceptions.clone()
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.tab.close(false);
    }
}

/// Small helpers over the tab whose errors describe the page's state.
struct Page<'a> {
    chrome: &'a Chrome,
}

impl Page<'_> {
    /// Installs the test hooks, opens `url`, and waits until each of
    /// `providers` has its card (once /v1/providers answered).
    fn open(&self, url: &str, providers: &[String]) -> Result<(), String> {
        self.tab()
            .call_method(AddScriptToEvaluateOnNewDocument {
                source: TEST_HOOKS.to_owned(),
                world_name: None,
                include_command_line_api: None,
                run_immediately: None,
            })
            .map_err(|e| self.problem(&format!("could not install the test hooks: {e:#}")))?;
        self.tab()
            .navigate_to(url)
            .and_then(|tab| tab.wait_until_navigated())
            .map_err(|e| self.problem(&format!("could not open {url}: {e:#}")))?;
        for provider in providers {
            self.wait(&format!(r#"[data-provider="{provider}"]"#))?;
        }
        Ok(())
    }

    /// Checks that the only HTML ever parsed into the page is the
    /// instructions from the server, each assigned once to its box's
    /// innerHTML (the boxes are rendered with the cards, so this holds as
    /// soon as the cards are shown).
    fn parsed_only_the_instructions(&self) -> Result<(), String> {
        self.expect(
            "innerHTML (or any other HTML parsing) was used only for the instructions",
            r#"(() => {
                const parsed = window.__connhostTestHtml || [];
                const boxes = document.querySelectorAll('.instructions:not(.instructions-plain)').length;
                return parsed.length === boxes
                    && parsed.every(p => p.what === 'innerHTML' && p.className === 'instructions');
            })()"#,
        )
    }

    /// Checks that the page threw no uncaught exception.
    fn threw_nothing(&self) -> Result<(), String> {
        let exceptions = self.chrome.exceptions();
        if exceptions.is_empty() {
            Ok(())
        } else {
            Err(self.problem(&format!("the page threw: {exceptions:#?}")))
        }
    }

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
