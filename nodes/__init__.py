"""ComfyUI adapters: one module per node family, each exporting `NODES`.

Nodes are thin: typed schema, tooltips, a few lines that call the engine
(`wan4step/`), progress and errors. Logic that grows here belongs in the engine.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import (
    advisor,
    block_swap,
    download,
    env_info,
    model_loader,
    sampler,
    text_encoder,
    tiny_models,
    vae_loader,
    web_estimate,
)
from .comfy_compat import routes

_MODULES = [env_info, model_loader, sampler, block_swap, text_encoder, advisor, download, vae_loader, web_estimate, tiny_models]
_ROUTE_MODULES = [advisor, web_estimate]  # each has register_routes(routes)


class Wan4StepExtension(ComfyExtension):
    async def on_load(self) -> None:
        """ComfyUI calls this once while loading custom nodes, before its routes go live."""
        routes.register(_ROUTE_MODULES)

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for mod in _MODULES for node in mod.NODES]


async def comfy_entrypoint() -> Wan4StepExtension:
    return Wan4StepExtension()
