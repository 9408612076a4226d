"""Write the UI-format workflows in workflows/ from the descriptions below, then their API twins.

Why a builder: the frontend stores widget values by position, so a workflow written by hand
breaks silently when a node gains a widget. Here every value is given by name and laid out
with the node definitions of a real ComfyUI (`/object_info`, the same walk as
`wan4step.workflow_convert`); model files, URLs and folders come from `wan4step.catalog`,
the table the advisor and the Download node use.

One answer per card: each workflow names the machine it is planned for (`PLANS`), and its
files, Block Swap, text-encoder placement and VAE tiling are `wan4step.advisor`'s answer for
that machine (`node_settings`); README's card and workflow tables are rendered from the same
answers between marker comments. tests/unit/test_one_answer.py re-runs the advisor and fails
when the files disagree, so after changing the advisor, the memory model or the catalog,
re-run this script and commit the diff.

The files it writes are the source of truth (they open and save in the ComfyUI frontend like
any workflow); re-run this after a node's schema changes, then commit the diff:

    python scripts/build_workflows.py [--server URL]        # UI files + workflows/api/ + README tables
    python scripts/build_workflows.py --readme-only         # only README's tables (no ComfyUI needed)
    python -m wan4step_dev.workflow_cli [--server URL]      # only the API twins
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from wan4step import advisor, cards, catalog  # noqa: E402
from wan4step.memory_model import MemoryModel  # noqa: E402
from wan4step.tiny import install as tiny_install  # noqa: E402
from wan4step.workflow_convert import is_widget, widget_values_for  # noqa: E402
from wan4step_dev.workflow_cli import UI_DIR, convert_files, fetch_object_info  # noqa: E402

if str(REPO / "scripts") not in sys.path:
    sys.path.append(str(REPO / "scripts"))
from workflow_layout import NOTE_FONT_PX, arrange  # noqa: E402  (positions, sizes, groups, view)

FRONTEND_VERSION = "1.49.6"
HF = "https://huggingface.co"
PACK_CNR = "comfyui-wan4step"  # pyproject [project].name: the Registry id ComfyUI Manager installs
GGUF_CNR = "comfyui-gguf"
PROMPT = ("A red fox trots through fresh snow in a birch forest at sunrise, its breath steaming, "
          "low tracking shot, soft golden light, shallow depth of field, cinematic.")
GREEN, RED = ("#232", "#353"), ("#322", "#533")
NOTE_COLOR = ("#432", "#653")
GROUP_COLOR = "#3f789e"


# --------------------------------------------------------------------------------------
# model files: one place, from the catalog
# --------------------------------------------------------------------------------------
def hf_url(spec: catalog.FileSpec) -> str:
    return f"{HF}/{spec.repo_id}/resolve/{spec.revision}/{spec.pattern}?download=true"


def model_entry(spec: catalog.FileSpec) -> dict:
    """A `properties.models` entry: the frontend offers to download it when the file is missing."""
    return {"name": spec.dest, "url": hf_url(spec), "directory": spec.folder}


def te_entry(key: str = "umt5_fp8") -> dict:
    return model_entry(catalog.text_encoder(key).files[0])


def vae_entry() -> dict:
    return model_entry(catalog.vae(catalog.DEFAULT_VAE).files[0])


def file_lines(weights_key: str | None, te_key: str = "umt5_fp8") -> str:
    """Markdown list of the files a workflow needs and where they go."""
    out = []
    if weights_key:
        w = catalog.weights(weights_key)
        if w.kind == "gguf":
            spec = w.files[0]
            out.append(f"- **DiT** [{spec.dest}]({hf_url(spec).split('?')[0]}) ({w.size_bytes / 1e9:.1f} GB) "
                       f"→ `ComfyUI/models/{spec.folder}/`")
        else:
            folder = w.model_name.rstrip("/")
            out.append(f"- **DiT** LightX2V `{folder.rsplit('/', 1)[-1]}/` (40 `block_N.safetensors` + "
                       f"`non_block.safetensors`, {w.size_bytes / 1e9:.1f} GB) from "
                       f"[{catalog.LIGHTX2V_REPO}]({HF}/{catalog.LIGHTX2V_REPO}/tree/main/{folder.rsplit('/', 1)[-1]}) "
                       f"→ `ComfyUI/models/diffusion_models/{folder}/`")
    te = catalog.text_encoder(te_key)
    out.append(f"- **Text encoder** [{te.name}]({hf_url(te.files[0]).split('?')[0]}) ({te.size_bytes / 1e9:.1f} GB) "
               f"→ `ComfyUI/models/text_encoders/`")
    v = catalog.vae(catalog.DEFAULT_VAE)
    out.append(f"- **VAE** [{v.name}]({hf_url(v.files[0]).split('?')[0]}) ({v.size_bytes / 1e9:.2f} GB) "
               f"→ `ComfyUI/models/vae/`")
    return "\n".join(out)


DOWNLOAD_NOTE = ("**Wan4Step Download** (wired into the loaders) fetches exactly these files on the first run, "
                 "skips files already present, resumes an interrupted download and checks sha256. "
                 "Already have them under other names? Delete its three links and pick your files in the loaders.")
RECIPE_NOTE = ("The sampler runs the distilled recipe: **4 steps, shift 5, cfg 1** (the negative prompt is "
               "unused). Width/height: multiples of 16; frames: 4n+1 (81 = 5 s at 16 fps).")


# --------------------------------------------------------------------------------------
# a tiny graph model that serializes like the frontend
# --------------------------------------------------------------------------------------
@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    size: tuple[float, float]
    values: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    color: tuple[str, str] | None = None
    models: list[dict] | None = None
    mode: int = 0


@dataclass
class Graph:
    name: str
    info: dict
    nodes: list[Node] = field(default_factory=list)
    links: list[tuple[int, int, int, str]] = field(default_factory=list)  # src id, src slot, dst id, dst input name
    groups: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)
    view: dict | None = None  # extra.ds, set by workflow_layout.arrange
    template: dict | None = None  # template-browser metadata, set by workflow_layout.arrange

    def add(self, type_: str, pos, size, values=None, **kw) -> Node:
        nid = kw.pop("id", None) or (max((n.id for n in self.nodes), default=0) + 1)
        node = Node(nid, type_, pos, size, dict(values or {}), **kw)
        self.nodes.append(node)
        return node

    def link(self, src: Node, slot: int, dst: Node, input_name: str) -> None:
        self.links.append((src.id, slot, dst.id, input_name))

    def note(self, pos, size, text: str, title: str = "Read me") -> Node:
        return self.add("MarkdownNote", pos, size, {"text": text}, title=title, color=NOTE_COLOR)

    # -- serialization ------------------------------------------------------------
    def _def(self, node: Node) -> dict | None:
        return None if node.type in ("MarkdownNote", "Note") else self.info[node.type]

    def _inputs(self, node: Node, d: dict) -> list[dict]:
        """Socket inputs (and widgets fed by a link), like templates saved by the frontend."""
        linked = {name for (_, _, dst, name) in self.links if dst == node.id}
        out = []
        for kind in ("required", "optional"):
            section = d["input"].get(kind) or {}
            for name in d.get("input_order", {}).get(kind, list(section)):
                entry = section[name]
                typ = entry[0] if isinstance(entry[0], str) else "COMBO"
                if is_widget(entry) and name not in linked:
                    continue
                slot = {"name": name, "type": typ, "link": None}
                if kind == "optional":
                    slot["shape"] = 7
                if is_widget(entry):
                    slot["widget"] = {"name": name}
                out.append(slot)
        return out

    def serialize(self) -> dict:
        ids = {n.id: n for n in self.nodes}
        node_inputs = {n.id: self._inputs(n, self._def(n)) if self._def(n) else [] for n in self.nodes}
        node_outputs: dict[int, list[dict]] = {}
        for n in self.nodes:
            d = self._def(n)
            outs = []
            if d:
                for i, typ in enumerate(d.get("output") or []):
                    name = (d.get("output_name") or [])[i] if i < len(d.get("output_name") or []) else typ
                    outs.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "links": []})
            node_outputs[n.id] = outs
        links = []
        for lid, (src, slot, dst, name) in enumerate(self.links, start=1):
            ins = node_inputs[dst]
            idx = next((i for i, s in enumerate(ins) if s["name"] == name), None)
            if idx is None:
                raise SystemExit(f"{self.name}: {ids[dst].type} has no input {name!r}")
            out = node_outputs[src][slot]
            ins[idx]["link"] = lid
            out["links"].append(lid)
            out["slot_index"] = slot
            links.append([lid, src, slot, dst, idx, out["type"]])

        order = self._execution_order()
        nodes = []
        for n in self.nodes:
            d = self._def(n)
            props: dict[str, Any] = {}
            if d:
                props["Node name for S&R"] = n.type
                mod = d.get("python_module", "")
                props["cnr_id"] = (PACK_CNR if "Wan4Step" in mod or n.type.startswith("Wan4Step")
                                   else GGUF_CNR if "GGUF" in mod else "comfy-core")
            if n.models:
                props["models"] = n.models
            wv = widget_values_for(d, n.values) if d else [n.values.get("text", "")]
            entry = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {},
                     "order": order[n.id], "mode": n.mode, "inputs": node_inputs[n.id], "outputs": node_outputs[n.id]}
            if n.title:
                entry["title"] = n.title
            entry["properties"] = props
            entry["widgets_values"] = wv
            if n.color:
                entry["color"], entry["bgcolor"] = n.color
            nodes.append(entry)
        groups = [{"id": i, "title": t, "bounding": list(b), "color": GROUP_COLOR, "font_size": 24, "flags": {}}
                  for i, (t, b) in enumerate(self.groups, start=1)]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"wan4step/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": max(n.id for n in self.nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": links,
            "groups": groups,
            "config": {},
            "extra": {"ds": self.view or {"scale": 1.0, "offset": [0, 0]},
                      "wan4step_ui": {"text_px": NOTE_FONT_PX, **({"template": self.template} if self.template else {})},
                      "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }

    def _execution_order(self) -> dict[int, int]:
        deps = {n.id: {src for (src, _, dst, _) in self.links if dst == n.id} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order


# --------------------------------------------------------------------------------------
# settings: every baked value is the advisor's answer for a named machine
# --------------------------------------------------------------------------------------
README = REPO / "README.md"
DISK_GB = 500  # free disk every plan states; the advisor only warns when downloads would not fit


@dataclass(frozen=True)
class Plan:
    """The machine a workflow or a README row is planned for.

    A card from wan4step/data/cards.json (its VRAM and architecture) plus the RAM and free disk,
    which a card table cannot know: the same overrides the VRAM Advisor node takes (gpu, ram_gb,
    disk_gb), so the node set to these values gives the same answer.
    """

    card: str
    ram_gb: int
    size: tuple[int, int, int] = (832, 480, 81)  # width, height, frames
    priority: str = "speed"
    weights_format: str = "any"  # the advisor node's weights_format: "any" or one kind ("gguf")
    disk_gb: int = DISK_GB

    def machine(self) -> advisor.Machine:
        if cards.by_name(self.card) is None:
            raise SystemExit(f"plan names {self.card!r}, which is not in wan4step/data/cards.json")
        blank = advisor.Machine(None, 0, 0, None, 0, 0)
        return advisor.with_overrides(blank, gpu=self.card, ram_gb=self.ram_gb, disk_gb=self.disk_gb)

    def advise(self) -> advisor.Recommendation:
        w, h, f = self.size
        formats = () if self.weights_format == "any" else (self.weights_format,)
        return advisor.recommend(self.machine(), advisor.Request(w, h, f, self.priority, formats=formats))

    def advisor_values(self) -> dict:
        """The Wan4Step VRAM Advisor node's widgets that plan for this machine."""
        w, h, f = self.size
        return {"width": w, "height": h, "frames": f, "priority": self.priority, "gpu": self.card, "vram_gb": 0.0,
                "free_vram_gb": 0.0, "compute_capability": "auto", "ram_gb": float(self.ram_gb),
                "disk_gb": float(self.disk_gb), "attention": "auto", "weights_format": self.weights_format}

    def as_dict(self) -> dict:
        """What a workflow stores in extra.wan4step.planned_for (the tests re-run the advisor from it)."""
        w, h, f = self.size
        return {"gpu": self.card, "ram_gb": self.ram_gb, "disk_gb": self.disk_gb, "width": w, "height": h,
                "frames": f, "priority": self.priority, "weights_format": self.weights_format}

    def describe(self) -> str:
        w, h, f = self.size
        vram = round(cards.by_name(self.card).vram_bytes / 2**30)
        only = f", {self.weights_format.upper()} files only" if self.weights_format != "any" else ""
        return (f"{self.card} ({vram} GB VRAM) with {self.ram_gb} GB RAM and {self.disk_gb} GB free disk, "
                f"{w}×{h}×{f}, priority *{self.priority}*{only}")


