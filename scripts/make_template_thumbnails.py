"""Thumbnails for ComfyUI's template browser: workflows/<name>.jpg, drawn by the real frontend.

The template browser asks for `<name>.jpg` next to every custom-node template (a 404 shows as a
console error and a blank card), so each workflow ships a picture of itself. This opens every
workflows/*.json in headless Chromium against a ComfyUI with this pack, fits the graph into a
square and saves a 512x512 JPEG. Re-run after changing a workflow's layout:

    python scripts/make_template_thumbnails.py [--server URL] [--chromium /usr/bin/chromium]

Without --server it boots a headless ComfyUI (wan4step_dev.comfy_server).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from wan4step_dev.workflow_cli import UI_DIR, ui_workflows  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SIDE = 900  # screenshot square, px
THUMB = 512

FIT = """async ([wf, side]) => {
  await app.loadGraphData(wf, true, true, wf.__name);
  await new Promise((r) => setTimeout(r, 1500));
  // frame the path itself: loaders -> prompt/size -> sampler (the Note and the video nodes are left out)
  const keep = ['Wan4StepModelLoader', 'UnetLoaderGGUF', 'Wan4StepBlockSwap', 'Wan4StepUMT5Loader',
                'Wan4StepVAELoader', 'CLIPTextEncode', 'EmptyHunyuanLatentVideo', 'Wan4StepSampler'];
  const ns = app.graph.nodes.filter((n) => keep.includes(n.type));
  const x0 = Math.min(...ns.map((n) => n.pos[0])) - 20, y0 = Math.min(...ns.map((n) => n.pos[1])) - 60;
  const x1 = Math.max(...ns.map((n) => n.pos[0] + n.size[0])) + 20;
  const y1 = Math.max(...ns.map((n) => n.pos[1] + n.size[1])) + 20;
  const c = app.canvas;
  const rect = c.canvas.getBoundingClientRect();
  const scale = side / Math.max(x1 - x0, y1 - y0);
  c.ds.scale = scale;
  const left = (rect.width - side) / 2, top = (rect.height - side) / 2;
  c.ds.offset = [left / scale - x0 + (side / scale - (x1 - x0)) / 2, top / scale - y0 + (side / scale - (y1 - y0)) / 2];
  // no estimate badges: they describe the machine that drew the picture, not the user's
  app.graph.nodes.forEach((n) => { n.__wan4stepEstimate = null; });
  c.setDirty(true, true);
  await new Promise((r) => setTimeout(r, 300));
  return { x: rect.left + left, y: rect.top + top };
}"""


def render(server: str, chromium: str, out_dir: Path = UI_DIR) -> list[Path]:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        # the square is cut from the middle of a larger page: the menus and minimap in the corners stay out
        page = browser.new_page(viewport={"width": SIDE + 1000, "height": SIDE + 300})
        page.goto(server)
        page.wait_for_function("() => window.app?.graph?.nodes && window.LiteGraph?.registered_node_types?.Wan4StepSampler",
                               timeout=90_000)
        page.wait_for_timeout(2000)
        page.keyboard.press("Escape")  # a fresh user gets the template browser on first start
        page.wait_for_timeout(500)
        for path in ui_workflows():
            wf = json.loads(path.read_text())
            wf["__name"] = path.stem
            at = page.evaluate(FIT, [wf, SIDE])
            page.evaluate("() => document.querySelectorAll('.p-toast-message').forEach((t) => t.remove())")
            png = page.screenshot(clip={"x": at["x"], "y": at["y"], "width": SIDE, "height": SIDE})
            img = Image.open(io.BytesIO(png)).convert("RGB").resize((THUMB, THUMB), Image.LANCZOS)
            out = out_dir / f"{path.stem}.jpg"
            img.save(out, "JPEG", quality=82, optimize=True)
            written.append(out)
            print(f"wrote {out.relative_to(REPO)}")
        browser.close()
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="a running ComfyUI with this pack (default: boot a headless one)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    if args.server:
        render(args.server, args.chromium)
        return 0
    from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI, ComfyServer, find_comfyui, prepare_base_dir, temp_base_dir

    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit(HOW_TO_GET_COMFYUI)
    extras = [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()]
    base = prepare_base_dir(temp_base_dir("wan4step-thumbs-"), extras)
    # Empty stand-ins for the model files, so loaders are drawn as a user with the files sees them
    # (not red "missing model"); nothing is loaded.
    for path in ui_workflows():
        for node in json.loads(path.read_text())["nodes"]:
            for m in node.get("properties", {}).get("models", []):
                f = base / "models" / m["directory"] / m["name"]
                f.parent.mkdir(parents=True, exist_ok=True)
                f.touch()
    from wan4step_dev.fixtures.tiny_models import write_tiny_models

    write_tiny_models(base / "models")
    server = ComfyServer(comfyui, base)
    with server:
        render(server.url, args.chromium)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
