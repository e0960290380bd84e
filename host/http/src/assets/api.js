// Talking to connhost: fetch() with the bearer access token, and the token
// itself (kept in sessionStorage, asked for in the page's prompt when the
// server answers 401, forgotten on request).

import { str } from "./dom.js";

const TOKEN_KEY = "connhost.access-token";

const page = {
  auth: document.getElementById("auth"),
  authForm: document.getElementById("auth-form"),
  authInput: document.getElementById("access-token"),
  authMessage: document.getElementById("auth-message"),
  forget: document.getElementById("forget-token"),
};

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

function submitToken(event) {
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
}

/**
 * Wires the token prompt and the "Forget access token" button (shown while
 * a token is kept); `onForget` runs after the button forgot the token.
 */
export function initToken(onForget) {
  page.authForm.addEventListener("submit", submitToken);
  page.forget.addEventListener("click", () => {
    setToken("");
    onForget();
  });
  page.forget.hidden = !token;
}

// ----- HTTP -------------------------------------------------------------

export async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The `{"error": {"message"}}` of an error answer, or a generic line. */
export function errorMessage(body, response) {
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
export async function request(path, init = {}, onWaiting) {
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
