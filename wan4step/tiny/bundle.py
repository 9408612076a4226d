"""The embedded tiny model set's file names, as ComfyUI's model folders list them.

`install.install_tiny_models` (the Wan4Step Tiny Models node) writes them into a user's
folders; `wan4step_dev.fixtures.tiny_models.write_tiny_models` (tests, demo) into a
throw-away one, byte for byte the same (tests/unit/test_tiny_install.py).
"""

from __future__ import annotations

# file names inside each ComfyUI model folder
DIT_BF16 = "wan4step_tiny/wan2.1_t2v_tiny_bf16.safetensors"
DIT_GGUF = "wan4step_tiny/wan2.1_t2v_tiny_Q4_K_M.gguf"
DIT_GGUF_Q8 = "wan4step_tiny/wan2.1_t2v_tiny_Q8_0.gguf"
DIT_FP8 = "wan4step_tiny/distill_fp8/"
DIT_INT8 = "wan4step_tiny/distill_int8/"
# VACE-merged, like QuantStack's Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-<TIER>.gguf (loader mode t2v or vace)
DIT_VACE_GGUF = "wan4step_tiny/wan2.1_t2v_tiny_vace_Q8_0.gguf"
UMT5 = "wan4step_tiny/umt5_tiny_fp16.safetensors"
VAE = "wan4step_tiny/wan_2.1_vae_tiny.safetensors"

FILES = {
    "diffusion_models": [DIT_BF16, DIT_GGUF, DIT_GGUF_Q8, DIT_FP8, DIT_INT8, DIT_VACE_GGUF],
    "text_encoders": [UMT5],
    "vae": [VAE],
}
