"""Shared fixtures: the repo on sys.path, tiny models, and a real ComfyUI.

ComfyUI is found through COMFYUI_PATH or ~/.cache/wan4step/ComfyUI. Without it,
every test that needs it is skipped and the run says so in one loud line;
there is never a fake ComfyUI.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Appended, not prepended: ComfyUI owns a top-level module called `nodes`, and the
# repo's own `nodes/` package must never shadow it.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI, find_comfyui  # noqa: E402

COMFYUI = find_comfyui()
PACK_MODULE = "ComfyUI_Wan4Step_under_test"


def pytest_report_header(config):
    if COMFYUI is None:
        return f"!!! {HOW_TO_GET_COMFYUI} -- integration tests will be SKIPPED !!!"
    return f"real ComfyUI: {COMFYUI}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if COMFYUI is None:
        terminalreporter.write_line(f"!!! integration tests were skipped: {HOW_TO_GET_COMFYUI} !!!", red=True, bold=True)


def require_comfyui() -> Path:
    if COMFYUI is None:
        pytest.skip(HOW_TO_GET_COMFYUI)
    return COMFYUI


@pytest.fixture(scope="session")
def comfy() -> types.SimpleNamespace:
    """ComfyUI imported in this process (CPU), plus this pack loaded the way ComfyUI loads it."""
    path = require_comfyui()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    argv = sys.argv
    sys.argv = ["main.py", "--cpu", "--disable-dynamic-vram"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses sys.argv once)
    finally:
        sys.argv = argv
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.utils
    import folder_paths

    return types.SimpleNamespace(path=path, sd=comfy.sd, mm=comfy.model_management, utils=comfy.utils,
                                 samplers=comfy.samplers, sample=comfy.sample, folder_paths=folder_paths)


@pytest.fixture(scope="session")
def pack(comfy) -> types.ModuleType:
    """This repository imported as a ComfyUI custom-node package (relative imports and all),
    sharing one copy of the engine with the tests' `import wan4step`."""
    from wan4step_dev.packaging_alias import load_pack

    return load_pack(PACK_MODULE)


@pytest.fixture(scope="session")
def comfyui_gguf(comfy) -> types.ModuleType:
    """city96's ComfyUI-GGUF package from the ComfyUI checkout (skipped when absent)."""
    import importlib.util

    root = comfy.path / "custom_nodes" / "ComfyUI-GGUF"
    if not (root / "nodes.py").is_file():
        pytest.skip(f"ComfyUI-GGUF is not installed in {root.parent}")
    name = "comfyui_gguf_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A headless ComfyUI subprocess (CPU) with this pack and ComfyUI-GGUF, on a free port."""
    path = require_comfyui()
    from wan4step_dev.comfy_server import ComfyServer, prepare_base_dir

    base = tmp_path_factory.mktemp("comfy_base")
    extras = [p for p in [path / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()]
    prepare_base_dir(base, extras)
    server = ComfyServer(path, base)
    client = server.start()
    client.base_dir = base
    client.server = server
    yield client
    server.stop()
