// Wan4Step VRAM Advisor: show the advice on the node, and get it without running the graph.
// "Advise now" posts the node's widget values to /wan4step/advisor (nodes/advisor.py) and
// shows the answer twice: as a picture (VRAM peak of each phase against the card, RAM against
// the machine) and as the report text; after a normal run the node's own output replaces both.
// The button, the picture and the text box are display-only: they are kept out of the saved
// workflow (widgets_values) and out of the prompt, so saved files convert 1:1 to API format.
//
// Sizing: the frontend lays a node's widgets out from each widget's own size (computeSize for
// canvas widgets, computeLayoutSize -> options.getMinHeight for DOM widgets) and places the DOM
// element in exactly the room it got. So the text box declares its minimum through
// getMinHeight and fills that room (height 100%); a CSS min-height would make the element
// taller than its room and it would cover the widgets below it and spill out of the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "Wan4StepVRAMAdvisor";
export const TEXT_MIN_HEIGHT = 120; // graph units the advice text box gets at least
export const PLAN_HEIGHT = 128; // graph units of the memory picture
const FONT = 12; // px at 100 % zoom: readable (>= 9 px) down to 75 % zoom
const GiB = 1024 ** 3;
const COLORS = { ok: "#3f9b5a", tight: "#c8963e", over: "#c04646", weights: "#4f7fb8", cpu: "#5d6673" };

function show(node, text) {
  if (node.__wan4stepAdvice) node.__wan4stepAdvice.value = text;
  node.__wan4stepAdviceText = text;
}

function setPlan(node, plan) {
  node.__wan4stepPlan = plan ?? null;
  node.setDirtyCanvas?.(true, false);
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
    setPlan(node, data.error ? null : data.memory_plan);
  } catch (err) {
    show(node, `Could not reach the advisor: ${err}`);
  }
  return node.__wan4stepAdviceText;
}

// ---- the memory picture ------------------------------------------------------------------------
const gib = (b) => (b / GiB).toFixed(1);

// One horizontal bar: `value` on a scale of `max`, coloured against the limits, with the limits
// drawn as ticks (dashed: what the plan may use; solid: the whole card or machine).
function bar(ctx, x, y, w, h, value, max, { soft, hard, color }) {
  const px = (v) => x + Math.max(0, Math.min(1, v / max)) * w;
  ctx.fillStyle = "#2a2f37";
  ctx.fillRect(x, y, w, h);
  ctx.fillStyle = color ?? (value <= soft ? COLORS.ok : value <= hard ? COLORS.tight : COLORS.over);
  ctx.fillRect(x, y, Math.max(1, px(value) - x), h);
  ctx.strokeStyle = "#e8e8e8";
  ctx.lineWidth = 1;
  if (soft && soft < hard) {
    ctx.setLineDash([3, 2]);
    ctx.beginPath();
    ctx.moveTo(px(soft) + 0.5, y - 2);
    ctx.lineTo(px(soft) + 0.5, y + h + 2);
    ctx.stroke();
    ctx.setLineDash([]);
  }
  if (hard) {
    ctx.beginPath();
    ctx.moveTo(px(hard) + 0.5, y - 3);
    ctx.lineTo(px(hard) + 0.5, y + h + 3);
    ctx.stroke();
  }
}

// The rows the picture draws, also used by the browser test to check what it shows.
export function planRows(plan) {
  if (!plan) return [];
  const rows = [];
  const vram = plan.vram_total_bytes > 0;
  for (const p of plan.phases ?? []) {
    const onCpu = p.device === "cpu";
    rows.push({
      label: p.label,
      kind: "vram",
      value: p.vram_bytes,
      note: onCpu ? "cpu" : "",
      text: vram ? `${gib(p.vram_bytes)} GiB` : "CPU",
    });
  }
  rows.push({ label: "RAM", kind: "ram", value: plan.ram_peak_bytes, text: `${gib(plan.ram_peak_bytes)} GiB` });
  return rows;
}

