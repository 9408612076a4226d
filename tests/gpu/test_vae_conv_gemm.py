"""The VAE's implicit-GEMM conv on the GPU (sm90; skipped elsewhere): the decoder's real shapes against
cuDNN's conv3d in bf16, every tile bench_vae_conv.py may pick, and a whole decode with each backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0), reason="needs an sm90 GPU"
)
DEV = torch.device("cuda")
CL = torch.channels_last_3d
TOL = 2**-7  # of the output's largest value: bf16 output rounding and another summation order

# (Ci, Co, frames in, H, W, kernel): the decoder's convolutions at 480p, a pass of each
SHAPES = [
    (96, 96, 4, 480, 832, (3, 3, 3)),
    (192, 192, 4, 240, 416, (3, 3, 3)),
    (192, 384, 3, 120, 208, (3, 3, 3)),
    (384, 384, 3, 60, 104, (3, 3, 3)),
    (384, 384, 1, 60, 104, (1, 3, 3)),
    (384, 768, 3, 60, 104, (3, 1, 1)),
    (96, 96, 3, 720, 1280, (3, 3, 3)),
]


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


@pytest.mark.parametrize("ci,co,t,h,w,k", SHAPES)
def test_gemm_matches_cudnn_at_decoder_shapes(ci, co, t, h, w, k):
    from wan4step.vae import conv_gemm

    g = torch.Generator(DEV).manual_seed(0)
    x = torch.randn(1, ci, t, h, w, device=DEV, dtype=torch.bfloat16, generator=g).contiguous(memory_format=CL)
    wt = (torch.randn(co, ci, *k, device=DEV, generator=g) / (ci * k[0] * k[1] * k[2]) ** 0.5).to(torch.bfloat16)
    b = torch.randn(co, device=DEV, dtype=torch.bfloat16, generator=g)
    want = F.conv3d(x, wt, b, padding=(0, k[1] // 2, k[2] // 2))
    got = conv_gemm.conv3d(x, wt, b)
    assert got.is_contiguous(memory_format=CL)
    assert _err(got, want) < TOL
    r = torch.randn(want.shape, device=DEV, dtype=torch.bfloat16, generator=g).contiguous(memory_format=CL)
    assert _err(conv_gemm.conv3d(x, wt, b, residual=r), want.float() + r.float()) < TOL


def test_every_sweep_tile_is_right_where_it_runs():
    """bench_vae_conv.py --sweep may pick any of these: each one that compiles must be exact."""
    from wan4step.vae import conv_gemm

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from bench_vae_conv import candidates

    g = torch.Generator(DEV).manual_seed(1)
    ran = 0
    for ci, co in ((96, 96), (192, 192), (384, 384)):
        x = torch.randn(1, ci, 3, 5, 416, device=DEV, dtype=torch.bfloat16, generator=g).contiguous(memory_format=CL)
        wt = (torch.randn(co, ci, 3, 3, 3, device=DEV, generator=g) / (27 * ci) ** 0.5).to(torch.bfloat16)
        want = F.conv3d(x, wt, None, padding=(0, 1, 1))
        for tile in candidates(ci, co):
            try:
                got = conv_gemm.conv3d(x, wt, None, tile=tile)
            except Exception as exc:  # noqa: BLE001 - out of shared memory: that tile is not offered
                assert "resources" in str(exc).lower() or "shared" in str(exc).lower(), (tile, exc)
                continue
            assert _err(got, want) < TOL, tile
            ran += 1
    assert ran


@pytest.mark.parametrize("backend", ["gemm", "auto", "cudnn"])
def test_whole_decode_matches_plain_cudnn(backend):
    """Each conv backend (cudnn: with the fused bias pass) against cuDNN with torch's own bias and
    shortcut adds, the path before either kernel existed."""
    from wan4step.tiny.vae import tiny_vae_state_dict
    from wan4step.vae import conv_bias
    from wan4step.vae import model as vae_model
    from wan4step.vae.model import VAEConfig, WanVAE

    cfg = VAEConfig(dim=96)
    vae = WanVAE(cfg)
    vae.load_state_dict(tiny_vae_state_dict(cfg, seed=0))
    vae = vae.to(DEV, torch.bfloat16).eval()
    vae.tiling = "off"
    z = torch.randn(1, 16, 3, 30, 52, device=DEV, dtype=torch.bfloat16, generator=torch.Generator(DEV).manual_seed(2))
    try:
        with torch.inference_mode():
            vae.conv_backend, conv_bias.USE_TRITON = "cudnn", False
            ref = vae.decode(z)
            vae.conv_backend, conv_bias.USE_TRITON = backend, True
            got = vae.decode(z)
    finally:
        conv_bias.USE_TRITON = True
    # every probe passed: the kernels really ran
    assert not vae_model._GEMM.off and not conv_bias._KERNEL.off, (vae_model._GEMM.off, conv_bias._KERNEL.off)
    if backend != "gemm":  # "gemm" leaves no conv with a bias on cuDNN
        assert conv_bias._KERNEL.checked
    if backend != "cudnn":
        assert vae_model._GEMM.checked
    diff = (got - ref).abs()
    # bf16 activations through ~30 convs, each rounded once in another order: small, not zero (our decode
    # vs ComfyUI's differs by max 0.018, mean 0.002 in these units: docs/bench/vae.log)
    assert diff.max().item() < 0.05 and diff.mean().item() < 5e-3, (diff.max().item(), diff.mean().item())
