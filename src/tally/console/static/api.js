// The console's client of the public API. The key lives in this tab's sessionStorage only:
// it is sent as `Authorization: Bearer`, never put in a URL, a cookie or localStorage, and
// never written to the browser's console.

const KEY_ITEM = "tally.apiKey";

/** An answer of the API that is not a success: its status, code, message and details. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? [];
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

/** Checks `key` with `GET /v1/keys/current` and keeps it for this tab only if it works. */
export async function signIn(key) {
  const answer = await request("GET", "/v1/keys/current", { key });
  sessionStorage.setItem(KEY_ITEM, key);
  return answer.data;
}

/** A fresh Idempotency-Key (128 random bits), so a resent write has exactly one effect. */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

let onRefused = () => {};

/** What to do when the server refuses the stored key (revoked while the tab was open). */
export function whenKeyRefused(handler) {
  onRefused = handler;
}

/**
 * One request to the API: resolves to the envelope (`{data, meta}`), rejects with `ApiError`.
 * `query` values that are empty are left out; `idempotencyKey` is sent on writes.
 */
export async function request(method, path, { body, query, idempotencyKey, key } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const usedKey = key ?? storedKey();
  const headers = { Accept: "application/json", Authorization: `Bearer ${usedKey}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "network_error", "The server could not be reached; nothing is known to have changed. Try again.");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (response.ok && payload && payload.success) return payload;
  const error = payload?.error ?? {};
  const refused = new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? `The server answered ${response.status}.`,
    error.details,
  );
  if (response.status === 401 && key === undefined) onRefused(refused);
  throw refused;
}

export const get = (path, query) => request("GET", path, { query });
