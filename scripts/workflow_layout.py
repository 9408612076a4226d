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
# room below a node for the estimate badge web/wan4step_estimate.js draws there
BADGE_H = {"Wan4StepSampler": 180, "Wan4StepModelLoader": 56, "UnetLoaderGGUF": 56}

GAP = 28  # between stacked nodes: room for the frontend's source badge above each title
GROUP_TITLE = 44  # a group's title bar (font 24) above its first node's title
GROUP_PAD = 8
COL_GAP = 16

WINDOW = (1600, 1000)  # the reference window, CSS px
SAFE = (80, 100, 1585, 990)  # left (side bar 59), top (tabs + breadcrumb 86), right, bottom
MINIMAP = (1330, 730)  # the minimap and zoom controls start here (to the window's bottom right)
NOTE_FONT_PX = 13  # web/wan4step_readable.js sets this text size on the pack's notes and prompts

NOTE_TYPES = ("MarkdownNote", "Note")
FILES_TYPES = ("Wan4StepDownload",)
ADVISOR_TYPES = ("Wan4StepVRAMAdvisor",)
PROMPT_TYPES = ("CLIPTextEncode", "EmptyHunyuanLatentVideo", "EmptyLatentImage")
SAMPLER_TYPES = ("Wan4StepSampler", "KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced")
OUTPUT_TYPES = ("VAEDecode", "VAEDecodeTiled", "CreateVideo", "SaveVideo", "SaveAnimatedWEBP", "PreviewImage")

# Template browser: frontend 1.49 titles a custom node's template with its file name and keeps the
# server's (unsorted) order; web/wan4step_templates.js orders the pack's cards by `order` and the
# thumbnails (scripts/make_template_thumbnails.py) carry the title and description. Smallest card first.
TEMPLATES: dict[str, dict[str, Any]] = {
    "wan4step_t2v_tiny_demo": dict(order=0, title="Tiny demo", card="any CPU, no downloads",
                                   description="The real Wan2.1 architecture at toy size: checks the install in seconds."),
    "wan4step_t2v_8gb_low_vram": dict(order=1, title="8 GB cards", card="8 GB",
                                      description="GGUF, every block streamed from RAM, text encoder on the CPU, tiled VAE."),
    "wan4step_t2v_gguf_q4km": dict(order=2, title="GGUF Q4_K_M", card="8-16 GB",
                                   description="The default GGUF tier, blocks streamed as far as the card needs."),
    "wan4step_t2v_comfyui_gguf_interop": dict(order=3, title="ComfyUI-GGUF interop", card="8-16 GB",
                                              description="city96's Unet Loader (GGUF) with Wan4Step Block Swap and sampler."),
    "wan4step_t2v_lightx2v_int8_rtx30": dict(order=4, title="LightX2V INT8 (RTX 30xx)", card="10-24 GB",
                                             description="INT8 tensor cores for cards without FP8."),
    "wan4step_t2v_lightx2v_fp8": dict(order=5, title="LightX2V FP8", card="12-32 GB",
                                      description="FP8 tensor cores: RTX 40xx/50xx, L40S, H100."),
    "wan4step_t2v_720p": dict(order=6, title="720p", card="24-32 GB",
                              description="1280x720, 81 frames, LightX2V FP8."),
}


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


def _model_column(g, rest: list) -> list:
    """Loaders in the order the MODEL flows (loader, patches, Block Swap), then CLIP and VAE loaders."""
    sampler = next((n for n in g.nodes if n.type in SAMPLER_TYPES), None)
    chain = []
    node = _upstream(g, sampler, "model") if sampler else None
    while node is not None and node in rest and node not in chain:
        chain.insert(0, node)
        node = _upstream(g, node, "model")
    prompt = next((n for n in g.nodes if n.type == "CLIPTextEncode"), None)
    decode = next((n for n in g.nodes if n.type in ("VAEDecode", "VAEDecodeTiled")), None)
    for other in (_upstream(g, prompt, "clip") if prompt else None, _upstream(g, decode, "vae") if decode else None):
        if other is not None and other in rest and other not in chain:
            chain.append(other)
    return chain + [n for n in rest if n not in chain]


def _stack(nodes: list, x: float, y: float, width: float, heights: dict[int, int]) -> float:
    """Place `nodes` top to bottom from y (the first title's top); returns the bottom of the last."""
    for i, n in enumerate(nodes):
        n.pos = (x, y + TITLE_H)
        n.size = (width, heights[n.id])
        y = y + TITLE_H + heights[n.id] + BADGE_H.get(n.type, 0)
        if i < len(nodes) - 1:
            y += GAP
    return y


