"""Dev tooling stays out of a user's ComfyUI: loading the pack imports none of it.

A fresh ComfyUI process (CPU) loads this repository with ComfyUI's own `nodes.load_custom_node`
(exec of `__init__.py`, `comfy_entrypoint`, `on_load`, `get_node_list`, every node's schema:
what startup does), then reports `sys.modules`. The Registry zip's side is in
tests/integration/test_registry_pack.py (`test_zip_holds_only_what_a_user_runs`).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI, find_comfyui

REPO = Path(__file__).resolve().parents[2]
# pack modules a startup must not import: the API queue (a CLI) and what only it needs, and the tiny
# generators (the Tiny Models node imports them when it runs)
NOT_AT_STARTUP = ("wan4step.api_queue", "wan4step.comfy_client", "wan4step.workflow_convert", "wan4step.tiny.dit",
                  "wan4step.tiny.umt5", "wan4step.tiny.vae")

LOAD = r"""
import asyncio, json, sys
comfy, pack = sys.argv[1], sys.argv[2]
sys.path.insert(0, comfy)
sys.argv = ["main.py", "--cpu", "--disable-dynamic-vram"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.cli_args  # noqa: F401
import nodes
ok = asyncio.run(nodes.load_custom_node(pack))
ours = sorted(k for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("Wan4Step"))
print(json.dumps({"ok": ok, "nodes": ours, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def startup() -> dict:
    comfyui = find_comfyui()
    if comfyui is None:
        pytest.skip(HOW_TO_GET_COMFYUI)
    r = subprocess.run([sys.executable, "-c", LOAD, str(comfyui), str(REPO)], cwd=comfyui, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_comfyui_loads_the_pack_without_dev_modules(startup):
    assert startup["ok"] and "Wan4StepModelLoader" in startup["nodes"] and "Wan4StepTinyModels" in startup["nodes"]
    mods = startup["modules"]
    prefix = str(REPO).replace(".", "_x_")  # ComfyUI's sys.modules name for a custom-node folder
    ours = [m for m in mods if m.startswith(prefix + ".")]
    assert any(m.endswith(".wan4step.tiny.install") for m in ours), "the Tiny Models node's installer is expected"
    dev = [m for m in mods if m == "wan4step_dev" or m.startswith("wan4step_dev.") or ".wan4step_dev" in m]
    assert dev == [], dev
    lazy = [m for m in ours if m[len(prefix) + 1:] in NOT_AT_STARTUP]
    assert lazy == [], f"imported at ComfyUI startup: {lazy}"


def _imports(path: Path) -> set[str]:
    """Every module name an import statement in `path` names (top-level or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_runtime_module_imports_dev_tooling():
    """Also the imports a startup never runs (inside functions): the pack's code never names wan4step_dev."""
    runtime = [REPO / "__init__.py", *sorted((REPO / "nodes").rglob("*.py")), *sorted((REPO / "wan4step").rglob("*.py"))]
    bad = {str(p.relative_to(REPO)): sorted(m for m in _imports(p) if m.split(".")[0] == "wan4step_dev")
           for p in runtime}
    assert {k: v for k, v in bad.items() if v} == {}