# Each shipped workflow's machine. The GGUF paths ask for GGUF files only (at speed the
# advisor prefers LightX2V FP8/INT8 on these cards); the 8 GB path plans with priority fit.
PLANS: dict[str, Plan] = {
    "wan4step_t2v_gguf": Plan("RTX 4080 SUPER", 32, weights_format="gguf"),
    "wan4step_t2v_lightx2v_fp8": Plan("RTX 4090", 64),
    "wan4step_t2v_lightx2v_int8_rtx30": Plan("RTX 3090", 64),
    "wan4step_t2v_comfyui_gguf_interop": Plan("RTX 3060 12GB", 32, weights_format="gguf"),
    "wan4step_t2v_8gb_low_vram": Plan("RTX 4060 8GB", 16, priority="fit"),
    "wan4step_t2v_720p": Plan("RTX 4090", 64, size=(1280, 720, 81)),
}

# README's "Which files for which card": every consumer card of the table, one RAM each (the
# 8 GB card twice: its answer depends on the RAM), at both recipe sizes.
README_ROWS = [Plan("RTX 5090", 64), Plan("RTX 4090", 64), Plan("RTX 3090", 64), Plan("RTX 4080 SUPER", 32),
               Plan("RTX 5080", 32), Plan("RTX 4070 12GB", 32), Plan("RTX 5070", 32), Plan("RTX 3060 12GB", 32),
               Plan("RTX 3080 10GB", 32), Plan("RTX 4060 8GB", 32), Plan("RTX 4060 8GB", 16)]