def _group(title: str, nodes: list, heights: dict[int, int], x: float, width: float) -> tuple:
    top = min(n.pos[1] for n in nodes) - TITLE_H - GROUP_TITLE
    bottom = max(n.pos[1] + heights[n.id] + BADGE_H.get(n.type, 0) for n in nodes) + GROUP_PAD
    return (title, (x - GROUP_PAD, top, width + 2 * GROUP_PAD, bottom - top))


def arrange(g) -> None:
    """Set every node's pos/size, the groups, the saved view and the template metadata of `g`."""
    by_type = lambda types: [n for n in g.nodes if n.type in types]  # noqa: E731
    notes, files, advisor = by_type(NOTE_TYPES), by_type(FILES_TYPES), by_type(ADVISOR_TYPES)
    prompt = by_type(PROMPT_TYPES)
    sampler, output = by_type(SAMPLER_TYPES), by_type(OUTPUT_TYPES)
    placed = {id(n) for n in [*notes, *files, *advisor, *prompt, *sampler, *output]}
    models = _model_column(g, [n for n in g.nodes if id(n) not in placed])
    five = bool(advisor)
    w_note, w_mid, w_out = (360, 266, 240) if five else (400, 320, 280)
    w_adv = 270

    heights = {}
    for n in g.nodes:
        if n.type in NOTE_TYPES:
            continue
        linked = {name for (_s, _o, dst, name) in g.links if dst == n.id}
        heights[n.id] = content_height(n, g._def(n), linked)
    for n in prompt:
        if n.type == "CLIPTextEncode":
            heights[n.id] = max(heights[n.id], 150)  # room to read and edit the prompt

    groups = []
    x = 0.0
    top = float(GROUP_TITLE)  # every column's first node title sits under a group title bar
    # column A: the note, then Download under its own group
    if notes:
        text_h = {n.id: note_height(str(n.values.get("text", "")), w_note) for n in notes}
        y = 0.0
        for n in notes:
            heights[n.id] = text_h[n.id]
        y = _stack(notes, x, y, w_note, heights)
        if files:
            y += GAP + GROUP_TITLE
            _stack(files, x, y, w_note, heights)
            groups.append(_group("Step 1 - Download", files, heights, x, w_note))
        x += w_note + COL_GAP + GROUP_PAD
    # column B: the loaders
    if models:
        _stack(models, x, top, w_mid, heights)
        groups.append(_group(f"Step {2 if files else 1} - Models", models, heights, x, w_mid))
        x += w_mid + COL_GAP + 2 * GROUP_PAD
    # column C: the advisor
    if advisor:
        _stack(advisor, x, top, w_adv, heights)
        groups.append(_group("VRAM Advisor", advisor, heights, x, w_adv))
        x += w_adv + COL_GAP + 2 * GROUP_PAD
    # column D: prompt and size, then the sampler
    step = 3 if files else 2
    if prompt:
        y = _stack(prompt, x, top, w_mid, heights)
        groups.append(_group(f"Step {step} - Prompt", prompt, heights, x, w_mid))
        if sampler:
            y += GROUP_PAD + COL_GAP + GROUP_TITLE
            _stack(sampler, x, y, w_mid, heights)
            groups.append(_group(f"Step {step + 1} - Sample", sampler, heights, x, w_mid))
        x += w_mid + COL_GAP + 2 * GROUP_PAD
    # column E: decode, video, save
    if output:
        _stack(output, x, top, w_out, heights)
        groups.append(_group(f"Step {step + 2} - Save", output, heights, x, w_out))
    g.groups = groups
    g.view = saved_view(g, heights)
    meta = TEMPLATES.get(g.name)
    if meta:
        g.template = dict(meta)


# ---- the saved view ------------------------------------------------------------------------------
def graph_rects(g, heights: dict[int, int]) -> list[tuple[float, float, float, float]]:
    """Everything drawn, in graph units: nodes with their titles and badges, and the groups."""
    rects = [(n.pos[0], n.pos[1] - TITLE_H, n.size[0], TITLE_H + heights[n.id] + BADGE_H.get(n.type, 0))
             for n in g.nodes]
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
        # centered horizontally in the safe area, top-aligned
        ox = left + ((right - left) - (x1 - x0) * scale) / 2 - x0 * scale
        oy = top - y0 * scale
        clear = all(not ((r[0] + r[2]) * scale + ox > MINIMAP[0] and (r[1] + r[3]) * scale + oy > MINIMAP[1])
                    for r in rects)
        if clear:
            break
        scale -= 0.01
    scale = round(scale, 3)
    return {"scale": scale, "offset": [round(ox / scale, 1), round(oy / scale, 1)]}
