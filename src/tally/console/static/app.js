// The console: sign in with an API key, then one view per part of the hash
// (#/members, #/members/{id}, #/rewards, #/webhooks, #/webhooks/{id}, #/report, #/files, #/program).
// The key never appears in the hash or anywhere else in a URL.

import { ApiError, forgetKey, get, signIn, storedKey, whenKeyRefused } from "./api.js";
import { h, notice, refusal, show } from "./dom.js";
import { filesView } from "./files.js";
import { memberView, membersView } from "./members.js";
import { programView } from "./program.js";
import { reportView } from "./report.js";
import { rewardsView } from "./rewards.js";
import { deliveriesView, webhooksView } from "./webhooks.js";

const root = document.getElementById("app");
let who = null; // the key signed in with: {key_id, scope, program}
let leaving = []; // what the current view must stop when another replaces it (timers)

const NAV = [
  ["#/members", "Members"],
  ["#/rewards", "Rewards"],
  ["#/webhooks", "Webhooks"],
  ["#/report", "Report"],
  ["#/files", "CSV files"],
  ["#/program", "Program"],
];

function signInView(message) {
  document.title = "Sign in · Tally console";
  const field = h("input", { name: "api_key", type: "password", required: true, autocomplete: "off", spellcheck: "false" });
  const result = h("div", {}, message ? notice("error", message) : null);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in" },
    h("h1", {}, "Tally console"),
    h("p", {}, "Sign in with an API key of your program. It is kept in this tab only, and forgotten when the tab closes or you sign out."),
    h("label", {}, "API key", field),
    button,
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      who = await signIn(field.value.trim());
      field.value = "";
      // A new hash routes by its hashchange event; the same hash needs routing here (once, so the
      // page and its requests are not made twice).
      if (!window.location.hash || window.location.hash === "#/") window.location.hash = "#/members";
      else route();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(result, error.status === 401 ? notice("error", "This key was refused: it is unknown or revoked.") : refusal(error));
      button.disabled = false;
    }
  });
  show(root, h("main", { class: "signed-out" }, form));
  field.focus();
}

function signOut() {
  forgetKey();
  who = null;
  window.location.hash = "";
  signInView();
}

function layout(active, view) {
  const canWrite = who.scope === "write";
  return h(
    "div",
    { class: "shell" },
    h(
      "header",
      {},
      h("span", { class: "brand" }, "Tally"),
      h("span", { class: "program", title: "program" }, who.program),
      h("span", { class: `scope ${canWrite ? "write" : "read"}` }, canWrite ? "write key" : "read-only key"),
      h("nav", { "aria-label": "Console" }, NAV.map(([href, text]) => h("a", { href, "aria-current": href === active ? "page" : false }, text))),
      h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"),
    ),
    h("main", {}, view),
  );
}

function route() {
  for (const stop of leaving) stop();
  leaving = [];
  if (!who) return signInView();
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const context = { canWrite: who.scope === "write", onLeave: (stop) => leaving.push(stop) };
  const [area, id] = parts;
  let view;
  let active = `#/${area}`;
  if (area === "members" && id) view = memberView(id, context);
  else if (area === "rewards") view = rewardsView(context);
  else if (area === "webhooks" && id) view = deliveriesView(id, context);
  else if (area === "webhooks") view = webhooksView(context);
  else if (area === "report") view = reportView(context);
  else if (area === "files") view = filesView(context);
  else if (area === "program") view = programView(context);
  else {
    active = "#/members";
    view = membersView(context);
  }
  const title = NAV.find(([href]) => href === active)?.[1] ?? "Members";
  document.title = `${id ? id + " · " : ""}${title} · Tally console`;
  show(root, layout(active, view));
}

async function start() {
  whenKeyRefused(() => {
    forgetKey();
    who = null;
    signInView("The server refused the key (it may have been revoked). Sign in again.");
  });
  window.addEventListener("hashchange", route);
  if (storedKey()) {
    try {
      who = (await get("/v1/keys/current")).data;
    } catch (error) {
      if (error.status !== 401) show(root, h("main", {}, refusal(error)));
      return;
    }
  }
  route();
}

start();
