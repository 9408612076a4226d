"""The fused GGUF dequant-matmul (`wan4step.quant.gguf_fused`) on the CPU through TRITON_INTERPRET=1.

Two claims: the W tiles the kernel feeds to its dot are bit-identical to `dequantize` (checked
through `decode_tiles`, which runs the kernel's own tile helper, and through x = identity), and
the fused product matches F.linear(x, dequantize(W), bias) within `linear_tolerance`, i.e. up to
summation order and the final rounding. Shapes are small so each case takes well under a second.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as Q

from wan4step.quant import gguf_matmul
from wan4step.quant.gguf_dequant import dequantize
from wan4step.quant.gguf_encode import random_raw

pytest.importorskip("triton")

TYPES = [Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
DTYPES = [torch.bfloat16, torch.float16]
_MODS = ("wan4step.quant.gguf_fused", "wan4step.quant.gguf_triton")


@pytest.fixture(scope="module")
def gf():
    """gguf_fused (and the gguf_triton helpers it calls) imported with the interpreter on."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        for name in _MODS:
            sys.modules.pop(name, None)
        try:
            yield importlib.import_module(_MODS[0])
        finally:
            for name in _MODS:  # later tests get the compiled-mode modules back
                sys.modules.pop(name, None)


def _raw(qtype, shape, seed=0):
    return random_raw(qtype, shape, generator=torch.Generator().manual_seed(seed + int(qtype)))


def _tile_shapes(gf, qtype):
    """Every (BLOCK_N, BLOCK_K) the kernel may run with for this type."""
    sub = gf.GEOMETRY[int(qtype)][2]
    cfgs = [c for _, c in gf.CONFIG_TABLE] + gf.CANDIDATES
    return sorted({(c.BLOCK_N, c.BLOCK_K) for c in cfgs if c.BLOCK_K % sub == 0})


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_decode_path_is_bit_exact(gf, qtype):
    """decode_tiles (the fused kernel's `_w_tile`) == dequantize, bit for bit, for every tile shape.

    N = 80 is ragged for every BLOCK_N; Q8_0 also gets K = 480, ragged for BLOCK_K = 64/128.
    """
    shapes = [(80, 512)] + ([(80, 480)] if qtype == Q.Q8_0 else [])
    for shape in shapes:
        raw = _raw(qtype, shape)
        for dtype in DTYPES:
            want = dequantize(raw, qtype, shape, dtype).view(torch.int16)
            for bn, bk in _tile_shapes(gf, qtype):
                cfg = gf.Config(16, bn, bk, 4, 1)
                got = gf.decode_tiles(raw, qtype, shape, dtype, cfg).view(torch.int16)
                assert torch.equal(got, want), (qtype.name, shape, dtype, bn, bk, int((got != want).sum()))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_identity_input_gives_the_decoded_weight(gf, qtype):
    """x = I: each output is one exact product 1 * w, so y == dequantize(W)^T exactly, through the matmul."""
    shape = (64, 256)
    raw = _raw(qtype, shape, seed=1)
    for dtype in DTYPES:
        eye = torch.eye(shape[1], dtype=dtype)
        w = dequantize(raw, qtype, shape, dtype)
        for cfg in (gf.CONFIG_TABLE[0][1], gf.CONFIG_TABLE[-1][1]):
            assert torch.equal(gf.fused_linear(eye, raw, qtype, shape, config=cfg), w.T), (qtype.name, dtype, cfg)


def _assert_close(gf, y, x, w, b, dtype):
    want = F.linear(x, w, b)
    exact, bound = gf.linear_tolerance(x, w, b, dtype)
    assert y.shape == want.shape and y.dtype == dtype
    d = (y.double().reshape(exact.shape) - want.double().reshape(exact.shape)).abs()
    assert (d <= bound).all(), float((d / bound).max())
    # and both are close to the exact product (a sanity check on the bound itself)
    assert ((y.double().reshape(exact.shape) - exact).abs() <= bound).all()


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_fused_matches_decode_then_linear(gf, qtype, with_bias):
    g = torch.Generator().manual_seed(int(qtype))
    for (n, k), m in (((64, 256), 16), ((64, 512), 37), ((48, 512), 64)):
        raw = _raw(qtype, (n, k), seed=k)
        for dtype in DTYPES:
            w = dequantize(raw, qtype, (n, k), dtype)
            x = torch.randn(m, k, generator=g).to(dtype)
            b = (torch.randn(n, generator=g) * 0.5).to(dtype) if with_bias else None
            y = gf.fused_linear(x, raw, qtype, (n, k), b)
            _assert_close(gf, y, x, w, b, dtype)


