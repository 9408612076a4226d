"""LightX2V row-wise FP8/INT8 weights, the per-token activation quantizer and W8A8 matmul.

Tolerances, and why:
- emulated W8A8 vs a float64 W8A8 reference over the same codes: the only
  differences are fp32 accumulation (K <= 512 terms: < 1e-6 relative) and the
  final cast (bf16: half an ulp, 2**-9 relative; fp32: ~1e-7);
- W8A8 vs the exact unquantized float64 linear: e4m3 keeps 4 significant bits,
  a relative rounding error uniform in +-2**-4 (RMS 2**-4/sqrt(3) = 3.6 %) on
  each operand, so ~5 % RMS relative on the output: bound 8 %. INT8 rounds to
  amax/127 steps; for Gaussian rows amax ~ 3-4 sigma, so the RMS error is ~1 %
  of the row RMS per operand, ~1.3 % on the output: bound 2.5 %.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from wan4step.errors import UnsupportedQuantError
from wan4step.quant.act_quant import HAVE_TRITON, quantize_act, quantize_act_reference
from wan4step.quant.linear import QuantLinear
from wan4step.quant.scaled import dequantize_rowwise, quantize_rowwise, scaled_linear
from wan4step.quant.weights import FP8, INT8, QuantWeight

REPO = Path(__file__).resolve().parents[2]
KINDS = (FP8, INT8)


def codes(q: torch.Tensor) -> torch.Tensor:
    return q.view(torch.uint8) if q.dtype == torch.float8_e4m3fn else q


def w8a8_reference(x, q, scale, bias, kind):
    """float64 W8A8: the activation codes/scales of the torch reference, exact products and sums."""
    x2 = x.reshape(-1, x.shape[-1])
    xq, sa = quantize_act_reference(x2, kind)
    y = (xq.double() @ q.double().t()) * sa.double() * scale.double().reshape(1, -1)
    if bias is not None:
        y = y + bias.double()
    return y.reshape(*x.shape[:-1], q.shape[0])


def rel_rms(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item()


def weights(out=512, inp=256, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) / inp**0.5
    w = w * torch.logspace(-2, 1, out).reshape(-1, 1)  # rows of very different magnitude
    return w.to(dtype), (0.02 * torch.randn(out, generator=g)).to(dtype)


# -- weights ---------------------------------------------------------------------
def test_fp8_weight_rounding_is_qtorch_nearest_ties_away():
    # amax 448 -> scale exactly 1, so w / scale are the values below unchanged
    row = torch.tensor([448.0, 17.0, -17.0, 168.0, 19.0, 5 * 2.0**-10, -(5 * 2.0**-10), 0.3, 0.0])
    q, scale = quantize_rowwise(row.reshape(1, -1), FP8)
    assert scale.item() == 1.0 and scale.dtype == torch.float32
    got = q.float().reshape(-1).tolist()
    # ties go away from zero (qtorch), where torch's cast would round to even: 16, -16, 160, 3 * 2**-9 -> 2**-8
    assert got == [448.0, 18.0, -18.0, 176.0, 20.0, 3 * 2.0**-9, -3 * 2.0**-9, 0.3125, 0.0]
    assert row[1:2].to(torch.float8_e4m3fn).item() == 16.0  # the difference is real


def test_int8_weight_rounding_half_to_even():
    row = torch.tensor([127.0, 2.5, 3.5, -2.5, -127.0, 0.49])
    q, scale = quantize_rowwise(row.reshape(1, -1), INT8)
    assert scale.item() == 1.0
    assert q.reshape(-1).tolist() == [127, 2, 4, -2, -127, 0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_rowwise_layout_and_error_bound(kind, dtype):
    w, _ = weights(dtype=dtype)
    q, scale = quantize_rowwise(w, kind)
    assert q.shape == w.shape and scale.shape == (w.shape[0], 1)
    assert q.dtype == (torch.float8_e4m3fn if kind == FP8 else torch.int8)
    assert scale.dtype == dtype  # the converter stores scales in the source dtype
    amax = w.float().abs().amax(dim=1, keepdim=True)
    assert torch.allclose(scale.float(), amax / (448 if kind == FP8 else 127), rtol=2**-7)
    deq = dequantize_rowwise(q, scale, torch.float32)
    err = (deq - w.float()).abs()
    if kind == INT8:  # half a step, plus the bf16 rounding of the quotient and of the scale
        assert (err <= scale.float() * 0.5 * (1 + 2**-6) + amax * 2**-8).all()
    else:  # half an e4m3 ulp: 2**-4 relative, or 2**-10 * scale in the subnormal range
        assert (err <= w.float().abs() * 2**-4 * (1 + 2**-6) + scale.float() * 2**-10 + amax * 2**-9).all()
    assert torch.equal(QuantWeight(kind, q, tuple(q.shape), scale).dequantize(torch.float32), deq)


def test_quantize_rowwise_rejects_bad_input():
    with pytest.raises(ValueError):
        quantize_rowwise(torch.zeros(3), FP8)
    with pytest.raises(UnsupportedQuantError):
        quantize_rowwise(torch.zeros(3, 4), "nf4")


# -- activation quantizer ----------------------------------------------------------
def test_act_quant_reference_semantics():
    x = torch.tensor([[448.0, 17.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [127.0, 2.5, 3.5, -2.5]])
    q, s = quantize_act_reference(x, FP8)
    assert s.dtype == torch.float32 and s.shape == (3, 1)
    f32 = torch.tensor  # expected scales are fp32 quotients
    assert torch.equal(s[:, 0], f32([448.0, 0.0, 127.0]) / f32([448.0, 448.0, 448.0]))
    assert q[0].float().tolist() == [448.0, 16.0, -1.0, 0.0]  # activations: round to nearest even
    assert codes(q[1]).tolist() == [0, 0, 0, 0]  # zero row: scale 0, codes 0 (no NaN)
    q, s = quantize_act_reference(x, INT8)
    assert torch.equal(s[:, 0], f32([448.0, 0.0, 127.0]) / f32([127.0, 127.0, 127.0]))
    assert q[2].tolist() == [127, 2, 4, -2] and q[1].tolist() == [0, 0, 0, 0]


_INTERPRET_SCRIPT = textwrap.dedent(
    """
    import os, sys
    assert os.environ["TRITON_INTERPRET"] == "1"
    sys.path.insert(0, sys.argv[1])
    import torch
    from wan4step.quant.act_quant import quantize_act_reference, quantize_act_triton
    from wan4step.quant.scaled import _rescale_triton, rescale

    def bits(q):
        return q.view(torch.uint8) if q.dtype == torch.float8_e4m3fn else q

    g = torch.Generator().manual_seed(0)
    cases = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = torch.randn(40, 300, generator=g) * torch.logspace(-4, 3, 40).reshape(-1, 1)
        x[3] = 0
        x[5, 7] = -0.0
        x[6] = torch.linspace(-1, 1, 300)
        cases.append(x.to(dtype))
    ties = torch.zeros(2, 64)
    ties[0, :6] = torch.tensor([448.0, 17.0, 168.0, -176.0, 5 * 2.0**-10, -(2.0**-12)])  # fp8 ties / subnormals
    ties[1, :5] = torch.tensor([127.0, 2.5, 3.5, -2.5, -0.5])  # int8 ties
    cases.append(ties)
    cases.append(torch.randn(3, 5120, generator=g).to(torch.bfloat16))  # a Wan row length
    n = 0
    for x in cases:
        for kind in ("fp8", "int8"):
            q1, s1 = quantize_act_triton(x, kind)
            q0, s0 = quantize_act_reference(x, kind)
            assert q1.dtype == q0.dtype and s1.shape == s0.shape == (x.shape[0], 1)
            assert torch.equal(bits(q1), bits(q0)), (kind, x.dtype, (bits(q1) != bits(q0)).sum())
            assert torch.equal(s1, s0), (kind, x.dtype)
            n += 1
    acc = torch.randint(-2**20, 2**20, (37, 200), generator=g, dtype=torch.int32)
    sa, sb = torch.rand(37, 1, generator=g), torch.rand(200, 1, generator=g).bfloat16()
    bias = torch.randn(200, generator=g).bfloat16()
    for b in (bias, None):
        got = _rescale_triton(acc, sa, sb, b, torch.float32)
        want = rescale(acc, sa, sb, b, torch.float32)
        assert torch.equal(got, want), (got - want).abs().max()
        # the interpreter casts fp32 -> bf16 by truncation (the GPU rounds to nearest): 1 ulp
        got = _rescale_triton(acc, sa, sb, b, torch.bfloat16).float()
        want = rescale(acc, sa, sb, b, torch.bfloat16).float()
        assert ((got - want).abs() <= want.abs() * 2.0**-7).all()
    print("OK", n)
    """
)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
def test_triton_kernels_bit_exact_under_interpreter():
    """The fused quantizer (and the INT8 epilogue) on CPU through TRITON_INTERPRET=1.

    A subprocess, because the interpreter must be switched on before triton is imported.
    """
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run(
        [sys.executable, "-c", _INTERPRET_SCRIPT, str(REPO)], env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 10" in r.stdout


# -- W8A8 matmul ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16])
def test_scaled_linear_cpu_equals_w8a8_reference(kind, xdtype):
    w, b = weights(dtype=torch.bfloat16)
    q, scale = quantize_rowwise(w, kind)
    x = torch.randn(2, 37, 256, generator=torch.Generator().manual_seed(1)).to(xdtype)
    y = scaled_linear(x, q, scale, b, kind)
    assert y.shape == (2, 37, 512) and y.dtype == xdtype
    ref = w8a8_reference(x, q, scale, b, kind)
    rel = 2**-8 if xdtype == torch.bfloat16 else 1e-5
    assert torch.allclose(y.double(), ref, rtol=rel, atol=rel * ref.abs().max().item() * 1e-3)
    # and it is a good approximation of the unquantized layer (budget in the module docstring)
    exact = x.double() @ w.double().t() + b.double()
    assert rel_rms(y, exact) < (0.08 if kind == FP8 else 0.025)


@pytest.mark.parametrize("kind", KINDS)
def test_scaled_linear_without_bias_and_zero_rows(kind):
    w, _ = weights()
    q, scale = quantize_rowwise(w, kind)
    x = torch.randn(5, 256)
    x[2] = 0
    y = scaled_linear(x, q, scale, None, kind)
    assert torch.equal(y[2], torch.zeros(512))
    assert torch.allclose(y.double(), w8a8_reference(x, q, scale, None, kind), rtol=1e-5, atol=1e-6)
    with pytest.raises(UnsupportedQuantError):
        scaled_linear(x, q, scale, None, "gguf")


@pytest.mark.parametrize("kind", KINDS)
def test_quant_linear_forward_with_lightx2v_weights(kind):
    """QuantLinear loaded from LightX2V keys (weight + bf16 weight_scale) computes W8A8."""
    w, b = weights(dtype=torch.bfloat16)
    q, scale = quantize_rowwise(w, kind)
    lin = QuantLinear(256, 512)
    lin.load_state_dict({"weight": q, "weight_scale": scale, "bias": b})
    assert lin.qkind == kind and lin.weight.dtype == q.dtype  # stays 8-bit, no dequantized copy
    x = torch.randn(3, 21, 256, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    y = lin(x)
    assert y.dtype == torch.bfloat16 and y.shape == (3, 21, 512)
    ref = w8a8_reference(x, q, scale, b, kind)
    assert torch.allclose(y.double(), ref, rtol=2**-8, atol=1e-3)
    # the same module fed a QuantWeight directly
    lin2 = QuantLinear(256, 512)
    lin2.assign_weight(QuantWeight(kind, q, tuple(q.shape), scale.float()), b)
    assert torch.equal(lin2(x), y)


# -- CUDA (run on the GPU machine; skipped here) ----------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_fused_quantizer_matches_reference(kind):
    x = (torch.randn(300, 5120, device="cuda") * torch.logspace(-3, 2, 300, device="cuda")[:, None]).bfloat16()
    q1, s1 = quantize_act(x, kind)
    q0, s0 = quantize_act_reference(x, kind)
    assert torch.equal(codes(q1), codes(q0)) and torch.equal(s1, s0)


@cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_native_matches_w8a8_reference(kind):
    w, b = weights(out=1024, inp=512)
    q, scale = quantize_rowwise(w.cuda(), kind)
    for m in (7, 16, 17, 300):
        x = torch.randn(m, 512, device="cuda").bfloat16()
        y = scaled_linear(x, q, scale, b.cuda(), kind)
        ref = w8a8_reference(x.cpu(), q.cpu(), scale.cpu(), b, kind)
        # fast-accumulating FP8 tensor cores: a few bf16 ulps
        assert rel_rms(y.cpu(), ref) < 4e-3, (kind, m)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [5, 17, 100])
def test_native_call_paths_on_cpu_kernels(kind, m):
    """The exact _scaled_mm / _int_mm calls of the CUDA path (layouts, row padding, scales,
    bias), run through torch's CPU implementations of the same ops, agree with the emulation."""
    from wan4step.quant import scaled

    w, b = weights()
    q, scale = quantize_rowwise(w, kind)
    x = torch.randn(m, 256, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
    xq, sa = scaled.quantize_act(x, kind)
    try:
        y = scaled._fp8_scaled_mm(xq, sa, q, scale, b) if kind == FP8 else scaled._int8_int_mm(xq, sa, q, scale, b, x.dtype)
    except (RuntimeError, NotImplementedError) as e:
        pytest.skip(f"this torch has no CPU {kind} kernel: {e}")
    assert y.shape == (m, 512) and y.dtype == torch.bfloat16
    ref = w8a8_reference(x, q, scale, b, kind)
    assert torch.allclose(y.double(), ref, rtol=2**-7, atol=1e-3)
