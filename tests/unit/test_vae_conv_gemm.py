"""The VAE's implicit-GEMM conv (wan4step/vae/conv_gemm.py): its algorithm under the Triton
interpreter against torch's F.conv3d (an oracle not written here), the whole decoder with it, and
the fallback to cuDNN when it fails or disagrees."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wan4step.fallback import KernelSwitch
from wan4step.tiny.vae import TINY_VAE, tiny_vae_state_dict
from wan4step.vae import conv_gemm
from wan4step.vae import model as vae_model
from wan4step.vae.model import VAEConfig, WanVAE

REPO = Path(__file__).resolve().parents[2]

_INTERP = textwrap.dedent(
    """
    import os, sys
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    import torch.nn.functional as F
    from wan4step.vae import conv_gemm as cg

    g = torch.Generator().manual_seed(0)
    cases = [  # Ci, Co, frames in, H, W, kernel, tile (None: pick_tile's)
        (16, 96, 4, 3, 24, (3, 3, 3), cg.Tile(16, 64, 16, bn2=32)),  # 2 accumulators, partial last run
        (32, 32, 1, 3, 8, (1, 3, 3), None),  # the zero-history first frame: last temporal tap only
        (16, 32, 3, 4, 8, (3, 1, 1), cg.Tile(8, 16, 16)),  # the temporal upsample's time conv
        (32, 48, 2, 3, 8, (1, 1, 1), cg.Tile(8, 32, 16, bn2=16)),
        (64, 64, 3, 2, 16, (3, 3, 3), None),  # box wider than the frame
        (16, 16, 3, 1, 40, (3, 3, 3), cg.Tile(16, 16, 16)),  # one row: every vertical tap is padding
    ]
    for ci, co, t, h, w, k, tile in cases:
        x = torch.randn(1, ci, t, h, w, generator=g).contiguous(memory_format=torch.channels_last_3d)
        wt = torch.randn(co, ci, *k, generator=g) * 0.1
        b = torch.randn(co, generator=g)
        ref = F.conv3d(x, wt, b, padding=(0, k[1] // 2, k[2] // 2))
        got = cg.conv3d(x, wt, b, tile=tile)
        assert got.shape == ref.shape and got.is_contiguous(memory_format=torch.channels_last_3d)
        err = (got - ref).abs().max().item()
        assert err < 1e-4, (ci, co, k, tile, err)
        nb = cg.conv3d(x, wt, None, tile=tile)
        assert (nb - F.conv3d(x, wt, None, padding=(0, k[1] // 2, k[2] // 2))).abs().max().item() < 1e-4
        r = torch.randn(ref.shape, generator=g).contiguous(memory_format=torch.channels_last_3d)
        assert (cg.conv3d(x, wt, b, tile=tile, residual=r) - (ref + r)).abs().max().item() < 1e-4

    # 16-bit storage (the decode's): fp16 here, since this interpreter's tl.dot gives garbage for
    # bf16 operands (even from plain pointer loads); bf16 is checked on the GPU (tests/gpu)
    x = torch.randn(1, 32, 4, 3, 40, generator=g).half().contiguous(memory_format=torch.channels_last_3d)
    wt = (torch.randn(96, 32, 3, 3, 3, generator=g) / 17).half()
    b = torch.randn(96, generator=g).half()
    r = torch.randn(1, 96, 2, 3, 40, generator=g).half().contiguous(memory_format=torch.channels_last_3d)
    ref = F.conv3d(x.float(), wt.float(), b.float(), padding=(0, 1, 1)) + r.float()
    got = cg.conv3d(x, wt, b, residual=r, tile=cg.Tile(16, 64, 32, bn2=32))
    assert got.dtype == torch.float16
    assert ((got.float() - ref).abs().max() / ref.abs().max()).item() < 2**-9
    print("ok")
    """
)


def test_conv_gemm_under_interpreter_matches_conv3d():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", _INTERP], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def _tiny_vae() -> WanVAE:
    vae = WanVAE(TINY_VAE)
    vae.load_state_dict(tiny_vae_state_dict(TINY_VAE, seed=0))
    vae.channels_last = True  # the CUDA layout, which the GEMM needs (on the CPU it is opt-in)
    return vae.eval()


def test_decoder_routes_its_convs_through_the_gemm(monkeypatch):
    """Which convs take the GEMM and with which weights (the zero-history frame's last temporal
    tap, the cached [K, Co] matrix): a stand-in that convolves with the matrix it is handed gives
    the cuDNN decode (to float32 rounding: torch's CPU conv sums a contiguous copy of a weight view
    in another order) only if both are right. (The kernel itself: the interpreter test.)"""
    vae = _tiny_vae()
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(2))
    ref = vae.decode(z)
    calls = []

    def from_matrix(x, w, b, w2=None, tile=None, residual=None):
        co, ci, kt, kh, kw = w.shape
        calls.append((kt, kh, kw, w2 is None, residual is not None))
        w2 = conv_gemm.gemm_weight(w) if w2 is None else w2  # None: the first-use probe
        weight = w2.reshape(kt, kh, kw, ci, co).permute(4, 3, 0, 1, 2)
        y = F.conv3d(x, weight, b, padding=(0, kh // 2, kw // 2)).contiguous(memory_format=torch.channels_last_3d)
        return y if residual is None else y.add_(residual)

    monkeypatch.setattr(conv_gemm, "supported", lambda x, w: None)
    monkeypatch.setattr(conv_gemm, "conv3d", from_matrix)
    monkeypatch.setattr(vae_model, "_GEMM", KernelSwitch("VAE implicit-GEMM conv (Triton)", "cuDNN's conv3d"))
    vae.conv_backend = "gemm"
    got = vae.decode(z)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # every kind of conv ran with the cached matrix (False), after its probe (True)
    assert {(3, 3, 3), (1, 3, 3), (3, 1, 1), (1, 1, 1)} <= {c[:3] for c in calls if not c[3]}, set(calls)
    assert any(c[4] and not c[3] for c in calls)  # residual blocks add their shortcut in the epilogue
    assert vae_model._GEMM.off == set()
    vae.conv_backend = "cudnn"
    calls.clear()
    vae.decode(z)
    assert not calls


def test_refusals_name_the_reason():
    x = torch.zeros(1, 16, 3, 4, 8).contiguous(memory_format=torch.channels_last_3d)
    w = torch.zeros(32, 16, 3, 3, 3)
    if os.environ.get("TRITON_INTERPRET") != "1" and conv_gemm.triton is not None:
        assert conv_gemm.supported(x, w) == "needs a CUDA GPU"
    assert "channels-last" in conv_gemm.supported(x.contiguous(), w) or conv_gemm.triton is None or not x.is_cuda
    assert conv_gemm.pick_tile(832, 96, 96) == conv_gemm.Tile(256, 64, 32, bn2=32, stages=3, warps=8)
    assert conv_gemm.pick_tile(320, 96, 96) == conv_gemm.Tile(128, 64, 32, bn2=32)  # a narrow tile: less tail
    assert conv_gemm.pick_tile(1280, 384, 384) == conv_gemm.Tile(128, 128, 64)
    assert conv_gemm.pick_tile(416, 192, 192) == conv_gemm.Tile(128, 128, 64, bn2=64, stages=4, warps=8)


def test_auto_sends_only_the_measured_winners_to_the_gemm():
    """conv_backend "auto": the full-resolution 96/192-channel 3x3 convs; cuDNN for 384, 1x1, 16->384."""
    assert conv_gemm.preferred(96, 96, (3, 3, 3)) and conv_gemm.preferred(192, 192, (1, 3, 3))
    assert not conv_gemm.preferred(384, 384, (3, 3, 3))
    assert not conv_gemm.preferred(192, 384, (1, 1, 1)) and not conv_gemm.preferred(16, 384, (3, 3, 3))
    assert not conv_gemm.preferred(96, 96, (3, 1, 1))
    vae = WanVAE(VAEConfig(dim=16))
    vae.conv_backend = "fast"
    with pytest.raises(ValueError, match="conv_backend 'fast'.*auto, cudnn, gemm"):
        vae.decode(torch.zeros(1, 16, 1, 2, 2))


def test_a_wrong_gemm_falls_back_to_cudnn_with_one_warning(monkeypatch, caplog):
    """A kernel that disagrees with cuDNN on its first-use probe is switched off for that shape
    (one warning) and the decode is F.conv3d's, never a silently wrong video."""
    vae = _tiny_vae()
    z = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    ref = vae.decode(z)
    wrong_calls = []

    def wrong(x, w, b, w2=None, tile=None, residual=None):
        wrong_calls.append((tuple(w.shape), residual is not None))
        return F.conv3d(x, w, b, padding=(0, w.shape[3] // 2, w.shape[4] // 2)) + 0.5

    monkeypatch.setattr(conv_gemm, "supported", lambda x, w: None)
    monkeypatch.setattr(conv_gemm, "conv3d", wrong)
    monkeypatch.setattr(vae_model, "_GEMM", KernelSwitch("VAE implicit-GEMM conv (Triton)", "cuDNN's conv3d"))
    vae.conv_backend = "gemm"
    with caplog.at_level(logging.WARNING, logger="wan4step"):
        got = vae.decode(z)
        got2 = vae.decode(z)
    assert wrong_calls  # the probes ran ...
    assert torch.equal(got, ref) and torch.equal(got2, ref)  # ... and no wrong output reached the video
    shapes = {s for s in wrong_calls}
    assert len(wrong_calls) == len(shapes)  # one probe per shape (with or without residual), never again
    assert caplog.text.count("implicit-GEMM conv disabled") == len(shapes)
