// Wan4Step estimate badges: predicted VRAM peak and step time of the graph's own settings,
// drawn under each Wan4Step Sampler (with the VRAM Advisor's pick for this size) and under the
// loader that feeds it. The numbers come from POST /wan4step/estimate (nodes/web_estimate.py:
// the advisor's memory and step-time models); the graph is re-read once a second and the server
// is asked again only when a setting that matters changed.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SAMPLER = "Wan4StepSampler";
const LOADER_WIDGETS = ["model_name", "unet_name", "ckpt_name"];
const OVERRIDES = ["gpu", "vram_gb", "free_vram_gb", "compute_capability", "ram_gb", "priority", "weights_format"];
const COLORS = { fits: "#1f5130", nofit: "#6b2222", unknown: "#333a44" };
const BADGE_FONT = 12; // px at 100 % zoom: >= 9 px on screen down to 75 % zoom

const widgetOf = (node, name) => node?.widgets?.find((w) => w.name === name);
const valueOf = (node, name) => widgetOf(node, name)?.value;

function linkById(id) {
  const g = app.graph;
  return g.getLink?.(id) ?? g.links?.get?.(id) ?? g.links?.[id] ?? null;
}

// The node (and output slot) feeding `node`'s input `name`, or null.
function upstream(node, name) {
  const slot = node?.inputs?.find((i) => i.name === name);
  if (!slot || slot.link == null) return null;
  const link = linkById(slot.link);
  return link ? app.graph.getNodeById(link.origin_id) : null;
}

function downstream(node, slotIndex = 0) {
  const ids = node?.outputs?.[slotIndex]?.links ?? [];
  return ids.map((id) => linkById(id)).filter(Boolean).map((l) => app.graph.getNodeById(l.target_id)).filter(Boolean);
}

// What the estimate route needs, read from the graph around one sampler.
export function settingsFor(sampler) {
  const body = { prefetch: 2, blocks_to_swap: 0 };
  let node = upstream(sampler, "model");
  let loader = null;
  for (let hops = 0; node && hops < 8; hops++) {
    if (node.type === "Wan4StepBlockSwap" && node.mode === 0) {
      body.blocks_to_swap = upstream(node, "blocks_to_swap") ? -1 : valueOf(node, "blocks_to_swap");
      body.prefetch = valueOf(node, "prefetch") ?? 2;
    }
    if (LOADER_WIDGETS.some((w) => widgetOf(node, w))) {
      loader = node;
      break;
    }
    node = upstream(node, "model");
  }
  if (loader) {
    const wname = LOADER_WIDGETS.find((w) => widgetOf(loader, w));
    const feeder = upstream(loader, wname);
    if (feeder?.type === "Wan4StepDownload") body.weights_key = valueOf(feeder, "weights");
    else if (!feeder) body.model_name = valueOf(loader, wname);
    body.attention = valueOf(loader, "attention") ?? "auto";
  }
  const latent = upstream(sampler, "latent");
  if (latent) {
    body.width = valueOf(latent, "width");
    body.height = valueOf(latent, "height");
    body.frames = valueOf(latent, "length") ?? valueOf(latent, "frames");
  }
  const text = upstream(sampler, "positive");
  const te = text ? upstream(text, "clip") : null;
  if (te) {
    const feeder = upstream(te, "text_encoder_name");
    body.te_name = feeder?.type === "Wan4StepDownload" ? valueOf(feeder, "text_encoder") : valueOf(te, "text_encoder_name") ?? valueOf(te, "clip_name");
    const dev = valueOf(te, "device");
    body.te_device = dev === "cpu" ? "cpu" : dev === "gpu_then_free" ? "gpu_then_free" : "gpu";
  }
  const decode = downstream(sampler, 0).find((n) => n.type === "VAEDecode" || n.type === "VAEDecodeTiled");
  if (decode?.type === "VAEDecodeTiled") body.vae_tiling = "on";
  else if (decode) body.vae_tiling = valueOf(upstream(decode, "vae"), "tiling") ?? "auto";
  const advisor = app.graph.nodes.find((n) => n.type === "Wan4StepVRAMAdvisor");
  if (advisor) for (const k of OVERRIDES) body[k] = valueOf(advisor, k);
  return { body, loader };
}

