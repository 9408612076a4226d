"""What ComfyUI (and ComfyUI-GGUF) attach to modules, read in one place.

- Use-time patches: ComfyUI's lowvram mode hangs a LoRA on a module as `weight_function` /
  `bias_function` lists (`comfy/model_patcher.py: LowVramPatch`), DynamicVRAM as
  `weight_lowvram_function` / `bias_lowvram_function` (`comfy/ops.py: cast_modules_with_vbar`),
  ComfyUI-GGUF as a `patches` list on its GGMLTensor weight (`ComfyUI-GGUF/ops.py: get_weight`).
  Such a module must run its own forward: reading its weight directly would skip the patch.
- Cast dtypes: DynamicVRAM builds modules whose weights keep the file's dtype and are cast at
  use to `<param>_comfy_model_dtype` (`comfy/ops.py: disable_weight_init.Linear.__init__`).
- ComfyUI-GGUF's quantized weights are GGMLTensors carrying `tensor_type` (ComfyUI-GGUF/ops.py).
"""

from __future__ import annotations

import torch

from ...wan4step.dit.block import DIRECT_WEIGHTS, NORM3


def patched_at_use(m: torch.nn.Module) -> bool:
    """Whether a patch (a LoRA) is applied to m's weight or bias only when m runs."""
    for p in ("weight", "bias"):
        if (getattr(m, f"{p}_function", None) or getattr(m, f"{p}_lowvram_function", None) is not None
                or getattr(getattr(m, p, None), "patches", None)):
            return True
    return False


def direct_weights_patched(block: torch.nn.Module) -> tuple[bool, bool]:
    """(a q/k norm the fused forward reads directly is patched at use, norm3 is): the first means
    ComfyUI's own block must run, the second only that norm3 runs as a module."""
    qk = any(patched_at_use(block.get_submodule(path)) for path in DIRECT_WEIGHTS)
    norm3 = getattr(block, NORM3, None)
    return qk, norm3 is not None and patched_at_use(norm3)


def cast_dtype(owner: torch.nn.Module, name: str) -> torch.dtype | None:
    """The dtype DynamicVRAM would cast `owner.<name>` to at use, if it set one."""
    want = getattr(owner, f"{name}_comfy_model_dtype", None)
    return want if isinstance(want, torch.dtype) else None


def weights_kind(block: torch.nn.Module) -> str | None:
    """The memory model's format name when a block holds ComfyUI-GGUF weights ("gguf"), else None
    (the engine's `offload.wan.weights_kind` then reads the pack's own modules)."""
    for m in block.modules():
        if getattr(getattr(m, "weight", None), "tensor_type", None) is not None:
            return "gguf"
    return None
