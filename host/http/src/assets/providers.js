// The provider cards: loads /v1/providers (retrying while connhost is still
// starting) with each provider's instructions from /ui/instructions, and
// renders a card per provider, its credential form built by forms.js. The
// page's status line says how loading went.
//
// A card's element ids are built from its index only (`p3`, `p3-title`),
// never from the provider id, which may hold spaces or `-`; the id is kept
// in the card's `data-provider` attribute instead.

import { el, str } from "./dom.js";
import { errorMessage, readJson, request } from "./api.js";
import { buildForm } from "./forms.js";

const STARTING_RETRY_MS = 1000;
const STARTING_RETRIES = 30;

const page = {
  status: document.getElementById("page-status"),
  providers: document.getElementById("providers"),
};

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

let loadGeneration = 0;

/**
 * Loads and shows the providers, replacing any shown; `settled` runs once
 * they (or the failure to load them) are shown, unless a later load took
 * over meanwhile.
 */
export async function loadProviders(settled) {
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
      settled();
      return;
    } catch (error) {
      if (generation !== loadGeneration) return;
      const retry = el("button", { type: "button", class: "button secondary" }, "Try again");
      retry.addEventListener("click", () => loadProviders(settled));
      setPageStatus(`Could not load the providers: ${error.message}`, "error", " ", retry);
      page.providers.removeAttribute("aria-busy");
      settled();
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
