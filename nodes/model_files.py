"""Model file pickers over ComfyUI's model folders (files and LightX2V-style folders)."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..wan4step.errors import MissingFileError

MODEL_EXTENSIONS = (".safetensors", ".gguf", ".pth", ".pt", ".sft")


def _bases(folders: tuple[str, ...]) -> list[Path]:
    out = []
    for name in folders:
        try:
            out += [Path(p) for p in folder_paths.get_folder_paths(name)]
        except KeyError:
            continue
    return out


def list_models(folders: tuple[str, ...], extensions=MODEL_EXTENSIONS, folder_marker: str | None = None) -> list[str]:
    """Relative names of model files, plus folders that contain `folder_marker` (shown with a trailing '/')."""
    names: set[str] = set()
    for base in _bases(folders):
        if not base.is_dir():
            continue
        for root, dirs, files in os.walk(base, followlinks=True):
            rel = Path(root).relative_to(base)
            if folder_marker and folder_marker in files:
                names.add(rel.as_posix().rstrip("/") + "/")
                dirs[:] = []
                continue
            for f in files:
                if f.lower().endswith(extensions):
                    names.add((rel / f).as_posix())
    return sorted(names, key=str.lower)


def resolve(folders: tuple[str, ...], name: str) -> Path:
    for base in _bases(folders):
        cand = base / name.rstrip("/")
        if cand.exists():
            return cand
    raise MissingFileError(
        f"'{name}' was not found",
        expected=f"a file or folder under ComfyUI's {' / '.join(folders)} model folders",
        fix="refresh the node (R), or put the file into ComfyUI/models/" + folders[0] + "/.",
    )
