"""Fold the scales of 8-bit weight files into `QuantWeight`s, for every convention in the wild.

Conventions (each the publisher's tool, read for the key names and shapes):
- LightX2V `tools/convert/converter.py` (`quantize_model`, quantizers in
  `tools/convert/quant/quant.py`), default mode: the 2-D linears of
  `self_attn`/`cross_attn`/`ffn` become int8 or float8_e4m3fn with
  `<name>.weight_scale` = per-output-row absmax / qmax, shape [out, 1], in the
  source dtype. This is `wan2.1_t2v_14b_{scaled_fp8_e4m3,int8}_lightx2v_4step`
  (single file) and the `*_split/` and older `distill_fp8/`/`distill_int8/`
  block folders.
- The same converter with `--comfyui_mode`: ONE absmax over the whole tensor,
  stored as a 0-d `<name>.scale_weight`, plus a `scaled_fp8` marker tensor
  (float8_e4m3fn, 2 elements). That is ComfyUI's old "scaled fp8" format
  (comfy/utils.py `convert_old_quants` turns `scale_weight` into a per-layer
  `weight_scale` with format float8_e4m3fn) and the
  `wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step_comfyui` file.
- ComfyUI's current format: `weight_scale` (per-tensor) and a
  `_quantization_metadata` header entry naming each layer's format.

A per-tensor scale is stored here as that one value repeated per row: the decode
`q * scale` is the same number for every element, and the pack's W8A8 kernels
(FP8 `_scaled_mm`, INT8 `_int_mm`, both with per-row weight scales) run unchanged.
Activation scales (`scale_input`/`input_scale`) are ignored: the pack quantizes
activations per token itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import FormatError, UnsupportedQuantError
from ..quant.weights import FP8, INT8, QuantWeight

SCALE_SUFFIXES = (".weight_scale", ".scale_weight")
BENIGN_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
BENIGN_KEYS = {"scaled_fp8"}
_QUANT_DTYPES = (torch.float8_e4m3fn, torch.int8)


def check_comfy_metadata(meta: dict, path: Path) -> None:
    """Refuse layers in a ComfyUI quant format the pack has no kernels for (e.g. NVFP4)."""
    if "_quantization_metadata" not in meta:
        return
    layers = json.loads(meta["_quantization_metadata"]).get("layers", {})
    for layer, conf in layers.items():
        if conf.get("format") not in ("float8_e4m3fn", None):
            raise UnsupportedQuantError(
                f"layer '{layer}' uses ComfyUI quant format '{conf.get('format')}'",
                path=path,
                expected="bf16/fp16, fp8_e4m3fn (scaled), LightX2V FP8/INT8 or GGUF weights",
                fix="use the fp8_scaled, LightX2V or a GGUF file of Wan2.1 T2V-14B.",
            )


def _scale_of(sd: dict, layer: str) -> tuple[str, torch.Tensor] | None:
    for suffix in SCALE_SUFFIXES:
        s = sd.get(layer + suffix)
        if s is not None:
            return layer + suffix, s
    return None


def fold_scales(
    sd: dict[str, torch.Tensor], path: Path, require_scale: bool = False
) -> dict[str, torch.Tensor | QuantWeight]:
    """Quantized 2-D `.weight`s + their scales -> QuantWeight; scale/marker tensors dropped.

    Raises FormatError naming the tensor for an int8 weight (any 8-bit weight with
    `require_scale`, as in LightX2V's files) without a scale, a scale whose size is
    neither 1 nor the weight's row count, or a scale without a weight.
    """
    out: dict[str, torch.Tensor | QuantWeight] = {}
    for k, v in sd.items():
        if k in BENIGN_KEYS or k.endswith(BENIGN_SUFFIXES):
            continue
        if k.endswith(SCALE_SUFFIXES):
            layer = k.rsplit(".", 1)[0]
            if layer + ".weight" not in sd:
                raise FormatError(f"scale '{k}' has no weight '{layer}.weight'", path=path,
                                  fix="the file is damaged or was cut apart; download it again.")
            continue
        layer = k[: -len(".weight")] if k.endswith(".weight") else None
        found = _scale_of(sd, layer) if layer is not None else None
        if v.dtype == torch.float8_e5m2 or (v.dtype in _QUANT_DTYPES and (v.dim() != 2 or layer is None)):
            # no kernel for these (e5m2; 8-bit norms/biases of a "full_quantized" file): decode once
            if v.dtype == torch.int8 and found is None:
                raise FormatError(f"int8 tensor '{k}' has no scale", path=path)
            scale = found[1].float() if found is not None else torch.ones(())
            if scale.numel() > 1:
                scale = scale.reshape(-1, *([1] * (v.dim() - 1)))
            out[k] = (v.float() * scale).to(torch.bfloat16)
            continue
        if v.dtype not in _QUANT_DTYPES:
            out[k] = v
            continue
        if found is None:
            if v.dtype == torch.int8 or require_scale:
                raise FormatError(
                    f"quantized weight '{k}' has no scale",
                    path=path,
                    expected=f"'{layer}.weight_scale' next to it",
                    fix="the file is incomplete; download it again.",
                )
            scale = torch.ones(())  # plain fp8_e4m3fn file (e.g. Comfy-Org's wan2.1_t2v_14B_fp8_e4m3fn)
        else:
            scale = found[1]
        rows = v.shape[0]
        if scale.numel() not in (1, rows):
            raise FormatError(
                f"'{found[0]}' does not match its weight",
                path=path,
                expected=f"one scale, or {rows} per-row scales, for the {list(v.shape)} weight '{k}'",
                found=f"scale of shape {list(scale.shape)}",
                fix="the file is damaged; download it again.",
            )
        scale = scale.to(torch.float32).reshape(-1, 1)
        if scale.shape[0] == 1:
            scale = scale.expand(rows, 1).contiguous()
        out[k] = QuantWeight(FP8 if v.dtype == torch.float8_e4m3fn else INT8, v, tuple(v.shape), scale)
    return out
