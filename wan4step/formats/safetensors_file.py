"""safetensors files as zero-copy, memory-mapped torch tensors.

Our own header parse (the format is a JSON header + one flat buffer) gives two
things `safetensors.safe_open` does not: tensors that are views of one
copy-on-write mmap (so a 28 GB file never costs 28 GB of private RAM while the
model is built), and a precise error for a truncated download instead of a
crash halfway through loading.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import torch

from ..errors import FormatError

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def read_header(path: str | Path) -> tuple[dict, dict, int]:
    """(tensor entries, __metadata__, data offset); raises FormatError on damage."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError("file is empty or truncated (no safetensors header)", path=path,
                              fix="download the file again.")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > 100_000_000 or 8 + n > size:
            raise FormatError("not a safetensors file (bad header length)", path=path,
                              expected="a .safetensors file", fix="check the file type, or download it again.")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise FormatError("not a safetensors file (header is not JSON)", path=path) from None
    meta = header.pop("__metadata__", None) or {}
    end = max((e["data_offsets"][1] for e in header.values()), default=0)
    if 8 + n + end > size:
        raise FormatError(
            "file is truncated",
            path=path,
            expected=f"{8 + n + end:,} bytes",
            found=f"{size:,} bytes",
            fix="the download was interrupted; delete the file and download it again.",
        )
    return header, meta, 8 + n


def open_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of a file as views of one private (copy-on-write) memory map."""
    path = Path(path)
    header, meta, base = read_header(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY) if os.path.getsize(path) else None
    finally:
        os.close(fd)
    out: dict[str, torch.Tensor] = {}
    for name, e in header.items():
        dtype = _DTYPES.get(e["dtype"])
        if dtype is None:
            raise FormatError(f"tensor '{name}' has unsupported dtype {e['dtype']}", path=path)
        start, stop = e["data_offsets"]
        shape = tuple(e["shape"])
        count = stop - start
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        buf = torch.frombuffer(mm, dtype=torch.uint8, count=count, offset=base + start)
        out[name] = buf.view(dtype).reshape(shape)
    return out, meta
