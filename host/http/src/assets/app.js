// connhost settings page: lists the providers from /v1/providers, renders
// each API-key provider's credential form generically from its schema,
// validates submissions with POST /v1/providers/{id}/validate, and shows
// the operator what loaded from the plugins folder (/v1/plugins).
//
// One job per module (native ES modules; connhost serves each one at its
// own path, `assets/NAME.js`, and they import each other as `./NAME.js`):
//   dom.js        building elements (never by parsing HTML)
//   api.js        fetch() with the access token, and the token prompt
//   providers.js  loading the providers and rendering their cards
//   forms.js      a provider's credential form, from its schema
//   plugins.js    the plugins section
//   app.js        this file: starting the page
//
// Everything a plugin supplies (names, descriptions, labels, placeholders,
// help text, error messages, and the plugins' names, file paths and load
// failures' reasons) is untrusted: it only ever reaches the page
// through textContent, attributes and text nodes. The single exception is
// the instructions HTML from /ui/instructions, which the server renders
// from markdown and sanitises (raw HTML escaped, only http/https/mailto
// links); it is the only thing assigned to innerHTML (in providers.js).
//
// Element ids are built from indexes only (`p3`, `p3-f2`, `p3-f2-help`,
// `p3-f2-error`), never from provider ids or field names, which may hold
// spaces or `-` (breaking id lists like aria-describedby, or colliding
// across providers). The names are kept in data attributes instead:
// `data-provider` on each card, `data-field` on each field's wrapper and
// `data-field-error` on each field's error message.
//
// The live regions (the page status and each form's result area) stay in
// the DOM from the start, empty when idle; only their content changes, so
// that screen readers announce it.

import { initToken } from "./api.js";
import { loadProviders } from "./providers.js";
import { initPlugins, startPlugins } from "./plugins.js";

/** (Re)loads the providers, then shows the plugins section (once). */
function load() {
  loadProviders(startPlugins);
}

initToken(load);
initPlugins();
load();
