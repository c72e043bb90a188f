// CSV files: an awards file imported (`POST /v1/imports/awards`, write keys only) with each
// row's result, and the program's transactions exported (`GET /v1/exports/transactions`) as a
// download. The export is fetched with the key in the Authorization header and saved from a
// Blob, so the key never goes into a URL.

import { ApiError, download, newIdempotencyKey, request } from "./api.js";
import { h, notice, num, points, refusal, section, show, table } from "./dom.js";
import { memberLink } from "./members.js";

/** Saves `blob` as a file named `name` (a download from an object URL); returns the URL to release. */
function save(blob, name) {
  const url = URL.createObjectURL(blob);
  h("a", { href: url, download: name }).click();
  return url;
}

const TYPES = ["award", "deduct", "redeem", "refund", "expire", "transfer_in", "transfer_out", "reversal"];

/** `#/files`: import awards (write keys) and export transactions. */
export function filesView({ canWrite, onLeave }) {
  return h(
    "div",
    {},
    h("h1", {}, "CSV files"),
    canWrite ? importSection() : h("p", { class: "read-only" }, "This key may only read: it can export, not import."),
    exportSection(onLeave),
  );
}

function importSection() {
  const file = h("input", { name: "file", type: "file", accept: ".csv,text/csv", required: true });
  const submit = h("button", { type: "submit" }, "Import");
  const result = h("div", { class: "result", "aria-live": "polite" });
  // The Idempotency-Key of an upload whose outcome is unknown, reused if the same file is sent
  // again. (The rows' own keys, made from the file's bytes, already stop a second award.)
  let pending = null;
  const form = h(
    "form",
    { class: "action" },
    h(
      "fieldset",
      {},
      h("legend", {}, "Upload a file"),
      h("label", {}, "Awards file (CSV)", file, h("small", {}, "header: member_id,points,reason[,reference][,expires_at][,metadata]")),
      submit,
    ),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const identity = `${chosen.name}/${chosen.size}/${chosen.lastModified}`;
    const key = pending && pending.identity === identity ? pending.key : newIdempotencyKey();
    submit.disabled = true;
    show(result, notice("working", `Importing ${chosen.name}…`));
    try {
      const answer = await request("POST", "/v1/imports/awards", { body: chosen, contentType: "text/csv", idempotencyKey: key });
      pending = null;
      show(result, imported(answer.data), resultsButton(chosen, key));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const unknown = error.status === 0 || error.status >= 500 || error.code === "idempotency_in_progress";
      pending = unknown ? { identity, key } : null;
      show(result, refusedFile(error));
    } finally {
      submit.disabled = false;
    }
  });
  return section(
    "Import awards",
    h("p", { class: "hint" }, "Every row is checked first: one bad row and nothing is applied. The same file sent again awards nothing twice."),
    form,
  );
}

/**
 * "Save the results (CSV)": the same upload sent again with the same Idempotency-Key and
 * `Accept: text/csv` is a replay (nothing is applied twice) whose answer is the results file,
 * as `tally import awards` writes it.
 */
function resultsButton(chosen, key) {
  const name = chosen.name.replace(/\.csv$/i, "") + ".results.csv";
  const said = h("span", { class: "result" });
  const button = h("button", { type: "button", class: "secondary" }, "Save the results (CSV)");
  let saved = null;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const file = await download("/v1/imports/awards", { method: "POST", body: chosen, contentType: "text/csv", idempotencyKey: key });
      if (saved) URL.revokeObjectURL(saved);
      saved = save(file.blob, name);
      show(said, ` Saved ${name}.`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(said, refusal(error));
    } finally {
      button.disabled = false;
    }
  });
  return h("p", {}, button, said);
}

function imported(outcome) {
  const rows = outcome.results.map((r) => [
    num(String(r.line)),
    r.member_id ? h("a", { href: memberLink(r.member_id) }, r.member_id) : "",
    r.status,
    r.transaction_id ? h("span", { class: "mono" }, r.transaction_id) : "",
    r.error ? `${r.error.message} (${r.error.code})` : "",
  ]);
  return [
    notice(
      "ok",
      `Imported ${points(outcome.rows)} row(s): ${points(outcome.awarded)} awarded now, ${points(outcome.replayed)} already awarded by an earlier import (replayed).`,
    ),
    table("Import results", ["Line", "Member", "Status", "Transaction", "Error"], rows, { empty: "The file has no rows." }),
  ];
}

/** A refused file: the API's message (it says whether anything was applied) and each bad line. */
function refusedFile(error) {
  const lines = error.details.filter((d) => d.line !== undefined);
  if (lines.length === 0) return refusal(error);
  return [
    notice("error", error.message, h("span", { class: "code" }, ` (${error.code})`)),
    table(
      "Bad lines",
      ["Line", "Member", "Error", "Field", "Message"],
      lines.map((d) => [num(String(d.line)), d.member_id ?? "", d.code ?? "", d.field ?? "", d.message]),
    ),
  ];
}

function exportSection(onLeave) {
  const type = h("select", { name: "type" }, h("option", { value: "" }, "every type"), TYPES.map((t) => h("option", { value: t }, t)));
  const from = h("input", { name: "from", type: "date" });
  const to = h("input", { name: "to", type: "date" });
  const submit = h("button", { type: "submit" }, "Download CSV");
  const result = h("div", { class: "result", "aria-live": "polite" });
  let saved = null; // the object URL of the last download, released when the next one starts
  const release = () => {
    if (saved) URL.revokeObjectURL(saved);
    saved = null;
  };
  onLeave(release);
  const form = h(
    "form",
    { class: "filter", "aria-label": "Export transactions" },
    h("label", {}, "Type", type),
    h("label", {}, "From", from),
    h("label", {}, "To (included)", to),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    release();
    submit.disabled = true;
    show(result, notice("working", "Exporting…"));
    try {
      const file = await download("/v1/exports/transactions", { query: { type: type.value, from: from.value, to: to.value } });
      const name = ["transactions", type.value, from.value && `from-${from.value}`, to.value && `to-${to.value}`].filter(Boolean).join("-") + ".csv";
      saved = save(file.blob, name);
      show(result, notice("ok", `Saved ${name} (${points(file.blob.size)} bytes).`));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(result, refusal(error));
    } finally {
      submit.disabled = false;
    }
  });
  return section(
    "Export transactions",
    h("p", { class: "hint" }, "Every transaction of the program, oldest first, as a CSV file; dates are UTC days, both included."),
    form,
    result,
  );
}