export function drawPlan(ctx, node, width, y, height) {
  const plan = node.__wan4stepPlan;
  const m = 10;
  const x0 = m;
  const w = width - 2 * m;
  ctx.save();
  ctx.fillStyle = "#1b1f25";
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(x0, y + 2, w, height - 6, 4);
  else ctx.rect(x0, y + 2, w, height - 6);
  ctx.fill();
  ctx.font = `${FONT}px sans-serif`;
  ctx.textBaseline = "middle";
  ctx.fillStyle = "#e8e8e8";
  if (!plan) {
    ctx.textAlign = "center";
    ctx.fillText("Memory plan: press “Advise now”", x0 + w / 2, y + height / 2 - 2);
    ctx.restore();
    return;
  }
  const vramMax = Math.max(plan.vram_total_bytes, ...(plan.phases ?? []).map((p) => p.vram_bytes), 1) * 1.04;
  const ramMax = Math.max(plan.ram_total_bytes || 0, plan.ram_budget_bytes, plan.ram_peak_bytes, 1) * 1.04;
  const title = plan.vram_total_bytes > 0
    ? `${plan.gpu ?? "GPU"}: ${gib(plan.vram_total_bytes)} GiB VRAM, ${gib(plan.vram_budget_bytes)} free`
    : "No GPU: everything runs on the CPU";
  ctx.textAlign = "left";
  ctx.fillText(title, x0 + 8, y + 14, w - 16);
  const labelW = 84;
  const valueW = 62;
  const bx = x0 + 8 + labelW;
  const bw = w - 16 - labelW - valueW;
  let ry = y + 28;
  const rh = 12;
  const step = 19;
  for (const row of planRows(plan)) {
    ctx.fillStyle = "#e8e8e8";
    ctx.textAlign = "left";
    ctx.fillText(row.label, x0 + 8, ry + rh / 2, labelW - 4);
    if (row.kind === "vram" && plan.vram_total_bytes > 0) {
      bar(ctx, bx, ry, bw, rh, row.value, vramMax, {
        soft: plan.usable_vram_bytes, hard: plan.vram_budget_bytes,
        color: row.note === "cpu" ? COLORS.cpu : undefined,
      });
    } else if (row.kind === "ram") {
      bar(ctx, bx, ry, bw, rh, row.value, ramMax, { soft: plan.ram_budget_bytes, hard: plan.ram_budget_bytes });
    } else {
      ctx.fillStyle = "#2a2f37";
      ctx.fillRect(bx, ry, bw, rh);
    }
    ctx.fillStyle = "#e8e8e8";
    ctx.textAlign = "right";
    ctx.fillText(row.text, x0 + w - 8, ry + rh / 2);
    ry += step;
  }
  ctx.textAlign = "left";
  ctx.fillStyle = "#b8c0cc";
  const legend = plan.vram_total_bytes > 0
    ? `┆ plan limit ${gib(plan.usable_vram_bytes)}  │ free ${gib(plan.vram_budget_bytes)}  · RAM │ ${gib(plan.ram_budget_bytes)} GiB`
    : `RAM │ ${gib(plan.ram_budget_bytes)} GiB usable`;
  ctx.fillText(legend, x0 + 8, ry + 4, w - 16);
  ctx.restore();
}

app.registerExtension({
  name: "Wan4Step.VRAMAdvisor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const button = this.addWidget("button", "Advise now", null, () => adviseNow(this), { serialize: false });
      button.serialize = false;
      const plan = this.addCustomWidget({
        name: "memory_plan",
        type: "wan4step_memory_plan",
        value: "",
        y: 0,
        serialize: false,
        options: { serialize: false },
        computeSize: (width) => [width ?? this.size[0], PLAN_HEIGHT],
        draw: (ctx, node, width, y) => drawPlan(ctx, node, width, y, PLAN_HEIGHT),
      });
      plan.serialize = false;
      const area = document.createElement("textarea");
      area.readOnly = true;
      area.className = "wan4step-advice";
      area.placeholder = "Press “Advise now” to see what fits this machine.";
      area.style.cssText = `width:100%;height:100%;box-sizing:border-box;resize:none;margin:0;`
        + `font:${FONT}px/1.3 monospace;white-space:pre-wrap;`;
      this.__wan4stepAdvice = area;
      const panel = this.addDOMWidget("advice", "wan4step_advice", area, {
        serialize: false,
        getValue: () => "",
        setValue: () => {},
        getMinHeight: () => TEXT_MIN_HEIGHT,
      });
      panel.serialize = false;
      const [w, h] = this.computeSize();
      this.setSize([Math.max(this.size[0], w, 400), Math.max(this.size[1], h)]);
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      if (message?.text?.length) show(this, message.text.join("\n"));
      if (message?.memory_plan?.length) setPlan(this, message.memory_plan[0]);
    };
  },
});
