// Shared by both pages: the API key (kept in this tab's session storage), calls to the API, readable errors.
// Paths are relative ("v1/..."), so the pages also work when the app sits under a path prefix.

const KEY_STORAGE = "clawdbot.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** An answer the API refused, with OpenAI's error fields (status, type, code, message). */
export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.status = status;
    this.type = error && error.type;
    this.code = error && error.code;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page): the status says enough
  }
  return new ApiError(response.status, body && body.error ? body.error : { message: response.statusText });
}

/** fetch() with the key and JSON body; resolves to the Response when it is 2xx, else throws ApiError. */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const all = { ...headers };
  const key = getKey();
  if (key) all.authorization = `Bearer ${key}`;
  if (body !== undefined) all["content-type"] = "application/json";
  const response = await fetch(path, {
    method, headers: all, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function apiJson(path, options) {
  return (await api(path, options)).json();
}

/** One sentence a person can act on, for any error a call may raise. */
export function describe(error) {
  if (error instanceof ApiError) {
    if (error.code === "missing_api_key") return "This server needs an API key: enter it under “API key”.";
    if (error.status === 401) return `The API key was not accepted. ${error.message}`;
    if (error.status === 429) return `Too many requests for this key. ${error.message}`;
    if (error.status === 503) return `The service is busy or unavailable; try again shortly. ${error.message}`;
    if (error.status === 404 && error.code === "session_not_found") return "That conversation no longer exists.";
    return `${error.message} (HTTP ${error.status}${error.code ? `, ${error.code}` : ""})`;
  }
  if (error && error.name === "AbortError") return "Stopped.";
  return `Cannot reach the server (${error && error.message ? error.message : error}). Is it running?`;
}

/** The alert line at the top of a page: shown with a message, hidden with none. */
export function showError(message) {
  const banner = document.getElementById("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

/**
 * Wire the "API key" panel shared by both pages: a toggle button, a password field, Save and Forget.
 * ``onChange`` runs after the key is saved or forgotten.
 */
export function setupKeyPanel(onChange) {
  const panel = document.getElementById("key-panel");
  const toggle = document.getElementById("key-toggle");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const state = document.getElementById("key-state");
  const refresh = () => {
    state.textContent = getKey() ? "A key is set for this tab." : "No key set.";
    toggle.classList.toggle("has-key", Boolean(getKey()));
  };
  const open = (show) => {
    panel.hidden = !show;
    toggle.setAttribute("aria-expanded", String(show));
    if (show) input.focus();
  };
  toggle.addEventListener("click", () => open(panel.hidden));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    input.value = "";
    refresh();
    open(false);
    onChange();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    setKey("");
    refresh();
    onChange();
  });
  refresh();
  return { open };
}

export function formatNumber(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
