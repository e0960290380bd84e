//! The operator's view of the plugins (`/v1/plugins`) on the settings
//! page: loaded plugins and where they run, failed files with their
//! reasons, retired libraries; the Rescan button; a view that refreshes
//! itself without rebuilding what did not change or taking the focus;
//! file names and reasons shown as text; an accessible structure.

use std::path::PathBuf;

use serde_json::json;

use super::*;

/// Not a library, named like one: it fails to load.
const BROKEN: &str = "libbroken.so";

/// A file name that is HTML, for a file that fails to load.
const HTML_NAMED: &str = "lib<img src=x onerror=alert(1)>.so";

/// In-page helpers for the view, added before each check: `plugins.card(name)`
/// (a loaded plugin's article), `plugins.fact(name, key)` (the text of one
/// of its facts), `plugins.failedRow(path)` (a failed file's row) and
/// `plugins.report()` (the server's `/v1/plugins`, fetched).
const VIEW_HOOKS: &str = r#"(() => {
    const cards = () => [...document.querySelectorAll('#plugins-view [data-plugin]')];
    const card = name => cards().find(c => c.dataset.plugin === name) || null;
    window.plugins = {
        card,
        fact: (name, key) => {
            const c = card(name);
            const dd = c && [...c.querySelectorAll('dd[data-key]')].find(d => d.dataset.key === key);
            return dd ? dd.textContent : null;
        },
        failedRow: path => [...document.querySelectorAll('#plugins-view tr[data-failed]')]
            .find(r => r.querySelector('[data-key="path"]').textContent === path) || null,
        report: async () => (await fetch('v1/plugins', { headers: { Accept: 'application/json' } })).json(),
    };
    return true;
})()"#;

/// A `connhost serve` over example plugins plus files `extra` writes into
/// the folder, started with `args`; and the folder's path (to add files).
fn serve(plugins: &[&str], extra: impl FnOnce(&PluginDir), args: &[&str]) -> (Settings, PathBuf) {
    let chromium = Chromium::shared();
    let vendor = Vendor::start();
    let dir = PluginDir::with(plugins);
    extra(&dir);
    let server = Server::start(dir.path(), |command| {
        command.args(args);
    });
    let mut providers: Vec<String> = plugins.iter().map(|p| (*p).to_owned()).collect();
    providers.push("openai".to_owned()); // built in
    let path = dir.path().to_owned();
    let settings = Settings {
        chromium,
        providers,
        vendor,
        server,
        _plugins: dir,
    };
    (settings, path)
}

/// Writes the broken file and the file named in HTML.
fn broken_files(dir: &PluginDir) {
    dir.add_file(BROKEN, b"not a shared library");
    dir.add_file(HTML_NAMED, b"<script>alert(1)</script>");
}

/// Installs the view's helpers and waits until the view shows `plugin`.
fn open_view(page: &Page<'_>, plugin: &str) -> Result<(), String> {
    page.eval(VIEW_HOOKS)?;
    page.wait_until(
        &format!("the plugins view to show {plugin}"),
        &format!("!!plugins.card({})", json!(plugin)),
    )
}

