"""Where every node of a shipped workflow sits, how big it is, its groups, and the view it opens at.

scripts/build_workflows.py says WHAT a workflow holds (nodes, values, links); `arrange(graph)`
decides how a person sees it. The numbers come from ComfyUI's frontend 1.49 at the reference
window of 1600x1000 CSS px (the browser tests open every workflow there):

- Text must stay readable: the canvas draws widget text at 12 px and titles at 14 px times the
  zoom, and below ~57 % zoom it draws no text at all. The template browser ignores the saved
  view and fits all nodes at 75 % of the window (`fitToBounds`), so a graph wider than ~1530
  units opens below 78 % zoom there; the columns below keep every workflow inside that.
- Node heights follow the frontend's `computeSize` (title 30, slot rows 20, widgets 20 + 4,
  padding 14; our display widgets add their own), so the frontend never has to grow a node
  into the one below it.
- The saved view (`extra.ds`) puts the whole graph below the tabs/breadcrumb (86 px), right of
  the side bar (59 px) and clear of the minimap (bottom right) at the largest zoom that fits,
  capped at 100 %.

Columns, left to right: the note (and the Download node under it), the loaders (in the order
the MODEL flows, then the text encoder and VAE loaders), the VRAM Advisor, prompt + size +
sampler, decode + video + save. A node type this file does not know goes into the loader
column. Template-browser metadata (title, description, order) is in `TEMPLATES`.
"""

from __future__ import annotations

import re
from typing import Any

from wan4step.workflow_convert import _spec, is_widget, widget_values_for

# ---- the frontend's geometry (ComfyUI frontend 1.49.6, LiteGraph) --------------------------------
TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT: drawn above node.pos
SLOT_H = 20  # NODE_SLOT_HEIGHT
WIDGET_H = 24  # NODE_WIDGET_HEIGHT 20 + 4 spacing
MULTILINE_H = 54  # a DOM textarea's default minimum (50) + 4
PAD_H = 14  # computeSize: + 8 after the widgets, + 6 at the end
# widgets this pack's web extension adds (web/wan4step_advisor.js: button, memory plan, text box)
EXTRA_H = {"Wan4StepVRAMAdvisor": WIDGET_H + (128 + 4) + (120 + 4)}
# nodes whose frontend widgets the schema does not tell (SaveVideo's dynamic combos, one hidden)
FIXED_H = {"SaveVideo": 130, "VAEDecode": 46}
# room below a node for the estimate badge web/wan4step_estimate.js draws there (12 px lines,
# wrapped to the node's width: the sampler's has about 10 lines at 266 units, 8 at 300)
BADGE_H = {"Wan4StepSampler": 180, "Wan4StepModelLoader": 56, "UnetLoaderGGUF": 56}
BADGE_H_WIDE = {"Wan4StepSampler": 150}  # nodes 300 units wide or more


def badge_h(node) -> int:
    wide = node.size[0] >= 300
    return (BADGE_H_WIDE if wide else BADGE_H).get(node.type, BADGE_H.get(node.type, 0))

GAP = 28  # between stacked nodes: room for the frontend's source badge above each title
GROUP_TITLE = 44  # a group's title bar (font 24) above its first node's title
GROUP_PAD = 8
COL_GAP = 16

WINDOW = (1600, 1000)  # the reference window, CSS px
SAFE = (80, 100, 1585, 990)  # left (side bar 59), top (tabs + breadcrumb 86), right, bottom
MINIMAP = (1330, 730)  # the minimap and zoom controls start here (to the window's bottom right)
NOTE_FONT_PX = 12  # web/wan4step_readable.js sets this text size on the pack's notes and prompts

NOTE_TYPES = ("MarkdownNote", "Note")
FILES_TYPES = ("Wan4StepDownload", "Wan4StepTinyModels")
ADVISOR_TYPES = ("Wan4StepVRAMAdvisor",)
PROMPT_TYPES = ("CLIPTextEncode", "EmptyHunyuanLatentVideo", "EmptyLatentImage")
SAMPLER_TYPES = ("Wan4StepSampler", "KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced")
OUTPUT_TYPES = ("VAEDecode", "VAEDecodeTiled", "CreateVideo", "SaveVideo", "SaveAnimatedWEBP", "PreviewImage")