README_SIZES = [(832, 480, 81), (1280, 720, 81)]


def planned(name: str) -> tuple[Plan, advisor.Recommendation]:
    plan = PLANS[name]
    rec = plan.advise()
    if not rec.fits:
        raise SystemExit(f"{name}: the advisor says nothing fits {plan.describe()}: {rec.reason}")
    return plan, rec


def node_settings(plan: Plan, rec: advisor.Recommendation) -> dict[str, dict]:
    """The widget values each node type gets from the advisor's answer (tests/unit/test_one_answer.py
    states the same mapping independently)."""
    w, h, f = plan.size
    return {
        "Wan4StepDownload": {"weights": rec.weights_key, "text_encoder": rec.text_encoder_key, "vae": rec.vae_key},
        "Wan4StepModelLoader": {"model_name": rec.model_name},
        "UnetLoaderGGUF": {"unet_name": rec.model_name},
        "Wan4StepBlockSwap": {"blocks_to_swap": rec.blocks_to_swap, "prefetch": rec.prefetch,
                              "source": "disk" if rec.placement == "disk" else "ram"},
        "Wan4StepUMT5Loader": {"text_encoder_name": rec.text_encoder_name, "device": rec.text_encoder_device},
        "Wan4StepVAELoader": {"vae_name": rec.vae_name, "tiling": "on" if rec.vae_tiled else "off"},
        "EmptyHunyuanLatentVideo": {"width": w, "height": h, "length": f},
        "Wan4StepVRAMAdvisor": plan.advisor_values(),
    }


