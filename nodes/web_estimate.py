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

from ..wan4step import advisor, catalog, estimate
from ..wan4step.errors import Wan4StepError
from ..wan4step.formats import scan_dit
from .advisor import ANY_FORMAT, AUTO_GPU, CPU_ONLY, WEIGHTS_FORMATS, _detect, files_on_disk
from .model_files import resolve
from .model_loader import DIT_FOLDERS

_INTS = ("width", "height", "frames", "blocks_to_swap", "prefetch")
_OVERRIDES = ("gpu", "vram_gb", "free_vram_gb", "compute_capability", "ram_gb")


def _machine(body: dict) -> advisor.Machine:
    import folder_paths

    dirs = folder_paths.get_folder_paths("diffusion_models")
    machine = _detect(dirs[0] if dirs else folder_paths.models_dir)
    gpu = str(body.get("gpu") or AUTO_GPU)
    cap = body.get("compute_capability")
    return advisor.with_overrides(
        machine, gpu="none" if gpu == CPU_ONLY else ("" if gpu == AUTO_GPU else gpu),
        vram_gb=float(body.get("vram_gb") or 0), free_vram_gb=float(body.get("free_vram_gb") or 0),
        capability=None if cap in (None, "", "auto") else str(cap), ram_gb=float(body.get("ram_gb") or 0))


def _mode(value) -> str:
    return value if value in catalog.MODES else "t2v"


def local_scan(model_name: str | None):
    """The chosen loader file's header scan (`formats.DiTScan`) when it is in ComfyUI's model folders,
    else None (not there, a `.pth` without a header index, or unreadable)."""
    if not model_name or not isinstance(model_name, str):
        return None
    try:
        return scan_dit(resolve(DIT_FOLDERS, model_name))
    except (Wan4StepError, OSError, ValueError):
        return None


def answer(body: dict) -> dict:
    """The route's JSON (also called by tests without HTTP)."""
    vals = {k: int(body[k]) for k in _INTS if body.get(k) is not None}
    machine = _machine(body)
    mode = _mode(body.get("mode"))
    named = None if body.get("weights_key") else body.get("model_name")  # a file picked in the loader
    est = estimate.estimate(
        machine, model_name=body.get("weights_key") or body.get("model_name"), width=vals.get("width", 832),
        height=vals.get("height", 480), frames=vals.get("frames", 81), blocks_to_swap=vals.get("blocks_to_swap", 0),
        prefetch=vals.get("prefetch", 2), te_name=body.get("te_name"), te_device=str(body.get("te_device") or "gpu"),
        vae_tiling=str(body.get("vae_tiling") or "auto"), attention=str(body.get("attention") or "auto"),
        mode=mode, scan=local_scan(named))
    out = est.as_dict()
    try:
        priority = body.get("priority") if body.get("priority") in advisor.PRIORITIES else "speed"
        fmt = body.get("weights_format")
        formats = (fmt,) if fmt in WEIGHTS_FORMATS and fmt != ANY_FORMAT else ()
        rec = advisor.recommend(machine, advisor.Request(vals.get("width", 832), vals.get("height", 480),
                                                         vals.get("frames", 81), priority, formats=formats,
                                                         present=files_on_disk(),
                                                         mode=_mode(body.get("advisor_mode") or mode)))
        out["recommendation"] = estimate.recommendation_line(rec)
    except Wan4StepError as exc:  # a bad size already shows in the estimate; the badge must not break
        out["recommendation"] = f"Advisor: {exc}"
    return out


def register_routes(routes) -> None:
    """POST /wan4step/estimate on the server's aiohttp RouteTableDef (from ComfyExtension.on_load)."""
    from aiohttp import web

    @routes.post("/wan4step/estimate")
    async def _estimate(request):
        try:
            body = await request.json()
            return web.json_response(answer(body if isinstance(body, dict) else {}))
        except (ValueError, TypeError) as exc:
            return web.json_response({"known": False, "note": f"bad request: {exc}", "badge": "", "lines": []},
                                     status=400)


NODES: list = []
