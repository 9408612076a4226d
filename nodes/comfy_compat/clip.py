"""A real `comfy.sd.CLIP` around the engine's UMT5 encoder.

Why this shape (the least fragile of the options, read from comfy/sd.py and
comfy/sd1_clip.py in ComfyUI 0.33):
- ComfyUI's own Wan text encoder is `comfy.sd.CLIP(target)` with
  `target.clip = SD1ClipModel(name="umt5xxl", clip_model=SDClipModel(T5, ...))` and
  `target.tokenizer = SD1Tokenizer(UMT5XXlTokenizer)`. We build exactly that chain
  with ComfyUI's classes, changing only the innermost `transformer` (SDClipModel's
  `model_class` hook) to the engine's `UMT5Encoder`. So tokenization, prompt
  weights `(word:1.2)`, `embedding:` syntax, the 512 minimum length, the attention
  mask, `zero_out_masked`, CLIPSetLastLayer, hooks, `clone()` and model management
  (ModelPatcher, lowvram, offload) are ComfyUI's own code, and the conditioning has
  ComfyUI's layout by construction.
- Building ComfyUI's `T5` with a config from shapes (via `umt5xxl_model_config`)
  would also work for bf16/fp16, but it runs every weight through `comfy.ops`: a
  GGUF token embedding would have to be decoded whole (2 GB, as ComfyUI-GGUF does)
  and LightX2V's W8A8 FP8/INT8 semantics would be lost. The engine encoder keeps
  every encoding as stored and decodes only the embedding rows a prompt uses.
- The engine module tree uses ComfyUI's T5 names and keeps every parameter on a
  leaf module, so state-dict keys (LoRA mapping, CLIPSave) and ComfyUI's partial
  loader behave as with the core model.
The ModelPatcher is the classic one (`disable_dynamic=True`): DynamicVRAM does
not know the pack's quantized linears.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import comfy.model_management as mm
import comfy.sd
import comfy.sd1_clip
import comfy.text_encoders.wan as comfy_wan
import torch

from ...wan4step.hardware import cpu_fast_bf16
from ...wan4step.umt5 import UMT5Encoder, UMT5File, UMT5Tokenizer, clean_text
from ...wan4step.umt5.model import WAN_TEXT_LEN
from .progress import EncodeTicks

log = logging.getLogger("wan4step")

GPU, CPU, GPU_THEN_FREE = "gpu", "cpu", "gpu_then_free"
DEVICE_MODES = (GPU, CPU, GPU_THEN_FREE)
SPEC_KEY = "wan4step_umt5"  # our entry in model_options (ComfyUI ignores unknown keys)


class UMT5Transformer(UMT5Encoder):
    """SDClipModel's `transformer`: ComfyUI's text-model call signature over the engine encoder."""

    def __init__(self, config_dict: dict, dtype, device, operations) -> None:
        spec = config_dict[SPEC_KEY]
        super().__init__(spec["config"], activation_quant=spec["activation_quant"])
        self.compute_dtype: torch.dtype | None = spec.get("compute_dtype")
        self.progress = EncodeTicks(self)  # the Prompt node's bar moves layer by layer

    def forward(self, input_ids, attention_mask=None, embeds=None, num_tokens=None, intermediate_output=None,
                final_layer_norm_intermediate=True, dtype=torch.float32, embeds_info=None, **kwargs):
        if not isinstance(intermediate_output, (int, type(None))):
            intermediate_output = None  # "all"/lists are for LLM encoders; ComfyUI's T5 ignores them too
        dev = embeds.device if embeds is not None else input_ids.device
        # bf16 on GPUs (Wan's and LightX2V's T5 precision, 3-5x faster than fp32 there) and on CPUs
        # with native bf16 units (4.2x faster than fp32 on the H100 host's CPU); fp32 on other CPUs
        # (ComfyUI's choice: they emulate bf16)
        fast_bf16 = dev.type == "cuda" or cpu_fast_bf16()
        run_dtype = self.compute_dtype or (torch.bfloat16 if fast_bf16 else dtype or torch.float32)
        self.progress.start()
        try:
            out = super().forward(input_ids, attention_mask, embeds=embeds, dtype=run_dtype,
                                  intermediate_output=intermediate_output,
                                  final_layer_norm_intermediate=final_layer_norm_intermediate)
        except BaseException:
            self.progress.bar = None
            raise
        self.progress.stop()
        return out


class UMT5ClipModel(comfy.sd1_clip.SDClipModel):
    """ComfyUI's UMT5XXlModel settings (end 1, pad 0, masks on, zero_out_masked) around our transformer."""

    def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
        super().__init__(device=device, layer=layer, layer_idx=layer_idx,
                         textmodel_json_config={SPEC_KEY: model_options[SPEC_KEY]}, dtype=dtype,
                         special_tokens={"end": 1, "pad": 0}, model_class=UMT5Transformer,
                         enable_attention_masks=True, zero_out_masked=True, model_options=model_options)

    def load_sd(self, sd):
        # the engine's loader takes tensors/QuantWeights as stored and names what is missing
        return self.transformer.load_weights(sd, strict=True)


