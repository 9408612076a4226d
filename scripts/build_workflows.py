"""Write the UI-format workflows in workflows/ from the descriptions below, then their API twins.

Why a builder: the frontend stores widget values by position, so a workflow written by hand
breaks silently when a node gains a widget. Here every value is given by name and laid out
with the node definitions of a real ComfyUI (`/object_info`, the same walk as
`wan4step.workflow_convert`); model files, URLs and folders come from `wan4step.catalog`,
the table the advisor and the Download node use.

The files it writes are the source of truth (they open and save in the ComfyUI frontend like
any workflow); re-run this after a node's schema changes, then commit the diff:

    python scripts/build_workflows.py [--server URL]        # UI files + workflows/api/
    python -m wan4step.workflow_convert [--server URL]      # only the API twins
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from wan4step import catalog  # noqa: E402
from wan4step.tiny import bundle  # noqa: E402
from wan4step.workflow_convert import (  # noqa: E402
    UI_DIR,
    convert_files,
    fetch_object_info,
    is_widget,
    widget_values_for,
)

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


def gguf_entry(tier: str) -> dict:
    return model_entry(catalog.weights(f"gguf_{tier}").files[0])


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
                      "wan4step": {"text_px": NOTE_FONT_PX, **({"template": self.template} if self.template else {})},
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


def official(name: str, info: dict, *, weights_key: str, title: str, intro: str, size=(832, 480, 81),
             te_device: str = "gpu_then_free", blocks_to_swap: int = -1, source: str = "ram", vae_tiling: str = "auto",
             advisor: dict | None = None, extra_note: str = "") -> Graph:
    """Pack loaders (+ Download wired in) -> Block Swap -> sampler: the GGUF / FP8 / INT8 / 8 GB / 720p paths."""
    g = Graph(name, info)
    w = catalog.weights(weights_key)
    dl = g.add("Wan4StepDownload", (-440, 40), (400, 170),
               {"weights": weights_key, "text_encoder": "umt5_fp8", "vae": catalog.DEFAULT_VAE})
    loader = g.add("Wan4StepModelLoader", (0, 40), (400, 130),
                   {"model_name": w.model_name, "compute_dtype": "bf16", "attention": "auto", "fast_forward": True, "compile": False},
                   models=[model_entry(w.files[0])] if w.kind == "gguf" else None)
    swap = g.add("Wan4StepBlockSwap", (0, 250), (400, 160),
                 {"blocks_to_swap": blocks_to_swap, "prefetch": 2, "pin_memory": True, "source": source,
                  "offload_embeddings": False})
    te = g.add("Wan4StepUMT5Loader", (0, 460), (400, 110),
               {"text_encoder_name": catalog.text_encoder("umt5_fp8").name, "tokenizer": "auto", "device": te_device},
               models=[te_entry()])
    vae = g.add("Wan4StepVAELoader", (0, 620), (400, 160),
                {"vae_name": catalog.vae(catalog.DEFAULT_VAE).name, "dtype": "auto", "tiling": vae_tiling,
                 "tile_size": 512, "tile_overlap": 64}, models=[vae_entry()])
    g.link(dl, 0, loader, "model_name")
    g.link(dl, 1, te, "text_encoder_name")
    g.link(dl, 2, vae, "vae_name")
    g.link(loader, 0, swap, "model")
    g.groups += [("Step 1 - Models (downloaded on the first run)", (-450, -30, 870, 850))]
    t2v_tail(g, (swap, 0), te, vae, size, prefix=f"wan4step/{name.removeprefix('wan4step_')}")
    text = (f"## {title}\n\n{intro}\n\n**Files** (about {catalog.download_size(weights_key=weights_key, text_encoder_key='umt5_fp8', vae_key=catalog.DEFAULT_VAE) / 1e9:.0f} GB):\n\n"
            f"{file_lines(weights_key)}\n\n{DOWNLOAD_NOTE}\n\n{RECIPE_NOTE}")
    if extra_note:
        text += "\n\n" + extra_note
    g.note((-900, -30), (420, 850), text)
    if advisor is not None:
        g.add("Wan4StepVRAMAdvisor", (-440, 260), (400, 560), advisor)
    return g


def gguf_q4km(info):
    return official(
        "wan4step_t2v_gguf_q4km", info, weights_key="gguf_Q4_K_M", title="Wan2.1 T2V-14B 4-step — GGUF Q4_K_M",
        intro="The default tier: QuantStack GGUF Q4_K_M (11.6 GB) read by the pack's loader, blocks streamed from "
              "RAM as far as your card needs (Block Swap auto). For another tier pick it in the Download node "
              "(`gguf_Q5_K_M`, `gguf_Q8_0`, ...) — the VRAM Advisor says which fits.",
        advisor={"width": 832, "height": 480, "frames": 81, "priority": "speed"})


def lightx2v_fp8(info):
    return official(
        "wan4step_t2v_lightx2v_fp8", info, weights_key="lightx2v_fp8", title="Wan2.1 T2V-14B 4-step — LightX2V FP8",
        intro="LightX2V's own FP8 weights (per-block files) with FP8 tensor-core matmuls: RTX 40xx / 50xx, L40S, "
              "H100 (compute capability 8.9+). 24-32 GB cards keep every block on the GPU; 12-16 GB cards stream "
              "some (Block Swap auto). RTX 30xx: use the INT8 workflow.")


def lightx2v_int8(info):
    return official(
        "wan4step_t2v_lightx2v_int8_rtx30", info, weights_key="lightx2v_int8",
        title="Wan2.1 T2V-14B 4-step — LightX2V INT8 (RTX 30xx)",
        intro="RTX 30xx (sm_86) has no FP8 tensor cores: LightX2V's INT8 per-block weights run on its INT8 "
              "tensor cores instead. An RTX 3090 keeps every block on the GPU; a 3060 12 GB / 3080 10 GB streams "
              "some (Block Swap auto).")


def low_vram_8gb(info):
    return official(
        "wan4step_t2v_8gb_low_vram", info, weights_key="gguf_Q4_K_M", title="Wan2.1 T2V-14B 4-step — 8 GB cards",
        intro="Everything that can leave the GPU does: all 40 blocks stream from RAM (Block Swap 40), the UMT5 "
              "text encoder runs on the CPU, the VAE decodes in tiles. Needs about 16 GB of free RAM with the GGUF "
              "Q4_K_M file; with less, set Block Swap `source` to `disk` (blocks are read from the file).",
        te_device="cpu", blocks_to_swap=40, vae_tiling="on",
        advisor={"width": 832, "height": 480, "frames": 81, "priority": "fit", "gpu": "RTX 4060 8GB"},
        extra_note="Short of time? 33 frames (2 s) take less than half as long as 81.")


def hd_720p(info):
    return official(
        "wan4step_t2v_720p", info, weights_key="lightx2v_fp8", title="Wan2.1 T2V-14B 4-step — 720p",
        intro="1280×720, 81 frames (75,600 tokens: ~4x the work of 480p per step). LightX2V FP8 on a 24-32 GB card "
              "(RTX 4090 streams ~8 blocks, RTX 5090 none); the VAE tiles when the untiled decode would not fit. "
              "On an RTX 30xx pick `lightx2v_int8` in the Download node.",
        size=(1280, 720, 81), advisor={"width": 1280, "height": 720, "frames": 81, "priority": "speed"})


def comfyui_gguf_interop(info):
    g = Graph("wan4step_t2v_comfyui_gguf_interop", info)
    tier = "Q4_K_M"
    unet = g.add("UnetLoaderGGUF", (0, 40), (400, 60), {"unet_name": catalog.gguf_file_name(tier)},
                 title="Unet Loader (GGUF) — city96", models=[gguf_entry(tier)])
    swap = g.add("Wan4StepBlockSwap", (0, 160), (400, 160),
                 {"blocks_to_swap": -1, "prefetch": 2, "pin_memory": True, "source": "ram", "offload_embeddings": False})
    te = g.add("Wan4StepUMT5Loader", (0, 370), (400, 110),
               {"text_encoder_name": catalog.text_encoder("umt5_fp8").name, "tokenizer": "auto",
                "device": "gpu_then_free"}, models=[te_entry()])
    vae = g.add("Wan4StepVAELoader", (0, 530), (400, 160),
                {"vae_name": catalog.vae(catalog.DEFAULT_VAE).name, "dtype": "auto", "tiling": "auto",
                 "tile_size": 512, "tile_overlap": 64}, models=[vae_entry()])
    g.link(unet, 0, swap, "model")
    g.groups.append(("Step 1 - Models", (-10, -30, 430, 740)))
    t2v_tail(g, (swap, 0), te, vae, (832, 480, 81), prefix="wan4step/comfyui_gguf")
    g.note((-460, -30), (420, 740), (
        "## ComfyUI-GGUF interop\n\nThe MODEL from city96's **Unet Loader (GGUF)** (custom node pack "
        "[ComfyUI-GGUF](https://github.com/city96/ComfyUI-GGUF)) goes through **Wan4Step Block Swap** and the "
        "**Wan4Step Sampler**: keep your GGUF setup, get the 4-step recipe and streamed blocks.\n\n"
        f"**Files** (put them there yourself, or let the Download node of the GGUF workflow fetch them):\n\n"
        f"{file_lines('gguf_' + tier)}\n\nThe Unet Loader (GGUF) lists `models/unet` and `models/diffusion_models`. "
        f"Any QuantStack tier works (Q2_K … Q8_0).\n\n{RECIPE_NOTE}"))
    return g


def tiny_demo(info):
    """The embedded tiny model set: runs anywhere in seconds (tests, the README demo, the browser test)."""
    g = Graph("wan4step_t2v_tiny_demo", info)
    loader = g.add("Wan4StepModelLoader", (0, 40), (400, 130),
                   {"model_name": bundle.DIT_GGUF, "compute_dtype": "bf16", "attention": "auto", "fast_forward": True, "compile": False},
                   id=1)
    te = g.add("Wan4StepUMT5Loader", (0, 250), (400, 110),
               {"text_encoder_name": bundle.UMT5, "tokenizer": "auto", "device": "cpu"}, id=2)
    vae = g.add("Wan4StepVAELoader", (0, 410), (400, 160),
                {"vae_name": bundle.VAE, "dtype": "auto", "tiling": "auto", "tile_size": 512, "tile_overlap": 64}, id=6)
    g.groups.append(("Step 1 - Tiny models", (-10, -30, 430, 620)))
    t2v_tail(g, (loader, 0), te, vae, (64, 48, 9), seed_control="fixed", seed=42, prefix="wan4step/t2v",
             ids={"prompt": 3, "latent": 4, "sampler": 5, "decode": 7, "video": 8, "save": 9})
    for n in g.nodes:
        if n.type == "CLIPTextEncode":
            n.values["text"] = "a red fox running through fresh snow, cinematic"
    g.note((-460, -30), (420, 620), (
        "## Tiny demo (no downloads)\n\nThe real Wan2.1 architecture at toy size (2 blocks, random weights): "
        "checks that everything runs, in seconds on a CPU. The video is noise, not a fox.\n\n"
        "The tiny files are written into `ComfyUI/models/*/wan4step_tiny/` by\n\n"
        "`python -c \"from wan4step.tiny.bundle import write_tiny_models; write_tiny_models('ComfyUI/models')\"`\n\n"
        "(run it in the pack's folder). For real videos open one of the other Wan4Step workflows."), title="Read me")
    return g


BUILDERS = [gguf_q4km, lightx2v_fp8, lightx2v_int8, comfyui_gguf_interop, low_vram_8gb, hd_720p, tiny_demo]


def build_all(info: dict, out_dir: Path = UI_DIR) -> list[Path]:
    paths = []
    for build in BUILDERS:
        g = build(info)
        arrange(g)
        path = out_dir / f"{g.name}.json"
        path.write_text(json.dumps(g.serialize(), indent=1, ensure_ascii=False) + "\n")
        paths.append(path)
        print(f"wrote {path.relative_to(REPO)}")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="a running ComfyUI (with this pack and ComfyUI-GGUF) to read /object_info from")
    ap.add_argument("--object-info", help="a saved /object_info JSON file")
    args = ap.parse_args()
    info = fetch_object_info(args.server, args.object_info)
    missing = [t for t in ("Wan4StepSampler", "UnetLoaderGGUF", "SaveVideo") if t not in info]
    if missing:
        raise SystemExit(f"the ComfyUI at hand lacks {missing}: install this pack and city96/ComfyUI-GGUF")
    paths = build_all(info)
    convert_files(paths, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
