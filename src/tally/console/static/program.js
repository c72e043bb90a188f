// The program's settings (`GET /v1/program`), and for a write key the enrol-on-award switch
// (`PATCH /v1/program {"enrol_on_award": …}`).

import { ApiError, get, request } from "./api.js";
import { h, notice, refusal, section, show, when } from "./dom.js";

/** `#/program`: what the program is set to. */
export function programView({ canWrite }) {
  const body = h("div", {}, notice("working", "Loading the program…"));
  const load = async (said) => {
    try {
      const program = (await get("/v1/program")).data;
      show(body, said ? notice("ok", said) : null, settings(program), canWrite ? enrolForm(program, load) : null);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(body, refusal(error));
    }
  };
  load();
  return h("div", {}, h("h1", {}, "Program"), body);
}

function settings(program) {
  const days = program.points_expire_after_days;
  return section(
    "Settings",
    h(
      "dl",
      { class: "counters" },
      [
        ["Name", program.name],
        ["Points expire after", days === null ? "never" : `${days} days`],
        ["Unknown members on award", program.enrol_on_award ? "enrolled" : "refused (member_not_found)"],
        ["Created", when(program.created_at)],
      ].map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", { "data-testid": label }, value))),
    ),
  );
}

function enrolForm(program, load) {
  const enrol = h("input", { name: "enrol_on_award", type: "checkbox", checked: program.enrol_on_award });
  const submit = h("button", { type: "submit" }, "Save");
  const result = h("div", { class: "result" });
  const form = h(
    "form",
    { class: "action" },
    h(
      "fieldset",
      {},
      h("legend", {}, "Enrol on award"),
      h(
        "label",
        { class: "check" },
        enrol,
        " Enrol unknown members on award",
        h("small", {}, "an award, an imported row or a transfer to a member id the program does not have enrols that member"),
      ),
      submit,
    ),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      // A PATCH sets the value it names: sending it again has the same effect.
      await request("PATCH", "/v1/program", { body: { enrol_on_award: enrol.checked } });
      await load(enrol.checked ? "Unknown members are now enrolled on award." : "Awards to unknown members are now refused.");
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(result, refusal(error));
      submit.disabled = false;
    }
  });
  return form;
}
