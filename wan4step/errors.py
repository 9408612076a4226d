"""Exceptions that are part of the pack's interface.

Every error a user can trigger says which file or setting is at fault, what was
expected, what was found and what to do, because the message is all a ComfyUI
user sees (it is shown in the UI's error dialog, the traceback is not).
"""

from __future__ import annotations

from pathlib import Path

import torch


class Wan4StepError(Exception):
    """Base class: anything the pack raises on purpose."""

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
