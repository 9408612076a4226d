"""A fast GGUF reader: metadata with numpy, tensors as views of one memory map.

`gguf.GGUFReader` parses every element of every metadata array into its own
numpy object. A UMT5 GGUF carries its tokenizer as metadata (256k tokens,
scores, types and a ~240 KB charsmap stored as a UINT8 array), which costs it
several seconds per load (3.6 s for the tiny test file's charsmap alone); here
numeric arrays are one `np.frombuffer` each and strings one slice each.
Layout (GGUF v2/v3, little endian): magic, version u32, n_tensors u64, n_kv u64,
key/value pairs, tensor infos (name, n_dims u32, dims u64[n] innermost first,
type u32, offset u64), padding to `general.alignment` (32), tensor data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError

_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY, _BOOL, _UINT8 = 8, 9, 7, 0


@dataclass
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (outermost first)
    qtype: int
    data: np.ndarray  # uint8 view of the stored bytes


class _Cursor:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise FormatError("the GGUF file is truncated (metadata ends early)", path=self.path,
                              fix="the download was interrupted; delete the file and download it again.")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u64())).decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            if etype == _STRING:
                return [self.string() for _ in range(count)]
            if etype == _UINT8:
                return bytes(self.take(count))
            if etype not in _SCALARS:
                raise FormatError(f"unknown GGUF array type {etype}", path=self.path)
            dt = np.dtype(_SCALARS[etype])
            arr = np.frombuffer(self.take(count * dt.itemsize), dtype=dt)
            return [bool(x) for x in arr] if etype == _BOOL else arr.tolist()
        if vtype not in _SCALARS:
            raise FormatError(f"unknown GGUF value type {vtype}", path=self.path)
        dt = np.dtype(_SCALARS[vtype])
        v = np.frombuffer(self.take(dt.itemsize), dtype=dt)[0].item()
        return bool(v) if vtype == _BOOL else v


def read_gguf(path: str | Path) -> tuple[dict, list[GGUFTensorInfo]]:
    """(metadata dict, tensors in file order); tensor data are views of a read-only memmap."""
    from gguf import GGML_QUANT_SIZES

    path = Path(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(mm), path)
    if bytes(cur.take(4)) != b"GGUF":
        raise FormatError("not a GGUF file", path=path)
    version = cur.u32()
    if version not in (2, 3):
        raise FormatError(f"GGUF version {version} is not supported", path=path, expected="version 2 or 3",
                          fix="update the pack, or re-convert the file with a current llama.cpp.")
    n_tensors, n_kv = cur.u64(), cur.u64()
    meta: dict = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.u32())
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.u64() for _ in range(cur.u32())]
        infos.append((name, dims, cur.u32(), cur.u64()))
    align = int(meta.get("general.alignment", 32))
    start = (cur.pos + align - 1) // align * align
    tensors = []
    for name, dims, qtype, offset in infos:
        if qtype not in GGML_QUANT_SIZES:
            raise FormatError(f"tensor '{name}' has unknown ggml type id {qtype}", path=path)
        block, size = GGML_QUANT_SIZES[qtype]
        n = int(np.prod(dims)) if dims else 1
        nbytes = n // block * size
        begin = start + offset
        if begin + nbytes > len(mm):
            raise FormatError("the GGUF file is truncated", path=path,
                              expected=f"at least {begin + nbytes:,} bytes (tensor '{name}')", found=f"{len(mm):,} bytes",
                              fix="the download was interrupted; delete the file and download it again.")
        tensors.append(GGUFTensorInfo(name, tuple(int(d) for d in reversed(dims)), int(qtype), mm[begin:begin + nbytes]))
    return meta, tensors
