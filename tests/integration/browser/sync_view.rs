//! The settings page of a server that keeps its plugins folder in step
//! with a tag in a real registry (`serve --sync`, Debian's
//! `docker-registry`): the references it syncs, the digest each runs,
//! when it last succeeded and, once the registry is gone, the error and
//! that the last good set is kept; the synced plugin's source; all as
//! text, in the same accessible structure as the rest of the view.

use std::ffi::OsStr;

use serde_json::json;

use super::plugins_view::expect_accessible_structure;
use super::*;
use crate::support::registry::{docker_config, Registry};
use crate::sync::{push, replica, serves, vendor_file, FIRST_WITHIN};

/// In-page helpers: `sync.row(reference)` (the reference's row in the
/// synced references' table) and `sync.cell(reference, key)` (the text of
/// one of its cells).
const SYNC_HOOKS: &str = r#"(() => {
    const row = reference => [...document.querySelectorAll('#plugins-view tr[data-sync-reference]')]
        .find(r => r.querySelector('[data-key="reference"]').textContent === reference) || null;
    window.sync = {
        row,
        cell: (reference, key) => {
            const r = row(reference);
            const cell = r && r.querySelector('[data-key="' + key + '"]');
            return cell ? cell.textContent : null;
        },
    };
    return true;
})()"#;

#[test]
fn the_view_shows_each_synced_reference_its_digest_and_its_error_while_keeping_the_last_good_set() {
    let chromium = Chromium::shared();
    let registry = Registry::start();
    let docker = docker_config(registry.host(), None);
    let vendor_dir = tempfile::tempdir().expect("temp dir");
    let reference = registry.reference("plugins/greeter:stable");
    let digest = push(
        docker.path(),
        &vendor_file(vendor_dir.path(), "fixture-greeter-v1"),
        &reference,
    );
    let plugins = PluginDir::empty();
    let server = replica(
        plugins.path(),
        docker.path(),
        &[&reference],
        &[] as &[&OsStr],
    );
    // The page lists the providers it finds when it opens: greeter first.
    wait_until_within(
        "the server serves greeter from the tag",
        FIRST_WITHIN,
        || serves(&server, "1.0.0", &reference, &digest),
    );
    let settings = Settings {
        chromium,
        providers: vec!["greeter".to_owned(), "openai".to_owned()],
        vendor: Vendor::start(),
        server,
        _plugins: plugins,
    };
    settings.check(|page| {
        page.eval(SYNC_HOOKS)?;
        let reference_js = json!(reference);
        page.wait_until(
            "the view to show the synced reference",
            &format!("!!sync.row({reference_js})"),
        )?;
        page.expect(
            "the reference's row shows the digest it runs, its file, a last success and no error",
            &format!(
                r#"(() => {{
                    const r = {reference_js};
                    return sync.cell(r, 'digest') === {digest}
                        && sync.cell(r, 'file') === {file}
                        && /^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(sync.cell(r, 'last-success'))
                        && sync.row(r).querySelector('time').dateTime === sync.cell(r, 'last-success')
                        && sync.cell(r, 'state') === 'In step'
                        && !sync.row(r).querySelector('[data-key="error"]');
                }})()"#,
                digest = json!(digest),
                file = json!(library_file_name("greeter")),
            ),
        )?;
        page.expect(
            "the synced plugin's card says where it came from",
            &format!(
                r#"(() => {{
                    const card = [...document.querySelectorAll('#plugins-view [data-plugin]')]
                        .find(c => c.dataset.plugin === 'fixture-greeter-v1');
                    const source = card && card.querySelector('dd[data-key="source"]');
                    return !!source && source.textContent === {expected};
                }})()"#,
                expected = json!(format!("{reference} at {digest}")),
            ),
        )?;
        let headings = page.eval(
            "[...document.querySelectorAll('#plugins-view h3')].map(h => h.textContent)",
        )?;
        if headings[0] != "Synced from registries (1)" {
            return Err(page.problem(&format!("the view's headings: {headings}")));
        }
        expect_accessible_structure(page)?;

        // The registry goes away: the row says why the poll failed and
        // that the server keeps the last good set, still showing its
        // digest; the status line announces it.
        drop(registry);
        page.wait_until(
            "the view to show the registry's error",
            &format!(r#"!!sync.row({reference_js}) && !!sync.row({reference_js}).querySelector('[data-key="error"]')"#),
        )?;
        page.expect(
            "the row shows the error, the digest kept and the count of failed polls",
            &format!(
                r#"(() => {{
                    const r = {reference_js};
                    const state = sync.cell(r, 'state');
                    return sync.cell(r, 'error').includes(r)
                        && state.startsWith('Failing ')
                        && state.includes('Keeping the last good set.')
                        && /\(\d+ failed polls? since start\)$/.test(state)
                        && sync.cell(r, 'digest') === {digest}
                        && sync.row(r).querySelector('.badge-sync').dataset.sync === 'failed';
                }})()"#,
                digest = json!(digest),
            ),
        )?;
        page.wait_until(
            "the status line to announce the failure",
            &format!(
                "document.getElementById('plugins-status').textContent.includes({})",
                json!(format!("Sync of {reference} failed: keeping the last good set."))
            ),
        )?;
        expect_accessible_structure(page)
    });
}
