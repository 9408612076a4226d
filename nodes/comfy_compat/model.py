"""Turn an engine `LoadedDiT` into a ComfyUI MODEL (ModelPatcher around ComfyUI's own WanModel).

ComfyUI builds its `WanModel` with the pack's Linear through `custom_operations`, so the module
tree, key names, LoRA keys and model management stay ComfyUI's, while quantized weights stay in
their stored encoding. Detection runs on meta placeholders of the logical shapes, so a quantized
file is never decoded just to learn its shapes.

The Linear is `ops.Wan4StepLinear` (the engine's QuantLinear with core's op mixin; why not core's
quantized-tensor layouts: its docstring). Saving: `saving.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.sd
import torch

from ...wan4step.formats import LoadedDiT
from ...wan4step.quant.linear import QuantLinear
from ...wan4step.quant.weights import QuantWeight
from ...wan4step.schedule import DEFAULT_SHIFT
from . import saving
from .ops import Wan4StepLinear

log = logging.getLogger("wan4step")


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
    """ModelPatcher that never bakes a LoRA into a quantized weight.

    ComfyUI patches weights by decoding them to float, adding the LoRA delta and
    writing them back in the weight's dtype; for FP8/INT8/GGUF bytes that would
    corrupt the weight. Here the patch is applied after decoding, at use time,
    through the same `weight_function` hook ComfyUI's lowvram mode uses.
    ModelSave / CheckpointSave write each encoding as `saving.py` says.
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
        return saving.state_dict_for_saving(self, model, prefix, super().model_state_dict_for_saving)


def _module_of(model: torch.nn.Module, key: str):
    path, _, param = key.rpartition(".")
    return saving.attr_path(model, path), param


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
    mode: str = "t2v"
    vace: object = None

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
    patcher.model_options["transformer_options"][INFO_KEY] = ModelInfo(loaded.describe(), loaded.format, loaded.config,
                                                                        loaded.mode, loaded.vace)
    return set_shift(patcher, DEFAULT_SHIFT)
