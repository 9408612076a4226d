"""safetensors files as zero-copy, memory-mapped torch tensors.

Our own header parse (the format is a JSON header + one flat buffer) gives what
`safetensors.safe_open` does not: tensors that are views of one read-only
mapping of the file, tensors we never create for names the caller skips, and a
precise error for an empty or truncated download instead of a crash halfway
through loading.

Why read-only: a private *writable* (copy-on-write) mapping is charged to the
process's commit charge and data limit as if every page might be copied, so on
Linux's default heuristic overcommit a 28.6 GB bf16 file on a 24 GB machine fails
with `OSError: [Errno 12] Cannot allocate memory` before a byte is read. A
read-only mapping costs page cache only, which the kernel evicts at will. The
tensors are read-only memory: the pack and ComfyUI copy weights (to the GPU, to
pinned slabs, into freshly allocated parameters), they never write into them.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import FormatError, OutOfMemoryError

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
    if size == 0:
        raise FormatError("the file is empty (0 bytes)", path=path,
                          fix="the download did not complete; delete the file and download it again.")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"file is truncated ({size} bytes, no safetensors header)", path=path,
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


def entry_nbytes(entry: dict) -> int:
    start, stop = entry["data_offsets"]
    return int(stop) - int(start)


def map_read_only(path: Path) -> mmap.mmap:
    """The whole file as a read-only mapping; ENOMEM (address space / map count) named, not bare."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        if hasattr(mmap, "MAP_PRIVATE"):  # POSIX: private + read-only is never charged as committed memory
            return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except OSError as e:
        if e.errno == errno.ENOMEM:
            raise OutOfMemoryError(
                f"the system refused to map the {path.stat().st_size / 1e9:.1f} GB file into memory ({e})",
                path=path,
                fix="the process may not map that much (ulimit -v) or has too many mappings "
                    "(vm.max_map_count); raise the limit, or use a smaller (GGUF/FP8) file.",
            ) from None
        raise
    finally:
        os.close(fd)


def open_safetensors(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    skipped: dict[str, int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of a file (those `keep` accepts) as views of one read-only memory map.

    Names `keep` refuses are never turned into tensors, so their bytes are never read;
    with `skipped` given, their stored sizes are recorded there.
    """
    path = Path(path)
    header, meta, base = read_header(path)
    mm = map_read_only(path)
    out: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        # the map is read-only on purpose; torch warns because it cannot mark tensors read-only
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        for name, e in header.items():
            if keep is not None and not keep(name):
                if skipped is not None:
                    skipped[name] = entry_nbytes(e)
                continue
            dtype = _DTYPES.get(e["dtype"])
            if dtype is None:
                raise FormatError(f"tensor '{name}' has unsupported dtype {e['dtype']}", path=path)
            start, stop = e["data_offsets"]
            shape = tuple(e["shape"])
            count = stop - start
            if count == 0:
                out[name] = torch.empty(shape, dtype=dtype)
                continue
            want = dtype.itemsize * int(torch.Size(shape).numel())
            if want != count:
                raise FormatError(f"tensor '{name}' holds {count} bytes, its shape {list(shape)} needs {want}",
                                  path=path, fix="the file is damaged; download it again.")
            buf = torch.frombuffer(mm, dtype=torch.uint8, count=count, offset=base + start)
            out[name] = buf.view(dtype).reshape(shape)
    return out, meta
