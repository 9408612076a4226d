"""HTTP routes on ComfyUI's server, registered from `ComfyExtension.on_load` (not at import).

Importing the pack (tools, tests, a second import) must not touch a server; ComfyUI calls
`on_load` once, while it loads custom nodes, before it hands its route table to aiohttp.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("wan4step")


def server_routes():
    """The running ComfyUI server's aiohttp RouteTableDef, or None (no server in this process)."""
    server = sys.modules.get("server")
    inst = getattr(getattr(server, "PromptServer", None), "instance", None)
    return getattr(inst, "routes", None)


def register(modules, routes=None) -> list[str]:
    """Let each module add its routes (`mod.register_routes(routes)`); returns the paths added."""
    routes = server_routes() if routes is None else routes
    if routes is None:
        return []
    before = len(list(routes))
    for mod in modules:
        mod.register_routes(routes)
    paths = [getattr(r, "path", "?") for r in list(routes)[before:]]
    log.info("Wan4Step: HTTP routes registered: %s", ", ".join(paths))
    return paths
