"""Wan4Step Model Loader: any Wan2.1 T2V-14B file or folder -> a ComfyUI MODEL."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..wan4step import attention as attn
from ..wan4step.formats import load_dit
from . import fast_forward as fast_forward_mod
from .comfy_model import build_model
from .model_files import list_models, opened

DIT_FOLDERS = ("diffusion_models", "unet")
log = logging.getLogger("wan4step")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Wan4StepModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepModelLoader",
            display_name="Wan4Step Model Loader",
            category="Wan4Step",
            description="Loads Wan2.1 T2V-14B in any tier: QuantStack GGUF (Q2_K…Q8_0, F16), LightX2V distill_fp8/ or "
                        "distill_int8/ folders, BF16/FP16 or ComfyUI fp8_scaled safetensors. The format is read from the "
                        "file's content; quantized weights stay quantized in memory.",
            inputs=[
                io.Combo.Input("model_name", options=list_models(DIT_FOLDERS, folder_marker="non_block.safetensors"),
                               tooltip="A file in models/diffusion_models (or unet), or a LightX2V folder (shown with a "
                                       "trailing '/') that holds non_block.safetensors and block_N files."),
                io.Combo.Input("compute_dtype", options=list(DTYPES), default="bf16",
                               tooltip="The dtype activations are computed in. bf16 is right for every supported GPU."),
                io.Combo.Input("attention", options=list(attn.BACKENDS), default="auto",
                               tooltip="auto: PyTorch SDPA on Hopper/Blackwell (fastest there), sageattention on Ampere/Ada "
                                       "when installed. A missing backend falls back to SDPA with one warning."),
                io.Boolean.Input("fast_forward", default=True, advanced=True,
                                 tooltip="Run blocks through the pack's fused forward (same math, fewer passes). Turn off "
                                         "only to compare with ComfyUI's own block code."),
                io.Boolean.Input("compile", default=False, advanced=True, optional=True,
                                 tooltip="torch.compile the fused block (needs a C/C++ compiler, and Triton on the GPU). "
                                         "The first step of each new video size pays the compile (tens of seconds); "
                                         "one compiled block serves all 40 blocks, also when Block Swap streams them. "
                                         "If compiling fails it runs uncompiled with one warning. On an H100 it measured "
                                         "2.5 % slower than the hand-fused block, so leave it off unless it helps on your GPU."),
            ],
            outputs=[io.Model.Output(tooltip="ComfyUI's own Wan model with this pack's quantized linears; "
                                             "works with KSampler, LoRA loaders and Wan4Step Block Swap.")],
        )

    @classmethod
    def execute(cls, model_name: str, compute_dtype: str, attention: str = "auto", fast_forward: bool = True,
                compile: bool = False) -> io.NodeOutput:
        with opened(DIT_FOLDERS, model_name, field="model_name") as path:
            loaded = load_dit(path)
        model = build_model(loaded, DTYPES[compute_dtype])
        if fast_forward:
            model = fast_forward_mod.install(model, attention, compile)
        elif compile:
            log.warning("Wan4Step: compile applies to the fused forward; it is off because fast_forward is off")
        return io.NodeOutput(model)


NODES = [Wan4StepModelLoader]
