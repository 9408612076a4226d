"""HTTP route for the web extension's badges: what the graph's own settings cost on this machine.

POST /wan4step/estimate with the settings the frontend read from the graph (loader file or
Download choice, Block Swap, latent size, text-encoder device, VAE tiling, and the VRAM
Advisor's "plan for" overrides and priority when the graph has one) -> `wan4step.estimate.estimate` plus
the advisor's own pick for that size, in one line. No node here: `NODES` is empty.

A loader file picked by name is looked up in ComfyUI's model folders (`model_files.resolve`:
the loader's containment rules) and, when there, measured from its headers (`formats.scan_dit`,
what the Model Loader holds in its `mode`) instead of the catalog's published sizes.
"""

from __future__ import annotations

from ..wan4step import advisor, estimate, web_schema
from ..wan4step.errors import Wan4StepError
from ..wan4step.formats import scan_dit
from .advisor import ANY_FORMAT, AUTO_GPU, CPU_ONLY, _detect, files_on_disk
from .model_files import resolve
from .model_loader import DIT_FOLDERS


def _machine(values: dict) -> advisor.Machine:
    import folder_paths

    dirs = folder_paths.get_folder_paths("diffusion_models")
    machine = _detect(dirs[0] if dirs else folder_paths.models_dir)
    gpu = values.get("gpu") or AUTO_GPU
    cap = values.get("compute_capability")
    return advisor.with_overrides(
        machine, gpu="none" if gpu == CPU_ONLY else ("" if gpu == AUTO_GPU else gpu),
        vram_gb=values.get("vram_gb", 0.0), free_vram_gb=values.get("free_vram_gb", 0.0),
        capability=None if cap in (None, "", "auto") else cap, ram_gb=values.get("ram_gb", 0.0))


def local_scan(model_name: str | None):
    """The chosen loader file's header scan (`formats.DiTScan`) when it is in ComfyUI's model folders,
    else None (not there, a `.pth` without a header index, or unreadable)."""
    if not model_name or not isinstance(model_name, str):
        return None
    try:
        return scan_dit(resolve(DIT_FOLDERS, model_name))
    except (Wan4StepError, OSError, ValueError):
        return None


def answer(body) -> dict:
    """The route's JSON for a request body (also called by tests without HTTP); BadRequest if invalid."""
    return _answer(web_schema.parse(body, web_schema.ESTIMATE))


def _answer(v: dict) -> dict:
    machine = _machine(v)
    width, height, frames = v.get("width", 832), v.get("height", 480), v.get("frames", 81)
    mode = v.get("mode", "t2v")
    named = None if v.get("weights_key") else v.get("model_name")  # a file picked in the loader
    est = estimate.estimate(
        machine, model_name=v.get("weights_key") or v.get("model_name"), width=width, height=height, frames=frames,
        blocks_to_swap=v.get("blocks_to_swap", 0), prefetch=v.get("prefetch", 2), te_name=v.get("te_name"),
        te_device=v.get("te_device", "gpu"), vae_tiling=v.get("vae_tiling", "auto"),
        attention=v.get("attention", "auto"), mode=mode, scan=local_scan(named))
    out = est.as_dict()
    try:
        fmt = v.get("weights_format", ANY_FORMAT)
        formats = () if fmt == ANY_FORMAT else (fmt,)
        rec = advisor.recommend(machine, advisor.Request(width, height, frames, v.get("priority", "speed"),
                                                         formats=formats, present=files_on_disk(),
                                                         mode=v.get("advisor_mode") or mode))
        out["recommendation"] = estimate.recommendation_line(rec)
    except Wan4StepError as exc:  # a bad size already shows in the estimate; the badge must not break
        out["recommendation"] = f"Advisor: {exc}"
    return out


def register_routes(routes) -> None:
    """POST /wan4step/estimate on the server's aiohttp RouteTableDef (from ComfyExtension.on_load)."""
    from .json_route import answer as json_answer

    @routes.post("/wan4step/estimate")
    async def _estimate(request):
        return await json_answer(request, web_schema.ESTIMATE, _answer,
                                 error_extra={"known": False, "badge": "", "lines": []})


NODES: list = []
