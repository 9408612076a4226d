"""ModelSave / CheckpointSave of the pack's MODEL: what core's save path gets for each layer.

Core's `ModelPatcher.model_state_dict_for_saving` wraps every op weight in a `LazyCastingParam`
that, when safetensors writes it, calls `patch_weight_to_device(key, return_weight=True)` and
writes the result with the placeholder's dtype and shape. The pack's patcher takes that path for
every ordinary layer (bf16 weights, norms: their LoRA baked in as core does) and writes its
quantized layers itself:
- FP8/INT8 without a patch: the stored codes and their row scales (`<layer>.weight` float8/int8
  [out, in], `<layer>.weight_scale` [out, 1]): LightX2V's layout, which the pack's loader reads
  back bit for bit (ComfyUI's own loader has no row-wise layout);
- GGUF, and FP8/INT8 carrying a patch (a LoRA): the weight the layer computes with, decoded to the
  model's compute dtype (bf16 on a GPU) with the patch applied, lazily, one layer at a time.
Block Swap's stand-ins are put back for the walk (they hide their blocks from `state_dict()`).
"""

from __future__ import annotations

import contextlib

import comfy.model_patcher
import torch

from ...wan4step.offload.layout import plain
from ...wan4step.offload.wan import original
from ...wan4step.offload.wrap import StreamedModule
from ...wan4step.quant.linear import QuantLinear
from ...wan4step.quant.weights import FP8, INT8

_UNSET = object()


def state_dict_for_saving(patcher, model: torch.nn.Module, prefix: str, core_state_dict) -> dict:
    """`core_state_dict(model, prefix)` is ModelPatcher.model_state_dict_for_saving (the super call)."""
    # core would wrap our int8/uint8 storage in a (float-only) lazy Parameter: those layers are
    # passed through as they are for the call, and written below
    with _originals_in_place(model), _written_as_is(model):
        out = core_state_dict(model, prefix)
    dtype = patcher.model.get_dtype_inference()
    for key in [k for k in out if k.endswith(".weight")]:
        layer = key[: -len(".weight")]
        module = attr_path(model, layer)
        if not isinstance(module, QuantLinear) or module.qkind is None:
            continue
        full = prefix + key
        if module.qkind in (FP8, INT8) and full not in patcher.patches:
            out[key] = plain(module.weight)
            out[layer + ".weight_scale"] = plain(module.weight_scale)
        else:  # decoded when the file is written (core's lazy parameter -> patch_weight_to_device)
            out.pop(layer + ".weight_scale", None)
            placeholder = torch.empty(module.logical_shape, dtype=dtype, device="meta")
            out[key] = comfy.model_patcher.LazyCastingParam(patcher, full, placeholder)
    return out


def attr_path(model: torch.nn.Module, path: str):
    """Attribute-path lookup (works through Block Swap's stand-ins, unlike get_submodule)."""
    obj = model
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj


@contextlib.contextmanager
def _originals_in_place(model: torch.nn.Module):
    """Put each Block Swap stand-in's real module back in the tree for the duration (then restore)."""
    swapped = []
    for name, m in list(model.named_modules()):
        if isinstance(m, StreamedModule):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, attr, original(m))
            swapped.append((parent, attr, m))
    try:
        yield
    finally:
        for parent, attr, m in swapped:
            setattr(parent, attr, m)


@contextlib.contextmanager
def _written_as_is(model: torch.nn.Module):
    """Mark the quantized layers "patched in place" (core's `comfy_patched_weights`), so core's
    `model_state_dict_for_saving` passes their stored tensors through; restored afterwards."""
    marked = []
    for m in model.modules():
        if isinstance(m, QuantLinear) and m.qkind is not None:
            marked.append((m, m.__dict__.get("comfy_patched_weights", _UNSET)))
            m.comfy_patched_weights = True
    try:
        yield
    finally:
        for m, old in marked:
            if old is _UNSET:
                del m.comfy_patched_weights
            else:
                m.comfy_patched_weights = old