#[test]
fn the_view_lists_each_plugin_where_it_runs_and_each_failed_file_with_its_reason_as_text() {
    let (settings, _dir) = serve(&["mai", "github"], broken_files, &[]);
    settings.check(|page| {
        open_view(page, "mai")?;
        page.expect_text("#plugins-heading", "Plugins")?;
        // Every loaded plugin and every failure of the server's report, as
        // the report has them (names, paths and reasons as plain text).
        let problems = page.eval_async(
            r#"(async () => {
                const report = await plugins.report();
                const problems = [];
                const plain = (node, expected, what) => {
                    if (!node) problems.push(what + ': missing');
                    else if (node.textContent !== expected) {
                        problems.push(what + ': ' + JSON.stringify(node.textContent) + ' is not ' + JSON.stringify(expected));
                    }
                };
                if (report.loaded.length !== 2 || report.failed.length !== 2) return ['report: ' + JSON.stringify(report)];
                if (document.querySelectorAll('#plugins-view [data-plugin]').length !== 2) problems.push('not two plugin cards');
                for (const p of report.loaded) {
                    const card = plugins.card(p.plugin);
                    if (!card) { problems.push(p.plugin + ': no card'); continue; }
                    plain(card.querySelector('h4'), p.plugin, p.plugin + ' name');
                    plain(card.querySelector('.badge-runs'), 'In process', p.plugin + ' badge');
                    if (card.querySelector('.badge-state')) problems.push(p.plugin + ': a worker badge in process');
                    const facts = { version: p.version, path: p.path, providers: p.providers.join(', '),
                        runs: 'In process, inside connhost itself', api: p.api_version };
                    for (const [key, expected] of Object.entries(facts)) {
                        if (plugins.fact(p.plugin, key) !== expected) {
                            problems.push(p.plugin + ' ' + key + ': ' + JSON.stringify(plugins.fact(p.plugin, key)));
                        }
                    }
                }
                for (const f of report.failed) {
                    const row = plugins.failedRow(f.path);
                    if (!row) { problems.push(f.path + ': no row'); continue; }
                    plain(row.querySelector('[data-key="reason"]'), f.reason, f.path + ' reason');
                    const kind = row.querySelector('[data-key="kind"]').textContent;
                    if (kind.toLowerCase() !== f.kind.replace(/_/g, ' ')) problems.push(f.path + ' kind: ' + kind);
                }
                const headings = [...document.querySelectorAll('#plugins-view h3')].map(h => h.textContent);
                if (JSON.stringify(headings) !== JSON.stringify(['Loaded (2)', 'Not loaded (2)', 'Retired libraries (0)'])) {
                    problems.push('headings: ' + JSON.stringify(headings));
                }
                return problems;
            })()"#,
        )?;
        if problems != json!([]) {
            return Err(page.problem(&format!(
                "the view does not show the report as it is: {problems:#}"
            )));
        }
        // The broken file's reason says what is wrong with it.
        page.expect(
            "the broken file's row says it is not a shared library",
            &format!(
                r#"[...document.querySelectorAll('#plugins-view tr[data-failed]')].some(r =>
                    r.querySelector('[data-key="path"]').textContent.endsWith({})
                    && r.querySelector('[data-key="reason"]').textContent.includes('not a shared library'))"#,
                json!(format!("/{BROKEN}"))
            ),
        )?;
        // The file named in HTML is shown by its name, and nothing of it
        // became an element (`check` also checks no HTML was parsed).
        page.expect(
            "the file named in HTML is shown as text, and no element came of it",
            &format!(
                r#"[...document.querySelectorAll('#plugins-view tr[data-failed] [data-key="path"]')]
                    .some(c => c.textContent.endsWith({}) && c.querySelectorAll('*').length === 1)
                    && document.querySelectorAll('#plugins img, #plugins script').length === 0"#,
                json!(format!("/{HTML_NAMED}"))
            ),
        )
    });
}

#[test]
fn rescan_loads_a_file_added_meanwhile_and_the_view_shows_it_keeping_the_focus() {
    // Without watching, the file is only found by a rescan.
    let (settings, dir) = serve(&["mai"], |_| {}, &["--no-watch"]);
    settings.check(|page| {
        open_view(page, "mai")?;
        std::fs::copy(
            built_library("github"),
            dir.join(library_file_name("github")),
        )
        .map_err(|e| format!("copying github in: {e}"))?;
        page.expect("no github before the rescan", "!plugins.card('github')")?;
        page.click("#plugins-rescan")?;
        page.wait_until("the view to show github", "!!plugins.card('github')")?;
        page.wait_until(
            "the status to say the rescan is done",
            "document.getElementById('plugins-status').textContent \
             === 'Rescanned: 2 plugins loaded, 0 files not loaded, 0 libraries retired.'",
        )?;
        page.expect(
            "the status line is a polite live region",
            r#"(() => { const s = document.getElementById('plugins-status');
                return s.getAttribute('role') === 'status' && s.getAttribute('aria-live') === 'polite'; })()"#,
        )?;
        page.expect(
            "the Rescan button is enabled again and keeps the focus",
            r#"(() => { const b = document.getElementById('plugins-rescan');
                return !b.disabled && document.activeElement === b; })()"#,
        )
    });
}

