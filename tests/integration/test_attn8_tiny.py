"""The 8-bit attention method in a whole model, on the CPU: the tiny DiT through ComfyUI's WanModel and the
pack's fused blocks, with attention run by the method's torch reference (attention.REFERENCE_8BIT, the same
quantization the GPU kernels are held to in tests/unit/test_attn8.py and tests/gpu/test_attn8.py).

- one forward: 8-bit attention moves the output no more than 1.5x what FP8 (W8A8) linears alone move it;
- a fixed-seed 4-step clip, decoded by the tiny VAE: PSNR of the 8-bit-attention frames against the
  bf16-attention frames, printed and bounded. Random tiny weights make PSNR a weak measure of what a
  trained model would show; the bound only catches a broken method.
"""

from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch

from wan4step import attention
from wan4step.formats import load_dit
from wan4step.formats.lightx2v_dir import write_lightx2v_dir
from wan4step.tiny.dit import tiny_dit_state_dict

pytestmark = pytest.mark.integration
LATENT = (1, 16, 3, 16, 16)  # 3 x 8 x 8 = 192 tokens (patch 2 x 2); MIN_KEYS is lowered so they take the 8-bit path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("attn8")
    sd = tiny_dit_state_dict()
    bf16 = d / "tiny_bf16.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(bf16))
    write_lightx2v_dir(d / "distill_fp8", sd, "fp8")
    return bf16, d / "distill_fp8"


def _model(pack, path, attn: str):
    mp = pack.nodes.comfy_compat.model.build_model(load_dit(path), torch.bfloat16)
    return pack.nodes.comfy_compat.fast_forward.install(mp, attn)


def _cond(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_forward_8bit_attention_within_fp8_linear_error(comfy, pack, files, monkeypatch):
    from wan4step import attn8

    monkeypatch.setattr(attn8, "MIN_KEYS", 128)
    bf16, fp8 = files
    g = torch.Generator().manual_seed(3)
    x, t, ctx = torch.randn(LATENT, generator=g), torch.tensor([750.0]), _cond()[0][0]

    def fwd(path, attn):
        mp = _model(pack, path, attn)
        opts = mp.model_options.get("transformer_options", {})
        with torch.no_grad():
            return mp.model.diffusion_model(x, t, ctx, transformer_options=dict(opts)).float()

    ref = fwd(bf16, "sdpa")
    d_attn = _rel(fwd(bf16, attention.REFERENCE_8BIT), ref)
    d_lin = _rel(fwd(fp8, "sdpa"), ref)
    print(f"tiny DiT forward, rel L2 vs bf16: 8-bit attention {d_attn:.4f}, FP8 linears {d_lin:.4f}")
    assert 0 < d_attn <= 1.5 * d_lin, (d_attn, d_lin)


def test_clip_psnr_8bit_vs_bf16_attention(comfy, pack, files, monkeypatch, tmp_path):
    from wan4step import attn8
    from wan4step.tiny.vae import write_tiny_vae
    from wan4step.vae import load_vae

    monkeypatch.setattr(attn8, "MIN_KEYS", 128)
    bf16, _ = files
    S = pack.nodes.sampler.Wan4StepSampler
    latent = {"samples": torch.zeros(LATENT)}
    vae = load_vae(write_tiny_vae(tmp_path / "vae.safetensors", "safetensors"))

    def clip(attn):
        out = S.execute(_model(pack, bf16, attn), _cond(), latent, seed=42, steps=4, shift=5.0, cfg=1.0,
                        noise="comfy", update="lcm")
        with torch.no_grad():
            return vae.decode(out.result[0]["samples"].float()).clamp(-1, 1)

    a, b = clip("sdpa"), clip(attention.REFERENCE_8BIT)
    mse = float(((a - b) / 2).pow(2).mean())  # frames in [-1, 1]: peak-to-peak 2
    psnr = 10 * math.log10(1.0 / mse) if mse > 0 else math.inf
    print(f"tiny clip {tuple(a.shape)}: PSNR 8-bit vs bf16 attention {psnr:.1f} dB")
    assert 30.0 < psnr < math.inf, psnr