def test_every_config_and_a_batched_input(gf):
    """All candidate configs (both operand orders, M tiles of 32-256) on one type; x of rank 3."""
    qtype, (n, k) = Q.Q4_K, (64, 512)
    raw = _raw(qtype, (n, k), seed=3)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 21, k, generator=g).to(torch.bfloat16)
    b = torch.randn(n, generator=g).to(torch.bfloat16)
    w = dequantize(raw, qtype, (n, k), torch.bfloat16)
    for cfg in gf.CANDIDATES:
        y = gf.fused_linear(x, raw, qtype, (n, k), b, config=cfg)
        assert y.shape == (2, 21, n)
        _assert_close(gf, y, x, w, b, torch.bfloat16)


def test_config_table_and_checks(gf):
    """pick_config follows the table; CHECK_M hits each of its rows; bad arguments are refused."""
    assert [gf.pick_config(m, 5120, 5120, int(Q.Q4_K)) for m in gf.CHECK_M] == [c for _, c in gf.CONFIG_TABLE]
    raw = _raw(Q.Q6_K, (64, 256))
    with pytest.raises(ValueError, match="power-of-two multiple"):
        gf.decode_tiles(raw, Q.Q6_K, (64, 256), torch.bfloat16, gf.Config(16, 64, 48, 4, 1))
    with pytest.raises(ValueError, match="bytes do not hold"):
        gf.fused_linear(torch.zeros(2, 256, dtype=torch.bfloat16), raw, Q.Q4_K, (64, 256))
    with pytest.raises(ValueError, match="bf16/fp16"):
        gf.fused_linear(torch.zeros(2, 256), raw, Q.Q6_K, (64, 256))
    assert gf.fused_linear(torch.zeros(0, 256, dtype=torch.float16), raw, Q.Q6_K, (64, 256)).shape == (0, 64)


def test_first_use_check_passes_the_kernel(gf):
    """gguf_matmul's first-use check (identity + one M per config row) accepts the real kernel.

    One type and dtype: the check's cases are the tests above at larger M (a few seconds here).
    """
    fn = gf.FUSED_LINEARS[int(Q.Q6_K)]
    assert gguf_matmul._fused_self_check(int(Q.Q6_K), fn, torch.device("cpu"), torch.float16)


def test_a_fused_kernel_that_disagrees_is_not_used(caplog):
    """A kernel that decodes wrong, is off by more than rounding, or raises, fails the check with a warning."""
    q = int(Q.Q4_K)

    def right(x, data, shape, bias=None):
        return F.linear(x, dequantize(data, q, shape, x.dtype), bias)

    def off(x, data, shape, bias=None):
        y = right(x, data, shape, bias)
        return y if x.shape[0] == x.shape[1] else y * 1.05  # identity passes, random x does not

    def boom(x, data, shape, bias=None):
        raise RuntimeError("PTX assembly failed")

    cpu = torch.device("cpu")
    assert gguf_matmul._fused_self_check(q, right, cpu, torch.bfloat16)
    for bad, why in ((lambda *a, **k: torch.zeros(512, 64, dtype=torch.bfloat16), "decodes differently"),
                     (off, "beyond rounding"), (boom, "PTX assembly failed")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="wan4step"):
            assert not gguf_matmul._fused_self_check(q, bad, cpu, torch.bfloat16)
        assert "Q4_K" in caplog.text and why in caplog.text and "decode + matmul" in caplog.text


def test_fused_is_off_by_default(monkeypatch):
    """Without WAN4STEP_GGUF_FUSED=1 nothing is registered; with it, all four types are (lazily)."""
    monkeypatch.setattr(gguf_matmul, "_FUSED_LINEARS", {})
    monkeypatch.setattr(gguf_matmul, "_fused_loaded", False)  # restored afterwards
    monkeypatch.setattr(gguf_matmul, "_USE_FUSED", False)
    gguf_matmul._load_fused()
    assert gguf_matmul._FUSED_LINEARS == {}
    monkeypatch.setattr(gguf_matmul, "_USE_FUSED", True)
    gguf_matmul._load_fused()
    assert set(gguf_matmul._FUSED_LINEARS) == {int(t) for t in TYPES}
    # CPU tensors never take the fused path (and fp32 never does anywhere)
    assert gguf_matmul._fused_for(int(Q.Q4_K), torch.zeros(2, 256, dtype=torch.bfloat16)) is None
