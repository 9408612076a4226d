"""The loaded DiT against oracles nobody here wrote: diffusers' WanTransformer3DModel (same weights),
and a float32 reference per stored format with a tolerance set by the format's bits per weight."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.formats.keymaps import canonical_to_diffusers
from wan4step.formats.lightx2v_dir import write_lightx2v_dir
from wan4step.tiny.dit import tiny_dit_state_dict

X_SHAPE = (1, 16, 3, 8, 12)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(5)
    return (torch.randn(X_SHAPE, generator=g), torch.tensor([937.5]), torch.randn(1, 24, 4096, generator=g) * 0.5)


def _ours(pack, path, dtype=torch.float32, fast=False):
    mp = pack.nodes.comfy_compat.model.build_model(load_dit(path), dtype)
    if fast:
        mp = pack.nodes.comfy_compat.fast_forward.install(mp, "sdpa")
    return mp


def _forward(mp, x, t, ctx):
    opts = mp.model_options.get("transformer_options", {})
    with torch.no_grad():
        return mp.model.diffusion_model(x, t, ctx, transformer_options=dict(opts)).float()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_bf16_file_equals_diffusers_wan_transformer(comfy, pack, tmp_path, inputs):
    diffusers = pytest.importorskip("diffusers")
    sd = {k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}
    path = tmp_path / "tiny_bf16.safetensors"
    safetensors.torch.save_file(sd, str(path))
    ref = diffusers.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
                                          in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=512,
                                          num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    ref.load_state_dict({canonical_to_diffusers(k): v.float() for k, v in sd.items()}, strict=True)
    x, t, ctx = inputs
    with torch.no_grad():
        want = ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0].float()
    for fast in (False, True):  # ComfyUI's block code and the pack's fused block, both vs diffusers
        got = _forward(_ours(pack, path, fast=fast), x, t, ctx)
        assert rel(got, want) < 1e-5, (fast, rel(got, want))


# Measured relative output error on these tiny weights (2 blocks, 4 bits = 1/16 step):
# fp8 0.015, int8 0.0043, Q8_0 0.0022, Q6_K 0.0075, Q5_K_M 0.013, Q4_K_M 0.024, Q3_K_M 0.050.
# Each bound is ~2x that: tight enough that a wrong scale, key or byte order (errors of O(1))
# fails, loose enough for a different seed. The ordering follows bits per weight.
FORMATS = [
    ("fp8", 0.03),  # e4m3 weights (3 mantissa bits) and e4m3 per-token activations
    ("int8", 0.01),  # 8-bit weights and activations
    ("Q8_0", 0.005),
    ("Q6_K", 0.015),
    ("Q5_K_M", 0.03),
    ("Q4_K_M", 0.05),
    ("Q3_K_M", 0.1),
]


@pytest.mark.parametrize("fmt,tol", FORMATS)
def test_quantized_formats_close_to_float32_reference(comfy, pack, tmp_path, inputs, fmt, tol):
    sd = tiny_dit_state_dict()
    ref_path = tmp_path / "f32.safetensors"
    safetensors.torch.save_file(sd, str(ref_path))
    if fmt in ("fp8", "int8"):
        path = write_lightx2v_dir(tmp_path / f"distill_{fmt}", sd, fmt)
    else:
        path = write_gguf(tmp_path / f"tiny-{fmt}.gguf", sd, fmt)
    x, t, ctx = inputs
    want = _forward(_ours(pack, ref_path), x, t, ctx)
    got = _forward(_ours(pack, path), x, t, ctx)
    err = rel(got, want)
    assert 0 < err < tol, (fmt, err)
