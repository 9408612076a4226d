// The queue panel's "Total" for graphs with Wan4Step nodes.
// Frontend 1.49 computes Total as (nodes that sent `executed` or were cached) / (nodes in the
// prompt). A node sends `executed` only when it returns UI output, so for a text-to-video graph
// (loaders, CLIPTextEncode, the sampler, VAEDecode, CreateVideo: no UI output) Total sits at 0 %
// until SaveVideo ends the job. ComfyUI itself reports every node's state in `progress_state`
// (comfy_execution/progress.py: running, then finished); this marks each node that ComfyUI
// reports finished as done for the frontend's count, through the same `execution_cached`
// message the server sends for cached nodes (the execution store is its only listener). The
// node bars and the panel's "current node" percentage come from `progress_state` as before.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const done = new Map(); // prompt id -> node ids already marked

function graphHasWan4Step() {
  return (app.graph?.nodes ?? []).some((n) => String(n.type).startsWith("Wan4Step"));
}

export function onProgressState(detail) {
  const { prompt_id: promptId, nodes } = detail ?? {};
  if (!promptId || !nodes || !graphHasWan4Step()) return [];
  if (!done.has(promptId)) {
    done.clear(); // one job runs at a time; forget the previous one
    done.set(promptId, new Set());
  }
  const seen = done.get(promptId);
  // keys are execution ids ("5", or "12:5" inside a subgraph), the keys of the frontend's job
  const finished = Object.entries(nodes)
    .filter(([id, s]) => s?.state === "finished" && !seen.has(id))
    .map(([id]) => id);
  if (!finished.length) return [];
  for (const id of finished) seen.add(id);
  const detail2 = { nodes: finished, prompt_id: promptId };
  if (typeof api.dispatchCustomEvent === "function") api.dispatchCustomEvent("execution_cached", detail2);
  else api.dispatchEvent(new CustomEvent("execution_cached", { detail: detail2 }));
  return finished;
}

app.registerExtension({
  name: "Wan4Step.QueueTotal",
  async setup() {
    api.addEventListener("progress_state", (e) => onProgressState(e.detail));
  },
});