class UMT5Model(comfy.sd1_clip.SD1ClipModel):
    """The CLIP's `cond_stage_model` (ComfyUI's WanT5Model with our clip model)."""

    def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006
        super().__init__(device=device, dtype=dtype, model_options=model_options, name="umt5xxl",
                         clip_model=UMT5ClipModel)
        self.free_after_encode = bool(model_options[SPEC_KEY].get("free_after_encode"))

    def encode_token_weights(self, token_weight_pairs):
        out = super().encode_token_weights(token_weight_pairs)
        if self.free_after_encode:
            free_from_gpu(self)
        return out


def free_from_gpu(model: torch.nn.Module) -> None:
    """Unload the ModelPatcher(s) holding `model` from the GPU (ComfyUI's own unload)."""
    for loaded in list(mm.current_loaded_models):
        patcher = loaded.model
        if patcher is not None and patcher.model is model:
            mm.unload_model_and_clones(patcher, unload_additional_models=False)
            log.info("Wan4Step UMT5: encoded, text encoder moved off the GPU (gpu_then_free)")
            return


class UMT5WanTokenizer(comfy_wan.UMT5XXlTokenizer):
    """ComfyUI's UMT5 tokenizer plus Wan2.1's prompt cleaning and 512-token truncation."""

    def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
        batches = super().tokenize_with_weights(clean_text(text), return_word_ids, **kwargs)
        out = []
        for batch in batches:
            if len(batch) > WAN_TEXT_LEN:
                log.warning("Wan4Step UMT5: prompt is %d tokens; Wan2.1 was trained on %d, the rest is cut",
                            len(batch), WAN_TEXT_LEN)
                eos = (self.end_token, 1.0, 0) if return_word_ids else (self.end_token, 1.0)
                batch = batch[: WAN_TEXT_LEN - 1] + [eos]
            out.append(batch)
        return out


class UMT5SD1Tokenizer(comfy.sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):  # noqa: B006
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                         clip_name="umt5xxl", tokenizer=UMT5WanTokenizer)


def build_clip(f: UMT5File, tokenizer: UMT5Tokenizer, device_mode: str = GPU,
               embedding_directory=None, compute_dtype: torch.dtype | None = None) -> comfy.sd.CLIP:
    """A `comfy.sd.CLIP` for the file's weights; `device_mode` is gpu / cpu / gpu_then_free."""
    if device_mode not in DEVICE_MODES:
        raise ValueError(f"device must be one of {DEVICE_MODES}, got {device_mode!r}")
    offload = mm.text_encoder_offload_device()
    load = torch.device("cpu") if device_mode == CPU else mm.get_torch_device()
    if device_mode == CPU:
        offload = load
    # initial_device = offload: weights stay where the reader put them (mmap/RAM) until the
    # first encode asks ComfyUI to load them, so a gpu_then_free TE never sits in VRAM idle.
    spec = {"config": f.config, "activation_quant": f.activation_quant,
            "free_after_encode": device_mode == GPU_THEN_FREE, "compute_dtype": compute_dtype}
    model_options = {"load_device": load, "offload_device": offload, "initial_device": offload,
                     "dtype": f.state["encoder.final_layer_norm.weight"].dtype, SPEC_KEY: spec}
    target = SimpleNamespace(params={}, clip=UMT5Model, tokenizer=UMT5SD1Tokenizer)
    spm = torch.frombuffer(bytearray(tokenizer.model_proto), dtype=torch.uint8)
    clip = comfy.sd.CLIP(target, embedding_directory=embedding_directory, tokenizer_data={"spiece_model": spm},
                         parameters=f.config.param_count(), state_dict=[f.state], model_options=model_options,
                         disable_dynamic=True)
    # where clone() copies it (CLIP.clone() clones the patcher, not attributes set on the CLIP)
    clip.patcher.model_options["transformer_options"][INFO_KEY] = TextEncoderInfo(
        str(f.path), f.encoding, f.layout, tokenizer.source, device_mode)
    return clip


@dataclass(frozen=True)
class TextEncoderInfo:
    """What the UMT5 loader built (`transformer_options[INFO_KEY]` of the CLIP's patcher)."""

    file: str
    encoding: str
    layout: str
    tokenizer: str
    device: str

    def clone(self) -> TextEncoderInfo:
        return self  # immutable


INFO_KEY = "wan4step_umt5_info"


def text_encoder_info(clip) -> TextEncoderInfo | None:
    return clip.patcher.model_options.get("transformer_options", {}).get(INFO_KEY)