# Template browser: frontend 1.49 titles a custom node's template with its file name and keeps the
# server's (unsorted) order; web/wan4step_templates.js orders the pack's cards by `order` and the
# thumbnails (scripts/make_template_thumbnails.py) carry the title, the machine and the description.
# Smallest card first: `order` and the machine come from the workflow's plan (build_workflows.PLANS,
# the card the advisor planned it for), so they follow when a plan changes.
TEMPLATES: dict[str, dict[str, str]] = {
    "wan4step_t2v_tiny_demo": dict(title="Tiny demo", card="any CPU, no downloads",
                                   description="The real Wan2.1 architecture at toy size: checks the install in seconds."),
    "wan4step_t2v_8gb_low_vram": dict(title="8 GB cards",
                                      description="Everything that can leave the GPU does: the safest plan for 8 GB."),
    "wan4step_t2v_gguf": dict(title="GGUF", description="QuantStack's GGUF tiers, blocks streamed as far as the card needs."),
    "wan4step_t2v_comfyui_gguf_interop": dict(title="ComfyUI-GGUF interop",
                                              description="city96's Unet Loader (GGUF) with Wan4Step Block Swap and sampler."),
    "wan4step_t2v_lightx2v_int8_rtx30": dict(title="LightX2V INT8 (RTX 30xx)",
                                             description="INT8 tensor cores for cards without FP8."),
    "wan4step_t2v_lightx2v_fp8": dict(title="LightX2V FP8", description="FP8 tensor cores: RTX 40xx/50xx, L40S, H100."),
    "wan4step_t2v_720p": dict(title="720p", description="1280x720, 81 frames: about 4x the work of 480p per step."),
}


def template_meta(g) -> dict | None:
    """Title, description, machine and sort key of a workflow's template card."""
    meta = TEMPLATES.get(g.name)
    if meta is None:
        return None
    meta = dict(meta)
    plan = getattr(g, "plan", None)
    if plan is None:
        meta["order"] = 0
        return meta
    from wan4step import cards

    vram = cards.by_name(plan.card).vram_bytes / 2**30
    w, h, f = plan.size
    meta.setdefault("card", f"planned for {plan.card}, {plan.ram_gb} GB RAM")
    meta["order"] = int(round(vram)) * 1000 + int(w * h * f / 1e5)
    return meta


# ---- node sizes --------------------------------------------------------------------------------
def _is_multiline(entry: Any) -> bool:
    typ, opts = _spec(entry)
    return typ == "STRING" and bool(opts.get("multiline"))


def content_height(node, node_def: dict | None, linked: set[str]) -> int:
    """The height (below the title) the frontend's computeSize gives this node."""
    if node.type in FIXED_H:
        return FIXED_H[node.type]
    if node_def is None:
        return int(node.size[1])
    sockets = 0
    multiline = 0
    for kind in ("required", "optional"):
        section = node_def["input"].get(kind) or {}
        for name in node_def.get("input_order", {}).get(kind, list(section)):
            entry = section.get(name)
            if entry is None:
                continue
            if not is_widget(entry):
                sockets += 1
            elif _is_multiline(entry):
                multiline += 1
    rows = max(sockets, len(node_def.get("output") or []), 1)
    widgets = len(widget_values_for(node_def, node.values))
    return (rows * SLOT_H + (widgets - multiline) * WIDGET_H + multiline * MULTILINE_H + PAD_H
            + EXTRA_H.get(node.type, 0))


