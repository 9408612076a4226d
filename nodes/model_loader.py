"""Wan4Step Model Loader: any Wan2.1 T2V-14B file or folder -> a ComfyUI MODEL."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..wan4step import attention as attn
from ..wan4step.formats import load_dit
from ..wan4step.formats.dit import MODES
from ..wan4step.lora.merge import GGUF_TARGETS, merge_into
from .comfy_compat import fast_forward as fast_forward_mod
from .comfy_compat.model import build_model
from .model_files import list_models, opened

DIT_FOLDERS = ("diffusion_models", "unet")
LORA_FOLDERS = ("loras",)
NO_LORA = "none"
log = logging.getLogger("wan4step")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Wan4StepModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepModelLoader",
            display_name="Wan4Step Model Loader",
            category="Wan4Step",
            description="Loads Wan2.1 T2V-14B in any tier: QuantStack GGUF (Q2_K…Q8_0, F16; also the VACE-merged "
                        "files), LightX2V single files (bf16, scaled fp8, int8, comfyui fp8) and block folders "
                        "(*_split/, distill_fp8/, distill_int8/), BF16/FP16 or ComfyUI fp8_scaled safetensors. The format is "
                        "read from the file's content; quantized weights stay quantized in memory.",
            inputs=[
                io.Combo.Input("model_name", options=list_models(DIT_FOLDERS, folder_marker="non_block.safetensors"),
                               tooltip="A file in models/diffusion_models (or unet), or a LightX2V folder (shown with a "
                                       "trailing '/') that holds non_block.safetensors and block_N files."),
                io.Combo.Input("compute_dtype", options=list(DTYPES), default="bf16",
                               tooltip="The dtype activations are computed in. bf16 is right for every supported GPU."),
                io.Combo.Input("attention", options=list(attn.BACKENDS), default="auto",
                               tooltip="auto: the fastest backend for this GPU that passes a quick accuracy check on "
                                       "first use: 8bit on RTX 30/40/50 and H100/H200, PyTorch SDPA (cuDNN) elsewhere.\n"
                                       "sdpa: PyTorch's attention, cuDNN first (bf16).\n"
                                       "8bit: the pack's INT8 Q·K + FP8 P·V attention (Triton, RTX 30 series and newer); "
                                       "0.76x cuDNN's time on an H200, output within 1.5 % of bf16.\n"
                                       "sage: the sageattention package. flash: the flash-attn 2 package. "
                                       "fa4: the flash-attn-4 package (Hopper/Blackwell).\n"
                                       "A missing or failing backend falls back to SDPA with one warning."),
                io.Boolean.Input("fast_forward", default=True, advanced=True,
                                 tooltip="Run blocks through the pack's fused forward (same math, fewer passes). Turn off "
                                         "only to compare with ComfyUI's own block code."),
                io.Boolean.Input("compile", display_name="compile (experimental, measured slower)", default=False,
                                 advanced=True, optional=True,
                                 tooltip="(experimental, measured slower) torch.compile the fused block: 2.5 % slower "
                                         "than the hand-fused block on an H100, so leave it off unless it measures "
                                         "faster on your GPU and torch. Needs a C/C++ compiler, and Triton on the GPU. "
                                         "The first step of each new video size pays the compile (tens of seconds); "
                                         "one compiled block serves all 40 blocks, also when Block Swap streams them. "
                                         "If compiling fails it runs uncompiled with one warning."),
                io.Combo.Input("lora_name", options=[NO_LORA, *list_models(LORA_FOLDERS)], default=NO_LORA, optional=True,
                               tooltip="A LoRA merged into the weights once, at load, in the file's own format (FP8/INT8 "
                                       "re-quantized per channel, GGUF re-encoded), so a step costs what a distilled file "
                                       "costs. For a base Wan2.1 T2V-14B + the LightX2V 4-step distill LoRA."),
                io.Float.Input("lora_strength", default=1.0, min=-4.0, max=4.0, step=0.05, optional=True,
                               tooltip="Scale of the merged LoRA (1.0 for the distill LoRAs)."),
                io.Combo.Input("lora_gguf", options=list(GGUF_TARGETS), default="same", advanced=True, optional=True,
                               tooltip="GGUF only: re-encode merged weights in their own type (same size), or as Q8_0 "
                                       "(closer to the exact merge, twice the bytes of a 4-bit tier)."),
                io.Combo.Input("mode", options=list(MODES), default="t2v", optional=True,
                               tooltip="t2v: the text-to-video model; a VACE-merged file's VACE blocks are never read "
                                       "(no RAM, VRAM or load time spent on them). vace: ComfyUI's VACE model, for "
                                       "WanVaceToVideo (control video, reference image, mask) at 4 steps; needs a "
                                       "VACE-merged file such as QuantStack's ..._StepCfgDistill_VACE-<TIER>.gguf."),
            ],
            outputs=[io.Model.Output(tooltip="ComfyUI's own Wan model with this pack's quantized linears; "
                                             "works with KSampler, LoRA loaders and Wan4Step Block Swap.")],
        )

    @classmethod
    def execute(cls, model_name: str, compute_dtype: str, attention: str = "auto", fast_forward: bool = True,
                compile: bool = False, lora_name: str = NO_LORA, lora_strength: float = 1.0,
                lora_gguf: str = "same", mode: str = "t2v") -> io.NodeOutput:
        with opened(DIT_FOLDERS, model_name, field="model_name") as path:
            loaded = load_dit(path, mode)
            if lora_name and lora_name != NO_LORA:
                import comfy.model_management
                import comfy.utils

                bar = comfy.utils.ProgressBar(1)
                with opened(LORA_FOLDERS, lora_name, field="lora_name", folders_ok=False) as lora_path:
                    merge_into(loaded, lora_path, lora_strength, gguf_target=lora_gguf,
                               device=comfy.model_management.get_torch_device(),  # the GPU ComfyUI runs on (CPU with --cpu)
                               progress=lambda done, total, what: bar.update_absolute(done, total))
        model = build_model(loaded, DTYPES[compute_dtype])
        if fast_forward:
            model = fast_forward_mod.install(model, attention, compile)
        elif compile:
            log.warning("Wan4Step: compile applies to the fused forward; it is off because fast_forward is off")
        return io.NodeOutput(model)


NODES = [Wan4StepModelLoader]
