"""GGUF DiT files (QuantStack / city96 Wan2.1 GGUFs): read into the canonical key space, and write.

Reading is zero-copy: `gguf.GGUFReader` memory-maps the file and every tensor we
return is a torch view of that map, so loading a 10 GB Q4_K_M file costs page
tables, not RAM; bytes are paged in when a block is first copied to the GPU.
The views are read-only memory: copy before writing into one.

What these files look like (facts from city96's ComfyUI-GGUF `loader.py`,
`tools/convert.py`, `tools/lcpp.patch`):
- `general.architecture` = "wan"; tensor names are the original Wan names,
  sometimes behind a `model.diffusion_model.` prefix; files without an
  architecture field (stable-diffusion.cpp, old converters) are recognised by
  their keys.
- ggml stores dims innermost-first, so the torch shape is the reverse of the
  GGUF dims; `comfy.gguf.orig_shape.<name>` (int32 array) overrides it when a
  converter reshaped a tensor.
- Only 2-D block linears are quantized. Biases, norms and other 1-D tensors,
  the `.modulation` parameters (3-D [1, 6, dim]) and the 5-D conv
  `patch_embedding.weight` are F32; the other non-block 2-D weights (text/time
  embeddings, time projection, head) stay in the base F16/BF16.
- 5-D tensors: `convert.py` cannot hand a 5-D tensor to llama-quantize (4 dims
  max), so it leaves `patch_embedding.weight` (and a VACE file's
  `vace_patch_embedding.weight`) out of the GGUF and saves it to
  `fix_5d_tensors_wan.safetensors` (`ModelHyVid.handle_nd_tensor`); its
  `fix_5d_tensors.py` then appends each as a 5-D F32 tensor right after its
  `.bias`. Published files carry them that way, and the reader takes a 5-D
  tensor as it is. A file that skipped the fix step is read with the fix file
  next to it (the pack does what fix_5d_tensors.py would; that script itself no
  longer runs: with current gguf/numpy `int()` of its file-type field raises
  "only 0-dimensional arrays can be converted to Python scalars").
- VACE-merged files (QuantStack's `Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-
  <TIER>.gguf`) add `vace_patch_embedding.*` and `vace_blocks.N.*` (see
  `wan_config`). The lcpp patch's Wan rules are by name, so they apply to the VACE
  blocks too: their 2-D weights (the ten linears, `before_proj`, `after_proj`) are
  quantized like the main blocks' (`.v.weight` and `.ffn.2.weight` by the same
  rules), `vace_patch_embedding.` is never quantized.

Write rule (`tier_type`), the patched llama-quantize's rule for Wan as far as it
applies to T2V: the tier's base type for every block linear weight, except
- `.v.weight` (self and cross attention): Q2_K -> Q3_K; Q3_K_M -> Q5_K for the
  first two in file order then Q4_K; Q3_K_L -> Q5_K; Q4_K_S -> Q5_K for the first
  four; Q4_K_M and Q5_K_M -> Q6_K;
- `ffn.2.weight` (the down projection): Q3_K_M -> Q4_K; Q3_K_L, Q4_K_S -> Q5_K;
  Q4_K_M, Q5_K_M -> Q6_K; Q4_0 -> Q4_1; Q5_0 -> Q5_1;
- a K-quant on a row that is not a multiple of 256 falls back to F16.
Tensors are written in sorted-name order (the order of a safetensors source),
which is what "first two/four" counts in.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from gguf import (
    GGML_QUANT_SIZES,
    GGML_QUANT_VERSION,
    GGMLQuantizationType,
    GGUFReader,
    GGUFValueType,
    GGUFWriter,
    LlamaFileType,
)

from ..errors import FormatError, WrongModelError, describe_head
from ..quant.gguf_dequant import FLOAT_TYPES, check_supported
from ..quant.gguf_encode import encode
from ..quant.weights import GGUF, QuantWeight
from ..wan_config import BLOCK_LINEARS, detect_config, detect_vace
from .safetensors_file import open_safetensors

log = logging.getLogger("wan4step")

Q = GGMLQuantizationType
ARCH = "wan"
PREFIX = "model.diffusion_model."
# a file with no architecture (stable-diffusion.cpp) or city96's placeholders is identified by its keys
_COMPAT_ARCHS = {None, "pig", "cow"}
_TEXT_ARCHS = {"t5", "t5encoder", "umt5", "llama", "qwen2vl", "qwen3", "qwen3vl", "clip", "gemma", "gemma2", "gemma3"}

# tier -> (base type for block linears, general.file_type)
TIERS: dict[str, tuple[int, int]] = {
    "Q2_K": (Q.Q2_K, LlamaFileType.MOSTLY_Q2_K),
    "Q3_K_S": (Q.Q3_K, LlamaFileType.MOSTLY_Q3_K_S),
    "Q3_K_M": (Q.Q3_K, LlamaFileType.MOSTLY_Q3_K_M),
    "Q3_K_L": (Q.Q3_K, LlamaFileType.MOSTLY_Q3_K_L),
    "Q4_0": (Q.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (Q.Q4_1, LlamaFileType.MOSTLY_Q4_1),
    "Q4_K_S": (Q.Q4_K, LlamaFileType.MOSTLY_Q4_K_S),
    "Q4_K_M": (Q.Q4_K, LlamaFileType.MOSTLY_Q4_K_M),
    "Q5_0": (Q.Q5_0, LlamaFileType.MOSTLY_Q5_0),
    "Q5_1": (Q.Q5_1, LlamaFileType.MOSTLY_Q5_1),
    "Q5_K_S": (Q.Q5_K, LlamaFileType.MOSTLY_Q5_K_S),
    "Q5_K_M": (Q.Q5_K, LlamaFileType.MOSTLY_Q5_K_M),
    "Q6_K": (Q.Q6_K, LlamaFileType.MOSTLY_Q6_K),
    "Q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "F16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "BF16": (Q.BF16, LlamaFileType.MOSTLY_BF16),
}

_V_RULE: dict[str, int] = {"Q2_K": Q.Q3_K, "Q3_K_L": Q.Q5_K, "Q4_K_M": Q.Q6_K, "Q5_K_M": Q.Q6_K}
_V_FIRST: dict[str, tuple[int, int, int]] = {"Q3_K_M": (2, Q.Q5_K, Q.Q4_K), "Q4_K_S": (4, Q.Q5_K, Q.Q4_K)}
_FFN_DOWN_RULE: dict[str, int] = {
    "Q3_K_M": Q.Q4_K, "Q3_K_L": Q.Q5_K, "Q4_K_S": Q.Q5_K, "Q4_K_M": Q.Q6_K, "Q5_K_M": Q.Q6_K,
    "Q4_0": Q.Q4_1, "Q5_0": Q.Q5_1,
}
_K_TYPES = {int(Q.Q2_K), int(Q.Q3_K), int(Q.Q4_K), int(Q.Q5_K), int(Q.Q6_K)}
_BLOCK_LINEAR = re.compile(
    r"^(vace_)?blocks\.\d+\.(" + "|".join(re.escape(n) for n in (*BLOCK_LINEARS, "before_proj", "after_proj")) + r")\.weight$"
)
_QUANTIZATION_THRESHOLD = 1024  # city96's convert.py keeps tensors this small in F32
FIX_5D_FILE = "fix_5d_tensors_wan.safetensors"  # convert.py's name for the 5-D tensors it leaves out
FIVE_D_KEYS = ("patch_embedding.weight", "vace_patch_embedding.weight")


# -- reading -----------------------------------------------------------------------

def _describe_head(head: bytes) -> str:
    if not head:
        return "an empty file"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "a PyTorch .pth/.ckpt checkpoint"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a .safetensors file"
    if head.lstrip()[:1] in (b"<", b"{"):
        return "a text/HTML file (a failed download page?)"
    return describe_head(head)


def _open_reader(path: Path) -> GGUFReader:
    if not path.is_file():
        raise FormatError("file not found", path=path, fix="check the file name in the loader.")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] != b"GGUF":
        raise FormatError(
            "not a GGUF file",
            path=path,
            expected="a GGUF model (starts with the bytes 'GGUF')",
            found=_describe_head(head),
            fix="pick a .gguf Wan2.1 T2V-14B file, or the loader for this format.",
        )
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, OSError) as e:
        raise FormatError(
            "truncated or corrupt GGUF file",
            path=path,
            expected="a complete GGUF file",
            found=f"{path.stat().st_size} bytes that the GGUF reader rejects ({e})",
            fix="the download is incomplete or damaged; download the file again.",
        ) from e
    if reader.byte_order != "I":  # tensors would need a byte swap, i.e. a full copy
        raise FormatError(
            "big-endian GGUF file",
            path=path,
            expected="a little-endian GGUF (every published Wan GGUF is)",
            fix="download the standard (little-endian) file.",
        )
    return reader


def _string_field(reader: GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None:
        return None
    if len(field.types) != 1 or field.types[0] != GGUFValueType.STRING:
        return None
    return bytes(field.parts[field.data[-1]]).decode("utf-8", errors="replace")


def _orig_shape(reader: GGUFReader, name: str) -> tuple[int, ...] | None:
    field = reader.get_field(f"comfy.gguf.orig_shape.{name}")
    if field is None or len(field.types) != 2 or field.types[0] != GGUFValueType.ARRAY:
        return None
    return tuple(int(field.parts[i][0]) for i in field.data)


def _check_arch(arch: str | None, path: Path) -> None:
    if arch in _COMPAT_ARCHS or arch == ARCH:
        return
    text = arch in _TEXT_ARCHS
    raise WrongModelError(
        f"this GGUF holds a '{arch}' {'text model' if text else 'model'}, not a Wan2.1 diffusion model",
        path=path,
        expected="general.architecture 'wan' (a Wan2.1 T2V-14B GGUF, e.g. QuantStack's "
                 "Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-<TIER>.gguf)",
        found=f"general.architecture '{arch}'",
        fix=(
            "load text-encoder GGUFs (UMT5) in the Wan4Step UMT5 Loader and pick a Wan2.1 T2V-14B GGUF here."
            if text
            else "pick a Wan2.1 T2V-14B GGUF in the loader."
        ),
    )


def _canonical_modulation(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Files quantized without the lcpp patch's fix store [6, dim] / [2, dim]; the model wants [1, 6, dim]."""
    if key.endswith("modulation") and len(shape) == 2:
        return (1, *shape)
    return shape