async function refresh(sampler) {
  const { body, loader } = settingsFor(sampler);
  const sig = JSON.stringify(body);
  if (sig === sampler.__wan4stepSig) {
    if (loader && sampler.__wan4stepEstimate) loader.__wan4stepEstimate = sampler.__wan4stepEstimate;
    return;
  }
  sampler.__wan4stepSig = sig;
  try {
    const res = await api.fetchApi("/wan4step/estimate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: sig,
    });
    const data = await res.json();
    sampler.__wan4stepEstimate = data;
    if (loader) loader.__wan4stepEstimate = data;
  } catch (err) {
    // Server restarting or unreachable: keep the last numbers, try again on the next change.
    sampler.__wan4stepSig = null;
    console.warn("Wan4Step estimate unavailable:", err);
  }
  app.graph.setDirtyCanvas(true, false);
}

export async function refreshAll() {
  const samplers = (app.graph?.nodes ?? []).filter((n) => n.type === SAMPLER);
  await Promise.all(samplers.map(refresh));
  return samplers.map((s) => s.__wan4stepEstimate ?? null);
}

// Word-wrap `lines` to `width` pixels with the context's current font.
function wrap(ctx, lines, width) {
  const out = [];
  for (const line of lines) {
    let cur = "";
    for (const word of String(line).split(" ")) {
      const next = cur ? `${cur} ${word}` : word;
      if (cur && ctx.measureText(next).width > width) {
        out.push(cur);
        cur = `  ${word}`;
      } else cur = next;
    }
    out.push(cur);
  }
  return out;
}

function drawBox(ctx, node, lines, fits) {
  if (node.flags?.collapsed || !lines.length) return;
  ctx.save();
  ctx.font = `${BADGE_FONT}px sans-serif`;
  const pad = 5;
  const lh = BADGE_FONT + 3;
  const w = Math.max(node.size[0], 260);
  const rows = wrap(ctx, lines, w - 2 * pad);
  const h = rows.length * lh + 2 * pad;
  const y = node.size[1] + 6;
  node.__wan4stepBadgeBox = [0, y, w, h]; // node-local, for the layout checks of the browser tests
  ctx.fillStyle = fits === true ? COLORS.fits : fits === false ? COLORS.nofit : COLORS.unknown;
  ctx.globalAlpha = 0.92;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(0, y, w, h, 4);
  else ctx.rect(0, y, w, h);
  ctx.fill();
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#e8e8e8";
  rows.forEach((l, i) => ctx.fillText(l, pad, y + pad + BADGE_FONT - 1 + i * lh));
  ctx.restore();
}

function samplerLines(est) {
  if (!est) return [];
  const lines = [est.badge || est.note];
  if (est.known) lines.push(...(est.lines ?? []));
  if (est.recommendation) lines.push(est.recommendation);
  return lines.filter(Boolean);
}

app.registerExtension({
  name: "Wan4Step.Estimates",
  async setup() {
    setInterval(() => {
      refreshAll().catch((err) => console.warn("Wan4Step estimate:", err));
    }, 1000);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const isSampler = nodeData.name === SAMPLER;
    const isLoader = ["Wan4StepModelLoader", "UnetLoaderGGUF"].includes(nodeData.name);
    if (!isSampler && !isLoader) return;
    const draw = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const r = draw?.apply(this, arguments);
      const est = this.__wan4stepEstimate;
      if (est) drawBox(ctx, this, isSampler ? samplerLines(est) : [est.badge || est.note], est.fits);
      return r;
    };
  },
});
