// Building the page's elements, never by parsing HTML, and reading text
// from untrusted JSON.

/**
 * Creates an element. `attrs` values: strings/numbers become attributes,
 * `true` an empty (boolean) attribute, `false`/null/undefined nothing.
 * Children are nodes or strings (appended as text nodes).
 */
export function el(tag, attrs = {}, ...children) {
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
export function str(value) {
  return typeof value === "string" ? value : "";
}
