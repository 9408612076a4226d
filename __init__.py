"""ComfyUI-Wan4Step: 4-step Wan2.1 T2V-14B on 8-32 GB GPUs.

ComfyUI imports this file when the pack sits in `custom_nodes/`. Nodes are
registered through the V3 API (`comfy_entrypoint`); classic NODE_CLASS_MAPPINGS
would take precedence over it, so there are none here on purpose.
"""

WEB_DIRECTORY = "./web"

try:
    from .nodes import comfy_entrypoint  # noqa: F401
except ImportError as exc:  # pragma: no cover - only outside ComfyUI
    # Importing the repository as a package outside ComfyUI (tools, pytest) must
    # not fail; inside ComfyUI a real failure is re-raised so it is visible.
    import sys

    if "comfy" in sys.modules:
        raise
    _import_error = exc

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