def apply_settings(g: Graph, plan: Plan, rec: advisor.Recommendation) -> None:
    """Overwrite every planned widget of the graph's nodes with the advisor's answer."""
    settings = node_settings(plan, rec)
    for n in g.nodes:
        n.values.update(settings.get(n.type, {}))
    g.plan = plan


def weights_short(rec: advisor.Recommendation) -> str:
    return weights_short_label(rec.weights_label)


def settings_sentence(rec: advisor.Recommendation) -> str:
    if rec.blocks_to_swap == 0:
        swap = "all 40 blocks stay on the GPU (Block Swap 0)"
    else:
        swap = (f"Block Swap streams {rec.blocks_to_swap} of 40 blocks from "
                f"{'disk (source disk: RAM cannot hold them)' if rec.placement == 'disk' else 'pinned RAM'}")
    te = {"gpu": "stays on the GPU", "gpu_then_free": "encodes on the GPU and is freed before sampling",
          "cpu": "runs on the CPU"}[rec.text_encoder_device]
    return (f"**{rec.weights_label}**; {swap}; the text encoder {te} (`{rec.text_encoder_device}`); "
            f"the VAE decodes {'in tiles' if rec.vae_tiled else 'untiled'}")


def plan_note(plan: Plan, rec: advisor.Recommendation, has_advisor: bool) -> str:
    """The note paragraph saying which machine the baked settings were planned for."""
    how = ("set the VRAM Advisor's *gpu* to *auto (detected)* and *ram_gb* / *disk_gb* to 0, press **Advise now** "
           "and copy its numbers" if has_advisor else
           "add a **Wan4Step VRAM Advisor** node (category Wan4Step), set it to your card and copy its numbers")
    return (f"**Planned for** an {plan.describe()}: the VRAM Advisor's answer, set in this workflow, is "
            f"{settings_sentence(rec)}. Another machine? {how[0].upper() + how[1:]}, or set Block Swap to -1 (auto).")


# -- README ------------------------------------------------------------------------------------
def _cell(rec: advisor.Recommendation) -> str:
    if not rec.fits:
        why = next((w.removeprefix("does not fit: ") for w in rec.warnings if w.startswith("does not fit")), "")
        return f"does not fit ({why})" if why else "does not fit"
    disk = " from disk" if rec.placement == "disk" else ""
    return (f"{weights_short(rec)}, swap {rec.blocks_to_swap}{disk}, TE `{rec.text_encoder_device}`, "
            f"VAE {'tiled' if rec.vae_tiled else 'untiled'}")


