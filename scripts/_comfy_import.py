"""Import a real ComfyUI (and this pack as a custom-node package) into a benchmark process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def import_comfy(extra_args: tuple[str, ...] = ("--disable-dynamic-vram",)):
    from wan4step.comfy_server import HOW_TO_GET_COMFYUI, find_comfyui

    path = find_comfyui()
    if path is None:
        raise SystemExit(HOW_TO_GET_COMFYUI)
    sys.path.insert(0, str(path))
    argv = sys.argv
    sys.argv = ["main.py", *extra_args]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
    finally:
        sys.argv = argv
    import comfy.model_management  # noqa: F401
    import comfy.ops  # noqa: F401

    return path


def import_pack(name: str = "ComfyUI_Wan4Step_bench"):
    from wan4step.packaging_alias import load_pack

    return load_pack(name)


def import_comfyui_gguf(comfy_path: Path):
    """city96's ComfyUI-GGUF package (from the checkout's custom_nodes), or None."""
    d = comfy_path / "custom_nodes" / "ComfyUI-GGUF"
    if not d.is_dir():
        return None
    spec = importlib.util.spec_from_file_location("ComfyUI_GGUF_bench", d / "__init__.py", submodule_search_locations=[str(d)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI_GGUF_bench"] = mod
    spec.loader.exec_module(mod)
    return mod
