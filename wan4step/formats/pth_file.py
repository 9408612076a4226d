"""PyTorch `.pth` checkpoints, loaded with `weights_only=True` (DiT, UMT5 and VAE alike).

A `.pth` is a pickle; an untrusted one can run code when unpickled. Only the
tensor-only subset is accepted, and anything else is refused with a message
instead of being executed.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import FormatError

_GET_IT = "download the file again from its official source"
# what torch's weights_only unpickler names when it stops at a global it does not allow
_TORCH_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# globals a tensor-only checkpoint legitimately references (torch.load(weights_only=True) allows them)
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode")


def _globals_in(data: bytes) -> list[str]:
    """Every module.name a pickle imports, read by pickletools (which parses and never executes)."""
    names: list[str] = []
    strings: list[str] = []
    pos = 0
    while pos < len(data):  # a legacy torch.save file is several pickles in a row
        try:
            for op, arg, end in pickletools.genops(data[pos:]):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
                if op.name == "STOP":
                    pos += end + 1
                    break
            else:
                break
        except Exception:  # corrupt or not a pickle past this point: what was found is the answer
            break
    return names


def blocked_global(path: Path, exc: Exception) -> str | None:
    """The first non-tensor global the file imports: torch's message if it names one, else the pickle's."""
    m = _TORCH_GLOBAL.search(str(exc))
    if m:
        return m.group(1)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(member) if member else b""
        else:
            data = path.read_bytes()[:64 * 2**20]  # the pickles precede the tensor data
    except (OSError, zipfile.BadZipFile):
        return None
    return next((g for g in _globals_in(data) if not g.startswith(_TENSOR_GLOBALS)), None)


def read_pth(path: str | Path, source_hint: str = _GET_IT) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict; `source_hint` completes the fix of every error (where to get a good file)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it reads fine
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        name = blocked_global(path, exc)
        raise FormatError(
            "refused to load: the .pth file contains pickled Python code/objects, not only tensors",
            path=path,
            expected="plain tensors (torch.load(weights_only=True))",
            found=f"a reference to the Python global '{name}'" if name else "pickle instructions outside the tensor-only subset",
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
