"""Fixtures of the real published DiT layouts, written the way each publisher's tool writes them.

Used by the tests (each layout through the pack and through ComfyUI's own
loaders) and by the demo. Nothing here downloads anything: the layouts are
reproduced from the tools' source.

LightX2V (`lightx2v/Wan2.1-Distill-Models`; file list in LightX2V
docs/EN/source/getting_started/model_structure.md "Wan2.1 Single-File Model List"
and deploy_guides/deploy_gradio.md for the `*_split` folders), all made by
tools/convert/converter.py with `--model_type wan_dit` (key_idx 2, target_keys
self_attn / cross_attn / ffn: only 2-D tensors whose third name part is one of
those are quantized; every other tensor is cast to `--non_linear_dtype`):
- `wan2.1_t2v_14b_lightx2v_4step.safetensors`: BF16, original Wan key names, no prefix.
- `..._scaled_fp8_e4m3_lightx2v_4step.safetensors` (`--linear_type fp8 --single_file`),
  `..._int8_lightx2v_4step.safetensors` (`--linear_type int8`): the linears as
  float8_e4m3fn / int8 + `<name>.weight_scale` [out, 1] per-row absmax/qmax in the
  source dtype (tools/convert/quant/quant.py).
- `..._scaled_fp8_e4m3_lightx2v_4step_comfyui.safetensors` (`--comfyui_mode`):
  one absmax per tensor, a 0-d `<name>.scale_weight`, and the marker
  `scaled_fp8` = float8_e4m3fn zeros(2).
- `*_split/` (`--save_by_block`): block_N.safetensors (every key matching
  `blocks\\.(\\d+)\\.`, VACE blocks included), non_block.safetensors and
  diffusion_pytorch_model.safetensors.index.json; no config.json.
The readme's examples pass `--non_linear_dtype torch.bfloat16` for fp8 and leave
the float32 default for int8; those are the defaults here.

GGUF (city96's ComfyUI-GGUF tools): `formats.gguf_file.write_gguf` (metadata,
tier rule, 5-D tensors inline as published or in the convert-time fix file).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..formats.lightx2v_dir import INDEX, NON_BLOCK, block_file_name, group_index
from ..quant.scaled import quantize_rowwise

LIGHTX2V_KINDS = ("bf16", "fp8", "int8", "fp8_comfyui")
# the file names of lightx2v/Wan2.1-Distill-Models (LightX2V model_structure.md), per kind
LIGHTX2V_T2V_FILES = {
    "bf16": "wan2.1_t2v_14b_lightx2v_4step.safetensors",
    "fp8": "wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step.safetensors",
    "int8": "wan2.1_t2v_14b_int8_lightx2v_4step.safetensors",
    "fp8_comfyui": "wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step_comfyui.safetensors",
}
_TARGETS = ("self_attn", "cross_attn", "ffn")  # converter.py model_type_keys_map["wan_dit"]
_DEFAULT_NON_LINEAR = {"bf16": torch.bfloat16, "fp8": torch.bfloat16, "fp8_comfyui": torch.bfloat16, "int8": torch.float32}


def is_converter_target(key: str, t: torch.Tensor) -> bool:
    """converter.py quantize_model's test: a 2-D tensor whose key part [2] is a target module."""
    parts = key.split(".")
    return t.dim() == 2 and len(parts) > 2 and parts[2] in _TARGETS


def quantize_per_tensor(w: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`--comfyui_mode`: one absmax over the whole tensor; (q like w, 0-d scale in w.dtype).

    The same arithmetic as the per-row quantizer with the tensor seen as one row (the
    converter clamps only the per-row absmax at 1e-5; no real weight gets near it).
    """
    q, scale = quantize_rowwise(w.reshape(1, -1), kind)
    return q.reshape(w.shape), scale.reshape(())


def lightx2v_convert(sd: dict[str, torch.Tensor], kind: str, non_linear_dtype: torch.dtype | None = None,
                     source_dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The state dict converter.py writes for `kind` from a canonical float state dict.

    `source_dtype`: the dtype of the weights the converter reads (the released distilled
    model is bf16, so the scales come out bf16).
    """
    if kind not in LIGHTX2V_KINDS:
        raise ValueError(f"kind must be one of {LIGHTX2V_KINDS}, got {kind!r}")
    nl = non_linear_dtype or _DEFAULT_NON_LINEAR[kind]
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        t = t.to(source_dtype)
        if kind == "bf16" or not is_converter_target(key, t):
            out[key] = t.to(nl).contiguous()
        elif kind == "fp8_comfyui":
            q, scale = quantize_per_tensor(t, "fp8")
            out[key] = q.contiguous()
            out[key.replace(".weight", ".scale_weight")] = scale
        else:
            q, scale = quantize_rowwise(t, kind)
            out[key] = q.contiguous()
            out[key + "_scale"] = scale.contiguous()
    if kind == "fp8_comfyui":
        out["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    return out


def write_lightx2v_single(path: str | Path, sd: dict[str, torch.Tensor], kind: str, **kw) -> Path:
    """`--single_file`: one .safetensors (no metadata, no index)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lightx2v_convert(sd, kind, **kw), str(path))
    return path


def write_lightx2v_split(path: str | Path, sd: dict[str, torch.Tensor], kind: str, **kw) -> Path:
    """`--save_by_block`: the `*_split/` folder (block_N, non_block, index; no config.json)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    groups: dict[int | None, dict[str, torch.Tensor]] = {}
    for key, t in lightx2v_convert(sd, kind, **kw).items():
        groups.setdefault(group_index(key), {})[key] = t
    index = {"metadata": {"total_size": 0}, "weight_map": {}}
    for i, tensors in sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        name = NON_BLOCK if i is None else block_file_name(i)
        save_file(tensors, str(root / name))
        index["weight_map"].update(dict.fromkeys(tensors, name))
        index["metadata"]["total_size"] += (root / name).stat().st_size
    (root / INDEX).write_text(json.dumps(index, indent=2))
    return root
