"""The pack's Linear as a ComfyUI op.

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

import comfy.ops

from ...wan4step.quant.linear import QuantLinear


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