#[test]
fn the_view_refreshes_itself_rebuilding_only_on_change_and_never_taking_the_focus() {
    let (settings, dir) = serve(&["mai"], |_| {}, &[]);
    settings.check(|page| {
        open_view(page, "mai")?;
        // Count the view's changes and the page's completed report fetches.
        page.eval(
            r#"(() => {
                window.__viewMutations = 0;
                new MutationObserver(records => { window.__viewMutations += records.length; })
                    .observe(document.getElementById('plugins-view'),
                        { childList: true, subtree: true, characterData: true, attributes: true });
                window.__reportFetches = 0;
                const original = window.fetch;
                window.fetch = function (input, init) {
                    const answer = original.apply(this, arguments);
                    if (String(input) === 'v1/plugins') answer.then(() => { window.__reportFetches += 1; });
                    return answer;
                };
                return true;
            })()"#,
        )?;
        // Three refreshes answered: the first two were shown (or not).
        page.wait_until(
            "the page to fetch the report by itself three times",
            "window.__reportFetches >= 3",
        )?;
        page.expect(
            "refreshes with the same report left the view untouched",
            "window.__viewMutations === 0",
        )?;
        page.expect(
            "mai's key field takes the focus",
            "(() => { const i = test.input('mai', 'api_key'); i.focus(); return document.activeElement === i; })()",
        )?;
        std::fs::write(dir.join(BROKEN), b"not a shared library")
            .map_err(|e| format!("writing {BROKEN}: {e}"))?;
        page.wait_until(
            "the view to show the broken file by itself",
            &format!(
                r#"[...document.querySelectorAll('#plugins-view tr[data-failed] [data-key="path"]')]
                    .some(c => c.textContent.endsWith({}))"#,
                json!(format!("/{BROKEN}"))
            ),
        )?;
        page.expect_text(
            "#plugins-status",
            "Plugins changed: 1 plugin loaded, 1 file not loaded, 0 libraries retired.",
        )?;
        page.expect(
            "the focus stayed in mai's key field",
            "document.activeElement === test.input('mai', 'api_key')",
        )
    });
}

#[test]
fn the_plugins_section_is_a_labelled_region_with_ordered_headings_tables_and_readable_badges() {
    let (settings, _dir) = serve(&["mai"], broken_files, &[]);
    settings.check(|page| {
        open_view(page, "mai")?;
        page.expect(
            "the section is a region named by its heading, with a live status line",
            r#"(() => {
                const section = document.getElementById('plugins');
                const heading = document.getElementById(section.getAttribute('aria-labelledby'));
                const status = document.getElementById('plugins-status');
                return section.tagName === 'SECTION' && section.closest('main') !== null
                    && heading && heading.tagName === 'H2' && heading.textContent === 'Plugins'
                    && status.getAttribute('role') === 'status' && status.getAttribute('aria-live') === 'polite'
                    && getComputedStyle(status).display !== 'none';
            })()"#,
        )?;
        expect_accessible_structure(page)
    });
}

