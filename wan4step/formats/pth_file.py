"""PyTorch `.pth` checkpoints, loaded with `weights_only=True` (DiT, UMT5 and VAE alike).

A `.pth` is a pickle; an untrusted one can run code when unpickled. Only the
tensor-only subset is accepted, and anything else is refused with a message
instead of being executed.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import FormatError

_GET_IT = "download the file again from its official source"


def read_pth(path: str | Path, source_hint: str = _GET_IT) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict; `source_hint` completes the fix of every error (where to get a good file)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it reads fine
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise FormatError(
            "refused to load: the .pth file contains pickled Python code/objects, not only tensors",
            path=path,
            expected="plain tensors (torch.load(weights_only=True))",
            found=str(exc).splitlines()[0][:200],
            fix=f"{source_hint} (or its .safetensors version); never load .pth files of unknown origin.",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise FormatError(
            "cannot read the .pth file: it is truncated or not a PyTorch checkpoint",
            path=path,
            found=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            fix=f"the download was probably interrupted; delete it and {source_hint}.",
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FormatError("the .pth file does not hold a flat dict of tensors", path=path,
                          expected="a state dict (name -> tensor)", found=type(obj).__name__)
    return obj
