"""What the browser tests need to act and look like a person: open a workflow by dropping its
file on the canvas or through the template browser, click at the spot a widget is drawn, and
check a screenshot's layout from the frontend's own node/widget bounds and canvas transform.

All geometry is in CSS px of the page (the window is 1600x1000, device pixel ratio 1):
screen = (graph + ds.offset) * ds.scale + canvas origin.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import urlparse

# Console errors a fresh, offline ComfyUI 0.33 + frontend 1.49 prints with or without this pack
# (measured: the same list loads with no custom nodes at all).
FRONTEND_OWN_ERRORS = ("ComfyApp graph accessed before initialization",)
USERDATA_404 = ("/user.css", "/api/userdata")  # a fresh user folder has no settings/workflows yet
READABLE_PX = 9.0  # smallest text a person reads without zooming in
TOLERANCE = 1.0  # px: rounding of the frontend's own layout

# -- acting ------------------------------------------------------------------------------------------
DROP = r"""async ([text, name]) => {
  const canvas = app.canvas.canvas;
  const r = canvas.getBoundingClientRect();
  const at = { clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true, cancelable: true };
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, { type: 'application/json' }));
  canvas.dispatchEvent(new DragEvent('dragenter', { ...at, dataTransfer: dt }));
  canvas.dispatchEvent(new DragEvent('dragover', { ...at, dataTransfer: dt }));
  canvas.dispatchEvent(new DragEvent('drop', { ...at, dataTransfer: dt }));
}"""

# where a widget is drawn on screen, and what the page has at its middle
WIDGET_AT = r"""([nodeId, name]) => {
  const c = app.canvas, s = c.ds.scale, [ox, oy] = c.ds.offset;
  const r = c.canvas.getBoundingClientRect();
  const n = app.graph.getNodeById(nodeId);
  const w = n.widgets.find((w) => w.name === name);
  const h = w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT;
  const x = r.left + (n.pos[0] + (w.width ?? n.size[0]) / 2 + ox) * s;
  const y = r.top + (n.pos[1] + w.y + Math.min(h, LiteGraph.NODE_WIDGET_HEIGHT) / 2 + oy) * s;
  const top = document.elementFromPoint(x, y);
  return { x, y, w: (w.width ?? n.size[0]) * s, h: h * s, top: top === c.canvas ? 'canvas' : (top?.tagName ?? null) };
}"""


def close_dialogs(page, tries: int = 5) -> None:
    """Close what covers the canvas (the first-run template browser, a warning) as a person does: Escape."""
    for _ in range(tries):
        if not page.evaluate("() => [...document.querySelectorAll('[role=dialog]')].some((d) => d.getClientRects().length)"):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def drop_workflow(page, path: Path, settle_ms: int = 1500) -> None:
    """Open a workflow the way a person does who drags the file onto the canvas."""
    page.evaluate(DROP, [path.read_text(), path.name])
    page.wait_for_function("(n) => app.graph.nodes.length === n", arg=len(json.loads(path.read_text())["nodes"]),
                           timeout=30_000)
    page.wait_for_timeout(settle_ms)


def click_widget(page, node_id: int, name: str) -> dict:
    """A real mouse click in the middle of a widget, where the frontend draws it. Returns where it
    clicked and what element the page had there (a widget covered by a text box reports TEXTAREA)."""
    at = page.evaluate(WIDGET_AT, [node_id, name])
    page.mouse.move(at["x"], at["y"])
    page.mouse.down()
    page.mouse.up()
    return at


def choose_combo(page, node_id: int, name: str, value: str) -> None:
    """Pick `value` in a combo widget with the mouse: click the widget, then the menu entry."""
    import re

    at = click_widget(page, node_id, name)
    assert at["top"] == "canvas", at
    entry = page.locator(".litecontextmenu .litemenu-entry", has_text=re.compile(f"^{re.escape(value)}$")).first
    entry.click()
    page.wait_for_function("([id, n, v]) => app.graph.getNodeById(id).widgets.find((w) => w.name === n).value === v",
                           arg=[node_id, name, value], timeout=5_000)


# -- looking -----------------------------------------------------------------------------------------
PROBE = r"""() => {
  const c = app.canvas, s = c.ds.scale, [ox, oy] = c.ds.offset;
  const cr = c.canvas.getBoundingClientRect();
  const scr = (x, y, w, h) => [cr.left + (x + ox) * s, cr.top + (y + oy) * s, w * s, h * s];
  const box = (el) => { const b = el.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };
  const T = LiteGraph.NODE_TITLE_HEIGHT;
  const nodes = app.graph.nodes.map((n) => {
    const widgets = (n.widgets ?? []).filter((w) => !w.hidden && n.isWidgetVisible?.(w) !== false).map((w) => {
      const h = w.computedHeight ?? (w.computeSize ? w.computeSize(n.size[0])[1] : LiteGraph.NODE_WIDGET_HEIGHT);
      const out = { name: w.name, type: w.type, y: w.y, h, rect: scr(n.pos[0], n.pos[1] + w.y, w.width ?? n.size[0], h) };
      const el = w.element;
      if (el instanceof HTMLElement && el.isConnected && el.getClientRects().length) {
        const text = el.querySelector('.tiptap') ?? el;
        const scale = el.offsetHeight ? el.getBoundingClientRect().height / el.offsetHeight : s;
        const fonts = [...text.querySelectorAll('p, li, h1, h2, h3, code, span')].concat([text])
          .filter((e) => (e.textContent ?? '').trim() || e.tagName === 'TEXTAREA')
          .map((e) => parseFloat(getComputedStyle(e).fontSize) * scale);
        Object.assign(out, { dom: box(el), tag: el.tagName, scroll: [text.scrollHeight, text.clientHeight],
                             markdown: !!el.querySelector('.tiptap'), min_font: fonts.length ? Math.min(...fonts) : null });
      }
      return out;
    });
    const badge = n.__wan4stepBadgeBox;
    return { id: n.id, type: n.type, title: n.title, collapsed: !!n.flags?.collapsed,
             rect: scr(n.pos[0], n.pos[1] - T, n.size[0], n.size[1] + T), size: [...n.size],
             badge: badge ? scr(n.pos[0] + badge[0], n.pos[1] + badge[1], badge[2], badge[3]) : null, widgets };
  });
  const groups = app.graph.groups.map((g) => {
    const ctx = c.canvas.getContext('2d');
    ctx.save(); ctx.font = g.font ?? `${g.font_size}px Arial`; const tw = ctx.measureText(g.title).width; ctx.restore();
    const [x, y, w, h] = g._bounding ?? [g.pos[0], g.pos[1], g.size[0], g.size[1]];
    return { title: g.title, rect: scr(x, y, w, h), title_w: (tw + (g.font_size ?? 24) * 0.5) * s, font_px: (g.font_size ?? 24) * s };
  });
  const overlays = [];
  const add = (name, el) => { if (el && el.getClientRects().length) { const b = box(el); if (b[2] > 0 && b[3] > 0) overlays.push([name, b]); } };
  add('side bar', document.querySelector('.side-tool-bar-container'));
  add('tabs', document.querySelector('.workflow-tabs-container'));
  document.querySelectorAll('.p-breadcrumb-item, .subgraph-breadcrumb .p-breadcrumb:not(.hidden)').forEach((e) => add('breadcrumb', e));
  add('action bar', document.querySelector('.actionbar'));
  add('minimap', document.querySelector('.litegraph-minimap'));
  add('canvas menu', document.querySelector('.p-buttongroup.absolute'));
  document.querySelectorAll('[role=dialog]').forEach((e) => add('dialog', e));
  return { scale: s, offset: [ox, oy], canvas: [cr.left, cr.top, cr.width, cr.height], window: [innerWidth, innerHeight],
           nodes, groups, overlays, low_quality: !!c.low_quality };
}"""

# every string the canvas draws on the next frame, with its size on screen (CSS px)
CANVAS_TEXT = r"""() => {
  const c = app.canvas, texts = [];
  const proto = CanvasRenderingContext2D.prototype, orig = proto.fillText;
  proto.fillText = function (text, x, y) {
    if (this.canvas === c.canvas && String(text).trim()) {
      const m = this.getTransform(), px = parseFloat((this.font.match(/([\d.]+)px/) || [0, 0])[1]);
      const d = devicePixelRatio;
      texts.push({ text: String(text).slice(0, 60), px: px * Math.hypot(m.a, m.b) / d,
                   x: (m.a * x + m.c * y + m.e) / d, y: (m.b * x + m.d * y + m.f) / d });
    }
    return orig.apply(this, arguments);
  };
  try { c.draw(true, true); } finally { proto.fillText = orig; }
  return texts;
}"""


def _inside(inner, outer, tol: float = TOLERANCE) -> bool:
    return (inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol
            and inner[0] + inner[2] <= outer[0] + outer[2] + tol and inner[1] + inner[3] <= outer[1] + outer[3] + tol)


def _overlap(a, b, tol: float = TOLERANCE) -> bool:
    return (a[0] + tol < b[0] + b[2] and b[0] + tol < a[0] + a[2]
            and a[1] + tol < b[1] + b[3] and b[1] + tol < a[1] + a[3])


def _contains_point(rect, x, y) -> bool:
    return rect[0] <= x <= rect[0] + rect[2] and rect[1] <= y <= rect[1] + rect[3]


def layout_problems(probe: dict, texts: list[dict]) -> list[str]:
    """What a person would find wrong at this view: nodes outside the view or under the menus,
    nodes on top of each other, widgets outside their node or on top of each other, text boxes
    outside their node or group, notes that need scrolling, group titles wider than the group,
    text too small to read, or a zoom at which the frontend draws no text at all."""
    out = []
    if probe["low_quality"]:
        out.append(f"zoom {probe['scale']:.2f}: the frontend draws no text at this zoom")
    cx, cy, cw, ch = probe["canvas"]
    view = [max(cx, 0), max(cy, 0), min(cw, probe["window"][0]), min(ch, probe["window"][1])]
    nodes = probe["nodes"]
    label = {n["id"]: f"{n['title'] or n['type']} (#{n['id']})" for n in nodes}
    for n in nodes:
        shapes = [n["rect"]] + ([n["badge"]] if n["badge"] else [])
        for r in shapes:
            if not _inside(r, view):
                out.append(f"{label[n['id']]} is outside the view ({[round(v) for v in r]})")
            for name, o in probe["overlays"]:
                if _overlap(r, o):
                    out.append(f"{label[n['id']]} is under the {name}")
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            sa = [a["rect"]] + ([a["badge"]] if a["badge"] else [])
            sb = [b["rect"]] + ([b["badge"]] if b["badge"] else [])
            if any(_overlap(x, y) for x in sa for y in sb):
                out.append(f"{label[a['id']]} overlaps {label[b['id']]}")
    for n in nodes:
        if n["collapsed"]:
            continue
        ws = n["widgets"]
        for w in ws:
            if w["y"] + w["h"] > n["size"][1] + TOLERANCE or w["y"] < -TOLERANCE:
                out.append(f"{label[n['id']]}: widget {w['name']} is cut off by the node's bottom edge")
            if "dom" in w:
                if not _inside(w["dom"], n["rect"]):
                    out.append(f"{label[n['id']]}: the {w['tag'].lower()} of {w['name']} spills out of its node")
                for other in ws:
                    if other is not w and _overlap(w["dom"], other["rect"], tol=2):
                        out.append(f"{label[n['id']]}: the {w['tag'].lower()} of {w['name']} covers widget {other['name']}")
                if w.get("markdown") and w["scroll"][0] > w["scroll"][1] + 2:
                    out.append(f"{label[n['id']]}: the note needs scrolling ({w['scroll'][0]} px of text in {w['scroll'][1]})")
                if w.get("min_font") is not None and w["min_font"] < READABLE_PX:
                    out.append(f"{label[n['id']]}: {w['name']} text is {w['min_font']:.1f} px on screen")
        for a_i, a in enumerate(ws):
            for b in ws[a_i + 1:]:
                if a["y"] + a["h"] > b["y"] + TOLERANCE and b["y"] + b["h"] > a["y"] + TOLERANCE:
                    out.append(f"{label[n['id']]}: widgets {a['name']} and {b['name']} overlap")
    for g in probe["groups"]:
        if g["title_w"] > g["rect"][2] + TOLERANCE:
            out.append(f"group '{g['title']}': its title is wider than the group")
        if not _inside(g["rect"], view):
            out.append(f"group '{g['title']}' is outside the view")
        for n in nodes:
            r = n["rect"]
            if _contains_point(g["rect"], r[0] + 1, r[1] + 1):  # the node belongs to this group
                for part in [r] + ([n["badge"]] if n["badge"] else []) + [w["dom"] for w in n["widgets"] if "dom" in w]:
                    if not _inside(part, g["rect"]):
                        out.append(f"{label[n['id']]} spills out of group '{g['title']}'")
                        break
    in_graph = [n["rect"] for n in nodes] + [g["rect"] for g in probe["groups"]]
    small = sorted({(round(t["px"], 1), t["text"]) for t in texts
                    if t["px"] < READABLE_PX and any(_contains_point(r, t["x"], t["y"]) for r in in_graph)})
    if small:
        out.append(f"{len(small)} texts below {READABLE_PX} px on screen, e.g. {small[:3]}")
    return sorted(set(out))


def look(page, shot: Path | None = None) -> tuple[dict, list[dict], list[str]]:
    """Probe the current view, screenshot it (when `shot` is given) and list what is wrong."""
    probe = page.evaluate(PROBE)
    texts = page.evaluate(CANVAS_TEXT)
    if shot is not None:
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
    return probe, texts, layout_problems(probe, texts)


def colored_pixels(png: bytes, rect, colors: list[tuple[int, int, int]], tol: int = 40) -> int:
    """How many pixels in `rect` of a screenshot are close to one of `colors` (the bars of a chart)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    x, y, w, h = (int(round(v)) for v in rect)
    import numpy as np

    crop = np.asarray(img.crop((max(x, 0), max(y, 0), x + w, y + h)), dtype=np.int32)
    near = np.zeros(crop.shape[:2], dtype=bool)
    for c in colors:
        near |= np.abs(crop - np.array(c, dtype=np.int32)).sum(axis=-1) <= tol
    return int(near.sum())


def console_errors(env: dict) -> list[str]:
    """Console errors of the session's page that are not the frontend's own on an offline install."""
    host = urlparse(env["server"].base_url).netloc
    bad = []
    for kind, text, url in env["console"]:
        if kind not in ("error", "pageerror"):
            continue
        offline = text.startswith("Failed to load resource: net::") and urlparse(url).netloc not in ("", host)
        userdata_404 = "status of 404" in text and any(urlparse(url).path.startswith(p) for p in USERDATA_404)
        if kind == "error" and (offline or userdata_404 or text in FRONTEND_OWN_ERRORS):
            continue
        bad.append(f"{kind}: {text} ({url})")
    return bad
