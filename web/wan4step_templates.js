// The pack's cards in ComfyUI's template browser, smallest card first.
// Frontend 1.49 lists a custom node pack's templates in the order GET /workflow_templates gives
// them, which is the server's directory order (unsorted glob), and titles each card with its file
// name (Comfy-Org/ComfyUI_frontend issue #13462; index.json for custom nodes is the open PR
// #9284). Each workflow written by scripts/build_workflows.py carries its place in
// extra.wan4step_ui.template.order; this sorts the pack's list by it when the browser loads the
// list. Other packs' lists are left as they are. The thumbnails carry the title and description.
import { api } from "../../scripts/api.js";

// This file is served from /extensions/<the pack's folder name>/: the key of our list.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2, -1)[0] ?? "");
const LAST = Number.MAX_SAFE_INTEGER;

async function orderOf(name) {
  try {
    const res = await fetch(api.apiURL(`/workflow_templates/${encodeURIComponent(PACK)}/${encodeURIComponent(name)}.json`));
    const wf = await res.json();
    const order = wf?.extra?.wan4step_ui?.template?.order;
    return typeof order === "number" ? order : LAST;
  } catch {
    return LAST;
  }
}

export async function orderTemplates(names) {
  const keys = await Promise.all(names.map(orderOf));
  return names
    .map((name, i) => ({ name, key: keys[i] }))
    .sort((a, b) => a.key - b.key || a.name.localeCompare(b.name))
    .map((e) => e.name);
}

if (PACK && typeof api.getWorkflowTemplates === "function" && !api.__wan4stepTemplates) {
  const original = api.getWorkflowTemplates;
  api.__wan4stepTemplates = true;
  api.getWorkflowTemplates = async function (...args) {
    const all = await original.apply(this, args);
    const ours = all?.[PACK];
    if (Array.isArray(ours) && ours.length > 1) all[PACK] = await orderTemplates(ours);
    return all;
  };
}
