"""Turn an engine `LoadedDiT` into a ComfyUI MODEL (ModelPatcher around ComfyUI's own WanModel).

ComfyUI builds its `WanModel` with the pack's Linear through `custom_operations`, so the module
tree, key names, LoRA keys and model management stay ComfyUI's, while quantized weights stay in
their stored encoding. Detection runs on meta placeholders of the logical shapes, so a quantized
file is never decoded just to learn its shapes.

The Linear is the engine's `QuantLinear` with core's op mixin, the way core's own controlnet ops
(`comfy/controlnet.py: class Linear(torch.nn.Module, comfy.ops.CastWeightBiasOp)`) and
ComfyUI-GGUF's ops (`class Linear(GGMLLayer, comfy.ops.manual_cast.Linear)`) subclass core's:
`comfy_cast_weights` comes from core, and ComfyUI's `weight_function` / `bias_function` lists are
the engine's `weight_transforms` / `bias_transforms` under ComfyUI's names.

Why not core's quantized-tensor layouts (`QUANTIZATION.md`, `comfy/quant_ops.py`,
`register_layout_op`)? They would give LoRA, saving and DynamicVRAM through core's code paths,
but (0.33, comfy_kitchen 0.2): the FP8 layout has one scale per tensor, where LightX2V's files
have one per output row and the pack computes LightX2V's W8A8 numbers bit for bit (per-token
activation codes made inside the LayerNorm/GELU kernels and shared by q/k/v); core's INT8 layout
quantizes activations with its own kernels; there is no GGUF layout at all (ComfyUI-GGUF keeps
its own tensor subclass too); every op on a `QuantizedTensor` goes through `__torch_dispatch__`,
Python per call on the hottest path, and the Block Swap streamer rebinds plain storage that a
subclass would hide; a LoRA on a core layout is baked by dequantize -> add -> requantize, which
for row-wise FP8/INT8 and k-quants changes every weight of the layer. So the pack keeps its own
encodings, applies LoRA at use time (`Wan4StepModelPatcher`) and writes files itself when saved.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.sd
import torch

from ...wan4step.formats import LoadedDiT
from ...wan4step.offload.layout import plain
from ...wan4step.offload.wan import original
from ...wan4step.offload.wrap import StreamedModule
from ...wan4step.quant.linear import QuantLinear
from ...wan4step.quant.weights import FP8, INT8, QuantWeight
from ...wan4step.schedule import DEFAULT_SHIFT

log = logging.getLogger("wan4step")


class Wan4StepLinear(QuantLinear, comfy.ops.CastWeightBiasOp):
    """The engine's QuantLinear as a ComfyUI op: core's `comfy_cast_weights` flag, and ComfyUI's
    use-time patch lists mapped onto the engine's transform lists (same list objects, so ComfyUI's
    `m.weight_function = [...]` and `.extend(...)` reach the forward)."""

    @property
    def weight_function(self) -> list:
        return self.weight_transforms

    @weight_function.setter
    def weight_function(self, fns: list) -> None:
        self.weight_transforms = fns

    @property
    def bias_function(self) -> list:
        return self.bias_transforms

    @bias_function.setter
    def bias_function(self, fns: list) -> None:
        self.bias_transforms = fns


def make_ops(store: dict):
    """An operations class whose Linear takes its weight from `store` (the canonical dict)."""

    class Wan4StepOps(comfy.ops.manual_cast):
        class Linear(Wan4StepLinear):
            def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
                key = prefix + "weight"
                w = store.get(key, state_dict.get(key))
                if w is None:
                    missing_keys.append(key)
                    return
                self.assign_weight(w, store.get(prefix + "bias", state_dict.get(prefix + "bias")))

    return Wan4StepOps


class Wan4StepModelPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher that never bakes a LoRA into a quantized weight, and saves quantized weights.

    ComfyUI patches weights by decoding them to float, adding the LoRA delta and
    writing them back in the weight's dtype; for FP8/INT8/GGUF bytes that would
    corrupt the weight. Here the patch is applied after decoding, at use time,
    through the same `weight_function` hook ComfyUI's lowvram mode uses.

    Saving (ModelSave, CheckpointSave: `model_state_dict_for_saving`) writes, per layer:
    - FP8/INT8 without a patch: the stored codes and their row scales (`<layer>.weight` float8 /
      int8 [out, in], `<layer>.weight_scale` [out, 1]): LightX2V's layout, which the pack's loader
      reads back bit for bit (ComfyUI's loader has no row-wise layout);
    - GGUF, or FP8/INT8 carrying a patch (a LoRA): the weight the layer computes with, decoded to
      the model's compute dtype with the patch applied (what the forward multiplies by);
    - everything else: what ComfyUI writes (bf16 weights with their LoRA baked in).
    """

    def patch_weight_to_device(self, key, device_to=None, inplace_update=False, return_weight=False, force_cast=False):
        module, param = _module_of(self.model, key)
        if isinstance(module, QuantLinear) and module.qkind is not None and param in ("weight", "weight_scale"):
            if return_weight:  # core's save path: the weight as this layer computes with it
                return self._computed_weight(module, key, device_to) if param == "weight" else module.weight_scale
            if key in self.patches and param == "weight":
                patch = comfy.model_patcher.LowVramPatch(key, self.patches)
                if not any(getattr(f, "key", None) == key for f in module.weight_function):
                    module.weight_function.append(patch)
            if device_to is not None:
                p = getattr(module, param)
                if p is not None:
                    p.data = p.data.to(device_to)
            return None
        return super().patch_weight_to_device(key, device_to, inplace_update, return_weight, force_cast)

    def _computed_weight(self, module: QuantLinear, key: str, device) -> torch.Tensor:
        """Decoded to the compute dtype on `device`, with this patcher's patch (what LowVramPatch applies)."""
        w = module.decoded_weight(self.model.get_dtype_inference(), device or module.weight.device)
        if key in self.patches:
            w = comfy.model_patcher.LowVramPatch(key, self.patches)(w)
        return w

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            for m in self.model.modules():
                if isinstance(m, QuantLinear) and m.qkind is not None:
                    m.weight_function = [f for f in m.weight_function if not isinstance(f, comfy.model_patcher.LowVramPatch)]
        return super().unpatch_model(device_to, unpatch_weights)

    def model_state_dict_for_saving(self, model=None, prefix=""):
        model = self.model if model is None else model
        # Block Swap's stand-ins hide their blocks from state_dict(); core would wrap our int8/uint8 storage
        # in a (float-only) lazy Parameter: both are undone for the call, and the quantized layers written below
        with _originals_in_place(model), _written_as_is(model):
            out = super().model_state_dict_for_saving(model, prefix)
        dtype = self.model.get_dtype_inference()
        for key in [k for k in out if k.endswith(".weight")]:
            layer = key[: -len(".weight")]
            module = _get(model, layer)
            if not isinstance(module, QuantLinear) or module.qkind is None:
                continue
            full = prefix + key
            if module.qkind in (FP8, INT8) and full not in self.patches:
                out[key] = plain(module.weight)
                out[layer + ".weight_scale"] = plain(module.weight_scale)
            else:  # decoded lazily, one layer at a time, when the file is written (core's LazyCastingParam)
                out.pop(layer + ".weight_scale", None)
                placeholder = torch.empty(module.logical_shape, dtype=dtype, device="meta")
                out[key] = comfy.model_patcher.LazyCastingParam(self, full, placeholder)
        return out


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


