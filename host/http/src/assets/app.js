// connhost settings page: lists the providers from /v1/providers, renders
// each API-key provider's credential form generically from its schema,
// validates submissions with POST /v1/providers/{id}/validate, and shows
// the operator what loaded from the plugins folder (/v1/plugins).
//
// Everything a plugin supplies (names, descriptions, labels, placeholders,
// help text, error messages, and the plugins' names, file paths and load
// failures' reasons) is untrusted: it only ever reaches the page
// through textContent, attributes and text nodes. The single exception is
// the instructions HTML from /ui/instructions, which the server renders
// from markdown and sanitises (raw HTML escaped, only http/https/mailto
// links); it is the only thing assigned to innerHTML.
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

(() => {
  "use strict";

  const TOKEN_KEY = "connhost.access-token";
  const INPUT_TYPES = { password: "password", text: "text", url: "url" };
  const OUTCOME_LABELS = {
    rejected: "Rejected",
    inconclusive: "Could not check",
    timed_out: "Timed out",
    provider_fault: "Provider failed",
    busy: "Busy",
  };
  const STARTING_RETRY_MS = 1000;
  const STARTING_RETRIES = 30;

  const page = {
    status: document.getElementById("page-status"),
    providers: document.getElementById("providers"),
    auth: document.getElementById("auth"),
    authForm: document.getElementById("auth-form"),
    authInput: document.getElementById("access-token"),
    authMessage: document.getElementById("auth-message"),
    forget: document.getElementById("forget-token"),
    plugins: document.getElementById("plugins"),
    pluginsStatus: document.getElementById("plugins-status"),
    pluginsView: document.getElementById("plugins-view"),
    pluginsRescan: document.getElementById("plugins-rescan"),
  };

  // ----- DOM helpers (never parse HTML) -------------------------------

  /**
   * Creates an element. `attrs` values: strings/numbers become attributes,
   * `true` an empty (boolean) attribute, `false`/null/undefined nothing.
   * Children are nodes or strings (appended as text nodes).
   */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child);
    }
    return node;
  }

  /** A string from untrusted JSON, or "" for anything that is not one. */
  function str(value) {
    return typeof value === "string" ? value : "";
  }

  function monogram(name) {
    const first = Array.from(name.trim())[0];
    return first ? first.toLocaleUpperCase() : "?";
  }

  /** A stable hue (0-359) for a provider's monogram. */
  function hue(id) {
    let h = 0;
    for (const ch of id) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  /**
   * Puts a message in the page's status line, a live region that is always
   * in the DOM (an empty one takes no room): only its content changes.
   */
  function setPageStatus(message, kind, ...extra) {
    page.status.dataset.kind = (message && kind) || "";
    if (message) page.status.replaceChildren(el("span", {}, message), ...extra);
    else page.status.replaceChildren();
  }

  // ----- access token ---------------------------------------------------

  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return ""; // storage unavailable: the token lasts as long as the page
    }
  }

  let token = readStoredToken();

  function setToken(value) {
    token = value;
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // see readStoredToken
    }
    page.forget.hidden = !token;
  }

  let tokenRequest = null; // { promise, resolve } while the prompt is open

  /** Shows the access-token prompt; resolves once a token was entered. */
  function askForToken(message) {
    page.authMessage.textContent = message;
    if (!tokenRequest) {
      let resolve;
      const promise = new Promise((r) => {
        resolve = r;
      });
      tokenRequest = { promise, resolve };
      page.auth.hidden = false;
      page.authInput.value = "";
      page.authInput.removeAttribute("aria-invalid");
      page.authInput.focus();
    }
    return tokenRequest.promise;
  }

  page.authForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const entered = page.authInput.value.trim();
    let problem = "";
    if (!entered) problem = "Enter the access token.";
    else if (!/^[\x21-\x7e]+$/.test(entered)) {
      problem = "An access token is made of printable ASCII characters, without spaces.";
    }
    if (problem) {
      page.authMessage.textContent = problem;
      page.authInput.setAttribute("aria-invalid", "true");
      page.authInput.focus();
      return;
    }
    setToken(entered);
    page.authInput.value = "";
    page.auth.hidden = true;
    const waiting = tokenRequest;
    tokenRequest = null;
    if (waiting) waiting.resolve();
  });

  page.forget.addEventListener("click", () => {
    setToken("");
    load();
  });

  // ----- HTTP -------------------------------------------------------------

  async function readJson(response) {
    const text = await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  /** The `{"error": {"message"}}` of an error answer, or a generic line. */
  function errorMessage(body, response) {
    const error = body && body.error;
    if (error && typeof error === "object" && str(error.message)) return error.message;
    if (str(error)) return error;
    return `The server answered ${response.status} ${response.statusText}`.trim() + ".";
  }

  /**
   * fetch() with the access token. On 401 the token prompt is shown, and
   * the request is sent again once a token was entered. `onWaiting` is
   * called while the request waits for a token.
   */
  async function request(path, init = {}, onWaiting) {
    for (;;) {
      const headers = new Headers(init.headers || {});
      headers.set("Accept", "application/json");
      const sent = token;
      if (sent) headers.set("Authorization", `Bearer ${sent}`);
      const response = await fetch(path, {
        ...init,
        headers,
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status !== 401) return response;
      const body = await readJson(response);
      if (token === sent) {
        // Forget the refused token (if any) and ask for one.
        if (sent) setToken("");
        if (onWaiting) onWaiting();
        await askForToken(
          sent
            ? `${errorMessage(body, response)} Enter the right access token.`
            : "This server needs an access token. Enter it to continue.",
        );
      } else if (!token && tokenRequest) {
        // Another request was refused too and opened the prompt: wait.
        if (onWaiting) onWaiting();
        await tokenRequest.promise;
      }
      // Send the request again with the token entered meanwhile.
    }
  }

  // ----- loading the providers ------------------------------------------

  let loadGeneration = 0;

  async function load() {
    const generation = ++loadGeneration;
    page.providers.replaceChildren();
    page.providers.setAttribute("aria-busy", "true");
    setPageStatus("Loading providers…", "loading");
    for (let attempt = 0; ; attempt++) {
      try {
        const [providersResponse, instructionsResponse] = await Promise.all([
          request("v1/providers", {}, () => setPageStatus("Waiting for the access token…", "loading")),
          request("ui/instructions").catch(() => null),
        ]);
        if (generation !== loadGeneration) return;
        const body = await readJson(providersResponse);
        if (providersResponse.status === 503 && attempt < STARTING_RETRIES) {
          setPageStatus(errorMessage(body, providersResponse), "loading");
          await new Promise((r) => setTimeout(r, STARTING_RETRY_MS));
          continue;
        }
        if (!providersResponse.ok) throw new Error(errorMessage(body, providersResponse));
        if (!Array.isArray(body)) throw new Error("The provider list is not a JSON array.");
        let instructions = {};
        if (instructionsResponse && instructionsResponse.ok) {
          const rendered = await readJson(instructionsResponse);
          if (rendered && typeof rendered === "object" && !Array.isArray(rendered)) {
            instructions = rendered;
          }
        }
        if (generation !== loadGeneration) return;
        render(body, instructions);
        startPlugins();
        return;
      } catch (error) {
        if (generation !== loadGeneration) return;
        const retry = el("button", { type: "button", class: "button secondary" }, "Try again");
        retry.addEventListener("click", () => load());
        setPageStatus(`Could not load the providers: ${error.message}`, "error", " ", retry);
        page.providers.removeAttribute("aria-busy");
        startPlugins();
        return;
      }
    }
  }

  function render(providers, instructions) {
    const cards = [];
    for (const provider of providers) {
      if (!provider || typeof provider !== "object" || !str(provider.provider_id)) continue;
      const html = Object.prototype.hasOwnProperty.call(instructions, provider.provider_id)
        ? str(instructions[provider.provider_id])
        : null;
      // The card's id prefix: its position, never the provider id.
      cards.push(renderCard(provider, html, `p${cards.length}`));
    }
    page.providers.replaceChildren(...cards);
    page.providers.removeAttribute("aria-busy");
    if (cards.length === 0) {
      setPageStatus(
        "No providers are registered. Put plugin libraries in connhost's plugins folder and restart it.",
        "empty",
      );
    } else {
      setPageStatus("", "");
    }
  }

  function originText(origin) {
    if (!origin || typeof origin !== "object") return "";
    if (origin.kind === "builtin") return "Built in";
    if (origin.kind === "plugin") {
      return ["Plugin", str(origin.plugin), str(origin.version)].filter(Boolean).join(" ");
    }
    return "";
  }

  function renderCard(provider, instructionsHtml, key) {
    const id = provider.provider_id;
    const name = str(provider.display_name) || id;
    const titleId = `${key}-title`;

    const card = el("article", { class: "card", "data-provider": id, "aria-labelledby": titleId });
    card.style.setProperty("--hue", String(hue(id)));

    const heading = el("div", { class: "card-heading" }, el("h2", { id: titleId }, name));
    if (provider.experimental === true) {
      heading.append(el("span", { class: "badge badge-experimental" }, "Experimental"));
    }
    card.append(
      el(
        "header",
        { class: "card-header" },
        el("span", { class: "card-icon", "aria-hidden": "true", "data-icon": str(provider.icon) }, monogram(name)),
        el("div", { class: "card-title" }, heading, el("p", { class: "origin" }, originText(provider.origin))),
      ),
    );
    if (str(provider.description)) {
      card.append(el("p", { class: "description" }, provider.description));
    }

    const schema = provider.form_schema;
    if (provider.connection_type === "o_auth" || !schema || typeof schema !== "object") {
      card.append(
        el("p", { class: "oauth-note" }, "Connects through OAuth — there is no form to fill in here."),
      );
      return card;
    }

    const instructions = renderInstructions(instructionsHtml, str(schema.instructions_markdown));
    if (instructions) card.append(instructions);
    card.append(buildForm(id, key, titleId, Array.isArray(schema.fields) ? schema.fields : []));
    return card;
  }

  function renderInstructions(html, markdown) {
    if (html !== null && html.trim()) {
      const box = el("div", { class: "instructions" });
      // Sanitised by the server (see the header comment): the one innerHTML.
      box.innerHTML = html;
      for (const link of box.querySelectorAll("a[href]")) {
        const href = link.getAttribute("href") || "";
        if (/^https?:/i.test(href)) {
          link.target = "_blank";
          link.rel = "noopener noreferrer";
          link.append(el("span", { class: "visually-hidden" }, " (opens in a new tab)"));
        }
      }
      return box;
    }
    if (markdown.trim()) {
      // No rendered HTML from the server: show the markdown as plain text.
      return el("div", { class: "instructions instructions-plain" }, markdown);
    }
    return null;
  }

  // ----- credential forms -------------------------------------------------

  /** `key` is the card's id prefix (`p3`), `titleId` its heading's id. */
  function buildForm(providerId, key, titleId, schemaFields) {
    const form = el("form", { class: "credential-form", novalidate: true, "aria-labelledby": titleId });
    const formErrors = el("div", { class: "form-errors", id: `${key}-errors`, tabindex: "-1", hidden: true });
    form.append(formErrors);

    const groups = [];
    for (const field of schemaFields) {
      const group = field && str(field.group);
      if (group && !groups.includes(group)) groups.push(group);
    }

    const state = {
      providerId,
      form,
      formErrors,
      fields: [],
      busy: false,
      button: null,
      result: null,
    };

    if (groups.length > 1) {
      const options = el("div", { class: "method-options" });
      groups.forEach((group, index) => {
        const radioId = `${key}-m${index}`;
        const radio = el("input", { type: "radio", id: radioId, name: `${key}-method`, value: group });
        radio.checked = index === 0;
        radio.addEventListener("change", () => {
          if (radio.checked) chooseGroup(state, group);
        });
        options.append(el("div", { class: "method-option" }, radio, el("label", { for: radioId }, group)));
      });
      form.append(el("fieldset", { class: "methods" }, el("legend", {}, "Credential method"), options));
    }

    if (schemaFields.some((f) => f && f.required === true)) {
      form.append(
        el("p", { class: "required-note", "aria-hidden": "true" }, el("span", { class: "required-mark" }, "*"), " required"),
      );
    }

    schemaFields.forEach((field, index) => {
      if (field && str(field.name)) state.fields.push(buildField(`${key}-f${index}`, field));
    });
    for (const field of state.fields) form.append(field.wrapper);
    if (groups.length > 0) chooseGroup(state, groups[0]);

    const button = el(
      "button",
      { type: "submit", class: "button primary" },
      state.fields.length > 0 ? "Validate" : "Check connection",
    );
    const result = el("div", {
      class: "result",
      id: `${key}-result`,
      role: "status",
      "aria-live": "polite",
      "aria-atomic": "true",
    });
    form.append(el("div", { class: "actions" }, button), result);
    state.button = button;
    state.result = result;

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(state);
    });
    return form;
  }

  /** `inputId` is the field's index-based id (`p3-f2`). */
  function buildField(inputId, field) {
    const name = field.name;
    const label = str(field.label) || name;
    const required = field.required === true;
    const helpId = str(field.help_text) ? `${inputId}-help` : null;

    const labelEl = el("label", { for: inputId }, label);
    if (required) labelEl.append(" ", el("span", { class: "required-mark", "aria-hidden": "true" }, "*"));

    const input = el("input", {
      type: INPUT_TYPES[field.field_type] || "text",
      id: inputId,
      name,
      placeholder: str(field.placeholder) || undefined,
      value: typeof field.default_value === "string" ? field.default_value : undefined,
      required,
      "aria-required": required ? "true" : undefined,
      "aria-describedby": helpId || undefined,
      autocomplete: "off",
      autocapitalize: "off",
      spellcheck: "false",
    });

    const wrapper = el("div", { class: "field", "data-field": name });
    if (str(field.group)) wrapper.dataset.group = field.group;
    wrapper.append(labelEl);
    if (helpId) wrapper.append(el("p", { class: "help", id: helpId }, field.help_text));
    wrapper.append(input);

    return {
      name,
      label,
      group: str(field.group) || null,
      input,
      wrapper,
      helpId,
      errorId: `${inputId}-error`,
      errorEl: null,
    };
  }

  /** Shows the fields of one either-or group (and the ungrouped ones). */
  function chooseGroup(state, group) {
    for (const field of state.fields) {
      const active = !field.group || field.group === group;
      field.wrapper.hidden = !active;
      field.input.disabled = !active;
    }
  }

  function activeFields(state) {
    return state.fields.filter((f) => !f.input.disabled);
  }

  // ----- results and errors -----------------------------------------------

  function setResult(state, kind, ...content) {
    const { result } = state;
    if (kind) result.dataset.result = kind;
    else delete result.dataset.result;
    result.replaceChildren(...content);
  }

  function clearErrors(state) {
    state.formErrors.replaceChildren();
    state.formErrors.hidden = true;
    for (const field of state.fields) {
      if (field.errorEl) field.errorEl.remove();
      field.errorEl = null;
      field.input.removeAttribute("aria-invalid");
      if (field.helpId) field.input.setAttribute("aria-describedby", field.helpId);
      else field.input.removeAttribute("aria-describedby");
    }
  }

  function showFieldError(state, field, message) {
    if (!field.errorEl) {
      field.errorEl = el("p", { class: "field-error", id: field.errorId, "data-field-error": field.name });
      field.input.after(field.errorEl);
      field.input.setAttribute("aria-invalid", "true");
      field.input.setAttribute(
        "aria-describedby",
        [field.errorEl.id, field.helpId].filter(Boolean).join(" "),
      );
    } else {
      field.errorEl.append(" ");
    }
    field.errorEl.append(message);
  }

  /** A 422 `invalid_fields` answer: each message next to its field. */
  function showInvalidFields(state, problems, fallback) {
    const general = [];
    let firstInvalid = null;
    for (const problem of problems) {
      const message = problem && str(problem.message);
      if (!message) continue;
      const name = problem.field;
      const field =
        typeof name === "string" ? activeFields(state).find((f) => f.name === name) : undefined;
      if (field) {
        showFieldError(state, field, message);
        if (!firstInvalid) firstInvalid = field.input;
      } else {
        general.push(message); // form-wide, or about a field not shown
      }
    }
    if (general.length === 0 && !firstInvalid && fallback) general.push(fallback);
    if (general.length > 0) {
      state.formErrors.replaceChildren(el("ul", {}, ...general.map((m) => el("li", {}, m))));
      state.formErrors.hidden = false;
    }
    const count = problems.filter((p) => p && str(p.message)).length || general.length;
    setResult(
      state,
      "invalid_fields",
      count === 1
        ? "Not checked: 1 problem with the form, shown above."
        : `Not checked: ${count} problems with the form, shown above.`,
    );
    if (firstInvalid) firstInvalid.focus();
    else if (general.length > 0) state.formErrors.focus();
    return Boolean(firstInvalid || general.length);
  }

  function showVerdict(state, response, body) {
    const error = body && body.error;
    if (response.status === 422 && error && typeof error === "object" && Array.isArray(error.fields)) {
      return showInvalidFields(state, error.fields, str(error.message));
    }
    if (body && body.valid === false && body.outcome === "invalid_fields" && Array.isArray(body.errors)) {
      return showInvalidFields(state, body.errors, str(body.error));
    }
    if (!response.ok) {
      setResult(state, "error", errorMessage(body, response));
      return false;
    }
    if (body && body.valid === true) {
      const parts = [el("strong", {}, "Valid")];
      if (str(body.provider_username)) parts.push(` — account: ${body.provider_username}`);
      const metadata = body.provider_metadata;
      if (metadata !== undefined && metadata !== null) {
        let text = JSON.stringify(metadata);
        if (text.length > 300) text = `${text.slice(0, 300)}…`;
        parts.push(el("span", { class: "metadata" }, "Details: ", el("code", {}, text)));
      }
      setResult(state, "valid", ...parts);
      return false;
    }
    if (body && body.valid === false) {
      const outcome = str(body.outcome);
      const kind = /^[a-z_]+$/.test(outcome) ? outcome : "error";
      const parts = [el("strong", {}, OUTCOME_LABELS[outcome] || "Not valid"), ": ", str(body.error) || "no reason given."];
      if (body.retryable === true) parts.push(" (you can retry)");
      setResult(state, kind, ...parts);
      return false;
    }
    setResult(state, "error", "The server's answer was not understood.");
    return false;
  }

  async function submit(state) {
    if (state.busy) return;
    state.busy = true;
    const { button, form } = state;
    const buttonHadFocus = document.activeElement === button;
    clearErrors(state);
    const fields = {};
    for (const field of activeFields(state)) fields[field.name] = field.input.value;

    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    setResult(state, "pending", "Checking…");
    let movedFocus = false;
    try {
      const response = await request(
        `v1/providers/${encodeURIComponent(state.providerId)}/validate`,
        {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ fields }),
        },
        () => setResult(state, "pending", "Waiting for the access token (above)…"),
      );
      const body = await readJson(response);
      movedFocus = showVerdict(state, response, body);
    } catch (error) {
      setResult(state, "error", `Could not reach connhost: ${error.message}`);
    } finally {
      state.busy = false;
      button.disabled = false;
      form.removeAttribute("aria-busy");
      if (buttonHadFocus && !movedFocus && (document.activeElement === document.body || !document.activeElement)) {
        button.focus();
      }
    }
  }

  // ----- the plugins: an operator's view of /v1/plugins --------------------
  //
  // Loaded plugins (where each runs and, when isolated, its worker), the
  // files that did not load and why, and the retired libraries. Refreshed
  // every few seconds while the page is visible, and after a rescan. The
  // view is rebuilt only when the report changed (no flicker); the Rescan
  // button sits outside it, so a refresh never takes the focus. Changes
  // that matter (a worker changing state, files loading or failing, a
  // rescan's outcome) are announced in the section's status line.

  const PLUGINS_REFRESH_MS = 4000;
  const WORKER_STATES = {
    starting: "Starting",
    ready: "Ready",
    restarting: "Restarting",
    parked: "Parked",
    stopped: "Stopped",
  };

  const plugins = {
    started: false,
    latest: 0, // the number of the latest request for the report
    timer: null,
    rendered: null, // the JSON text of the report on show
    rescanning: false,
    loadFailed: false, // the status line shows a failure to load the report
  };

  /** A finite number from untrusted JSON, or null. */
  function num(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  /** The strings of an untrusted JSON array. */
  function strings(value) {
    return Array.isArray(value) ? value.filter((v) => typeof v === "string") : [];
  }

  /** The objects of an untrusted JSON array. */
  function objects(value) {
    return Array.isArray(value) ? value.filter((v) => v && typeof v === "object" && !Array.isArray(v)) : [];
  }

  function plural(count, one, many) {
    return `${count} ${count === 1 ? one : many}`;
  }

  /** `12.3 MiB (12 901 234 bytes)`. */
  function formatBytes(bytes) {
    const units = ["KiB", "MiB", "GiB"];
    let value = bytes;
    let unit = "";
    for (const next of units) {
      if (value < 1024) break;
      value /= 1024;
      unit = next;
    }
    const exact = `${bytes.toLocaleString("en")} ${bytes === 1 ? "byte" : "bytes"}`;
    return unit ? `${value.toFixed(1)} ${unit} (${exact})` : exact;
  }

  /** `not_a_shared_library` → `Not a shared library`. */
  function kindText(kind) {
    const words = str(kind).replace(/_/g, " ").trim();
    return words ? words[0].toUpperCase() + words.slice(1) : "Unknown";
  }

  function setPluginsStatus(message, kind) {
    const status = page.pluginsStatus;
    // Setting the same message again would announce it again.
    if (status.textContent === message && (status.dataset.kind || "") === ((message && kind) || "")) return;
    status.dataset.kind = (message && kind) || "";
    if (message) status.replaceChildren(el("span", {}, message));
    else status.replaceChildren();
  }

  /** Shows the section and starts refreshing it (once). */
  function startPlugins() {
    if (plugins.started) return;
    plugins.started = true;
    page.plugins.hidden = false;
    page.pluginsView.replaceChildren(el("p", { class: "empty-note" }, "Loading the plugins…"));
    page.pluginsView.setAttribute("aria-busy", "true");
    refreshPlugins(false);
  }

  /** Fetches the report again in a few seconds, while the page is seen. */
  function scheduleRefresh() {
    clearTimeout(plugins.timer);
    plugins.timer = null;
    if (document.visibilityState === "hidden") return;
    plugins.timer = setTimeout(() => refreshPlugins(true), PLUGINS_REFRESH_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (!plugins.started) return;
    if (document.visibilityState === "hidden") {
      clearTimeout(plugins.timer);
      plugins.timer = null;
    } else {
      refreshPlugins(true);
    }
  });

  /**
   * Fetches /v1/plugins and shows it; `announce` says whether changes are
   * announced. Resolves to the report shown, or null. Only the latest
   * request's answer is shown (a rescan's refresh wins over a poll).
   */
  async function refreshPlugins(announce) {
    const number = ++plugins.latest;
    clearTimeout(plugins.timer);
    plugins.timer = null;
    try {
      const response = await request("v1/plugins");
      const body = await readJson(response);
      if (number !== plugins.latest) return null;
      if (!response.ok) {
        showLoadFailure(errorMessage(body, response));
        return null;
      }
      if (!body || typeof body !== "object" || Array.isArray(body)) {
        showLoadFailure("the report is not a JSON object.");
        return null;
      }
      showPlugins(body, announce);
      return body;
    } catch (error) {
      if (number === plugins.latest) showLoadFailure(error.message);
      return null;
    } finally {
      if (number === plugins.latest) scheduleRefresh();
    }
  }

  /** Says the report could not be loaded (until it can be again). */
  function showLoadFailure(message) {
    plugins.loadFailed = true;
    setPluginsStatus(`Could not load the plugins: ${message}`, "error");
  }

  /** Rebuilds the view if the report changed, announcing what matters. */
  function showPlugins(report, announce) {
    const text = JSON.stringify(report);
    const wasError = plugins.loadFailed;
    plugins.loadFailed = false;
    if (text === plugins.rendered) {
      if (wasError) setPluginsStatus("", "");
      return;
    }
    const before = plugins.rendered === null ? null : JSON.parse(plugins.rendered);
    plugins.rendered = text;
    page.pluginsView.replaceChildren(...renderPlugins(report));
    page.pluginsView.removeAttribute("aria-busy");
    const changes = announce && before ? describeChanges(before, report) : [];
    if (changes.length > 0) setPluginsStatus(changes.join(" "), "changed");
    else if (wasError) setPluginsStatus("", "");
  }

  /** A loaded plugin's key for comparing reports: its file and name. */
  function pluginKey(plugin) {
    return `${str(plugin.path)}\n${str(plugin.plugin)}`;
  }

  /** Sentences saying what changed between two reports that matters. */
  function describeChanges(before, after) {
    const changes = [];
    const oldStates = new Map();
    for (const plugin of objects(before.loaded)) {
      const worker = plugin.worker && typeof plugin.worker === "object" ? plugin.worker : null;
      if (worker) oldStates.set(pluginKey(plugin), str(worker.state));
    }
    for (const plugin of objects(after.loaded)) {
      const worker = plugin.worker && typeof plugin.worker === "object" ? plugin.worker : null;
      const old = oldStates.get(pluginKey(plugin));
      if (!worker || old === undefined || old === str(worker.state)) continue;
      const name = str(plugin.plugin) || "A plugin";
      changes.push(`${name}: worker ${stateText(worker.state).toLowerCase()} (was ${stateText(old).toLowerCase()}).`);
    }
    const counts = (report) =>
      [objects(report.loaded).length, objects(report.failed).length, objects(report.retired).length].join();
    if (counts(before) !== counts(after)) changes.push(`Plugins changed: ${summary(after)}`);
    return changes;
  }

  /** `2 plugins loaded, 1 file not loaded, 0 libraries retired.` */
  function summary(report) {
    return (
      [
        `${plural(objects(report.loaded).length, "plugin", "plugins")} loaded`,
        `${plural(objects(report.failed).length, "file", "files")} not loaded`,
        `${plural(objects(report.retired).length, "library", "libraries")} retired`,
      ].join(", ") + "."
    );
  }

  function stateText(state) {
    return WORKER_STATES[state] || kindText(state);
  }

  /** The view's content: loaded plugins, failed files, retired libraries. */
  function renderPlugins(report) {
    const loaded = objects(report.loaded);
    const failed = objects(report.failed);
    const retired = objects(report.retired);
    return [
      el("h3", { class: "plugins-subheading" }, `Loaded (${loaded.length})`),
      loaded.length > 0
        ? el("div", { class: "plugin-grid" }, ...loaded.map((plugin, index) => renderLoadedPlugin(plugin, `pl${index}`)))
        : el("p", { class: "empty-note" }, "No plugin is loaded."),
      el("h3", { class: "plugins-subheading" }, `Not loaded (${failed.length})`),
      failed.length > 0 ? renderFailed(failed) : el("p", { class: "empty-note" }, "Every plugin file loaded."),
      el("h3", { class: "plugins-subheading" }, `Retired libraries (${retired.length})`),
      ...renderRetired(retired),
    ];
  }

  /** A `dt`/`dd` pair; the `dd` carries `data-key` (for tests and styles). */
  function entry(key, term, ...value) {
    return [el("dt", {}, term), el("dd", { "data-key": key }, ...value)];
  }

  /** A list of strings, or `none`. */
  function stringList(items, none) {
    if (items.length === 0) return none;
    return el("ul", { class: "plain-list" }, ...items.map((item) => el("li", {}, item)));
  }

  /** One loaded plugin; `key` is its index-based id prefix (`pl3`). */
  function renderLoadedPlugin(plugin, key) {
    const name = str(plugin.plugin) || "(unnamed)";
    const titleId = `${key}-title`;
    const isolated = plugin.isolation === "process";
    const worker = plugin.worker && typeof plugin.worker === "object" && !Array.isArray(plugin.worker) ? plugin.worker : null;

    const badges = el(
      "span",
      { class: "badges" },
      el("span", { class: "badge badge-runs", "data-isolation": isolated ? "process" : "in-process" }, isolated ? "Isolated" : "In process"),
    );
    if (worker) {
      const state = str(worker.state);
      badges.append(
        el("span", { class: "badge badge-state", "data-state": WORKER_STATES[state] ? state : "unknown" }, `Worker ${stateText(state).toLowerCase()}`),
      );
    }

    const providers = strings(plugin.providers);
    const rows = [
      ...entry("version", "Version", str(plugin.version) || "unknown"),
      ...entry("path", "File", el("code", {}, str(plugin.path))),
      ...entry("providers", "Providers", providers.length > 0 ? providers.join(", ") : "none"),
      ...entry(
        "runs",
        "Runs",
        isolated ? "Isolated, in a worker process of its own" : "In process, inside connhost itself",
      ),
      ...entry("api", "Plugin API", str(plugin.api_version) || "unknown"),
    ];
    if (worker) rows.push(...renderWorker(worker));
    rows.push(...renderTrust(objectOr(plugin.trust)), ...renderEgress(objectOr(plugin.egress)));
    return el(
      "article",
      { class: "plugin", "data-plugin": name, "aria-labelledby": titleId },
      el("header", { class: "plugin-header" }, el("h4", { id: titleId }, name), badges),
      el("dl", { class: "facts" }, ...rows),
    );
  }

  /** An untrusted JSON value if it is an object, else null. */
  function objectOr(value) {
    return value && typeof value === "object" && !Array.isArray(value) ? value : null;
  }

  /** What admitted the plugin: its signer, its digest, whether it is locked. */
  function renderTrust(trust) {
    if (!trust) return [];
    const signature = objectOr(trust.signature);
    const signer = signature
      ? el(
          "span",
          {},
          "Key ",
          el("code", {}, str(signature.key_id) || "unknown"),
          str(signature.trusted_comment) ? ` — “${str(signature.trusted_comment)}”` : "",
        )
      : "Not signed (no trusted keys are configured)";
    const digest = str(trust.digest);
    return [
      ...entry("signed-by", "Signed by", signer),
      ...entry(
        "digest",
        "Digest",
        digest ? el("code", { class: "digest" }, digest) : "unknown",
        trust.locked === true ? " (locked)" : " (not in a lock file)",
      ),
    ];
  }

  /** Which hosts the plugin may call: the operator's grants, or what it declared. */
  function renderEgress(egress) {
    if (!egress) return [];
    const declared = strings(egress.declared);
    const granted = Array.isArray(egress.granted) ? strings(egress.granted) : null;
    const rows = [...entry("declared", "Declares it calls", stringList(declared, "no host"))];
    rows.push(
      ...entry(
        "granted",
        "May call",
        granted === null
          ? declared.length > 0
            ? "What it declares (public addresses only; no operator grant)"
            : "Nothing (it declares no host and has no grant)"
          : stringList(granted, "nothing (the operator granted no host)"),
      ),
    );
    return rows;
  }

  /** An isolated plugin's worker: state, pid, memory, restarts, crashes, sandbox. */
  function renderWorker(worker) {
    const pid = num(worker.pid);
    const memory = num(worker.memory_bytes);
    const rows = [
      ...entry("state", "Worker", stateText(str(worker.state))),
      ...entry("pid", "Process id", pid === null ? "none (no worker running)" : String(pid)),
      ...entry("memory", "Memory", memory === null ? "unknown" : formatBytes(memory)),
      ...entry("restarts", "Restarts", String(num(worker.restarts) ?? 0)),
      ...entry("crashes", "Crashes", String(num(worker.crashes) ?? 0)),
      ...entry("last-crash", "Last crash", str(worker.last_crash) || "none"),
      ...entry("sandbox", "Sandbox", stringList(strings(worker.sandbox), "none")),
    ];
    const unavailable = strings(worker.sandbox_unavailable);
    if (unavailable.length > 0) {
      rows.push(...entry("sandbox-unavailable", "Sandbox unavailable", stringList(unavailable, "none")));
    }
    return rows;
  }

  /** A table with a (visually hidden) caption and column headers. */
  function table(caption, headers, rows) {
    return el(
      "div",
      { class: "table-scroll" },
      el(
        "table",
        { class: "data-table" },
        el("caption", { class: "visually-hidden" }, caption),
        el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows),
      ),
    );
  }

  function renderFailed(failed) {
    const rows = failed.map((failure) => {
      const reason = el("td", { "data-key": "reason" }, str(failure.reason) || "no reason given");
      if (str(failure.since)) reason.append(el("span", { class: "since" }, ` (since ${failure.since})`));
      return el(
        "tr",
        { "data-failed": "" },
        el("th", { scope: "row", "data-key": "path" }, el("code", {}, str(failure.path))),
        el("td", { "data-key": "kind" }, kindText(failure.kind)),
        reason,
      );
    });
    return table("Files that did not load", ["File", "Kind", "Reason"], rows);
  }

  function renderRetired(retired) {
    if (retired.length === 0) {
      return [el("p", { class: "empty-note" }, "No library was replaced or removed while connhost ran.")];
    }
    const total = retired.reduce((sum, library) => sum + (num(library.bytes) ?? 0), 0);
    const rows = retired.map((library) =>
      el(
        "tr",
        { "data-retired": "" },
        el("th", { scope: "row", "data-key": "path" }, el("code", {}, str(library.path))),
        el("td", {}, str(library.plugin)),
        el("td", {}, str(library.version)),
        el("td", { class: "number" }, formatBytes(num(library.bytes) ?? 0)),
      ),
    );
    return [
      el(
        "p",
        { class: "retired-total", "data-key": "retired-total" },
        `${plural(retired.length, "library", "libraries")} replaced or removed while connhost ran, `,
        `${formatBytes(total)} in all: in-process libraries stay in memory until connhost restarts.`,
      ),
      table("Retired libraries", ["File", "Plugin", "Version", "Size"], rows),
    ];
  }

  /** The Rescan button: POST /v1/plugins/rescan, then refresh the view. */
  async function rescanPlugins() {
    if (plugins.rescanning) return;
    plugins.rescanning = true;
    const button = page.pluginsRescan;
    const buttonHadFocus = document.activeElement === button;
    button.disabled = true;
    page.plugins.setAttribute("aria-busy", "true");
    setPluginsStatus("Rescanning the plugins folder…", "loading");
    try {
      const response = await request("v1/plugins/rescan", { method: "POST" }, () =>
        setPluginsStatus("Waiting for the access token (above)…", "loading"),
      );
      const body = await readJson(response);
      if (!response.ok) {
        setPluginsStatus(`Could not rescan: ${errorMessage(body, response)}`, "error");
        return;
      }
      const report = await refreshPlugins(false);
      if (report) setPluginsStatus(`Rescanned: ${summary(report)}`, "done");
    } catch (error) {
      setPluginsStatus(`Could not rescan: ${error.message}`, "error");
    } finally {
      plugins.rescanning = false;
      button.disabled = false;
      page.plugins.removeAttribute("aria-busy");
      if (buttonHadFocus && (document.activeElement === document.body || !document.activeElement)) {
        button.focus();
      }
    }
  }

  page.pluginsRescan.addEventListener("click", () => rescanPlugins());

  // ----- start ----------------------------------------------------------------

  page.forget.hidden = !token;
  load();
})();
