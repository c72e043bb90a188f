// Forms that make one write each: they read their fields, send the request with an
// Idempotency-Key, and show what happened (the API's own message when it refuses).

import { ApiError, newIdempotencyKey } from "./api.js";
import { h, notice, refusal, show } from "./dom.js";

/** Outcomes after which the same request may have had its effect: a resend must reuse the key. */
function outcomeUnknown(error) {
  return error.status === 0 || error.status >= 500 || error.code === "idempotency_in_progress";
}

function input(field) {
  const props = {
    name: field.name,
    type: field.type ?? "text",
    required: field.required ?? false,
    placeholder: field.placeholder,
    value: field.value,
    autocomplete: "off",
  };
  if (field.type === "number") Object.assign(props, { min: field.min ?? 1, step: 1, inputmode: "numeric" });
  if (field.type === "select") {
    return h("select", { name: field.name, required: field.required ?? false }, field.options.map(([value, text]) => h("option", { value }, text)));
  }
  if (field.type === "checkbox") return h("input", { name: field.name, type: "checkbox" });
  return h("input", props);
}

function valueOf(element, field) {
  if (field.type === "checkbox") return element.checked;
  const text = element.value.trim();
  if (text === "") return undefined;
  if (field.type === "number") return Number(text);
  return text;
}

/**
 * A form of `fields` (`{name, label, type, required, placeholder, hint, options}`) with one
 * button. `send(values, idempotencyKey)` makes the request and resolves to a message for the
 * person; `done()` runs after a success (to reload what changed).
 */
export function actionForm({ title, fields, button, send, done, className }) {
  const result = h("div", { class: "result" });
  const controls = fields.map((field) => ({ field, element: input(field) }));
  const submit = h("button", { type: "submit" }, button);
  let pending = null; // {body, key} of a request whose outcome is not known

  const form = h(
    "form",
    { class: `action ${className ?? ""}` },
    h(
      "fieldset",
      {},
      h("legend", {}, title),
      controls.map(({ field, element }) =>
        h(
          "label",
          { class: field.type === "checkbox" ? "check" : "" },
          field.type === "checkbox" ? [element, " ", field.label] : [field.label, element],
          field.hint ? h("small", {}, field.hint) : null,
        ),
      ),
      submit,
    ),
    result,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const { field, element } of controls) {
      const value = valueOf(element, field);
      if (value !== undefined) values[field.name] = value;
    }
    const body = JSON.stringify(values);
    const key = pending && pending.body === body ? pending.key : newIdempotencyKey();
    submit.disabled = true;
    show(result, notice("working", "Sending…"));
    try {
      const message = await send(values, key);
      pending = null;
      form.reset();
      show(result, notice("ok", message));
      if (done) await done();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      pending = outcomeUnknown(error) ? { body, key } : null;
      show(result, refusal(error));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** A button that makes one write (retry a delivery, cancel a redemption) and reports back. */
export function actionButton(text, { label, send, done, report }) {
  let key = null;
  const button = h("button", { type: "button", class: "small", "aria-label": label ?? text }, text);
  button.addEventListener("click", async () => {
    key = key ?? newIdempotencyKey();
    button.disabled = true;
    try {
      const message = await send(key);
      key = null;
      if (done) await done();
      if (report) show(report, notice("ok", message));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (!outcomeUnknown(error)) key = null;
      if (report) show(report, refusal(error));
      button.disabled = false;
    }
  });
  return button;
}