def card_table_markdown() -> str:
    """README's card table, its legend, what detection changes, and the files it names."""
    model = MemoryModel.load()
    desk = model.decision("desktop_reserve_bytes") / 2**30
    osr = model.host("os_reserve_bytes") / 2**30
    sizes = " and ".join(f"{w}×{h}×{f}" for w, h, f in README_SIZES)
    lines = [
        f"The VRAM Advisor's answer (priority *speed*, prefetch 2, {DISK_GB} GB free disk) for {sizes}. "
        "*swap* = blocks Block Swap streams from pinned RAM (*from disk*: memory-mapped, when RAM cannot hold "
        "them), *TE* = where the UMT5 text encoder runs (`gpu`: stays beside the DiT, `gpu_then_free`: encodes "
        "on the GPU and is freed before sampling, `cpu`), *VAE* = tiled or untiled decode.",
        "",
        "| card | VRAM | RAM | " + " | ".join(f"{w}×{h}×{f}" for w, h, f in README_SIZES) + " |",
        "|---|---|---|" + "---|" * len(README_SIZES),
    ]
    used = []
    for row in README_ROWS:
        card = cards.by_name(row.card)
        cells = []
        for size in README_SIZES:
            rec = dataclasses.replace(row, size=size).advise()
            cells.append(_cell(rec))
            if rec.fits and rec.weights_key not in used:
                used.append(rec.weights_key)
        lines.append(f"| {row.card} | {round(card.vram_bytes / 2**30)} GB | {row.ram_gb} GB | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Your machine can get a different answer.** These rows are planned from the card table: the card's "
        f"VRAM minus {desk:g} GiB for the desktop, the row's RAM minus {osr:g} GiB for the OS. On your machine the "
        "advisor reads what it detects: the VRAM free now (plus what ComfyUI itself holds), the RAM available now "
        "(not the total) and the free disk (downloads that would not fit only give a warning). Less free VRAM "
        f"streams more blocks; less RAM moves streamed blocks from pinned RAM to disk{_ram_example()}. Set the "
        "advisor node's *gpu*, *ram_gb* and *disk_gb* to reproduce a row.",
        "",
        "Files (the Download node fetches exactly the advisor's choice):",
    ]
    for key in used:
        w = catalog.weights(key)
        where = ", ".join(f"`{s.pattern}`" for s in w.files)
        lines.append(f"- {weights_short_label(w.label)}: [{w.files[0].repo_id}]({HF}/{w.files[0].repo_id}) {where} "
                     f"({w.size_bytes / 1e9:.1f} GB)")
    for c in (catalog.text_encoder("umt5_fp8"), catalog.vae(catalog.DEFAULT_VAE)):
        lines.append(f"- {c.label}: [{c.files[0].repo_id}]({HF}/{c.files[0].repo_id}) `{c.files[0].pattern}`")
    return "\n".join(lines)


def _ram_example() -> str:
    """Name the card whose rows show the answer changing with RAM, if any."""
    for card in dict.fromkeys(r.card for r in README_ROWS):
        rows = [r for r in README_ROWS if r.card == card]
        if len(rows) > 1 and len({_cell(r.advise()) for r in rows}) > 1:
            return f" (compare the {card} rows)"
    return ""


def weights_short_label(label: str) -> str:
    return label.split(" (")[0]


def workflow_table_markdown() -> str:
    """README's list of shipped workflows with the machine each was planned for and its settings."""
    lines = ["| workflow | planned for | weights | swap | TE | VAE |", "|---|---|---|---|---|---|"]
    for name, plan in PLANS.items():
        rec = plan.advise()
        w, h, f = plan.size
        only = f", {plan.weights_format.upper()} only" if plan.weights_format != "any" else ""
        disk = " from disk" if rec.placement == "disk" else ""
        lines.append(f"| `{name}` | {plan.card}, {plan.ram_gb} GB RAM, {w}×{h}×{f}, {plan.priority}{only} | "
                     f"{weights_short(rec)} | {rec.blocks_to_swap}{disk} | `{rec.text_encoder_device}` | "
                     f"{'tiled' if rec.vae_tiled else 'untiled'} |")
    lines.append("| `wan4step_t2v_tiny_demo` | any machine, CPU included: the tiny models (Wan4Step Tiny Models) "
                 "| tiny GGUF Q4_K_M | 0 | `cpu` | auto |")
    return "\n".join(lines)


def _marker(tag: str, end: bool = False) -> str:
    return (f"<!-- END {tag} -->" if end else
            f"<!-- BEGIN {tag}: generated by scripts/build_workflows.py from the advisor; edit the script, not this -->")


GENERATED = {"card-table": card_table_markdown, "workflow-table": workflow_table_markdown}


def _section_re(tag: str) -> re.Pattern:
    return re.compile(re.escape(_marker(tag)) + r"\n(.*?)\n" + re.escape(_marker(tag, end=True)), re.S)


def readme_section(text: str, tag: str) -> str:
    """The generated text between a tag's markers in README."""
    m = _section_re(tag).search(text)
    if m is None:
        raise SystemExit(f"README.md lacks the {tag} markers")
    return m.group(1)


