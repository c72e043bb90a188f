// Webhook endpoints: the list, a new endpoint (its secret shown once), switching one on or
// off, and each endpoint's delivery log with a retry button.

import { get, request } from "./api.js";
import { h, notice, num, pager, refusal, section, show, table, when } from "./dom.js";
import { actionButton, actionForm } from "./forms.js";

const endpointLink = (id) => `#/webhooks/${encodeURIComponent(id)}`;
const REFRESH_MS = 2000;

export function webhooksView({ canWrite }) {
  const list = h("div", {});
  const report = h("div", { class: "report", "aria-live": "polite" });
  const load = async (page = 1) => {
    try {
      const answer = await get("/v1/webhook_endpoints", { page, per_page: 20 });
      const rows = answer.data.map((e) => [
        h("a", { href: endpointLink(e.endpoint_id) }, e.url),
        e.events.join(", "),
        e.enabled ? "enabled" : "disabled",
        e.description ?? "",
        canWrite ? toggle(e, report, () => load(page)) : "",
      ]);
      show(
        list,
        table("Webhook endpoints", ["URL", "Events", "Status", "Description", ""], rows, { empty: "No webhook endpoints yet." }),
        answer.meta.total_pages > 1 ? pager(answer.meta, load, "Endpoint pages") : null,
      );
    } catch (error) {
      show(list, refusal(error));
    }
  };
  load(1);
  const create = canWrite
    ? actionForm({
        title: "New endpoint",
        button: "Add endpoint",
        fields: [
          { name: "url", label: "URL", type: "url", required: true, placeholder: "https://hooks.example.com/tally" },
          { name: "events", label: "Events", placeholder: "*", hint: "comma-separated types; empty for every event" },
          { name: "description", label: "Description" },
        ],
        send: async ({ events, ...values }, key) => {
          const body = { ...values };
          if (events) body.events = events.split(",").map((t) => t.trim()).filter(Boolean);
          const answer = await request("POST", "/v1/webhook_endpoints", { body, idempotencyKey: key });
          return h(
            "span",
            {},
            `Added ${answer.data.url}. Its signing secret is shown only now; keep it: `,
            h("code", { class: "secret" }, answer.data.secret),
          );
        },
        done: () => load(1),
      })
    : null;
  return h("div", {}, h("h1", {}, "Webhooks"), create, report, section("Endpoints", list));
}

function toggle(endpoint, report, done) {
  const verb = endpoint.enabled ? "Disable" : "Enable";
  return actionButton(verb, {
    label: `${verb} ${endpoint.url}`,
    report,
    send: async () => {
      await request("PATCH", `/v1/webhook_endpoints/${endpoint.endpoint_id}`, { body: { enabled: !endpoint.enabled } });
      return `${endpoint.url} is ${endpoint.enabled ? "disabled" : "enabled"} now.`;
    },
    done,
  });
}

/**
 * `#/webhooks/{id}`: one endpoint's deliveries, newest first, filtered by status. While any
 * shown delivery is pending the log reloads itself every two seconds; `leave` stops it.
 */
export function deliveriesView(endpointId, { canWrite, onLeave }) {
  const heading = h("h1", {}, "Deliveries");
  const about = h("div", {});
  const log = h("div", {}, notice("working", "Loading deliveries…"));
  const report = h("div", { class: "report", "aria-live": "polite" });
  const state = { page: 1, status: "", timer: null };
  onLeave(() => clearTimeout(state.timer));

  get(`/v1/webhook_endpoints/${encodeURIComponent(endpointId)}`).then(
    (answer) => {
      const e = answer.data;
      show(heading, "Deliveries to ", h("span", { class: "mono" }, e.url));
      show(about, h("p", { class: "profile" }, `Events: ${e.events.join(", ")} · ${e.enabled ? "enabled" : "disabled"}`, e.description ? ` · ${e.description}` : ""));
    },
    (error) => show(about, refusal(error)),
  );

  const load = async (page = state.page) => {
    state.page = page;
    clearTimeout(state.timer);
    try {
      const answer = await get(`/v1/webhook_endpoints/${encodeURIComponent(endpointId)}/deliveries`, { page, per_page: 20, status: state.status });
      const rows = answer.data.map((d) => [
        when(d.created_at),
        d.event_type,
        h("span", { class: "mono" }, d.event_id),
        h("span", { class: `status status-${d.status}` }, d.status),
        num(d.attempts),
        num(d.last_status_code ?? "—"),
        d.last_error ?? "",
        d.next_attempt_at ? when(d.next_attempt_at) : "",
        canWrite && d.status !== "pending"
          ? actionButton("Retry", {
              label: `Retry ${d.delivery_id}`,
              report,
              send: async (key) => {
                await request("POST", `/v1/webhook_endpoints/${encodeURIComponent(endpointId)}/deliveries/${d.delivery_id}/retry`, { idempotencyKey: key });
                return `Delivery of ${d.event_type} queued again.`;
              },
              done: () => load(),
            })
          : "",
      ]);
      show(
        log,
        table("Deliveries", ["Created", "Event", "Event ID", "Status", "Attempts", "Last status", "Last error", "Next attempt", ""], rows, {
          empty: "No deliveries.",
        }),
        pager(answer.meta, load, "Delivery pages"),
      );
      if (answer.data.some((d) => d.status === "pending")) state.timer = setTimeout(() => load(), REFRESH_MS);
    } catch (error) {
      show(log, refusal(error));
    }
  };

  const status = h("select", { name: "status" }, [["", "every status"], ["pending", "pending"], ["succeeded", "succeeded"], ["failed", "failed"]].map(([v, t]) => h("option", { value: v }, t)));
  const filter = h("form", { class: "filter", "aria-label": "Filter the deliveries" }, h("label", {}, "Status", status), h("button", { type: "submit" }, "Filter"), h("button", { type: "button", onclick: () => load() }, "Refresh"));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    state.status = status.value;
    load(1);
  });
  load(1);
  return h("div", {}, h("p", {}, h("a", { href: "#/webhooks" }, "← All endpoints")), heading, about, report, section("Delivery log", filter, log));
}