def _markdown_lines(text: str, chars_per_line: int) -> float:
    """Rendered lines of a markdown note (links shown as their text), paragraph gaps included."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*`]", "", text)
    lines = 0.0
    for block in re.split(r"\n\s*\n", text.strip()):
        for line in block.splitlines():
            heading = line.startswith("#")
            n = max(1, -(-len(line.lstrip("#- ").strip()) // chars_per_line))
            lines += n * (1.6 if heading else 1.0)
        lines += 0.8  # paragraph margin
    return lines


def note_height(text: str, width: float) -> int:
    """A note tall enough to show `text` without scrolling at NOTE_FONT_PX ("normal" line height,
    ~1.2; measured in frontend 1.49 the estimate leaves 10-15 % to spare, the browser test checks)."""
    chars = int((width - 24) / (NOTE_FONT_PX * 0.55))
    return int(_markdown_lines(text, chars) * NOTE_FONT_PX * 1.3 + 44)


# ---- columns -------------------------------------------------------------------------------------
def _upstream(g, node, input_name: str):
    for src, _slot, dst, name in g.links:
        if dst == node.id and name == input_name:
            return next(n for n in g.nodes if n.id == src)
    return None


def _loaders(g, rest: list) -> tuple[list, list, list]:
    """(the MODEL chain: loader, patches, Block Swap in flow order; the CLIP loader; the VAE loader).
    Nodes of types this file does not know join the MODEL chain's column."""
    sampler = next((n for n in g.nodes if n.type in SAMPLER_TYPES), None)
    chain = []
    node = _upstream(g, sampler, "model") if sampler else None
    while node is not None and node in rest and node not in chain:
        chain.insert(0, node)
        node = _upstream(g, node, "model")
    prompt = next((n for n in g.nodes if n.type == "CLIPTextEncode"), None)
    decode = next((n for n in g.nodes if n.type in ("VAEDecode", "VAEDecodeTiled")), None)
    clip = _upstream(g, prompt, "clip") if prompt else None
    vae = _upstream(g, decode, "vae") if decode else None
    clip = [clip] if clip in rest and clip not in chain else []
    vae = [vae] if vae in rest and vae not in chain + clip else []
    others = [n for n in rest if n not in chain + clip + vae]
    return chain + others, clip, vae


def _stack(nodes: list, x: float, y: float, width: float, heights: dict[int, int]) -> float:
    """Place `nodes` top to bottom from y (the first title's top); returns the bottom of the last."""
    for i, n in enumerate(nodes):
        n.pos = (x, y + TITLE_H)
        n.size = (width, heights[n.id])
        y = y + TITLE_H + heights[n.id] + badge_h(n)
        if i < len(nodes) - 1:
            y += GAP
    return y


def _group(title: str, nodes: list, heights: dict[int, int], x: float, width: float) -> tuple:
    top = min(n.pos[1] for n in nodes) - TITLE_H - GROUP_TITLE
    bottom = max(n.pos[1] + heights[n.id] + badge_h(n) for n in nodes) + GROUP_PAD
    return (title, (x - GROUP_PAD, top, width + 2 * GROUP_PAD, bottom - top))


# The fit the template browser gives a graph whose nodes span `w` x `h` units: 75 % of the
# reference window for the nodes' bounds plus 10 units of padding around them (`createBounds`).
def template_fit(w: float, h: float) -> float:
    return min(0.75 * WINDOW[0] / max(w + 20, 300), 0.75 * WINDOW[1] / max(h + 20, 300))


TARGET_FIT = 0.76  # >= 9.1 px for the canvas's 12 px widget text when opened from the template browser


