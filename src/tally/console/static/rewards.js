// Rewards: the catalog, and (for a write key) adding a reward and switching one on or off.
// Redeeming one is on a member's page.

import { get, request } from "./api.js";
import { h, num, pager, points, refusal, section, show, table, when } from "./dom.js";
import { actionButton, actionForm } from "./forms.js";

export function rewardsView({ canWrite }) {
  const list = h("div", {});
  const report = h("div", { class: "report", "aria-live": "polite" });
  let current = 1;
  const load = async (page = current) => {
    current = page;
    try {
      const answer = await get("/v1/rewards", { page, per_page: 20 });
      const rows = answer.data.map((r) => [
        r.name,
        num(points(r.points_cost)),
        num(r.stock === null ? "unlimited" : points(r.stock)),
        r.active ? "active" : "inactive",
        when(r.created_at),
        canWrite
          ? actionButton(r.active ? "Deactivate" : "Activate", {
              label: `${r.active ? "Deactivate" : "Activate"} ${r.name}`,
              report,
              send: async (key) => {
                await request("PATCH", `/v1/rewards/${r.reward_id}`, { body: { active: !r.active } });
                return `${r.name} is ${r.active ? "inactive" : "active"} now.`;
              },
              done: () => load(),
            })
          : "",
      ]);
      show(
        list,
        table("Rewards", ["Name", "Cost", "Stock", "Status", "Created", ""], rows, { empty: "No rewards yet." }),
        answer.meta.total_pages > 1 ? pager(answer.meta, load, "Reward pages") : null,
      );
    } catch (error) {
      show(list, refusal(error));
    }
  };
  load(1);
  const create = canWrite
    ? actionForm({
        title: "New reward",
        button: "Add reward",
        fields: [
          { name: "name", label: "Name", required: true },
          { name: "points_cost", label: "Cost in points", type: "number", required: true },
          { name: "stock", label: "Stock", type: "number", min: 0, hint: "optional; empty for unlimited" },
        ],
        send: async (values, key) => {
          const answer = await request("POST", "/v1/rewards", { body: values, idempotencyKey: key });
          return `Added ${answer.data.name}.`;
        },
        done: () => load(1),
      })
    : null;
  return h("div", {}, h("h1", {}, "Rewards"), create, report, section("Catalog", list));
}
