"""HTTP route for the web extension's badges: what the graph's own settings cost on this machine.

POST /wan4step/estimate with the settings the frontend read from the graph (loader file or
Download choice, Block Swap, latent size, text-encoder device, VAE tiling, and the VRAM
Advisor's "plan for" overrides and priority when the graph has one) -> `wan4step.estimate.estimate` plus
the advisor's own pick for that size, in one line. No node here: `NODES` is empty.
"""

from __future__ import annotations

from ..wan4step import advisor, estimate, web_schema
from ..wan4step.errors import Wan4StepError
from .advisor import ANY_FORMAT, AUTO_GPU, CPU_ONLY, _detect


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


def answer(body) -> dict:
    """The route's JSON for a request body (also called by tests without HTTP); BadRequest if invalid."""
    return _answer(web_schema.parse(body, web_schema.ESTIMATE))


def _answer(v: dict) -> dict:
    machine = _machine(v)
    width, height, frames = v.get("width", 832), v.get("height", 480), v.get("frames", 81)
    est = estimate.estimate(
        machine, model_name=v.get("weights_key") or v.get("model_name"), width=width, height=height, frames=frames,
        blocks_to_swap=v.get("blocks_to_swap", 0), prefetch=v.get("prefetch", 2), te_name=v.get("te_name"),
        te_device=v.get("te_device", "gpu"), vae_tiling=v.get("vae_tiling", "auto"),
        attention=v.get("attention", "auto"))
    out = est.as_dict()
    try:
        fmt = v.get("weights_format", ANY_FORMAT)
        formats = () if fmt == ANY_FORMAT else (fmt,)
        rec = advisor.recommend(machine, advisor.Request(width, height, frames, v.get("priority", "speed"),
                                                         formats=formats))
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
