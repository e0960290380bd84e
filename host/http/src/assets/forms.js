// A provider's credential form, rendered generically from its schema:
// one input per field (each field's label, help and error tied to its
// input), a choice of credential method when the fields form either-or
// groups (only the chosen group's fields are shown, enabled and sent),
// and submitting to POST /v1/providers/{id}/validate, whose verdict or
// per-field errors the form then shows.
//
// Element ids are built from indexes only (`p3-f2`, `p3-f2-help`,
// `p3-f2-error`), never from field names, which may hold spaces or `-`;
// the names are kept in `data-field` on each field's wrapper and
// `data-field-error` on each field's error message. The form's result
// area is a live region in the DOM from the start, empty when idle.

import { el, str } from "./dom.js";
import { errorMessage, readJson, request } from "./api.js";

const INPUT_TYPES = { password: "password", text: "text", url: "url" };
const OUTCOME_LABELS = {
  rejected: "Rejected",
  inconclusive: "Could not check",
  timed_out: "Timed out",
  provider_fault: "Provider failed",
  busy: "Busy",
};

/** `key` is the card's id prefix (`p3`), `titleId` its heading's id. */
export function buildForm(providerId, key, titleId, schemaFields) {
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
