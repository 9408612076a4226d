"""Exceptions that are part of the pack's interface.

Every error a user can trigger says which file or setting is at fault, what was
expected, what was found and what to do, because the message is all a ComfyUI
user sees (it is shown in the UI's error dialog, the traceback is not).
"""

from __future__ import annotations

from pathlib import Path

import torch


def _public_module(name: str) -> str:
    """`wan4step.errors` for `/srv/ComfyUI/custom_nodes/ComfyUI-Wan4Step.wan4step.errors`: ComfyUI
    names a custom node package after its folder path and reports errors as module.Class, so the
    module name would show the server's install path to every client."""
    cut = name.rfind(".wan4step.")
    return name[cut + 1:] if cut >= 0 else name


class Wan4StepError(Exception):
    """Base class: anything the pack raises on purpose."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.__module__ = _public_module(cls.__module__)

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}: {self.problem}")
        else:
            parts.append(self.problem)
        if self.expected:
            parts.append(f"Expected: {self.expected}.")
        if self.found:
            parts.append(f"Found: {self.found}.")
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return " ".join(parts)


Wan4StepError.__module__ = _public_module(Wan4StepError.__module__)


class FormatError(Wan4StepError):
    """The file is unreadable, truncated, or not a format the pack knows."""


class WrongModelError(Wan4StepError):
    """The file is a valid model, but not the one this loader expects."""


class MissingFileError(Wan4StepError):
    """A required companion file (block file, tokenizer, ...) is absent."""


class UnsupportedQuantError(Wan4StepError):
    """A quantization type the pack cannot compute with."""


class SettingsError(Wan4StepError):
    """Invalid node settings: sizes, frame counts, incompatible options."""


class OutOfMemoryError(Wan4StepError, torch.OutOfMemoryError):
    """The GPU ran out of memory; the message names the setting to change.

    Also a `torch.OutOfMemoryError`, so a host that recovers from OOMs still sees one (ComfyUI's
    `model_management.is_oom` tests `isinstance(e, torch.cuda.OutOfMemoryError)` and then unloads
    every model), and the engine's fallback policy never mistakes it for a kernel failure.
    """


class DownloadError(Wan4StepError):
    """A model download failed (offline, gated, missing file, bad checksum)."""


def describe_head(head: bytes) -> str:
    """What the first bytes of a file look like, in words: error messages never quote file
    content (a loader pointed at the wrong file must not echo it to whoever asked)."""
    if not head:
        return "an empty file"
    if head[:4] == b"GGUF":
        return "a GGUF file"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "a PyTorch .pth/.ckpt checkpoint"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a .safetensors file"
    if head.startswith(b"version https://git-lfs"):
        return "a git LFS pointer (the download fetched the pointer, not the file)"
    text = head.lstrip()
    if text[:1] in (b"<", b"{", b"["):
        return "a text/HTML/JSON file (a failed download page?)"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return "binary data of an unknown format"


def with_paths(exc: Wan4StepError, mapping: dict[str, str]) -> Wan4StepError:
    """A copy of `exc` (same class) whose text shows `mapping`'s values instead of its keys:
    server paths become names relative to the model folder. Longest keys are replaced first."""
    import copy

    keys = sorted((k for k in mapping if k), key=len, reverse=True)

    def sub(text: str | None) -> str | None:
        if text is None:
            return None
        for k in keys:
            text = text.replace(k, mapping[k])
        return text

    new = copy.copy(exc)
    new.problem, new.path, new.expected, new.found, new.fix = (
        sub(exc.problem), sub(exc.path), sub(exc.expected), sub(exc.found), sub(exc.fix))
    new.args = (new.render(),)
    return new
