// Readable text in the pack's workflows. The frontend draws note and prompt text at the user's
// "textarea font size" (10 px by default); at the zoom a whole workflow fits the window (about
// 80 %) that is 8 px on screen. A workflow written by scripts/build_workflows.py says in
// extra.wan4step_ui.text_px which size its notes and text boxes need; this raises theirs to it
// (never lowers a larger user setting), for that graph's nodes only.
import { app } from "../../scripts/app.js";

const VAR = "--comfy-textarea-font-size";

export function applyReadableText(graph = app.graph) {
  const px = Number(graph?.extra?.wan4step_ui?.text_px);
  if (!px) return 0;
  const user = Number(app.ui?.settings?.getSettingValue?.("Comfy.TextareaFontSize")) || 0;
  const size = `${Math.max(px, user)}px`;
  let n = 0;
  for (const node of graph.nodes ?? []) {
    for (const w of node.widgets ?? []) {
      const el = w.element;
      if (!(el instanceof HTMLElement)) continue;
      if (el.tagName === "TEXTAREA" || el.classList.contains("comfy-markdown")) {
        el.style.setProperty(VAR, size);
        n++;
      }
    }
  }
  return n;
}

app.registerExtension({
  name: "Wan4Step.ReadableText",
  async afterConfigureGraph() {
    applyReadableText(app.graph);
  },
});