def _columns(g, roles: dict[str, list], variant: int) -> list[tuple[float, list[tuple[str, list]]]]:
    """The columns of one layout variant: [(width, [(group title or None, nodes), ...]), ...].

    Variant 0 keeps the loaders together and puts the files node under the note; the next ones
    move the VAE loader next to the decode, then the files node to the loaders and the text-encoder
    loader under the note or to the right column: for tall loaders and notes too long to share
    their column (`arrange` takes the first that opens readable from the template browser)."""
    notes, files, models, clip, vae = (roles[k] for k in ("notes", "files", "models", "clip", "vae"))
    advisor, prompt, sampler, output = (roles[k] for k in ("advisor", "prompt", "sampler", "output"))
    five = bool(advisor)
    w_note, w_mid, w_out = (384, 266, 240) if five else (420, 300, 250)
    files_title = "Step 1 - Download" if any(n.type == "Wan4StepDownload" for n in files) else "Step 1 - Tiny models"
    cols = []
    if variant == 0:  # note, files | every loader | ...
        step = 2 if files else 1
        cols.append((w_note, [(None, notes), (files_title, files)]))
        cols.append((w_mid, [(f"Step {step} - Models", models + clip + vae)]))
        vae = []
    elif variant == 1:  # note, files | model chain, text encoder | ... | VAE, decode, save
        step = 2 if files else 1
        cols.append((w_note, [(None, notes), (files_title, files)]))
        cols.append((w_mid, [(f"Step {step} - Models", models + clip)]))
    elif variant == 2:  # note, text encoder | files, model chain | ... | VAE, decode, save
        step = 1
        cols.append((w_note, [(None, notes), ("Text encoder", clip)]))
        cols.append((w_mid, [("Step 1 - Models", files + models)]))
    else:  # note | files, model chain | ... | text encoder, VAE, decode, save
        step = 1
        cols.append((w_note, [(None, notes)]))
        cols.append((w_mid, [("Step 1 - Models", files + models)]))
    if advisor:
        cols.append((270, [("VRAM Advisor", advisor)]))
    cols.append((w_mid, [(f"Step {step + 1} - Prompt", prompt), (f"Step {step + 2} - Sample", sampler)]))
    if variant == 3:
        cols.append((w_out, [("Text encoder, VAE", clip + vae), (f"Step {step + 3} - Save", output)]))
    else:
        cols.append((w_out, [(f"Step {step + 3} - Decode", vae + output)]))
    return [(w, [(t, ns) for t, ns in groups if ns]) for w, groups in cols if any(ns for _t, ns in groups)]


def _template_view_clear(g, heights: dict[int, int]) -> bool:
    """At the template browser's fit (nodes centered, `template_fit`), is everything drawn (badges
    and groups too) inside the window and clear of the minimap in the bottom-right corner?"""
    w, h = _node_bounds(g, heights)
    s = template_fit(w, h)
    x0 = min(n.pos[0] for n in g.nodes)
    y0 = min(n.pos[1] - TITLE_H for n in g.nodes)
    for r in graph_rects(g, heights):
        left = WINDOW[0] / 2 + (r[0] - x0 - w / 2) * s
        top = WINDOW[1] / 2 + (r[1] - y0 - h / 2) * s
        right, bottom = left + r[2] * s, top + r[3] * s
        if left < 0 or top < 0 or right > WINDOW[0] - 4 or bottom > WINDOW[1] - 4:
            return False
        if right > MINIMAP[0] and bottom > MINIMAP[1]:
            return False
    return True


def _place(g, columns, heights: dict[int, int]) -> list[tuple]:
    """Put the columns side by side; returns the groups."""
    groups = []
    x = 0.0
    for width, stacks in columns:
        y = 0.0 if stacks[0][0] is None else float(GROUP_TITLE)
        grouped = False
        for i, (title, nodes) in enumerate(stacks):
            if i:
                y += (GROUP_PAD + COL_GAP if grouped else GAP) + (GROUP_TITLE if title else 0)
            y = _stack(nodes, x, y, width, heights)
            if title:
                groups.append(_group(title, nodes, heights, x, width))
            grouped = bool(title)
        pad = GROUP_PAD if any(t for t, _n in stacks) else 0
        x += width + COL_GAP + pad + GROUP_PAD
    return groups


def _node_bounds(g, heights: dict[int, int]) -> tuple[float, float]:
    """Width and height of all nodes with their titles: what the template browser fits."""
    x0 = min(n.pos[0] for n in g.nodes)
    y0 = min(n.pos[1] - TITLE_H for n in g.nodes)
    x1 = max(n.pos[0] + n.size[0] for n in g.nodes)
    y1 = max(n.pos[1] + heights[n.id] for n in g.nodes)
    return x1 - x0, y1 - y0


