// Members: find one by id, list them, and a member's page (balance, counters, lots, history,
// redemptions, and, for a write key, award, deduct, transfer, reverse, redeem and cancel).

import { ApiError, get, request } from "./api.js";
import { day, h, notice, num, pager, points, refusal, section, show, signed, table, when } from "./dom.js";
import { actionButton, actionForm } from "./forms.js";

const PER_PAGE = 10;
const HISTORY_TYPES = ["award", "deduct", "redeem", "refund", "expire", "transfer_in", "transfer_out", "reversal"];

const memberPath = (id) => `/v1/members/${encodeURIComponent(id)}`;
export const memberLink = (id) => `#/members/${encodeURIComponent(id)}`;

/** The form that opens a member's page: an input labelled "Member ID". */
export function findForm(initial = "") {
  const field = h("input", { name: "member_id", type: "text", required: true, value: initial, autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { class: "find", role: "search" },
    h("label", {}, "Member ID", field),
    h("button", { type: "submit" }, "Find"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = field.value.trim();
    if (id) window.location.hash = memberLink(id);
  });
  return form;
}

/** `#/members`: find a member, or pick one from the list. */
export function membersView() {
  const list = h("div", {}, notice("working", "Loading members…"));
  const load = async (page) => {
    try {
      const answer = await get("/v1/members", { page, per_page: 20 });
      const rows = answer.data.map((m) => [
        h("a", { href: memberLink(m.member_id) }, m.member_id),
        m.name ?? "",
        m.email ?? "",
        when(m.created_at),
      ]);
      show(
        list,
        table("Members", ["Member ID", "Name", "Email", "Enrolled"], rows, { empty: "No members yet." }),
        answer.meta.total_pages > 1 ? pager(answer.meta, load, "Member pages") : null,
      );
    } catch (error) {
      show(list, refusal(error));
    }
  };
  load(1);
  return h("div", {}, h("h1", {}, "Members"), findForm(), section("All members", list));
}

/** `#/members/{id}`: everything about one member. */
export function memberView(memberId, { canWrite }) {
  const page = h("div", {}, h("h1", {}, "Member ", h("span", { class: "mono" }, memberId)), findForm(memberId));
  const body = h("div", {}, notice("working", "Loading…"));
  page.append(body);
  // Loaded again, whole, after the profile changes (`said`: what the change did).
  const load = (said) =>
    get(memberPath(memberId)).then(
      (answer) => show(body, said ? notice("ok", said) : null, memberSections(answer.data, { canWrite, refresh: load })),
      (error) =>
        show(body, error instanceof ApiError && error.code === "member_not_found" ? notice("error", `There is no member ${memberId} in this program.`) : refusal(error)),
    );
  load();
  return page;
}

function memberSections(member, { canWrite, refresh }) {
  const id = member.member_id;
  const balance = h("div", {}, notice("working", "Loading the balance…"));
  const lots = h("div", {});
  const history = h("div", {});
  const redemptions = h("div", {});
  const report = h("div", { class: "report", "aria-live": "polite" });
  const state = { filter: {}, historyPage: 1, lotsPage: 1, redemptionsPage: 1, rewards: new Map() };

  const loadBalance = async () => {
    try {
      show(balance, balanceFigures((await get(`${memberPath(id)}/balance`)).data));
    } catch (error) {
      show(balance, refusal(error));
    }
  };
  const loadLots = async (pageNumber = state.lotsPage) => {
    state.lotsPage = pageNumber;
    try {
      const answer = await get(`${memberPath(id)}/lots`, { page: pageNumber, per_page: PER_PAGE });
      const rows = answer.data.map((lot) => [
        num(points(lot.remaining)),
        lot.expires_at ? when(lot.expires_at) : "never",
        h("span", { class: "mono" }, lot.transaction_id),
      ]);
      show(
        lots,
        table("Open lots", ["Points left", "Expires", "From transaction"], rows, { empty: "No open lots." }),
        answer.meta.total_pages > 1 ? pager(answer.meta, loadLots, "Lot pages") : null,
      );
    } catch (error) {
      show(lots, refusal(error));
    }
  };
  const loadHistory = async (pageNumber = state.historyPage) => {
    state.historyPage = pageNumber;
    try {
      const answer = await get(`${memberPath(id)}/transactions`, { ...state.filter, page: pageNumber, per_page: PER_PAGE });
      show(
        history,
        historyTable(answer.data, { canWrite, reload, report }),
        pager(answer.meta, loadHistory, "History pages"),
      );
    } catch (error) {
      show(history, refusal(error));
    }
  };
  const loadRedemptions = async (pageNumber = state.redemptionsPage) => {
    state.redemptionsPage = pageNumber;
    try {
      const answer = await get(`${memberPath(id)}/redemptions`, { page: pageNumber, per_page: PER_PAGE });
      const rows = answer.data.map((r) => [
        when(r.created_at),
        state.rewards.get(r.reward_id)?.name ?? h("span", { class: "mono" }, r.reward_id),
        num(points(r.quantity)),
        num(points(r.points)),
        r.status,
        canWrite && r.status === "completed"
          ? actionButton("Cancel", {
              label: `Cancel redemption ${r.redemption_id}`,
              report,
              send: async (key) => {
                await request("POST", `/v1/redemptions/${r.redemption_id}/cancel`, { idempotencyKey: key });
                return `Redemption cancelled: ${points(r.points)} points refunded.`;
              },
              done: reload,
            })
          : "",
      ]);
      show(
        redemptions,
        table("Redemptions", ["Redeemed", "Reward", "Quantity", "Points", "Status", ""], rows, { empty: "No redemptions." }),
        answer.meta.total_pages > 1 ? pager(answer.meta, loadRedemptions, "Redemption pages") : null,
      );
    } catch (error) {
      show(redemptions, refusal(error));
    }
  };
  async function reload() {
    await Promise.all([loadBalance(), loadLots(1), loadHistory(1), loadRedemptions(1)]);
  }

  const rewardsReady = get("/v1/rewards", { per_page: 100 })
    .then((answer) => answer.data.forEach((r) => state.rewards.set(r.reward_id, r)))
    .catch(() => {});
  loadBalance();
  loadLots(1);
  loadHistory(1);
  rewardsReady.then(() => loadRedemptions(1));

  const profile = [member.name, member.email].filter(Boolean).join(" · ");
  return [
    profile ? h("p", { class: "profile" }, profile) : null,
    member.erased_at ? notice("info", `Personal data erased on ${when(member.erased_at)}.`) : null,
    section("Balance", balance),
    canWrite ? section("Change points", h("div", { class: "actions" }, pointForms(id, reload)), report) : h("p", { class: "read-only" }, "This key may only read: it cannot change points."),
    section("Lots", h("p", { class: "hint" }, "What is left of each award, refund and transfer received, soonest to expire first."), lots),
    section("History", historyFilter(state, () => loadHistory(1)), history),
    section("Redemptions", canWrite ? redeemForm(id, state, rewardsReady, reload) : null, redemptions),
    canWrite ? section("Profile", profileForms(member, refresh)) : null,
  ];
}

/** Edit the member's name and email (a blank field clears it), or erase their personal data. */
function profileForms(member, refresh) {
  const path = memberPath(member.member_id);
  const edit = member.erased_at
    ? h("p", { class: "hint" }, "An erased member's profile stays empty.")
    : actionForm({
        title: "Edit profile",
        button: "Save profile",
        fields: [
          { name: "name", label: "Name", value: member.name ?? "" },
          { name: "email", label: "Email", type: "email", value: member.email ?? "" },
        ],
        send: async (values) => {
          await request("PATCH", path, { body: { name: values.name ?? null, email: values.email ?? null } });
          return "Profile saved.";
        },
        done: () => refresh("Profile saved."),
      });
  const confirm = h("div", { class: "confirm", hidden: true });
  const ask = h("button", { type: "button", class: "secondary" }, "Erase personal data…");
  ask.addEventListener("click", () => {
    ask.disabled = true;
    const keep = h("button", { type: "button", class: "secondary" }, "Keep it");
    keep.addEventListener("click", () => {
      confirm.hidden = true;
      ask.disabled = false;
    });
    const outcome = h("div", { class: "result" });
    show(
      confirm,
      h("p", {}, `Erase ${member.member_id}'s name, email and metadata (and every transaction's metadata) for good? The balance and every ledger row stay.`),
      actionButton("Erase for good", {
        report: outcome,
        send: async (key) => {
          await request("POST", `${path}/erase`, { idempotencyKey: key });
          return "Personal data erased.";
        },
        done: () => refresh("Personal data erased."),
      }),
      " ",
      keep,
      outcome,
    );
    confirm.hidden = false;
  });
  return [edit, h("div", { class: "erase" }, ask, confirm)];
}

function balanceFigures(b) {
  const figure = (label, value, testid, big = false) =>
    h("div", { class: big ? "figure big" : "figure" }, h("span", { class: "label" }, label), h("span", { class: "value", "data-testid": testid }, value));
  const next = b.next_expiration;
  return [
    h(
      "div",
      { class: "figures" },
      figure("Balance", points(b.balance), "balance", true),
      figure("Pending", points(b.pending), "pending"),
      figure("Next expiry", next ? `${points(next.points)} on ${day(next.expires_at)}` : "none", "next-expiration"),
    ),
    h(
      "dl",
      { class: "counters" },
      [
        ["Earned", b.lifetime_earned],
        ["Redeemed", b.lifetime_redeemed],
        ["Deducted", b.lifetime_deducted],
        ["Expired", b.lifetime_expired],
        ["Transferred in", b.lifetime_transferred_in ?? 0],
        ["Transferred out", b.lifetime_transferred_out ?? 0],
      ].map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, points(value)))),
    ),
  ];
}