/// Checks the plugins section's structure for assistive technology: the
/// page's headings in order, every table with a caption, column and row
/// headers, every plugin card a definition list under its own heading,
/// every badge readable (contrast 4.5:1), every id unique and every
/// reference to one resolving. The tests of the sync's view run it too.
pub(super) fn expect_accessible_structure(page: &Page<'_>) -> Result<(), String> {
    page.expect(
        "the page's headings start at h1 and never skip a level",
        r#"(() => {
            const levels = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]
                .filter(h => h.getClientRects().length > 0).map(h => Number(h.tagName[1]));
            return levels[0] === 1 && levels.every((l, i) => i === 0 || l <= levels[i - 1] + 1);
        })()"#,
    )?;
    page.expect(
        "every table has a caption, column headers and row headers",
        r#"(() => {
            const tables = [...document.querySelectorAll('#plugins table')];
            return tables.length >= 1 && tables.every(t =>
                t.caption && t.caption.textContent.trim() !== ''
                && [...t.tHead.rows[0].cells].every(c => c.tagName === 'TH' && c.scope === 'col')
                && [...t.tBodies[0].rows].every(r => r.cells[0].tagName === 'TH' && r.cells[0].scope === 'row'));
        })()"#,
    )?;
    page.expect(
        "every loaded plugin is a definition list under its own heading",
        r#"[...document.querySelectorAll('#plugins-view [data-plugin]')].every(c =>
            document.getElementById(c.getAttribute('aria-labelledby')) === c.querySelector('h4')
            && c.querySelectorAll('dl dt').length === c.querySelectorAll('dl dd').length)"#,
    )?;
    page.expect(
        "every badge has text with a contrast of at least 4.5:1 on its background",
        r#"(() => {
            const rgb = c => c.match(/[\d.]+/g).slice(0, 3).map(Number);
            const lum = c => {
                const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                return 0.2126 * r + 0.7152 * g + 0.0722 * b;
            };
            const badges = [...document.querySelectorAll('#plugins .badge')];
            return badges.length >= 1 && badges.every(b => {
                const s = getComputedStyle(b);
                const [a, c] = [lum(s.color), lum(s.backgroundColor)];
                return b.textContent.trim() !== '' && (Math.max(a, c) + 0.05) / (Math.min(a, c) + 0.05) >= 4.5;
            });
        })()"#,
    )?;
    page.expect(
        "every element id is unique, and every reference resolves",
        r#"(() => {
            const ids = [...document.querySelectorAll('[id]')].map(n => n.id);
            if (new Set(ids).size !== ids.length || ids.some(id => /\s/.test(id))) return false;
            const refs = [...document.querySelectorAll('[for], [aria-describedby], [aria-labelledby]')]
                .flatMap(n => ['for', 'aria-describedby', 'aria-labelledby']
                    .flatMap(a => (n.getAttribute(a) || '').split(' ').filter(Boolean)));
            return refs.every(id => !!document.getElementById(id));
        })()"#,
    )
}

#[test]
fn a_replaced_library_is_listed_as_retired_with_its_size() {
    let greeter = library_file_name("greeter");
    let (settings, dir) = serve(
        &["mai"],
        |d| {
            std::fs::copy(built_library("fixture-greeter-v1"), d.file(&greeter))
                .expect("copy greeter v1");
            broken_files(d);
        },
        &["--no-watch"],
    );
    let screenshot = target_dir().join("test-output/browser/plugins-view.png");
    settings.check(|page| {
        open_view(page, "fixture-greeter-v1")?;
        page.expect(
            "no retired library yet",
            "!document.querySelector('#plugins-view tr[data-retired]')",
        )?;
        // Replaced whole (written aside, then renamed), as a deploy does.
        let aside = dir.join(".greeter.tmp");
        std::fs::copy(built_library("fixture-greeter-v2"), &aside)
            .and_then(|_| std::fs::rename(&aside, dir.join(&greeter)))
            .map_err(|e| format!("replacing {greeter}: {e}"))?;
        page.click("#plugins-rescan")?;
        page.wait_until(
            "the view to show version 2 in place of version 1",
            "!!plugins.card('fixture-greeter-v2') && !plugins.card('fixture-greeter-v1')",
        )?;
        let problems = page.eval_async(
            r#"(async () => {
                const report = await plugins.report();
                const problems = [];
                if (report.retired.length !== 1) return ['report: ' + JSON.stringify(report.retired)];
                const [old] = report.retired;
                const rows = [...document.querySelectorAll('#plugins-view tr[data-retired]')];
                if (rows.length !== 1) return [rows.length + ' retired rows'];
                const cells = [...rows[0].cells].map(c => c.textContent);
                if (cells[0] !== old.path || cells[1] !== 'fixture-greeter-v1' || cells[2] !== '1.0.0'
                    || !cells[3].includes(old.bytes.toLocaleString('en') + ' bytes')) {
                    problems.push('row: ' + JSON.stringify(cells));
                }
                const total = document.querySelector('#plugins-view [data-key="retired-total"]').textContent;
                if (!total.startsWith('1 library ') || !total.includes(old.bytes.toLocaleString('en') + ' bytes')) {
                    problems.push('total: ' + total);
                }
                const headings = [...document.querySelectorAll('#plugins-view h3')].map(h => h.textContent);
                if (headings[2] !== 'Retired libraries (1)') problems.push('headings: ' + JSON.stringify(headings));
                return problems;
            })()"#,
        )?;
        if problems != json!([]) {
            return Err(page.problem(&format!(
                "the retired library is not shown as the report has it: {problems:#}"
            )));
        }
        page.screenshot(&screenshot)
    });
}

