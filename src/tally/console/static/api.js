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
 * `query` values that are empty are left out; `idempotencyKey` is sent on writes. `body` is
 * sent as JSON, or as it is (a file) when `contentType` names its type.
 */
export async function request(method, path, { body, query, idempotencyKey, key, contentType } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = contentType ?? "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const sent = body === undefined || contentType ? body : JSON.stringify(body);
  const response = await send(method, path, { query, headers, body: sent, key });
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (response.ok && payload && payload.success) return payload;
  throw refused(response, payload, key);
}

/**
 * A file from the API (an export, an import's results), read whole into a Blob: `{blob, name}`,
 * the name from its Content-Disposition if it has one. The key goes in the Authorization header
 * as on every request, never in a URL; a refusal rejects with `ApiError` as `request` does.
 */
export async function download(path, { method = "GET", query, body, contentType, idempotencyKey } = {}) {
  const headers = { Accept: "text/csv, application/json" };
  if (contentType) headers["Content-Type"] = contentType;
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const response = await send(method, path, { query, headers, body });
  if (response.ok) {
    const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") ?? "");
    return { blob: await response.blob(), name: named ? named[1] : null };
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  throw refused(response, payload);
}

async function send(method, path, { query, headers, body, key }) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  try {
    return await fetch(url, {
      method,
      headers: { ...headers, Authorization: `Bearer ${key ?? storedKey()}` },
      body,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "network_error", "The server could not be reached; nothing is known to have changed. Try again.");
  }
}

function refused(response, payload, key) {
  const error = payload?.error ?? {};
  const refusal = new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? `The server answered ${response.status}.`,
    error.details,
  );
  if (response.status === 401 && key === undefined) onRefused(refusal);
  return refusal;
}

export const get = (path, query) => request("GET", path, { query });
