"""Wan4Step UMT5 Loader: any UMT5-XXL file -> a ComfyUI CLIP (works with CLIPTextEncode)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..wan4step.umt5 import file_tokenizer, read_umt5
from .comfy_compat.clip import DEVICE_MODES, GPU, build_clip
from .model_files import list_models, opened

TE_FOLDERS = ("text_encoders",)  # ComfyUI maps the legacy models/clip folder into it
AUTO = "auto"
TOKENIZER_MARKER = "spiece.model"


PRECISIONS = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}


class Wan4StepUMT5Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepUMT5Loader",
            display_name="Wan4Step UMT5 Loader",
            category="Wan4Step",
            description="Loads the UMT5-XXL text encoder Wan2.1 uses, from Comfy-Org safetensors (fp16, fp8_scaled), "
                        "LightX2V .pth (bf16, fp8, int8) or city96 GGUF. Quantized weights stay quantized; the CLIP "
                        "output is ComfyUI's own type, so CLIPTextEncode and every CLIP node accept it.",
            inputs=[
                io.Combo.Input("text_encoder_name", options=list_models(TE_FOLDERS),
                               tooltip="A UMT5-XXL file in models/text_encoders (or models/clip): "
                                       "umt5_xxl_fp16.safetensors, umt5_xxl_fp8_e4m3fn_scaled.safetensors, "
                                       "models_t5_umt5-xxl-enc-{bf16,fp8,int8}.pth or umt5-xxl-encoder-*.gguf."),
                io.Combo.Input("tokenizer", options=[AUTO] + list_models(TE_FOLDERS, extensions=(), folder_marker=TOKENIZER_MARKER),
                               default=AUTO,
                               tooltip="auto: the tokenizer inside the file (Comfy-Org, GGUF), else a google/umt5-xxl "
                                       "folder next to it (LightX2V). Or pick a folder holding spiece.model."),
                io.Combo.Input("device", options=list(DEVICE_MODES), default=GPU,
                               tooltip="gpu: encode on the GPU and let ComfyUI keep it there until the video model "
                                       "needs the memory. cpu: encode on the CPU, the text encoder never uses VRAM "
                                       "(the 8-16 GB card path; slower, seconds per prompt). gpu_then_free: encode on "
                                       "the GPU, then move it off the GPU right away."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto", advanced=True, optional=True,
                               tooltip="auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX; 4x faster "
                                       "than fp32 there), fp32 on other CPUs. fp32: ComfyUI's own text-encoder math."),
            ],
            outputs=[io.Clip.Output(tooltip="A ComfyUI CLIP: wire it into CLIPTextEncode. The conditioning is the "
                                            "512-token UMT5 context Wan2.1 expects (padding zeroed), like core CLIPLoader "
                                            "(type wan) produces.")],
        )

    @classmethod
    def execute(cls, text_encoder_name: str, tokenizer: str = AUTO, device: str = GPU, precision: str = "auto") -> io.NodeOutput:
        import folder_paths

        with opened(TE_FOLDERS, text_encoder_name, field="text_encoder_name", folders_ok=False) as path:
            f = read_umt5(path)
            if tokenizer == AUTO:
                tok = file_tokenizer(f, None)
            else:
                with opened(TE_FOLDERS, tokenizer, field="tokenizer", extensions=(),
                            folder_marker=TOKENIZER_MARKER) as folder:
                    tok = file_tokenizer(f, folder)
        clip = build_clip(f, tok, device, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                          compute_dtype=PRECISIONS[precision])
        return io.NodeOutput(clip)


NODES = [Wan4StepUMT5Loader]
