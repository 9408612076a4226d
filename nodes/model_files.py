"""Model file pickers over ComfyUI's model folders (files and LightX2V-style folders).

The choke point for every path the pack opens: `resolve` / `opened` take a loader's value
(untrusted: it may arrive on a link, where ComfyUI does not check it against the list),
refuse absolute names and '..', and resolve it inside ComfyUI's registered folders
(`wan4step.paths`). Errors raised while a resolved file is read name it relative to its
model folder (`diffusion_models/x.gguf`), never by the server's absolute path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import folder_paths

from ..wan4step import paths
from ..wan4step.errors import FormatError, MissingFileError, Wan4StepError, with_paths

MODEL_EXTENSIONS = (".safetensors", ".gguf", ".pth", ".pt", ".sft")
LISTING = paths.Listing()  # cached scans, revalidated by folder mtimes (like folder_paths' own cache)


def _bases(folders: tuple[str, ...]) -> list[tuple[str, Path]]:
    out = []
    for name in folders:
        try:
            out += [(name, Path(p)) for p in folder_paths.get_folder_paths(name)]
        except KeyError:
            continue
    return out


def list_models(folders: tuple[str, ...], extensions=MODEL_EXTENSIONS, folder_marker: str | None = None) -> list[str]:
    """Relative names of model files, plus folders that contain `folder_marker` (shown with a trailing '/')."""
    return LISTING.names([b for _, b in _bases(folders)], extensions, folder_marker)


def _kind_ok(found: paths.Found, extensions, folder_marker: str | None, folders_ok: bool) -> bool:
    if found.is_dir:
        return folders_ok and (folder_marker is None or (found.path / folder_marker).is_file())
    return found.path.suffix.lower() in tuple(e.lower() for e in extensions)


def locate(folders: tuple[str, ...], name: str, *, field: str = "name", extensions=MODEL_EXTENSIONS,
           folder_marker: str | None = None, folders_ok: bool = True) -> tuple[paths.Found, str]:
    """(the contained file or folder, the folder key it was found in), or a clear error."""
    parts = paths.name_parts(name, field)
    for key, base in _bases(folders):
        found = paths.find_in(base, parts)
        if found is not None and _kind_ok(found, extensions, folder_marker, folders_ok):
            return found, key
    raise paths.not_found(name, folders, field)


def resolve(folders: tuple[str, ...], name: str, **kw) -> Path:
    """The real path of `name` inside ComfyUI's `folders`; see `locate` for the options."""
    return locate(folders, name, **kw)[0].path


@contextmanager
def opened(folders: tuple[str, ...], name: str, **kw) -> Iterator[Path]:
    """`with opened(("vae",), vae_name, field="vae_name") as path: read(path)`: resolve, and show
    errors raised while reading with the path relative to the model folder."""
    found, key = locate(folders, name, **kw)
    shown = paths.describe(found.name, key)
    parent = found.name.rpartition("/")[0]
    mapping = {str(found.path): shown, str(found.base / found.name): shown,
               str(found.path.parent): paths.describe(parent, key) if parent else key,
               str(found.base): key, os.path.realpath(found.base): key}
    try:
        yield found.path
    except Wan4StepError as exc:
        raise with_paths(exc, mapping) from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise (MissingFileError if isinstance(exc, FileNotFoundError) else FormatError)(
            f"cannot read it ({type(exc).__name__}: {exc.strerror or 'error'})", path=shown,
            fix="check the file's permissions and that it is complete.") from exc


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