function pointForms(memberId, reload) {
  const reason = { name: "reason", label: "Reason", required: true, placeholder: "Why, for the history" };
  const amount = { name: "points", label: "Points", type: "number", required: true };
  const created = (verb) => (answer) => `${verb} ${points(Math.abs(answer.data.points))} points: the balance is now ${points(answer.data.new_balance)}.`;
  return [
    actionForm({
      title: "Award",
      button: "Award points",
      fields: [amount, reason, { name: "expires_on", label: "Expires on", type: "date", hint: "optional; at 00:00 UTC" }],
      send: async ({ expires_on, ...values }, key) => {
        const body = { member_id: memberId, ...values };
        if (expires_on) body.expires_at = `${expires_on}T00:00:00Z`;
        return created("Awarded")(await request("POST", "/v1/points/award", { body, idempotencyKey: key }));
      },
      done: reload,
    }),
    actionForm({
      title: "Deduct",
      button: "Deduct points",
      fields: [amount, reason],
      send: async (values, key) => created("Deducted")(await request("POST", "/v1/points/deduct", { body: { member_id: memberId, ...values }, idempotencyKey: key })),
      done: reload,
    }),
    actionForm({
      title: "Transfer",
      button: "Transfer points",
      fields: [{ name: "to_member_id", label: "Recipient", required: true, placeholder: "their member id" }, amount, reason],
      send: async (values, key) => {
        const answer = await request("POST", "/v1/points/transfer", { body: { from_member_id: memberId, ...values }, idempotencyKey: key });
        const { from, to } = answer.data;
        return `Transferred ${points(to.points)} points to ${to.member_id}: the balance is now ${points(from.balance_after)}.`;
      },
      done: reload,
    }),
  ];
}