def write_readme(path: Path = README) -> bool:
    """Regenerate README's marked sections; True when the file changed."""
    text = old = path.read_text()
    for tag, render in GENERATED.items():
        readme_section(text, tag)  # the markers must be there
        body = render()
        text = _section_re(tag).sub(lambda _m, t=tag, b=body: f"{_marker(t)}\n{b}\n{_marker(t, end=True)}", text)
    if text != old:
        path.write_text(text)
    return text != old


# --------------------------------------------------------------------------------------
# the workflows
# --------------------------------------------------------------------------------------
def t2v_tail(g: Graph, model_src: tuple[Node, int], clip: Node, vae: Node, size: tuple[int, int, int],
             seed_control: str = "randomize", seed: int = 42, prefix: str = "wan4step/t2v", tiled_decode: bool = False,
             ids: dict[str, int] | None = None, x0: float = 440) -> dict[str, Node]:
    """Prompt, size, sampler, decode, video: the part every text-to-video path shares."""
    ids = ids or {}
    w, h, f = size
    prompt = g.add("CLIPTextEncode", (x0, 40), (420, 200), {"text": PROMPT}, title="Prompt", color=GREEN,
                   id=ids.get("prompt"))
    latent = g.add("EmptyHunyuanLatentVideo", (x0, 330), (420, 130),
                   {"width": w, "height": h, "length": f, "batch_size": 1}, title="Video size", id=ids.get("latent"))
    sampler = g.add("Wan4StepSampler", (x0 + 460, 40), (320, 290),
                    {"seed": seed, "seed.control_after_generate": seed_control, "steps": 4, "shift": 5.0, "cfg": 1.0,
                     "noise": "comfy", "update": "lcm", "step_list": ""}, id=ids.get("sampler"))
    if tiled_decode:
        decode = g.add("VAEDecodeTiled", (x0 + 900, 40), (300, 150),
                       {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8},
                       id=ids.get("decode"))
    else:
        decode = g.add("VAEDecode", (x0 + 900, 40), (210, 46), id=ids.get("decode"))
    video = g.add("CreateVideo", (x0 + 900, 230), (270, 100), {"fps": 16.0, "bit_depth": 8}, id=ids.get("video"))
    save = g.add("SaveVideo", (x0 + 900, 370), (420, 470),
                 {"filename_prefix": prefix, "format": "mp4", "format.codec": "h264", "format.codec.encoding": "auto",
                  "codec": "auto"}, id=ids.get("save"))
    g.link(model_src[0], model_src[1], sampler, "model")
    g.link(clip, 0, prompt, "clip")
    g.link(prompt, 0, sampler, "positive")
    g.link(latent, 0, sampler, "latent")
    g.link(sampler, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, video, "images")
    g.link(video, 0, save, "video")
    g.groups += [("Step 2 - Prompt", (x0 - 10, -30, 440, 290)), ("Step 3 - Video size", (x0 - 10, 270, 440, 210)),
                 ("Step 4 - Sample (4 steps) and save", (x0 + 450, -30, 890, 890))]
    return {"prompt": prompt, "latent": latent, "sampler": sampler, "decode": decode, "video": video, "save": save}


def official(name: str, info: dict, *, title: str, intro: str, advisor_node: bool = True, extra_note: str = "") -> Graph:
    """Pack loaders (+ Download wired in) -> Block Swap -> sampler: the GGUF / FP8 / INT8 / 8 GB / 720p paths.
    Files and settings are the advisor's answer for the workflow's planned machine (`PLANS`)."""
    plan, rec = planned(name)
    g = Graph(name, info)
    w = catalog.weights(rec.weights_key)
    dl = g.add("Wan4StepDownload", (-440, 40), (400, 170), {})
    loader = g.add("Wan4StepModelLoader", (0, 40), (400, 130),
                   {"compute_dtype": "bf16", "attention": "auto", "fast_forward": True, "compile": False},
                   models=[model_entry(w.files[0])] if w.kind == "gguf" else None)
    swap = g.add("Wan4StepBlockSwap", (0, 250), (400, 160), {"pin_memory": True, "offload_embeddings": False})
    te = g.add("Wan4StepUMT5Loader", (0, 460), (400, 110), {"tokenizer": "auto"}, models=[te_entry(rec.text_encoder_key)])
    vae = g.add("Wan4StepVAELoader", (0, 620), (400, 160), {"dtype": "auto", "tile_size": 512, "tile_overlap": 64},
                models=[vae_entry()])
    g.link(dl, 0, loader, "model_name")
    g.link(dl, 1, te, "text_encoder_name")
    g.link(dl, 2, vae, "vae_name")
    g.link(loader, 0, swap, "model")
    g.groups += [("Step 1 - Models (downloaded on the first run)", (-450, -30, 870, 850))]
    t2v_tail(g, (swap, 0), te, vae, plan.size, prefix=f"wan4step/{name.removeprefix('wan4step_')}")
    size = catalog.download_size(weights_key=rec.weights_key, text_encoder_key=rec.text_encoder_key, vae_key=rec.vae_key)
    text = (f"## {title}\n\n{intro}\n\n{plan_note(plan, rec, advisor_node)}\n\n**Files** (about {size / 1e9:.0f} GB):\n\n"
            f"{file_lines(rec.weights_key, rec.text_encoder_key)}\n\n{DOWNLOAD_NOTE}\n\n{RECIPE_NOTE}")
    if extra_note:
        text += "\n\n" + extra_note
    g.note((-900, -30), (420, 850), text)
    if advisor_node:
        g.add("Wan4StepVRAMAdvisor", (-440, 260), (400, 560))
    apply_settings(g, plan, rec)
    return g


