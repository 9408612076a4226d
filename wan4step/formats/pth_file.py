"""PyTorch `.pth` checkpoints, loaded with `weights_only=True`.

A `.pth` is a pickle; an untrusted one can run code when unpickled. Only the
tensor-only subset is accepted, and anything else is refused with a message
instead of being executed.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import FormatError


def read_pth(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        raise FormatError(
            "refused: the .pth file contains pickled Python objects/code, not just tensors",
            path=path,
            found=str(exc).splitlines()[0][:200],
            fix="use the official release file (or its .safetensors version); never load .pth files of unknown origin.",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise FormatError(
            "cannot read the .pth file (truncated or not a PyTorch checkpoint)",
            path=path,
            found=str(exc).splitlines()[0][:200],
            fix="download the file again.",
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FormatError("the .pth file does not hold a flat dict of tensors", path=path)
    return obj


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"