function historyFilter(state, apply) {
  const type = h("select", { name: "type" }, h("option", { value: "" }, "every type"), HISTORY_TYPES.map((t) => h("option", { value: t }, t)));
  const from = h("input", { name: "from", type: "date" });
  const to = h("input", { name: "to", type: "date" });
  const form = h(
    "form",
    { class: "filter", "aria-label": "Filter the history" },
    h("label", {}, "Type", type),
    h("label", {}, "From", from),
    h("label", {}, "To", to),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.filter = { type: type.value, from: from.value, to: to.value };
    apply();
  });
  return form;
}

function historyTable(rows, { canWrite, reload, report }) {
  const body = [];
  for (const t of rows) {
    const actions = [];
    const left = Math.abs(t.points) - (t.points_reversed ?? 0);
    if (canWrite && t.status === "posted" && (t.type === "award" || t.type === "deduct") && left > 0) {
      const open = h("button", { type: "button", class: "small", "aria-label": `Reverse ${t.transaction_id}` }, "Reverse");
      open.addEventListener("click", () => {
        open.disabled = true;
        const row = open.closest("tr");
        row.after(reverseRow(t, { reload, report, close: () => (open.disabled = false) }));
      });
      actions.push(open);
    }
    if (canWrite && t.status === "pending" && t.type === "award") {
      actions.push(
        actionButton("Cancel", {
          label: `Cancel ${t.transaction_id}`,
          report,
          send: async (key) => {
            await request("POST", `/v1/transactions/${t.transaction_id}/cancel`, { idempotencyKey: key });
            return `The pending award of ${points(t.points)} points is cancelled.`;
          },
          done: reload,
        }),
      );
    }
    const by = rows.some((r) => r.created_by) ? [t.created_by ? h("span", { class: "mono" }, t.created_by) : ""] : [];
    body.push([
      when(t.posted_at ?? t.created_at),
      h("span", { class: `type type-${t.type}` }, t.type),
      h("td", { class: `num ${t.points < 0 ? "minus" : "plus"}` }, signed(t.points)),
      num(t.balance_after === null ? "—" : points(t.balance_after)),
      t.reason,
      t.reference ?? "",
      t.status,
      ...by,
      h("span", { class: "row-actions" }, actions),
    ]);
  }
  // `By`: the key that made each row (older servers do not say).
  const headings = ["When", "Type", "Points", "Balance after", "Reason", "Reference", "Status"];
  if (rows.some((r) => r.created_by)) headings.push("By");
  return table("History", [...headings, ""], body, { empty: "No transactions match." });
}