def gguf(info):
    return official(
        "wan4step_t2v_gguf", info, title="Wan2.1 T2V-14B 4-step — GGUF",
        intro="QuantStack's GGUF of the distilled model read by the pack's loader, blocks streamed from RAM as far "
              "as the card needs. Another tier? Pick it in the Download node (`gguf_Q4_K_M`, `gguf_Q6_K`, ...); "
              "the VRAM Advisor (weights_format *gguf*) says which fits.")


def lightx2v_fp8(info):
    return official(
        "wan4step_t2v_lightx2v_fp8", info, title="Wan2.1 T2V-14B 4-step — LightX2V FP8",
        intro="LightX2V's own FP8 weights (per-block files) with FP8 tensor-core matmuls: RTX 40xx / 50xx, L40S, "
              "H100 (compute capability 8.9+). RTX 30xx: use the INT8 workflow.")


def lightx2v_int8(info):
    return official(
        "wan4step_t2v_lightx2v_int8_rtx30", info, title="Wan2.1 T2V-14B 4-step — LightX2V INT8 (RTX 30xx)",
        intro="RTX 30xx (sm_86) has no FP8 tensor cores: LightX2V's INT8 per-block weights run on its INT8 "
              "tensor cores instead.")


def low_vram_8gb(info):
    return official(
        "wan4step_t2v_8gb_low_vram", info, title="Wan2.1 T2V-14B 4-step — 8 GB cards",
        intro=f"The safest plan for an 8 GB card (advisor priority *fit*: "
              f"{MemoryModel.load().decision('fit_headroom_frac'):.0%} of the VRAM left free, the text encoder on "
              "the CPU, a tiled VAE decode).",
        extra_note="Short of time? 33 frames (2 s) take less than half as long as 81.")


def hd_720p(info):
    return official(
        "wan4step_t2v_720p", info, title="Wan2.1 T2V-14B 4-step — 720p",
        intro="1280×720, 81 frames (75,600 tokens: ~4x the work of 480p per step). On an RTX 30xx set the advisor's "
              "gpu to your card: it picks `lightx2v_int8` for the Download node.")


def comfyui_gguf_interop(info):
    name = "wan4step_t2v_comfyui_gguf_interop"
    plan, rec = planned(name)
    g = Graph(name, info)
    unet = g.add("UnetLoaderGGUF", (0, 40), (400, 60), {}, title="Unet Loader (GGUF) — city96",
                 models=[model_entry(catalog.weights(rec.weights_key).files[0])])
    swap = g.add("Wan4StepBlockSwap", (0, 160), (400, 160), {"pin_memory": True, "offload_embeddings": False})
    te = g.add("Wan4StepUMT5Loader", (0, 370), (400, 110), {"tokenizer": "auto"}, models=[te_entry(rec.text_encoder_key)])
    vae = g.add("Wan4StepVAELoader", (0, 530), (400, 160), {"dtype": "auto", "tile_size": 512, "tile_overlap": 64},
                models=[vae_entry()])
    g.link(unet, 0, swap, "model")
    g.groups.append(("Step 1 - Models", (-10, -30, 430, 740)))
    t2v_tail(g, (swap, 0), te, vae, plan.size, prefix="wan4step/comfyui_gguf")
    g.note((-460, -30), (420, 740), (
        "## ComfyUI-GGUF interop\n\nThe MODEL from city96's **Unet Loader (GGUF)** (custom node pack "
        "[ComfyUI-GGUF](https://github.com/city96/ComfyUI-GGUF)) goes through **Wan4Step Block Swap** and the "
        "**Wan4Step Sampler**: keep your GGUF setup, get the 4-step recipe and streamed blocks.\n\n"
        f"{plan_note(plan, rec, False)}\n\n"
        f"**Files** (put them there yourself, or let the Download node of the GGUF workflow fetch them):\n\n"
        f"{file_lines(rec.weights_key, rec.text_encoder_key)}\n\nThe Unet Loader (GGUF) lists `models/unet` and "
        f"`models/diffusion_models`. Any tier of the same repository works.\n\n{RECIPE_NOTE}"))
    apply_settings(g, plan, rec)
    return g


