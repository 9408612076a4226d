"""Fused block kernels: torch references vs plain math; Triton kernels under the interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from wan4step.dit import fused
from wan4step.dit.fused import ln_modulate_reference, rmsnorm_rope_reference, rope_tables


def test_ln_modulate_reference_matches_definition():
    x = torch.randn(2, 5, 64)
    sh, sc = torch.randn(2, 64), torch.randn(2, 64)
    ln = torch.nn.functional.layer_norm(x, (64,), eps=1e-6)
    torch.testing.assert_close(ln_modulate_reference(x, sh, sc), ln * (1 + sc[:, None]) + sh[:, None])


def test_rmsnorm_rope_reference_matches_comfy_style_rotation():
    B, L, H, D = 1, 6, 2, 8
    x, w = torch.randn(B, L, H * D), torch.randn(H * D)
    ang = torch.randn(L, D // 2)
    # rotation matrices as ComfyUI builds them: [[cos, -sin], [sin, cos]] -> [1, L, 1, D/2, 2, 2]
    freqs = torch.stack([ang.cos(), -ang.sin(), ang.sin(), ang.cos()], -1).view(1, L, 1, D // 2, 2, 2)
    cos, sin = rope_tables(freqs)
    out = rmsnorm_rope_reference(x, w, cos, sin, H)
    v = torch.nn.functional.rms_norm(x, (H * D,), w, eps=1e-6).view(B, L, H, D // 2, 1, 2)
    ref = (freqs[..., 0] * v[..., 0] + freqs[..., 1] * v[..., 1]).reshape(B, L, H * D)
    torch.testing.assert_close(out, ref)


_INTERP = r"""
import torch
from wan4step.dit import fused
torch.manual_seed(0)
x = torch.randn(2, 3, 96)
sh, sc = torch.randn(2, 96), torch.randn(2, 96)
a = fused.ln_modulate(x, sh, sc); b = fused.ln_modulate_reference(x, sh, sc)
assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
w = torch.randn(96); ang = torch.randn(3, 24)
a = fused.rmsnorm_rope(x, w, ang.cos(), ang.sin(), 2); b = fused.rmsnorm_rope_reference(x, w, ang.cos(), ang.sin(), 2)
assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
a = fused.rmsnorm_rope(x, w, None, None, 2); b = fused.rmsnorm_rope_reference(x, w, None, None, 2)
assert torch.allclose(a, b, atol=1e-5)
# quantizing twins: the codes of quantize_act(ln_modulate(x)) bit for bit; GELU within its rounding
from wan4step.quant.act_quant import quantize_act_reference
xb = (torch.randn(2, 5, 200) * 3).to(torch.bfloat16)
sh, sc = torch.randn(2, 200).to(torch.bfloat16), torch.randn(2, 200).to(torch.bfloat16)
h = (torch.randn(7, 300) * 4).to(torch.bfloat16)
h[0] = 0  # an all-zero row: scale 0, codes 0
for kind in ("fp8", "int8"):
    y = fused.ln_modulate(xb, sh, sc)
    assert torch.allclose(y.float(), fused.ln_modulate_reference(xb.float(), sh.float(), sc.float()), atol=4e-2, rtol=1e-2)
    q, s = fused.ln_modulate_quant(xb, sh, sc, kind)
    rq, rs = quantize_act_reference(y.reshape(10, 200), kind)
    assert torch.equal(q.view(torch.uint8) if kind == "fp8" else q, rq.view(torch.uint8) if kind == "fp8" else rq)
    assert torch.equal(s, rs), kind
    q, s = fused.gelu_quant(h, kind)
    rq, rs = fused.gelu_quant_reference(h, kind)
    assert torch.equal(s[0], rs[0]) and not q[0].float().any()
    torch.testing.assert_close(s, rs, rtol=8e-3, atol=0)  # amax may move by one bf16 ulp
    same = (q.float() == rq.float()).float().mean().item()
    assert same > 0.99, (kind, same)
    torch.testing.assert_close(q.float() * s, rq.float() * rs, rtol=0, atol=float((rs * 2 * (16 if kind == "fp8" else 1)).max()))
# the gated residual: torch.addcmul's value (an fma in fp32), any result dtype
x, y = torch.randn(2, 13, 200).to(torch.bfloat16), torch.randn(2, 13, 200).to(torch.bfloat16)
for g in (torch.randn(2, 200).to(torch.bfloat16), torch.randn(2, 200)):
    r = fused.gated_residual(x, y, g)
    ref = (x.double() + y.double() * g.double()[:, None]).to(r.dtype)
    assert r.dtype == torch.addcmul(x, y, g[:, None]).dtype
    tol = 2 ** -8 if r.dtype == torch.bfloat16 else 2 ** -22  # one rounding to the result dtype
    torch.testing.assert_close(r.float(), ref.float(), rtol=tol, atol=1e-6)
print("ok")
"""


def test_triton_kernels_under_interpreter():
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(repo))
    r = subprocess.run([sys.executable, "-c", _INTERP], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_affine_layernorm_runs_through_the_modulation_kernels():
    """norm3 (affine LayerNorm) is computed as ln_modulate with shift = b, scale = w - 1: the same function."""
    from wan4step.dit.block import _affine_ln

    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(96, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(96).to(torch.bfloat16).float() * 2)
        norm.bias.copy_(torch.randn(96))
    x = torch.randn(2, 7, 96) * 3
    shift, scale, eps = _affine_ln(norm, x)
    assert torch.equal(1 + scale, norm.weight.detach().view(1, -1))  # w - 1 round-trips exactly
    out = fused.ln_modulate(x.view(1, -1, 96), shift, scale, eps).view_as(x)
    torch.testing.assert_close(out, norm(x), rtol=1e-5, atol=1e-5)
    assert _affine_ln(torch.nn.LayerNorm(96, elementwise_affine=False), x) is None
    assert _affine_ln(torch.nn.Identity(), x) is None
    assert _affine_ln(torch.nn.LayerNorm(64), x) is None  # wrong width: the module runs itself


def test_env_tuning_skips_malformed_entries(caplog):
    assert fused._env_tuning("ln=4,gelu_quant=32") == {"ln": 4, "gelu_quant": 32}
    with caplog.at_level("WARNING", logger="wan4step"):
        assert fused._env_tuning("ln=abc,nope=4,gelu_quant=3,,ln") == {}
    assert caplog.text.count("ignoring WAN4STEP_TUNING") == 4
