"""Names inside model folders: the one place a graph's or a route's string becomes a path.

Every string that names a model file arrives untrusted: ComfyUI checks "value in list" only
for values typed into a widget, not for values that arrive on a link (core's switch and
primitive nodes pass any string) or in an API prompt's link. So a name is taken apart here:

- it must be relative: no leading '/' or '\\', no drive ('C:'), no NUL, no '..' part;
- it is joined part by part under a model folder, and the result is resolved (symlinks
  followed) and must lie inside the folder, or inside the target of a symlink that sits
  inside the folder: an operator who links `models/diffusion_models/shared -> /mnt/models`
  is honoured, a name cannot reach anything the folder does not already link to.

`scan` lists a folder the way the loaders show it, following symlinks but never around a
loop (ComfyUI's own `os.walk(followlinks=True)` walks a self-link 40 levels deep until the
kernel's ELOOP stops it, and two self-links in one folder take 2^40 steps), with caps on
depth and folder count so one bad link cannot stall a server. `Listing` caches a scan and
revalidates it by folder mtimes, as ComfyUI's `folder_paths.get_filename_list` does.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from .errors import MissingFileError, SettingsError

log = logging.getLogger("wan4step")

MAX_DEPTH = 16  # folder levels below a model folder that are listed
MAX_DIRS = 20_000  # folders visited per model folder before the listing stops (with a warning)


def name_parts(name: str, field_name: str = "name") -> tuple[str, ...]:
    """A model-folder name as its parts; refuses anything that could leave the folder."""
    if not isinstance(name, str):
        raise SettingsError(f"{field_name} must be a text value", found=type(name).__name__)
    why = None
    if "\0" in name:
        why = "it contains a NUL character"
    elif name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        why = "it is an absolute path"
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if why is None and ".." in parts:
        why = "it contains '..'"
    if why is None and not parts:
        why = "it is empty"
    if why is not None:
        raise SettingsError(
            f"{field_name} {_quoted(name)} was refused: {why}",
            expected="a name relative to the model folder, as the node's list shows it",
            fix="pick the file from the list; to use files elsewhere, the server's operator adds the folder "
                "to extra_model_paths.yaml or links it into the model folder.",
        )
    return parts


def _quoted(name: str) -> str:
    """The name for an error message: printable, bounded."""
    text = name if len(name) <= 120 else name[:117] + "..."
    return repr(text)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Found:
    """A name resolved inside one model folder."""

    path: Path  # the real (symlink-free) path that is opened
    base: Path  # the model folder it was found under (as registered)
    name: str  # the name, normalized: parts joined with '/'
    is_dir: bool


def find_in(base: Path, parts: Sequence[str]) -> Found | None:
    """`base/parts` resolved and contained, or None when it does not exist there.

    Containment is checked on the resolved path: it must lie under the real base folder or
    under the real target of a symlink met on the way (one placed inside the folder)."""
    try:
        real_base = base.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    roots = [real_base]
    cur = base
    for part in parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            try:
                roots.append(cur.resolve(strict=True))
            except (OSError, RuntimeError):  # dangling link or a loop
                return None
    try:
        real = cur.resolve(strict=True)
        is_dir = real.is_dir()
    except (OSError, RuntimeError):
        return None
    if not any(_inside(real, r) for r in roots):
        return None
    return Found(real, base, "/".join(parts), is_dir)


def describe(found_name: str, folder_key: str) -> str:
    """How a path is shown to users: relative to its model folder, never the server's path."""
    return f"{folder_key}/{found_name}"


# --------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    names: list[str]
    dir_mtimes: dict[str, float] = field(default_factory=dict)  # every folder read -> its mtime
    truncated: bool = False


def scan(base: Path, extensions: Sequence[str], folder_marker: str | None = None,
         max_depth: int = MAX_DEPTH, max_dirs: int = MAX_DIRS) -> ScanResult:
    """Relative names of files ending in `extensions`, plus folders holding `folder_marker`
    (shown with a trailing '/', not descended into). Symlinks are followed, loops are not."""
    exts = tuple(e.lower() for e in extensions)
    out = ScanResult([])
    if not base.is_dir():
        return out
    budget = [max_dirs]

    def walk(path: Path, rel: tuple[str, ...], ancestors: frozenset) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        ident = (st.st_dev, st.st_ino)
        if ident in ancestors:  # a link back to a folder above: a loop
            return
        if budget[0] <= 0 or len(rel) > max_depth:
            out.truncated = True
            return
        budget[0] -= 1
        out.dir_mtimes[str(path)] = st.st_mtime
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        names = {e.name for e in entries}
        if folder_marker and rel and folder_marker in names:
            out.names.append("/".join(rel) + "/")
            return
        inner = ancestors | {ident}
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                if e.name != ".git":
                    walk(Path(e.path), rel + (e.name,), inner)
            elif e.name.lower().endswith(exts) and exts:
                try:
                    if e.is_file(follow_symlinks=True):
                        out.names.append("/".join(rel + (e.name,)))
                except OSError:
                    continue

    walk(base, (), frozenset())
    if out.truncated:
        log.warning("Wan4Step: listing of a model folder stopped at %d levels / %d folders; a symlink in it "
                    "may point at a large tree", max_depth, max_dirs)
    return out


class Listing:
    """`scan` over several folders, cached until a folder that was read changes (mtime) or
    the set of folders changes; thread-safe (routes list from worker threads)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[list[str], dict[str, float]]] = {}
        self._lock = threading.Lock()
        self.scans = 0  # how many real scans ran (tests)

    @staticmethod
    def _valid(mtimes: dict[str, float]) -> bool:
        for d, m in mtimes.items():
            try:
                if os.stat(d).st_mtime != m:
                    return False
            except OSError:
                return False
        return True

    def names(self, bases: Sequence[Path], extensions: Sequence[str], folder_marker: str | None = None) -> list[str]:
        key = (tuple(str(b) for b in bases), tuple(extensions), folder_marker,
               tuple(b.is_dir() for b in bases))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and self._valid(hit[1]):
                return list(hit[0])
        names: set[str] = set()
        mtimes: dict[str, float] = {}
        for b in bases:
            r = scan(b, extensions, folder_marker)
            names.update(r.names)
            mtimes.update(r.dir_mtimes)
        result = sorted(names, key=str.lower)
        with self._lock:
            self.scans += 1
            self._cache[key] = (result, mtimes)
        return list(result)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def not_found(name: str, folders: Sequence[str], field_name: str) -> MissingFileError:
    return MissingFileError(
        f"{field_name} {_quoted(name)} was not found",
        expected=f"a file or folder under ComfyUI's {' / '.join(folders)} model folders",
        fix="refresh the node (R), or put the file into ComfyUI/models/" + folders[0] + "/.",
    )