function reverseRow(t, { reload, report, close }) {
  const fields = [
    { name: "reason", label: "Reason", required: true, placeholder: "Why it is reversed" },
    { name: "points", label: "Points", type: "number", placeholder: `all ${points(Math.abs(t.points) - (t.points_reversed ?? 0))} left` },
  ];
  if (t.type === "award") fields.push({ name: "allow_negative", label: "Allow a negative balance", type: "checkbox" });
  const row = h("tr", { class: "inline-form" });
  let outcome = ""; // what the reversal did, for the report once the history reloads without this row
  const form = actionForm({
    title: `Reverse ${t.type} ${t.transaction_id}`,
    button: "Reverse",
    fields,
    send: async (values, key) => {
      const body = { ...values };
      if (!body.allow_negative) delete body.allow_negative;
      const answer = await request("POST", `/v1/transactions/${t.transaction_id}/reverse`, { body, idempotencyKey: key });
      const { points: moved, balance_after: balance } = answer.data;
      outcome = `Reversed ${t.type} ${t.transaction_id}: ${signed(moved)} points, the balance is now ${points(balance)}.`;
      return outcome;
    },
    done: async () => {
      show(report, notice("ok", outcome));
      await reload();
    },
  });
  const keep = h("button", { type: "button", class: "secondary" }, "Keep it");
  keep.addEventListener("click", () => {
    row.remove();
    close();
  });
  form.querySelector("fieldset").append(keep);
  row.append(h("td", { colspan: 10 }, form));
  return row;
}

function redeemForm(memberId, state, rewardsReady, reload) {
  const holder = h("div", {});
  rewardsReady.then(() => {
    const active = [...state.rewards.values()].filter((r) => r.active);
    if (active.length === 0) {
      show(holder, h("p", { class: "hint" }, "No active rewards to redeem (see Rewards)."));
      return;
    }
    show(
      holder,
      actionForm({
        title: "Redeem a reward",
        button: "Redeem",
        fields: [
          { name: "reward_id", label: "Reward", type: "select", required: true, options: active.map((r) => [r.reward_id, `${r.name} (${points(r.points_cost)} points)`]) },
          { name: "quantity", label: "Quantity", type: "number", value: "1" },
        ],
        send: async (values, key) => {
          const answer = await request("POST", "/v1/redemptions", { body: { member_id: memberId, ...values }, idempotencyKey: key });
          return `Redeemed for ${points(answer.data.points)} points.`;
        },
        done: reload,
      }),
    );
  });
  return holder;
}
