// Building the page: every element is made with DOM calls and every value from the API goes
// in as text, never as HTML (the page's Content-Security-Policy refuses HTML from strings).

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(element, props, children) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "value" || name === "checked" || name === "selected") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: `h("td", {class: "num"}, "42")`. */
export function h(tag, props, ...children) {
  return fill(document.createElement(tag), props, children);
}

/** An SVG element, like `h`. */
export function svg(tag, props, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), props, children);
}

/** Replace what `element` holds by `children`. */
export function show(element, ...children) {
  element.replaceChildren();
  return fill(element, {}, children);
}

const NUMBER = new Intl.NumberFormat("en-US");

export function points(n) {
  return NUMBER.format(n);
}

/** Signed points, as a ledger row shows them: +100, −30. */
export function signed(n) {
  return n > 0 ? `+${NUMBER.format(n)}` : n < 0 ? `−${NUMBER.format(-n)}` : "0";
}

/** An RFC 3339 time from the API, shown in UTC to the minute: 2026-01-31 14:30 UTC. */
export function when(iso) {
  if (!iso) return "";
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

export function day(iso) {
  return iso ? iso.slice(0, 10) : "";
}

/**
 * A table with a header row. Each row is a `tr` element, or an array of cells; a cell is a
 * `td` element (`num(...)`), or anything else, which goes into a `td` of its own.
 */
export function table(caption, headings, rows, { empty = "Nothing yet." } = {}) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  const row = (cells) => (cells instanceof Node ? cells : h("tr", {}, cells.map(cell)));
  const cell = (value) => (value instanceof HTMLTableCellElement ? value : h("td", {}, value));
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows.map(row)),
  );
}

/** Cells holding numbers are right-aligned. */
export function num(value) {
  return h("td", { class: "num" }, value);
}

/**
 * "Previous" and "Next" for a list answer's `meta`; `go(page)` loads another page. `label`
 * names the list for assistive technology ("History pages").
 */
export function pager(meta, go, label) {
  const pages = Math.max(meta.total_pages, 1);
  return h(
    "nav",
    { class: "pager", "aria-label": label },
    h("button", { type: "button", disabled: meta.page <= 1, onclick: () => go(meta.page - 1) }, "Previous"),
    h("span", { class: "page-of" }, `Page ${meta.page} of ${pages} (${points(meta.total)} in all)`),
    h("button", { type: "button", disabled: meta.page >= pages, onclick: () => go(meta.page + 1) }, "Next"),
  );
}

/** A line of feedback: `role=status` for what went well, `role=alert` for a refusal. */
export function notice(kind, ...children) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...children);
}

/** An API refusal for a person: its message, each detail, and its code. */
export function refusal(error) {
  const details = (error.details ?? []).map((d) => h("li", {}, d.field ? `${d.field}: ${d.message}` : d.message));
  return notice(
    "error",
    error.message,
    error.code ? h("span", { class: "code" }, ` (${error.code})`) : null,
    details.length ? h("ul", {}, details) : null,
  );
}

export function section(title, ...children) {
  return h("section", { "aria-label": title }, h("h2", {}, title), ...children);
}
