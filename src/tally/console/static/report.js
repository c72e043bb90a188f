// The program report (`GET /v1/program/report`) as charts: the points outstanding (and what
// expires soon), and what was awarded, redeemed and expired in each period, with a table of
// every figure.

import { ApiError, get } from "./api.js";
import { bars, groupedBars } from "./charts.js";
import { day, h, notice, num, points, refusal, section, show, table } from "./dom.js";

const DAY_MS = 24 * 60 * 60 * 1000;
const FLOWS = ["awarded", "deducted", "redeemed", "refunded", "expired", "transferred", "reversed"];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export function reportView() {
  const today = new Date();
  const from = h("input", { name: "from", type: "date", value: isoDay(new Date(today.getTime() - 29 * DAY_MS)), required: true });
  const to = h("input", { name: "to", type: "date", value: isoDay(today), required: true });
  const interval = h("select", { name: "interval" }, ["day", "week", "month"].map((i) => h("option", { value: i }, i)));
  const out = h("div", {});
  const load = async () => {
    show(out, notice("working", "Computing the report…"));
    try {
      // Both days are included: the report covers every day shown, `to` included.
      const answer = await get("/v1/program/report", { from: from.value, to: to.value, interval: interval.value });
      show(out, rendered(answer.data));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(out, refusal(error));
    }
  };
  const form = h(
    "form",
    { class: "filter", "aria-label": "Report period" },
    h("label", {}, "From", from),
    h("label", {}, "To (included)", to),
    h("label", {}, "Interval", interval),
    h("button", { type: "submit" }, "Show"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  load();
  return h("div", {}, h("h1", {}, "Program report"), form, out);
}

function rendered(report) {
  const outstanding = report.outstanding ?? { balance: 0, pending: 0 };
  const expiring = report.expiring ?? [];
  const periods = report.periods ?? [];
  const figures = [
    { label: "Balance", value: outstanding.balance, className: "outstanding" },
    { label: "Pending", value: outstanding.pending, className: "pending" },
    // Each `before` is now + 30, 60 or 90 days; the points are cumulative.
    ...expiring.map((e) => ({ label: `Expiring within\n${Math.round((Date.parse(e.before) - Date.now()) / DAY_MS)} days`, value: e.points, className: "expiring" })),
  ];
  const labels = periods.map((p) => day(p.start));
  return [
    h("p", { class: "period" }, `From ${report.from} to ${report.to}, both included, by ${report.interval}; UTC days.`),
    h(
      "div",
      { class: "figures" },
      h("div", { class: "figure big" }, h("span", { class: "label" }, "Points outstanding"), h("span", { class: "value", "data-testid": "outstanding" }, points(outstanding.balance))),
      h("div", { class: "figure" }, h("span", { class: "label" }, "Pending"), h("span", { class: "value", "data-testid": "pending" }, points(outstanding.pending))),
      report.members
        ? h("div", { class: "figure" }, h("span", { class: "label" }, "Members (active in period)"), h("span", { class: "value", "data-testid": "members" }, `${points(report.members.total)} (${points(report.members.active_in_period)})`))
        : null,
    ),
    section("Points outstanding", bars({ title: "Points outstanding now, and what expires soon", figures })),
    section(
      "Per period",
      groupedBars({
        title: "Awarded, redeemed and expired per period",
        categories: labels,
        series: [
          { name: "awarded", className: "awarded", values: periods.map((p) => Math.abs(p.awarded ?? 0)) },
          { name: "redeemed", className: "redeemed", values: periods.map((p) => Math.abs(p.redeemed ?? 0)) },
          { name: "expired", className: "expired", values: periods.map((p) => Math.abs(p.expired ?? 0)) },
        ],
      }),
      table(
        "Every figure per period",
        ["Period from", ...FLOWS],
        periods.map((p) => [day(p.start), ...FLOWS.map((f) => num(points(p[f] ?? 0)))]),
        { empty: "No periods in this range." },
      ),
    ),
  ];
}
