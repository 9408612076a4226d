"""Model file pickers over ComfyUI's model folders (files and LightX2V-style folders)."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..wan4step.errors import MissingFileError, Wan4StepError

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


def present_files(specs) -> frozenset[str]:
    """The catalog files (`wan4step.catalog.FileSpec`s) already in ComfyUI's model folders, by name:
    their `dest`s, for the advisor's `Request.present`. Each name goes through `resolve`, so the
    same containment rules apply as to a loader's value; a block-folder pattern counts once its
    folder holds all `count` files."""
    out = set()
    for spec in specs:
        try:
            path = resolve((spec.folder,), spec.dest)
        except Wan4StepError:
            continue
        if spec.is_glob:
            pattern = spec.pattern.rsplit("/", 1)[-1]
            if not path.is_dir() or sum(1 for p in path.glob(pattern) if p.is_file()) < spec.count:
                continue
        elif not path.is_file():
            continue
        out.add(spec.dest)
    return frozenset(out)
