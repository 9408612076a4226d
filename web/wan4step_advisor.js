// Wan4Step VRAM Advisor: show the advice on the node, and get it without running the graph.
// "Advise now" posts the node's widget values to /wan4step/advisor (nodes/advisor.py) and
// prints the report; after a normal run the node's own report replaces it. The panel and the
// button are display-only: they are kept out of the saved workflow (widgets_values) and out
// of the prompt sent to the server, so saved files convert 1:1 to API format.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "Wan4StepVRAMAdvisor";

function show(node, text) {
  if (node.__wan4stepAdvice) node.__wan4stepAdvice.value = text;
  node.__wan4stepAdviceText = text;
}

export async function adviseNow(node) {
  const body = {};
  for (const w of node.widgets ?? []) {
    const v = w.value;
    if (w.name && w.serialize !== false && ["string", "number", "boolean"].includes(typeof v)) body[w.name] = v;
  }
  show(node, "Asking the advisor…");
  try {
    const res = await api.fetchApi("/wan4step/advisor", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await res.json();
    show(node, data.error ? `Error: ${data.error}` : data.report);
    node.__wan4stepRecommendation = data.recommendation ?? null;
  } catch (err) {
    show(node, `Could not reach the advisor: ${err}`);
  }
  return node.__wan4stepAdviceText;
}

app.registerExtension({
  name: "Wan4Step.VRAMAdvisor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const area = document.createElement("textarea");
      area.readOnly = true;
      area.className = "wan4step-advice";
      area.placeholder = "Press “Advise now” to see what fits this machine.";
      area.style.cssText = "width:100%;min-height:140px;font:11px monospace;white-space:pre-wrap;";
      this.__wan4stepAdvice = area;
      const panel = this.addDOMWidget("advice", "wan4step_advice", area, {
        serialize: false,
        getValue: () => "",
        setValue: () => {},
      });
      panel.serialize = false;
      const button = this.addWidget("button", "Advise now", null, () => adviseNow(this), { serialize: false });
      button.serialize = false;
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      if (message?.text?.length) show(this, message.text.join("\n"));
    };
  },
});