def tiny_demo(info):
    """The tiny model set: runs anywhere in seconds (tests, the README demo, the browser test). Wan4Step Tiny
    Models writes the files into ComfyUI's model folders on the first run, so it works right after a Manager
    install."""
    g = Graph("wan4step_t2v_tiny_demo", info)
    names = tiny_install.targets(tiny_install.DEFAULT_DIT_FORMAT)
    loader = g.add("Wan4StepModelLoader", (0, 40), (400, 130),
                   {"model_name": names["diffusion_models"][0], "compute_dtype": "bf16", "attention": "auto",
                    "fast_forward": True, "compile": False}, id=1)
    te = g.add("Wan4StepUMT5Loader", (0, 250), (400, 110),
               {"text_encoder_name": names["text_encoders"][0], "tokenizer": "auto", "device": "cpu"}, id=2)
    vae = g.add("Wan4StepVAELoader", (0, 410), (400, 160),
                {"vae_name": names["vae"][0], "dtype": "auto", "tiling": "auto", "tile_size": 512, "tile_overlap": 64},
                id=6)
    tiny = g.add("Wan4StepTinyModels", (-440, 40), (400, 130), {"dit_format": tiny_install.DEFAULT_DIT_FORMAT}, id=10)
    g.link(tiny, 0, loader, "model_name")
    g.link(tiny, 1, te, "text_encoder_name")
    g.link(tiny, 2, vae, "vae_name")
    g.groups.append(("Step 1 - Tiny models (written on the first run)", (-450, -30, 870, 620)))
    t2v_tail(g, (loader, 0), te, vae, (64, 48, 9), seed_control="fixed", seed=42, prefix="wan4step/t2v",
             ids={"prompt": 3, "latent": 4, "sampler": 5, "decode": 7, "video": 8, "save": 9})
    for n in g.nodes:
        if n.type == "CLIPTextEncode":
            n.values["text"] = "a red fox running through fresh snow, cinematic"
    g.note((-900, -30), (420, 620), (
        "## Tiny demo (no downloads)\n\nThe real Wan2.1 architecture at toy size (2 blocks, random weights): "
        "checks that everything runs, in seconds on a CPU. The video is noise, not a fox.\n\n"
        "On the first run **Wan4Step Tiny Models** writes the tiny DiT, UMT5 and VAE (about 40 MB) into ComfyUI's "
        "own model folders, under `models/diffusion_models/wan4step_tiny/`, `models/text_encoders/wan4step_tiny/` "
        "and `models/vae/wan4step_tiny/`, and hands their names to the loaders; later runs find them in place. "
        "It never overwrites a file it did not write. Its *dit_format* "
        "picks the loader path to try: GGUF Q4_K_M / Q8_0, LightX2V FP8 / INT8 folder, BF16.\n\n"
        "For real videos open one of the other Wan4Step workflows."), title="Read me")
    return g


BUILDERS = [gguf, lightx2v_fp8, lightx2v_int8, comfyui_gguf_interop, low_vram_8gb, hd_720p, tiny_demo]


def with_plan(data: dict, plan: Plan | None) -> dict:
    """Record the planned machine in the workflow (extra.wan4step.planned_for): the tests re-run the advisor on it."""
    if plan is not None:
        data["extra"]["wan4step"] = {"planned_for": plan.as_dict()}
    return data


def build_all(info: dict, out_dir: Path = UI_DIR) -> list[Path]:
    paths = []
    for build in BUILDERS:
        g = build(info)
        arrange(g)
        path = out_dir / f"{g.name}.json"
        path.write_text(json.dumps(with_plan(g.serialize(), getattr(g, "plan", None)), indent=1, ensure_ascii=False)
                        + "\n")
        paths.append(path)
        print(f"wrote {path.relative_to(REPO)}")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="a running ComfyUI (with this pack and ComfyUI-GGUF) to read /object_info from")
    ap.add_argument("--object-info", help="a saved /object_info JSON file")
    ap.add_argument("--readme-only", action="store_true",
                    help="only regenerate README's card and workflow tables (no ComfyUI needed)")
    args = ap.parse_args()
    if args.readme_only:
        print("wrote README.md" if write_readme() else "README.md is up to date")
        return 0
    info = fetch_object_info(args.server, args.object_info)
    missing = [t for t in ("Wan4StepSampler", "UnetLoaderGGUF", "SaveVideo") if t not in info]
    if missing:
        raise SystemExit(f"the ComfyUI at hand lacks {missing}: install this pack and city96/ComfyUI-GGUF")
    paths = build_all(info)
    convert_files(paths, info)
    if write_readme():
        print("wrote README.md (card and workflow tables)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
