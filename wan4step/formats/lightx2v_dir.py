r"""LightX2V's per-block folders (`distill_fp8/`, `distill_int8/`) of Wan2.1 T2V-14B.

Layout (LightX2V tools/convert/converter.py `--save_by_block`, read back by
lightx2v/common/ops/utils.py `get_lazy_load_file_path`):

    block_0.safetensors ... block_39.safetensors   one file per DiT block (~352 MB at 8 bit)
    non_block.safetensors                          patch/text/time embeddings, head
    diffusion_pytorch_model.safetensors.index.json {"metadata": {"total_size"}, "weight_map": {key: file}}
    config.json, plus the T5/CLIP/VAE .pth files of the release (ignored here)

Keys are the original Wan2.1 names with no prefix (`blocks.3.self_attn.q.weight`,
`head.modulation`): LightX2V's WanTransformerWeights asks for exactly those and
finds block N's file from the `N` in the key. In every block the ten linears of
`wan_config.BLOCK_LINEARS` are quantized (the converter's wan_dit targets: 2-D
tensors under self_attn / cross_attn / ffn); each has `<linear>.weight` (int8
or float8_e4m3fn, [out, in]) and `<linear>.weight_scale` ([out, 1], the source
dtype). Biases, norms, modulation and all of non_block stay float (the
converter's `non_linear_dtype`, float32 unless asked otherwise).

The BF16 `distill_models/` folder of the same release is different: a single
`distill_model.safetensors` with the same canonical keys, read by the plain
safetensors reader, not here.

LightX2V's current release (`lightx2v/Wan2.1-Distill-Models`) ships the same
converter output as `*_split/` folders next to its single files (LightX2V
docs/EN/source/deploy_guides/deploy_gradio.md: "xxx_split directories ... store
multiple safetensors by block"), e.g.
`wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step_split/`: recognised by content
(non_block + block_N files), not by name.

VACE tensors: the converter groups a key into `block_N` when `blocks\.(\d+)\.`
occurs anywhere in it (`re.search`), so `vace_blocks.N.*` land in `block_N`
beside main block N and `vace_patch_embedding.*` in non_block.

Reading is lazy: each file is mapped read-only and tensors are views of the
mapping, so 14 GB of blocks cost no RAM until the block streamer touches them,
and never two copies. Only the small per-row scales are copied (to fp32).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import FormatError, MissingFileError
from ..quant.scaled import quantize_rowwise
from ..quant.weights import FP8, INT8, QuantWeight
from ..wan_config import BLOCK_LINEARS, T2V_14B, detect_config, detect_vace
from .safetensors_file import entry_nbytes, open_safetensors, read_header
from .scaled import SCALE_SUFFIXES, fold_scales

NON_BLOCK = "non_block.safetensors"
INDEX = "diffusion_pytorch_model.safetensors.index.json"
CONFIG = "config.json"
_BLOCK_FILE = re.compile(r"^block_(\d+)\.safetensors$")
_KIND_OF_DTYPE = {"F8_E4M3": FP8, "I8": INT8, "BF16": "bf16", "F16": "bf16", "F32": "bf16"}
_DOWNLOAD_FIX = (
    "the download is incomplete; download the whole distill_fp8/ (or distill_int8/) folder of "
    "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v again."
)
_TRUNCATED_FIX = "the download of this file was interrupted; delete it and download it again."
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
_GROUP = re.compile(r"blocks\.(\d+)\.")  # the converter's --save_by_block grouping (re.search)


def group_index(key: str) -> int | None:
    """The block_N file the converter puts `key` in (None: non_block)."""
    m = _GROUP.search(key)
    return int(m.group(1)) if m else None


def block_file_name(i: int) -> str:
    return f"block_{i}.safetensors"


def is_lightx2v_dir(path: str | Path) -> bool:
    """A folder with non_block.safetensors or block_N.safetensors files."""
    p = Path(path)
    if not p.is_dir():
        return False
    return (p / NON_BLOCK).is_file() or any(_BLOCK_FILE.match(f.name) for f in p.iterdir())


def _header(path: Path) -> dict[str, dict]:
    """The safetensors header ({name: {dtype, shape, data_offsets}}), checked against the file size."""
    return read_header(path)[0]


def _unprefixed(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def _expected_blocks(root: Path, non_block: dict[str, dict], found: dict[int, Path]) -> tuple[int, str]:
    """How many block files the folder must have, and where that number comes from."""
    index = root / INDEX
    if index.is_file():
        try:
            files = set(json.loads(index.read_text()).get("weight_map", {}).values())
            idx = [int(m.group(1)) for f in files if (m := _BLOCK_FILE.match(f))]
            if idx:
                return max(idx) + 1, INDEX
        except (ValueError, OSError, AttributeError):
            pass
    config = root / CONFIG
    if config.is_file():
        try:
            n = int(json.loads(config.read_text())["num_layers"])
            if n > 0:
                return n, CONFIG
        except (ValueError, OSError, KeyError, TypeError):
            pass
    pe = non_block.get("patch_embedding.weight")
    if pe is not None and pe["shape"][0] == T2V_14B.dim:
        return T2V_14B.num_layers, "a dim-5120 (14B) model"
    return (max(found) + 1 if found else 0), "the highest block file found"


def _block_kind(i: int, path: Path, header: dict[str, dict]) -> str:
    kinds = {}
    for lin in BLOCK_LINEARS:
        e = header.get(f"blocks.{i}.{lin}.weight")
        if e is not None:
            kinds[lin] = _KIND_OF_DTYPE.get(e["dtype"], e["dtype"])
    if not kinds:
        raise FormatError(
            f"block file holds no linear weights of block {i}",
            path=path,
            expected=f"blocks.{i}.self_attn.q.weight and the other block linears",
            found=", ".join(sorted(header)[:4]) or "no tensors",
            fix=_DOWNLOAD_FIX,
        )
    distinct = set(kinds.values())
    if len(distinct) > 1:
        raise FormatError(
            "block mixes weight encodings",
            path=path,
            expected="all ten linears in one encoding (fp8 or int8)",
            found=", ".join(f"{lin}={k}" for lin, k in kinds.items()),
        )
    kind = distinct.pop()
    if kind not in (FP8, INT8, "bf16"):
        raise FormatError(f"unsupported weight dtype {kind}", path=path, expected="F8_E4M3, I8 or a float dtype")
    return kind


def read_lightx2v_dir(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    skipped: dict[str, int] | None = None,
) -> dict[str, torch.Tensor | QuantWeight]:
    """Every tensor of a LightX2V block folder, canonical keys, quantized linears as QuantWeight.

    `keep(name)` false: the tensor is never mapped into a tensor (`skipped` gets its size).
    Raises MissingFileError (missing block / non_block files, named), FormatError
    (truncated or foreign files, fp8 and int8 blocks mixed) and WrongModelError
    (an I2V, 1.3B or other model's folder), each naming the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise FormatError("not a folder", path=root, expected="a LightX2V distill_fp8/ or distill_int8/ folder")
    found = {int(m.group(1)): root / f.name for f in root.iterdir() if (m := _BLOCK_FILE.match(f.name))}
    nb_path = root / NON_BLOCK
    if not nb_path.is_file():
        raise MissingFileError(
            f"{NON_BLOCK} is missing",
            path=root,
            expected=f"{NON_BLOCK} next to the block_N.safetensors files",
            found=f"{len(found)} block files",
            fix=_DOWNLOAD_FIX,
        )

    def kept(h: dict[str, dict]) -> dict[str, dict]:
        out = {}
        for k, e in h.items():
            name = _unprefixed(k)
            if keep is None or keep(name):
                out[name] = e
            elif skipped is not None:
                skipped[name] = entry_nbytes(e)
        return out

    non_block = kept(_header(nb_path))
    n, source = _expected_blocks(root, non_block, found)
    missing = [i for i in range(n) if i not in found]
    if missing:
        names = ", ".join(block_file_name(i) for i in missing[:8]) + (" …" if len(missing) > 8 else "")
        raise MissingFileError(
            f"{len(missing)} of {n} block files are missing (the download is incomplete)",
            path=root,
            expected=f"block_0 … block_{n - 1}.safetensors (count from {source})",
            found=f"missing {names}",
            fix=_DOWNLOAD_FIX,
        )
    extra = sorted(i for i in found if i >= n)
    if extra:
        raise FormatError(
            "more block files than the model has blocks",
            path=root,
            expected=f"{n} blocks (from {source})",
            found=", ".join(block_file_name(i) for i in extra[:4]),
            fix="the folder mixes two models; keep one model's files per folder.",
        )

    headers: dict[int, dict[str, dict]] = {}
    for i in range(n):
        h = kept(_header(found[i]))
        stray = [k for k in h if group_index(k) != i]
        if stray:
            raise FormatError(
                f"file holds tensors of another block than {i}",
                path=found[i],
                expected=f"only blocks.{i}.* tensors",
                found=", ".join(stray[:3]),
                fix="the file was renamed or belongs to another model; download it again.",
            )
        headers[i] = h
    stray = [k for k in non_block if group_index(k) is not None]
    if stray:
        raise FormatError(f"{NON_BLOCK} holds block tensors", path=nb_path, found=", ".join(stray[:3]))

    shapes = {k: e["shape"] for k, e in non_block.items()}
    for h in headers.values():
        shapes.update({k: e["shape"] for k, e in h.items() if not k.endswith(SCALE_SUFFIXES)})
    cfg = detect_config(shapes, str(root))  # WrongModelError for I2V / 1.3B / Wan2.2 / non-Wan folders
    detect_vace(shapes, cfg, str(root))

    kinds: dict[str, list[int]] = {}
    for i in range(n):
        kinds.setdefault(_block_kind(i, found[i], headers[i]), []).append(i)
    if len(kinds) > 1:
        parts = [f"{k}: {', '.join(block_file_name(i) for i in idx[:3])}{' …' if len(idx) > 3 else ''}"
                 for k, idx in sorted(kinds.items())]
        raise FormatError(
            "the folder mixes blocks of different encodings",
            path=root,
            expected="all blocks fp8 (distill_fp8/) or all int8 (distill_int8/)",
            found="; ".join(parts),
            fix="files from distill_fp8/ and distill_int8/ were mixed; keep each download in its own folder.",
        )

    out: dict[str, torch.Tensor | QuantWeight] = {}
    out.update(_load_file(nb_path, keep))
    for i in range(n):
        out.update(_load_file(found[i], keep))
    return out


def _load_file(path: Path, keep: Callable[[str], bool] | None) -> dict[str, torch.Tensor | QuantWeight]:
    raw, _ = open_safetensors(path, keep=None if keep is None else (lambda k: keep(_unprefixed(k))))
    return fold_scales({_unprefixed(k): t for k, t in raw.items()}, path, require_scale=True)


def write_lightx2v_dir(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    kind: str,
    *,
    non_linear_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a float Wan state dict in LightX2V's block layout, quantizing like the converter.

    kind: 'fp8' | 'int8' | 'bf16' (no quantization; linears stored in bf16).
    The ten block linears are quantized in their own dtype (pass bf16 tensors to
    mimic the release); everything else is stored as `non_linear_dtype`.
    """
    if kind not in (FP8, INT8, "bf16"):
        raise ValueError(f"kind must be 'fp8', 'int8' or 'bf16', got {kind!r}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    quantized = {f".{lin}.weight" for lin in BLOCK_LINEARS}
    groups: dict[int | None, dict[str, torch.Tensor]] = {}
    for key, t in state_dict.items():
        if isinstance(t, QuantWeight):
            raise ValueError(f"write_lightx2v_dir needs float tensors, '{key}' is {t.type_name()}")
        i = group_index(key)
        group = groups.setdefault(i, {})
        if i is not None and t.dim() == 2 and any(key.endswith(s) for s in quantized):
            if kind == "bf16":
                group[key] = t.to(torch.bfloat16).contiguous()
            else:
                q, scale = quantize_rowwise(t, kind)
                group[key] = q.contiguous()
                group[key + "_scale"] = scale.contiguous()
        else:
            group[key] = t.to(non_linear_dtype).contiguous()
    weight_map: dict[str, str] = {}
    total = 0
    for i, tensors in sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        name = NON_BLOCK if i is None else block_file_name(i)
        save_file(tensors, str(root / name))
        weight_map.update(dict.fromkeys(tensors, name))
        total += (root / name).stat().st_size
    (root / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    # config.json as in the release; read off the shapes (no validation: tests write foreign models too)
    pe = state_dict["patch_embedding.weight"].shape
    dim = int(pe[0])
    config = {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "dim": dim,
        "ffn_dim": int(state_dict["blocks.0.ffn.0.weight"].shape[0]),
        "num_layers": 1 + max(i for i in groups if i is not None),
        "num_heads": dim // 128,
        "in_dim": int(pe[1]),
        "out_dim": 16,
        "text_len": 512,
        "freq_dim": int(state_dict["time_embedding.0.weight"].shape[1]),
        "patch_size": [int(s) for s in pe[2:]],
        "window_size": [-1, -1],
        "qk_norm": True,
        "cross_attn_norm": True,
        "eps": 1e-6,
    }
    (root / CONFIG).write_text(json.dumps(config, indent=2))
    return root
