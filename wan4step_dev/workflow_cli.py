"""Regenerate (or check) the API twins of the repository's workflows: `workflows/*.json` -> `workflows/api/`.

    python -m wan4step_dev.workflow_cli [--server URL | --object-info FILE] [--check] [FILES...]

Without --server/--object-info it boots a headless ComfyUI (`wan4step_dev.comfy_server`) to read
the node definitions, so the pack's and ComfyUI-GGUF's nodes are the installed ones. The
conversion itself is `wan4step.workflow_convert.to_api` (the API queue uses it too).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from wan4step.workflow_convert import WorkflowError, dumps_api, to_api

REPO_ROOT = Path(__file__).resolve().parent.parent
UI_DIR = REPO_ROOT / "workflows"
API_DIR = UI_DIR / "api"


def api_path_for(ui_path: Path) -> Path:
    return ui_path.parent / "api" / ui_path.name


def ui_workflows(folder: Path = UI_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("*.json"))


def fetch_object_info(server: str | None = None, object_info_file: str | None = None) -> dict:
    """Node definitions from a running ComfyUI, a saved /object_info JSON, or a headless one booted here."""
    if object_info_file:
        return json.loads(Path(object_info_file).read_text())
    from wan4step.comfy_client import ComfyClient

    if server:
        return ComfyClient(server, timeout=120).object_info()
    from .comfy_server import HOW_TO_GET_COMFYUI, ComfyServer, find_comfyui, prepare_base_dir, temp_base_dir

    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit(HOW_TO_GET_COMFYUI)
    extras = [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()]
    base = prepare_base_dir(temp_base_dir("wan4step-convert-"), extras)
    with ComfyServer(comfyui, base) as client:
        return client.object_info()


def convert_files(paths: list[Path], object_info: Mapping, check: bool = False) -> list[str]:
    """Write (or with check=True only compare) the API twin of each UI workflow; returns problems."""
    problems = []
    for ui in paths:
        api = dumps_api(to_api(json.loads(ui.read_text()), object_info))
        out = api_path_for(ui)
        if check:
            if not out.is_file() or out.read_text() != api:
                problems.append(f"{out} is out of date with {ui.name}: run python -m wan4step_dev.workflow_cli")
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(api)
            print(f"wrote {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan4step_dev.workflow_cli", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="UI workflows (default: every workflows/*.json)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--server", help="a running ComfyUI to read /object_info from, e.g. http://127.0.0.1:8188")
    src.add_argument("--object-info", help="a saved /object_info JSON file")
    ap.add_argument("--check", action="store_true", help="only check that workflows/api/ is up to date (exit 1 if not)")
    args = ap.parse_args(argv)
    files = args.files or ui_workflows()
    info = fetch_object_info(args.server, args.object_info)
    try:
        problems = convert_files(files, info, check=args.check)
    except WorkflowError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