_UNSET = object()


def _get(model: torch.nn.Module, path: str):
    """Attribute-path lookup (works through Block Swap's stand-ins, unlike get_submodule)."""
    obj = model
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj


def _module_of(model: torch.nn.Module, key: str):
    path, _, param = key.rpartition(".")
    return _get(model, path), param


def _placeholder(v):
    if isinstance(v, QuantWeight):
        return torch.empty(v.shape, dtype=torch.bfloat16, device="meta")
    return v


@dataclass(frozen=True)
class ModelInfo:
    """What the pack's loader built, kept where clone() copies it (`transformer_options[INFO_KEY]`)."""

    loaded: str
    format: str
    config: object

    def clone(self) -> ModelInfo:
        return self  # immutable


INFO_KEY = "wan4step_model"


def model_info(model) -> ModelInfo | None:
    """The loader's description of a MODEL, or None for other loaders' models."""
    return model.model_options.get("transformer_options", {}).get(INFO_KEY)


def set_shift(model: comfy.model_patcher.ModelPatcher, shift: float) -> comfy.model_patcher.ModelPatcher:
    """Give the MODEL the distilled recipe's flow shift, so even core KSampler samples it right."""

    class FlowShift(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = FlowShift(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    model.add_object_patch("model_sampling", sampling)
    return model


def build_model(loaded: LoadedDiT, compute_dtype: torch.dtype = torch.bfloat16) -> comfy.model_patcher.ModelPatcher:
    store = dict(loaded.state)
    shape_sd = {"model.diffusion_model." + k: _placeholder(v) for k, v in store.items()}
    mp = comfy.sd.load_diffusion_model_state_dict(
        shape_sd,
        model_options={"dtype": compute_dtype, "custom_operations": make_ops(store)},
        disable_dynamic=True,
    )
    if mp is None:
        raise RuntimeError(f"ComfyUI could not detect the model type of {loaded.path}")
    patcher = Wan4StepModelPatcher(mp.model, load_device=mp.load_device, offload_device=mp.offload_device)
    patcher.model_options["transformer_options"][INFO_KEY] = ModelInfo(loaded.describe(), loaded.format, loaded.config)
    return set_shift(patcher, DEFAULT_SHIFT)