#[test]
fn an_isolated_plugin_shows_its_worker_state_pid_and_sandbox() {
    let (settings, _dir) = serve(&["mai"], |_| {}, &["--isolation", "process"]);
    settings.check(|page| {
        open_view(page, "mai")?;
        let shown = page.eval_async(
            r#"(async () => {
                const report = await plugins.report();
                const worker = report.loaded[0].worker;
                const card = plugins.card('mai');
                return worker && worker.state === 'ready'
                    && card.querySelector('.badge-runs').textContent === 'Isolated'
                    && card.querySelector('.badge-state').textContent === 'Worker ready'
                    && plugins.fact('mai', 'pid') === String(worker.pid)
                    && plugins.fact('mai', 'restarts') === '0'
                    && plugins.fact('mai', 'sandbox').includes('seccomp');
            })()"#,
        )?;
        if shown != json!(true) {
            return Err(page.problem(
                "mai is not shown isolated with its worker ready, pid, restarts and sandbox",
            ));
        }
        Ok(())
    });
}

#[test]
fn each_plugin_shows_its_signer_digest_lock_and_egress_as_text() {
    let key = crate::trust::Key::new();
    let keys = crate::trust::keys_dir(&[(&key, "release")]);
    let keys_path = keys.path().to_str().unwrap().to_owned();
    // HTML in the trusted comment is shown as text.
    const COMMENT: &str = "release 1.2 <img src=x onerror=alert(1)>";
    let grants = tempfile::tempdir().unwrap();
    let config = grants.path().join("connhost.toml");
    std::fs::write(
        &config,
        "[plugin.daytona]\negress = [\"app.daytona.io\", \"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let (settings, _dir) = serve(
        &["daytona", "mai"],
        |dir| {
            for plugin in ["daytona", "mai"] {
                key.sign(&dir.file(&library_file_name(plugin)), COMMENT);
            }
            let locked = run(connhost(dir.path()).args(["--trusted-keys", &keys_path, "lock"]));
            assert_eq!(locked.code, 0, "{}", locked.stderr);
        },
        &[
            "--trusted-keys",
            &keys_path,
            "--locked",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    settings.check(|page| {
        open_view(page, "daytona")?;
        let shown = page.eval_async(&format!(
            r#"(async () => {{
                const report = await plugins.report();
                const daytona = report.loaded.find(p => p.plugin === 'daytona');
                const signer = plugins.fact('daytona', 'signed-by');
                return !!daytona && daytona.trust.locked === true
                    && signer.includes({id}) && signer.includes({comment})
                    && !document.querySelector('#plugins-view img')
                    && plugins.fact('daytona', 'digest').startsWith(daytona.trust.digest)
                    && plugins.fact('daytona', 'digest').includes('(locked)')
                    && plugins.fact('daytona', 'declared') === 'app.daytona.io'
                    && plugins.fact('daytona', 'granted').includes('127.0.0.1:9')
                    && plugins.fact('mai', 'granted').startsWith('Nothing');
            }})()"#,
            id = json!(key.id),
            comment = json!(COMMENT),
        ))?;
        if shown != json!(true) {
            return Err(page.problem(
                "daytona's signer, digest, lock and egress are not shown as the report says",
            ));
        }
        Ok(())
    });
}
