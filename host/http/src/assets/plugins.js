// The plugins section: an operator's view of /v1/plugins.
//
// Loaded plugins (where each runs and, when isolated, its worker; what
// admitted each, its signer, digest and lock; which hosts it may call;
// the registry reference it was synced from), the files that did not load
// and why, the retired libraries, and, on a server that syncs its folder
// from registries (`serve --sync`), each reference's status.
// Refreshed every few seconds while the page is visible, and after a
// rescan. The view is rebuilt only when the report changed (no flicker);
// the Rescan button sits outside it, so a refresh never takes the focus.
// Changes that matter (a worker changing state, files loading or failing,
// a rescan's outcome) are announced in the section's status line.

import { el, str } from "./dom.js";
import { errorMessage, readJson, request } from "./api.js";

const PLUGINS_REFRESH_MS = 4000;
const WORKER_STATES = {
  starting: "Starting",
  ready: "Ready",
  restarting: "Restarting",
  parked: "Parked",
  stopped: "Stopped",
};

const page = {
  plugins: document.getElementById("plugins"),
  pluginsStatus: document.getElementById("plugins-status"),
  pluginsView: document.getElementById("plugins-view"),
  pluginsRescan: document.getElementById("plugins-rescan"),
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
export function startPlugins() {
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
  changes.push(...describeSyncChanges(objects(before.sync), objects(after.sync)));
  return changes;
}

/** Sentences saying which synced references started or stopped failing, or moved. */
function describeSyncChanges(before, after) {
  const changes = [];
  const old = new Map(before.map((status) => [str(status.reference), status]));
  for (const status of after) {
    const reference = str(status.reference);
    const was = old.get(reference);
    if (!was) continue;
    const failing = str(status.last_error) !== "";
    if (failing && str(was.last_error) === "") {
      changes.push(`Sync of ${reference} failed: keeping the last good set.`);
    } else if (!failing && str(was.last_error) !== "") {
      changes.push(`Sync of ${reference} works again.`);
    }
    if (str(status.digest) && str(status.digest) !== str(was.digest)) {
      changes.push(`${reference} now runs ${str(status.digest)}.`);
    }
  }
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

/**
 * The view's content: the synced references (on a server that syncs),
 * loaded plugins, failed files, retired libraries.
 */
function renderPlugins(report) {
  const loaded = objects(report.loaded);
  const failed = objects(report.failed);
  const retired = objects(report.retired);
  return [
    ...renderSync(report.sync),
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
  const source = objectOr(plugin.source);
  if (source) {
    rows.push(
      ...entry(
        "source",
        "Synced from",
        el("code", {}, str(source.reference) || "unknown"),
        " at ",
        el("code", { class: "digest" }, str(source.digest) || "unknown"),
      ),
    );
  }
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

/**
 * The references the server keeps its folder in step with (`serve
 * --sync`): for each, the digest it runs, the file, when the registry last
 * answered it, and the last poll's error. Nothing for a server that does
 * not sync (no `sync` in the report).
 */
function renderSync(sync) {
  if (!Array.isArray(sync)) return [];
  const statuses = objects(sync);
  const heading = el("h3", { class: "plugins-subheading" }, `Synced from registries (${statuses.length})`);
  if (statuses.length === 0) {
    return [heading, el("p", { class: "empty-note" }, "No reference is synced any more.")];
  }
  const rows = statuses.map((status) => {
    const digest = str(status.digest);
    const error = str(status.last_error);
    const lastSuccess = str(status.last_success);
    const errors = num(status.errors) ?? 0;
    const state = el("td", { "data-key": "state", class: "sync-state" });
    if (error) {
      state.append(
        el(
          "p",
          {},
          el("span", { class: "badge badge-sync", "data-sync": "failed" }, "Failing"),
          digest ? " Keeping the last good set. " : " Nothing synced yet. ",
        ),
        el("p", { class: "sync-error", "data-key": "error" }, error),
      );
    } else if (lastSuccess) {
      state.append(el("span", { class: "badge badge-sync", "data-sync": "ok" }, "In step"));
    } else {
      state.append(el("span", { class: "badge badge-sync", "data-sync": "pending" }, "Not polled yet"));
    }
    if (errors > 0) state.append(el("span", { class: "since" }, ` (${plural(errors, "failed poll", "failed polls")} since start)`));
    return el(
      "tr",
      { "data-sync-reference": "" },
      el("th", { scope: "row", "data-key": "reference", class: "sync-wide" }, el("code", {}, str(status.reference))),
      el("td", { "data-key": "digest", class: "sync-wide" }, digest ? el("code", { class: "digest" }, digest) : "none yet"),
      el("td", { "data-key": "file", class: "sync-file" }, str(status.file) ? el("code", {}, str(status.file)) : "none yet"),
      el(
        "td",
        { "data-key": "last-success", class: "number" },
        lastSuccess ? el("time", { datetime: lastSuccess }, lastSuccess) : "never",
      ),
      state,
    );
  });
  return [
    heading,
    table("References synced from registries", ["Reference", "Runs digest", "File", "Last success", "Status"], rows),
  ];
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

/** Wires the Rescan button, and pauses refreshing while the page is hidden. */
export function initPlugins() {
  document.addEventListener("visibilitychange", () => {
    if (!plugins.started) return;
    if (document.visibilityState === "hidden") {
      clearTimeout(plugins.timer);
      plugins.timer = null;
    } else {
      refreshPlugins(true);
    }
  });
  page.pluginsRescan.addEventListener("click", () => rescanPlugins());
}