def arrange(g) -> None:
    """Set every node's pos/size, the groups, the saved view and the template metadata of `g`."""
    by_type = lambda types: [n for n in g.nodes if n.type in types]  # noqa: E731
    roles = {"notes": by_type(NOTE_TYPES), "files": by_type(FILES_TYPES), "advisor": by_type(ADVISOR_TYPES),
             "prompt": by_type(PROMPT_TYPES), "sampler": by_type(SAMPLER_TYPES), "output": by_type(OUTPUT_TYPES)}
    placed = {id(n) for ns in roles.values() for n in ns}
    chain, clip, vae = _loaders(g, [n for n in g.nodes if id(n) not in placed])
    roles.update(models=chain, clip=clip, vae=vae)

    heights = {}
    for n in g.nodes:
        if n.type in NOTE_TYPES:
            continue
        linked = {name for (_s, _o, dst, name) in g.links if dst == n.id}
        heights[n.id] = content_height(n, g._def(n), linked)
    for n in roles["prompt"]:
        if n.type == "CLIPTextEncode":
            heights[n.id] = max(heights[n.id], 150)  # room to read and edit the prompt

    def place(variant: int) -> tuple[list, float, bool]:
        columns = _columns(g, roles, variant)
        for n in roles["notes"]:
            heights[n.id] = note_height(str(n.values.get("text", "")), columns[0][0])
        groups = _place(g, columns, heights)
        g.groups = groups
        return groups, template_fit(*_node_bounds(g, heights)), _template_view_clear(g, heights)

    # the first variant that the template browser opens readable and clear of its minimap; else the
    # readable one, else the one it opens largest
    scored = []
    for variant in (0, 1, 2, 3):
        groups, fit, clear = place(variant)
        if fit >= TARGET_FIT and clear:
            break
        scored.append(((fit >= TARGET_FIT, clear, fit), variant))
    else:
        groups, _fit, _clear = place(max(scored)[1])
    g.groups = groups
    g.view = saved_view(g, heights)
    g.template = template_meta(g)


# ---- the saved view ------------------------------------------------------------------------------
def graph_rects(g, heights: dict[int, int], groups: bool = True) -> list[tuple[float, float, float, float]]:
    """Everything drawn, in graph units: nodes with their titles and badges, and the groups."""
    rects = [(n.pos[0], n.pos[1] - TITLE_H, n.size[0], TITLE_H + heights[n.id] + badge_h(n)) for n in g.nodes]
    if groups:
        rects += [b for (_t, b) in g.groups]
    return rects


def saved_view(g, heights: dict[int, int]) -> dict:
    """The largest zoom (<= 1) at which everything sits in the safe area and clear of the minimap."""
    rects = graph_rects(g, heights)
    x0 = min(r[0] for r in rects)
    y0 = min(r[1] for r in rects)
    x1 = max(r[0] + r[2] for r in rects)
    y1 = max(r[1] + r[3] for r in rects)
    left, top, right, bottom = SAFE
    scale = min(1.0, (right - left) / (x1 - x0), (bottom - top) / (y1 - y0))
    while scale > 0.3:
        oy = top - y0 * scale  # top-aligned
        # centered in the safe area if that keeps clear of the minimap, else against the side bar
        for ox in (left + ((right - left) - (x1 - x0) * scale) / 2 - x0 * scale, left - x0 * scale):
            if all(not ((r[0] + r[2]) * scale + ox > MINIMAP[0] and (r[1] + r[3]) * scale + oy > MINIMAP[1])
                   for r in rects):
                scale = round(scale, 3)
                return {"scale": scale, "offset": [round(ox / scale, 1), round(oy / scale, 1)]}
        scale -= 0.01
    raise SystemExit(f"{g.name}: no view shows the whole graph clear of the minimap")
