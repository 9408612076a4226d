"""Thumbnails for ComfyUI's template browser: workflows/<name>.jpg, drawn by the real frontend.

The template browser shows `<name>.jpg` on each custom-node template's card (a 404 is a console
error and a blank card). Frontend 1.49 titles a custom node's card with the file name only, so
the picture carries what a person needs to choose: a screenshot of the workflow itself as it opens
(its saved view, 1600x1000 window) above its title, the machine it is planned for and one line of
description (`extra.wan4step_ui.template`, written by scripts/workflow_layout.py). Every card
therefore looks different. Re-run after changing a workflow's layout or metadata:

    python scripts/make_template_thumbnails.py [--server URL] [--chromium /usr/bin/chromium]

Without --server it boots a headless ComfyUI (wan4step_dev.comfy_server).
"""

from __future__ import annotations

import argparse
import base64
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
WINDOW = {"width": 1600, "height": 1000}  # the reference window the layout is made for
THUMB = 512

OPEN = """async ([wf, name]) => {
  await app.loadGraphData(wf, true, true, name);   // as a dropped file: the saved view
  await new Promise((r) => setTimeout(r, 1500));
  // no estimate badges: they describe the machine that drew the picture, not the user's
  app.graph.nodes.forEach((n) => { n.__wan4stepEstimate = null; n.__wan4stepBadgeBox = null; });
  app.canvas.deselectAll?.();
  // the minimap and zoom buttons float over the canvas corner: not part of the workflow
  document.querySelectorAll('.minimap-main-container, .p-buttongroup.absolute').forEach((e) => { e.style.visibility = 'hidden'; });
  app.canvas.setDirty(true, true);
  await new Promise((r) => setTimeout(r, 400));
  const c = app.canvas, s = c.ds.scale, [ox, oy] = c.ds.offset, T = LiteGraph.NODE_TITLE_HEIGHT;
  const rects = app.graph.nodes.map((n) => [n.pos[0], n.pos[1] - T, n.size[0], n.size[1] + T])
    .concat(app.graph.groups.map((g) => [...g.pos, ...g.size]));
  const x0 = Math.min(...rects.map((r) => r[0])), y0 = Math.min(...rects.map((r) => r[1]));
  const x1 = Math.max(...rects.map((r) => r[0] + r[2])), y1 = Math.max(...rects.map((r) => r[1] + r[3]));
  const pad = 8;
  return { x: (x0 + ox) * s - pad, y: (y0 + oy) * s - pad, width: (x1 - x0) * s + 2 * pad, height: (y1 - y0) * s + 2 * pad };
}"""

# the card: the workflow itself on top (the browser lays its "Node graph" chip over the top-left
# corner), then the title, the machine it is planned for and one line of description, large enough
# to read when the browser shows the 512 px picture at ~230 px
CARD = """([img, meta, side]) => {
  document.getElementById('wan4step-thumb')?.remove();
  const el = document.createElement('div');
  el.id = 'wan4step-thumb';
  el.style.cssText = `position:fixed;left:0;top:0;width:${side}px;height:${side}px;z-index:100000;`
    + 'background:#15181d;color:#eef1f5;font-family:Inter,Arial,sans-serif;display:flex;flex-direction:column;';
  const pic = document.createElement('div');
  pic.style.cssText = `flex:1;margin:12px 12px 0 12px;border-radius:8px;background:#202329 url(${img}) center/contain no-repeat;`;
  const foot = document.createElement('div');
  foot.style.cssText = 'padding:12px 22px 18px 22px;';
  const title = document.createElement('div');
  title.textContent = meta.title;
  title.style.cssText = 'font-size:42px;font-weight:700;line-height:1.1;white-space:nowrap;overflow:hidden;';
  const card = document.createElement('div');
  card.textContent = meta.card;
  card.style.cssText = 'display:inline-block;margin-top:8px;padding:3px 10px;border-radius:6px;'
    + 'background:#2f6f4a;font-size:22px;font-weight:600;';
  const desc = document.createElement('div');
  desc.textContent = meta.description;
  desc.style.cssText = 'margin-top:8px;font-size:22px;line-height:1.25;color:#c3cad4;';
  foot.append(title, card, desc);
  el.append(pic, foot);
  document.body.append(el);
  for (let px = 42; px > 24 && title.scrollWidth > title.clientWidth; px -= 2) title.style.fontSize = `${px}px`;
  return { x: 0, y: 0, width: side, height: side };
}"""


def render(server: str, chromium: str, out_dir: Path = UI_DIR) -> list[Path]:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport=WINDOW)
        page.goto(server)
        page.wait_for_function("() => window.app?.graph?.nodes && window.LiteGraph?.registered_node_types?.Wan4StepSampler",
                               timeout=90_000)
        page.wait_for_timeout(2000)
        for _ in range(3):  # a fresh user gets the template browser on first start
            page.keyboard.press("Escape")
            page.wait_for_timeout(300)
        for path in ui_workflows():
            wf = json.loads(path.read_text())
            meta = (wf.get("extra", {}).get("wan4step_ui") or {}).get("template")
            if not meta:
                raise SystemExit(f"{path.name} has no extra.wan4step_ui.template: run scripts/build_workflows.py")
            clip = page.evaluate(OPEN, [wf, path.stem])
            page.evaluate("() => document.querySelectorAll('.p-toast-message').forEach((t) => t.remove())")
            graph = page.screenshot(clip=clip)
            url = "data:image/png;base64," + base64.b64encode(graph).decode()
            box = page.evaluate(CARD, [url, meta, THUMB])
            page.wait_for_timeout(200)
            png = page.screenshot(clip=box)
            page.evaluate("() => document.getElementById('wan4step-thumb')?.remove()")
            img = Image.open(io.BytesIO(png)).convert("RGB")
            out = out_dir / f"{path.stem}.jpg"
            img.save(out, "JPEG", quality=85, optimize=True)
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