def _as_torch(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # the map is read-only; torch warns because it cannot mark tensors read-only
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def _fix_5d(path: Path, wanted: list[str], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The 5-D tensors convert.py left out, from its fix file next to the GGUF (see the module docstring)."""
    fix = path.parent / FIX_5D_FILE
    if not fix.is_file():
        raise FormatError(
            f"the GGUF has no {wanted[0]}: city96's convert.py leaves this 5-D tensor out of the GGUF and "
            f"saves it to {FIX_5D_FILE}",
            path=path,
            expected=f"a complete Wan2.1 GGUF (with its 5-D {', '.join(wanted)}) or {FIX_5D_FILE} next to it",
            found=f"{len(shapes)} tensors without it, and no {FIX_5D_FILE} in {path.parent}",
            fix=f"download the complete published file, or put the {FIX_5D_FILE} written by convert.py next to this one.",
        )
    tensors, _ = open_safetensors(fix)
    out = {}
    for key in wanted:
        t = tensors.get(key)
        bias = shapes.get(key[: -len("weight")] + "bias")
        if t is None or t.dim() != 5 or (bias is not None and t.shape[0] != bias[0]):
            raise FormatError(
                f"{FIX_5D_FILE} does not hold this model's {key}",
                path=fix,
                expected=f"a 5-D {key} with {bias[0] if bias else '?'} output channels",
                found=f"{list(t.shape)}" if t is not None else f"only {', '.join(sorted(tensors)) or 'nothing'}",
                fix="it belongs to another conversion; keep each model's fix file with its GGUF, or download the complete file.",
            )
        out[key] = t.float()
        log.info("wan4step: %s read from %s", key, fix)
    return out


def read_gguf(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    skipped: dict[str, int] | None = None,
) -> dict[str, torch.Tensor | QuantWeight]:
    """A Wan2.1 T2V DiT GGUF -> canonical state dict of mmap-backed tensors.

    Quantized tensors come back as `QuantWeight(kind="gguf", data=uint8 [rows, bytes_per_row],
    shape=<torch shape>, qtype=...)`, F32/F16/BF16 ones as plain tensors.
    `keep(name)` (canonical name) false: the tensor is not even type-checked or viewed, so
    its bytes are never read; `skipped` records {name: stored bytes} of those.
    Raises FormatError (not GGUF / truncated / missing the 5-D patch embedding),
    WrongModelError (another architecture or Wan variant), UnsupportedQuantError.
    """
    path = Path(path)
    reader = _open_reader(path)
    _check_arch(_string_field(reader, "general.architecture"), path)

    tensors = list(reader.tensors)
    if any(t.name.startswith(PREFIX) for t in tensors):  # a full checkpoint: keep the DiT only
        tensors = [t for t in tensors if t.name.startswith(PREFIX)]
    named = []
    for t in tensors:
        key = t.name[len(PREFIX):] if t.name.startswith(PREFIX) else t.name
        if keep is not None and not keep(key):
            if skipped is not None:
                skipped[key] = int(t.n_bytes)
            continue
        named.append((key, t))

    shapes: dict[str, tuple[int, ...]] = {}
    for key, t in named:
        shape = _orig_shape(reader, t.name) or tuple(int(v) for v in reversed(t.shape.tolist()))
        shapes[key] = _canonical_modulation(key, shape)
    absent = [k for k in FIVE_D_KEYS if k not in shapes and k[: -len("weight")] + "bias" in shapes]
    extra = _fix_5d(path, absent, shapes) if absent else {}
    shapes.update({k: tuple(v.shape) for k, v in extra.items()})
    cfg = detect_config(shapes, str(path))
    detect_vace(shapes, cfg, str(path))
    for key, t in named:
        check_supported(t.tensor_type, path=path, tensor=key)

    out: dict[str, torch.Tensor | QuantWeight] = dict(extra)
    for key, t in named:
        shape, qtype = shapes[key], int(t.tensor_type)
        data = _as_torch(t.data)
        if qtype in FLOAT_TYPES:
            if qtype == Q.BF16:
                data = data.view(torch.bfloat16)  # stored as uint8 pairs
            out[key] = data.reshape(shape)
        else:
            out[key] = QuantWeight(GGUF, data.reshape(-1, data.shape[-1]), shape, qtype=qtype)
    return out


# -- writing -----------------------------------------------------------------------

def tier_type(key: str, shape: tuple[int, ...], tier: str, v_seen: int = 0) -> int:
    """The ggml type `write_gguf` stores `key` in for this tier (the rule is in the module docstring).

    `v_seen`: how many `.v.weight` tensors came before this one in file order.
    """
    base, _ = TIERS[tier]
    n = int(np.prod(shape)) if shape else 1
    if len(shape) <= 1 or n <= _QUANTIZATION_THRESHOLD or key.endswith("modulation") or len(shape) > 4:
        return int(Q.F32)
    if not _BLOCK_LINEAR.match(key):
        return int(Q.BF16 if tier == "BF16" else Q.F16)
    qtype = int(base)
    if key.endswith(".v.weight"):
        if tier in _V_RULE:
            qtype = int(_V_RULE[tier])
        elif tier in _V_FIRST:
            first, hi, lo = _V_FIRST[tier]
            qtype = int(hi if v_seen < first else lo)
    elif key.endswith(".ffn.2.weight") and tier in _FFN_DOWN_RULE:
        qtype = int(_FFN_DOWN_RULE[tier])
    block = GGML_QUANT_SIZES[Q(qtype)][0]
    if shape[-1] % block:
        return int(Q.F16)
    return qtype


def tier_types(shapes: Mapping[str, tuple[int, ...]], tier: str) -> dict[str, int]:
    """`tier_type` for a whole state dict, in file (sorted-name) order."""
    if tier not in TIERS:
        raise ValueError(f"unknown GGUF tier {tier!r}; one of {', '.join(TIERS)}")
    out: dict[str, int] = {}
    v_seen = 0
    for key in sorted(shapes):
        out[key] = tier_type(key, tuple(shapes[key]), tier, v_seen)
        if key.endswith(".v.weight") and _BLOCK_LINEAR.match(key):
            v_seen += 1
    return out


def write_gguf(path: str | Path, state_dict: Mapping[str, torch.Tensor], tier: str, five_d: str = "inline") -> Path:
    """Write a Wan DiT state dict (canonical keys, float tensors; VACE ones too) as a QuantStack-style GGUF.

    For fixtures and the tiny demo model: the K-quants use `gguf_encode`'s encoders,
    the legacy types gguf's own. `five_d`: "inline" stores the 5-D patch embeddings in
    the GGUF as F32 (what fix_5d_tensors.py leaves, i.e. the published files);
    "sidecar" leaves them out and writes them to `fix_5d_tensors_wan.safetensors`
    next to `path`, as convert.py does before the fix step.
    """
    if five_d not in ("inline", "sidecar"):
        raise ValueError(f"five_d must be 'inline' or 'sidecar', got {five_d!r}")
    path = Path(path)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    cfg = detect_config(shapes, str(path))  # refuse to write something that is not a Wan T2V DiT
    detect_vace(shapes, cfg, str(path))
    types = tier_types(shapes, tier)
    writer = GGUFWriter(path, arch=ARCH)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_file_type(int(TIERS[tier][1]))
    left_out = {}
    for key in sorted(state_dict):
        x = state_dict[key].detach().to(torch.float32).cpu().numpy()
        if five_d == "sidecar" and x.ndim > 4:
            left_out[key] = state_dict[key].detach().to(torch.float32).cpu().contiguous()
            continue
        qtype = types[key]
        if qtype == Q.F32:
            writer.add_tensor(key, np.ascontiguousarray(x))
        elif qtype == Q.F16:
            writer.add_tensor(key, x.astype(np.float16))
        else:  # BF16 and quantized: raw bytes [.., bytes_per_row]; the writer derives the logical shape
            writer.add_tensor(key, encode(x, qtype), raw_dtype=Q(qtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if left_out:
        from safetensors.torch import save_file

        save_file(left_out, str(path.parent / FIX_5D_FILE))
    return path
