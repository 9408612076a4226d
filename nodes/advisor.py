"""Wan4Step VRAM Advisor: which weights and offload settings fit this machine.

The decision is `wan4step.advisor.recommend` (pure, unit-tested); this node detects the
machine (the GPU ComfyUI runs on), applies the user's overrides, and hands out typed
values that wire into the loaders and the block swap. A small HTTP route lets the web
extension show the advice without running the graph.
"""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..wan4step import advisor, cards, catalog, hardware, web_schema
from .model_files import present_files

AUTO_GPU = "auto (detected)"
CPU_ONLY = "none (CPU only)"
CAPABILITIES = ["auto", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0"]
ANY_FORMAT = "any"
WEIGHTS_FORMATS = [ANY_FORMAT, *sorted({w.kind for w in catalog.WEIGHTS.values()})]
PLAN = io.Custom("WAN4STEP_PLAN")

_OVERRIDE = "0 = detected. Type a value to plan for a machine you don't have."


def _detect(folder: str | None) -> advisor.Machine:
    """This machine as ComfyUI sees it: its GPU, plus what ComfyUI already holds (it would free that)."""
    import psutil
    import torch

    info = hardware.detect(folder)
    index, own_vram = None, 0
    if info.gpus:
        import comfy.model_management as mm

        dev = mm.get_torch_device()
        if getattr(dev, "type", "") == "cuda":
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            own_vram = int(torch.cuda.memory_reserved(index))
        elif getattr(dev, "type", "") == "cpu":  # ComfyUI runs with --cpu: plan for what will run
            info = dataclasses.replace(info, gpus=[])
    own_ram = int(psutil.Process().memory_info().rss)
    return advisor.machine_from_info(info, gpu_index=index, own_vram_bytes=own_vram, own_ram_bytes=own_ram)


def files_on_disk() -> frozenset[str]:
    """The catalog's files already in ComfyUI's model folders (by name): `Request.present`."""
    return present_files(spec for _group, spec in catalog.all_files())


def advise(width=832, height=480, frames=81, priority="speed", gpu=AUTO_GPU, vram_gb=0.0, free_vram_gb=0.0,
           compute_capability="auto", ram_gb=0.0, disk_gb=0.0, attention="auto",
           weights_format=ANY_FORMAT, mode="t2v") -> advisor.Recommendation:
    """Detect, override, recommend: shared by the node and the web route. Files already in the model
    folders are not counted as downloads, and a DiT already there wins over an equally fast one."""
    import folder_paths

    dirs = folder_paths.get_folder_paths("diffusion_models")
    machine = _detect(dirs[0] if dirs else folder_paths.models_dir)
    g = "none" if gpu == CPU_ONLY else ("" if gpu == AUTO_GPU else gpu)
    cap = None if compute_capability == "auto" else compute_capability
    machine = advisor.with_overrides(machine, gpu=g, vram_gb=vram_gb, free_vram_gb=free_vram_gb, capability=cap,
                                     ram_gb=ram_gb, disk_gb=disk_gb)
    formats = () if weights_format == ANY_FORMAT else (weights_format,)
    return advisor.recommend(machine, advisor.Request(width, height, frames, priority, attention, formats=formats,
                                                      present=files_on_disk(), mode=mode))


PHASES = (("text_encoder", "Text encode"), ("sampling", "Sampling"), ("vae", "VAE decode"))


def memory_plan(rec: advisor.Recommendation) -> dict:
    """What the web extension draws on the node: the VRAM peak of each phase against the card
    (what the plan may use, what is free, the whole card) and the RAM peak against the machine."""
    m = rec.machine or {}
    return {
        "gpu": m.get("gpu_name"),
        "vram_total_bytes": int(m.get("vram_total_bytes") or 0),
        "vram_budget_bytes": int(rec.vram_budget_bytes),
        "usable_vram_bytes": int(rec.usable_vram_bytes),
        "phases": [{"key": k, "label": label, "vram_bytes": int(rec.phase_peaks.get(k, 0)),
                    "device": rec.text_encoder_device if k == "text_encoder" else "gpu"} for k, label in PHASES],
        "ram_peak_bytes": int(rec.peak_ram_bytes),
        "ram_budget_bytes": int(rec.ram_budget_bytes),
        "ram_total_bytes": int(m.get("ram_total_bytes") or 0),
        "fits": bool(rec.fits),
    }


class Wan4StepVRAMAdvisor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepVRAMAdvisor",
            display_name="Wan4Step VRAM Advisor",
            category="Wan4Step",
            description="Detects the GPU, VRAM, RAM, disk and the model files already in ComfyUI's folders and "
            "recommends the weights, block swap, text-encoder placement, VAE tiling and attention that fit, with "
            "predicted peak VRAM and step time and the reason.",
            inputs=[
                io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="Video width (multiple of 16)."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="Video height (multiple of 16)."),
                io.Int.Input("frames", default=81, min=1, max=1001, step=4, tooltip="Frames, 4n+1 (81 = 5 s at 16 fps)."),
                io.Combo.Input("priority", options=list(advisor.PRIORITIES), default="speed",
                               tooltip="speed: fastest step at good quality; quality: closest to the BF16 release "
                               "that fits; fit: leave 15% VRAM free, text encoder on CPU, tiled VAE."),
                io.Combo.Input("gpu", options=[AUTO_GPU, CPU_ONLY, *cards.card_names()], default=AUTO_GPU,
                               tooltip="The GPU to plan for: the detected one, or a card from the table."),
                io.Float.Input("vram_gb", default=0.0, min=0.0, max=1024.0, step=0.5, advanced=True,
                               tooltip="Total VRAM in GiB. " + _OVERRIDE),
                io.Float.Input("free_vram_gb", default=0.0, min=0.0, max=1024.0, step=0.5, advanced=True,
                               tooltip="VRAM the pack may use, in GiB. " + _OVERRIDE),
                io.Combo.Input("compute_capability", options=CAPABILITIES, default="auto", advanced=True,
                               tooltip="8.6 = RTX 30xx (no FP8), 8.9 = RTX 40xx/L40S, 9.0 = H100, 12.0 = RTX 50xx."),
                io.Float.Input("ram_gb", default=0.0, min=0.0, max=4096.0, step=1.0, advanced=True,
                               tooltip="System RAM in GiB. " + _OVERRIDE),
                io.Float.Input("disk_gb", default=0.0, min=0.0, max=100000.0, step=1.0, advanced=True,
                               tooltip="Free disk in GiB for downloads. " + _OVERRIDE),
                io.Combo.Input("attention", options=list(advisor.ATTENTION_CHOICES), default="auto", advanced=True,
                               tooltip="auto = SDPA (fastest measured, always available)."),
                io.Combo.Input("weights_format", options=WEIGHTS_FORMATS, default=ANY_FORMAT, advanced=True, optional=True,
                               tooltip="any = every format this GPU computes natively. gguf (or fp8, ...) = only that "
                               "format: which of its files fits, e.g. for a GGUF-only setup."),
                io.Combo.Input("mode", options=list(catalog.MODES), default="t2v", advanced=True, optional=True,
                               tooltip="The Model Loader's mode to plan for. t2v: text to video. vace: WanVaceToVideo "
                               "(control video, reference image): only VACE-merged files (QuantStack's GGUF tiers), "
                               "their VACE blocks loaded and run too."),
            ],
            outputs=[
                io.String.Output("report", tooltip="The advice in plain words with the predicted numbers."),
                io.Combo.Output("model_name", tooltip="Weights for Wan4Step Model Loader's model_name."),
                io.Combo.Output("text_encoder_name", tooltip="File for Wan4Step UMT5 Loader's text_encoder_name."),
                io.Combo.Output("text_encoder_device", tooltip="gpu / gpu_then_free / cpu for the UMT5 loader's device."),
                io.Combo.Output("vae_name", tooltip="File for Wan4Step VAE Loader's vae_name."),
                io.Int.Output("blocks_to_swap", tooltip="For Wan4Step Block Swap: blocks streamed from RAM (0 = all resident)."),
                io.Int.Output("prefetch", tooltip="For Wan4Step Block Swap: blocks fetched ahead."),
                io.Combo.Output("vae_tiling", tooltip="on / off for Wan4Step VAE Loader's tiling: tiles when the "
                                "untiled decode would not fit beside what stays on the GPU."),
                io.Combo.Output("attention", tooltip="Attention backend the advice assumes."),
                PLAN.Output("plan", tooltip="Wire into Wan4Step Download to fetch exactly these files."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:
        rec = advise(**web_schema.parse(inputs, web_schema.ADVISOR))  # linked values are not range-checked by ComfyUI
        text = rec.report()
        plan = {"weights": rec.weights_key, "text_encoder": rec.text_encoder_key, "vae": rec.vae_key,
                "fits": rec.fits}
        return io.NodeOutput(text, rec.model_name, rec.text_encoder_name, rec.text_encoder_device, rec.vae_name,
                             rec.blocks_to_swap, rec.prefetch, "on" if rec.vae_tiled else "off", rec.attention, plan,
                             ui={"text": [text], "memory_plan": [memory_plan(rec)]})


def _advice(values: dict) -> dict:
    rec = advise(**values)
    return {"report": rec.report(), "recommendation": rec.as_dict(), "memory_plan": memory_plan(rec)}


def register_routes(routes) -> None:
    """POST /wan4step/advisor {inputs} -> {report, recommendation, memory_plan}: advice without running
    the graph. `routes` is the server's aiohttp RouteTableDef (comfy_compat/routes.py, from
    ComfyExtension.on_load). Bad bodies get 400 {error, field}; the work runs off the event loop
    (nodes/json_route.py)."""
    from .json_route import answer

    @routes.post("/wan4step/advisor")
    async def _advice_route(request):
        return await answer(request, web_schema.ADVISOR, _advice)


NODES = [Wan4StepVRAMAdvisor]
