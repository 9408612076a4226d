"""8-bit attention on the CPU: the torch reference of the method against SDPA on inputs shaped like Wan's,
the Triton kernels against that reference under the interpreter, and backend selection without a GPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan4step import advisor, attention
from wan4step import attn8 as A
from wan4step.attn8 import reference as R
from wan4step.attn8.structured import MAX_REL_L2, MIN_COSINE, accuracy, sdpa_fp32, structured_qkv


@pytest.mark.parametrize("Lq,Lk,seed", [(2048, 2048, 0), (1536, 512, 2), (1000, 1700, 3)])
def test_reference_meets_the_bar_on_structured_inputs(Lq, Lk, seed):
    q, k, v = structured_qkv(1, 4, Lq, Lk, seed=seed)
    ref = sdpa_fp32(q, k, v)
    for pv_fp8 in (True, False):
        cos, rel = accuracy(R.attn8_reference(q, k, v, block_n=128, pv_fp8=pv_fp8), ref)
        assert cos >= MIN_COSINE and rel <= MAX_REL_L2, (pv_fp8, cos, rel)


def test_structured_inputs_defeat_naive_int8():
    """The inputs are hard enough to matter: plain per-block INT8 Q·Kᵀ (no K smoothing, no channel
    balancing) misses the bar on them, while per-token Q / per-block K INT8 of random Gaussians would not."""
    q, k, v = structured_qkv(1, 4, 2048, 2048, seed=0)
    ref = sdpa_fp32(q, k, v)
    qf, kf = q.float(), k.float()

    def fake_int8(x, dims):
        s = x.abs().amax(dims, keepdim=True) / 127
        return torch.round(x / s).clamp(-127, 127) * s

    B, H, L, D = q.shape
    qn = fake_int8(qf.view(B, H, L // 64, 64, D), (-1, -2)).view_as(qf)
    kn = fake_int8(kf.view(B, H, L // 64, 64, D), (-1, -2)).view_as(kf)
    cos, rel = accuracy(torch.softmax(qn @ kn.transpose(-1, -2) / D**0.5, -1) @ v.float(), ref)
    assert rel > MAX_REL_L2, rel
    # the structure is there: a shared K offset larger than K's spread, outlier channels, wide logits
    kc = kf - kf.mean(2, keepdim=True)
    assert (kf.mean(2).norm(dim=-1) > kc.norm(dim=-1).mean(-1)).all()
    amax = kf.abs().amax(2)
    assert (amax.amax(-1) > 4 * amax.median(-1).values).all()
    logits = qf @ kf.transpose(-1, -2) / D**0.5
    assert (logits.amax(-1) - logits.amin(-1)).median() > 15


def test_stats_and_codes_follow_the_method():
    q, k, v = structured_qkv(2, 3, 100, 130, D=64, seed=5)
    qia, ka, km, vm, vs = R.stats_reference(q, k, v)
    torch.testing.assert_close(qia * ka, torch.ones_like(ka))  # q / a and k * a: every q·k unchanged
    torch.testing.assert_close(km, k.float().mean(2))
    q8, qs, k8, ks, vt = R.quantize_reference(q, k, v, (qia, ka, km, vm, vs), block_n=32)
    assert q8.shape == (2, 3, 128, 64) and k8.shape == (2, 3, 160, 64) and vt.shape == (2, 3, 64, 160)
    assert not q8[:, :, 100:].any() and not k8[:, :, 130:].any() and not vt.float()[..., 130:].any()
    assert q8.abs().max() == 127 and (k8.view(2, 3, 5, 32, 64).abs().amax((-1, -2))[:, :, :4] == 127).all()
    # codes x scales give back (k - mean) * a within half a step
    kq = (k8.float().view(2, 3, 5, 32, 64) * ks[..., None, None]).view(2, 3, 160, 64)[:, :, :130]
    err = (kq - (k.float() - km[:, :, None]) * ka[:, :, None]).abs()
    assert (err <= ks.repeat_interleave(32, -1)[:, :, :130, None] / 2 * 1.0001).all()


_INTERP = r"""
import torch
from wan4step import attn8 as A
from wan4step.attn8 import reference as R
from wan4step.attn8.structured import structured_qkv, sdpa_fp32, accuracy
cases = [  # Lq, Lk, BLOCK_N, config flags, fp8 P.V
    (100, 150, 32, {}, True), (64, 40, 16, {"exp_split": True}, True), (70, 96, 32, {}, False),
    (33, 16, 16, {}, True),
]
for Lq, Lk, bn, flags, fp8 in cases:
    B, H, D = 2, 2, 64
    q, k, v = structured_qkv(B, H, Lq, Lk, D=D, seed=Lq)
    st = A.stats(q, k, v, chunk=64)
    for a, b in zip(st, R.stats_reference(q, k, v)):
        torch.testing.assert_close(a.view_as(b), b, rtol=1e-5, atol=1e-5)
    codes = A.quantize(q, k, v, st, bn, fp8)
    want = R.quantize_reference(q, k, v, tuple(x.view(B, H, D) for x in st), bn, fp8)
    for a, b in zip(codes, want):
        b = b.reshape(a.shape)
        if a.dtype == torch.float8_e4m3fn:
            a, b = a.view(torch.uint8), b.view(torch.uint8)
        assert torch.equal(a, b), (Lq, Lk, a.dtype)
    cfg = A.Config(32, bn, 4, 1, **flags)
    out = A.attention_codes(*codes, st[3], st[4], B, H, Lq, Lk, torch.float32, cfg, fp8)
    ref = R.attention_from_codes(*[x.view(B, H, *x.shape[1:]) for x in codes], st[3].view(B, H, D),
                                 st[4].view(B, H, D), Lq, Lk, bn, D ** -0.5, fp8)
    cos, rel = accuracy(out, ref)
    # same arithmetic: equal up to float32 rounding (exp_split: its polynomial exp2 moves a few P codes a step)
    assert rel < (5e-4 if cfg.exp_split else 1e-6), (cfg, rel)
    cos, rel = accuracy(out, sdpa_fp32(q, k, v))
    assert cos > 0.999 and rel < 0.03, (cfg, cos, rel)
# the Hopper kernel's V: the same codes, keys stored in key_order (checked here without Gluon)
q, k, v = structured_qkv(1, 2, 100, 300, D=128, seed=7)
st = A.stats(q, k, v, chunk=64)
plain = A.quantize(q, k, v, st, 128, True)[4]
ordered = A.quantize(q, k, v, st, 128, True, key_order=True)[4]
assert torch.equal(ordered[..., R.key_order(384)].view(torch.uint8), plain.view(torch.uint8))
# the whole call on strided views, output a [B, L, H, D] tensor seen as [B, H, L, D]
q, k, v = structured_qkv(1, 3, 77, 77, D=64, seed=1)
out = A.attn8(q, k, v, cfg=A.Config(32, 32, 4, 1))
assert out.shape == q.shape and out.transpose(1, 2).is_contiguous()
assert accuracy(out, sdpa_fp32(q, k, v))[1] < 0.03
print("ok")
"""


def test_gluon_key_order_is_the_kernels_register_order():
    """The Gluon kernel (sm90) hands P to the P·V MMA as a reshape [.., 2, 2, 4, 2] + swap of the
    two middle axes of each 32 keys; V must be stored in the same order (key_order), or P·V pairs wrong keys."""
    p = torch.arange(2 * 256).view(2, 256)
    fed = p.view(2, 8, 2, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 256)  # hopper._as_operand's reshape/permute
    col = R.key_order(256)
    assert torch.equal(fed[:, col], p)  # key j sits at column col[j], where V's key j is stored
    assert sorted(col.tolist()) == list(range(256))


def test_triton_kernels_under_interpreter():
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(repo))
    r = subprocess.run([sys.executable, "-c", _INTERP], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_cpu_falls_back_to_sdpa_with_one_warning(caplog):
    attention._warned.clear()
    with caplog.at_level(logging.WARNING, logger="wan4step"):
        for _ in range(2):
            name, fn = attention.resolve("8bit", torch.device("cpu"))
            assert name == "sdpa"
        assert attention.resolve("auto", torch.device("cpu"))[0] == "sdpa"
    assert caplog.text.count("8bit attention needs a CUDA GPU") == 1
    with pytest.raises(ValueError):
        attention.resolve("int8")


def test_reference_backend_runs_anywhere():
    name, fn = attention.resolve(attention.REFERENCE_8BIT, torch.device("cpu"))
    q, k, v = structured_qkv(1, 2, 1200, 1200, seed=4)
    out = fn(q, k, v)
    assert name == attention.REFERENCE_8BIT and out.dtype == q.dtype
    assert accuracy(out, sdpa_fp32(q, k, v))[1] < MAX_REL_L2
    qc, kc, vc = structured_qkv(1, 2, 300, 512, seed=4)  # text cross-attention: SDPA itself
    assert torch.equal(fn(qc, kc, vc), torch.nn.functional.scaled_dot_product_attention(qc, kc, vc))


def test_advisor_knows_every_backend_and_what_auto_runs():
    from wan4step.memory_model import MemoryModel

    assert advisor.ATTENTION_CHOICES == attention.BACKENDS
    model = MemoryModel.load()
    assert set(attention.BACKENDS) - {"auto"} <= set(model.attention_backends())
    for cap, order in attention.AUTO_ORDER.items():
        planned = advisor.auto_attention(cap)
        assert planned == (order[0] if order[0] == "8bit" else "sdpa"), cap
    assert advisor.auto_attention(None) == "sdpa" and advisor.auto_attention((7, 5)) == "sdpa"


def test_backend_failures_follow_the_fallback_policy(caplog):
    """A backend that fails at run time is switched off for good (SDPA answers, one warning); an OOM
    propagates and leaves it on, so a too-large job never makes later jobs slower."""
    import torch

    from wan4step import attention, fallback

    state = fallback.snapshot()
    calls = {"n": 0}

    def flaky(q, k, v):
        calls["n"] += 1
        raise (torch.OutOfMemoryError("CUDA out of memory") if calls["n"] == 1 else RuntimeError("no kernel image"))

    q = k = v = torch.randn(1, 2, 8, 16)
    try:
        fn = attention._guarded("test-backend", flaky)
        with pytest.raises(torch.OutOfMemoryError):
            fn(q, k, v)
        assert "test-backend" not in attention._RUN.off
        with caplog.at_level("WARNING", logger="wan4step"):
            out = fn(q, k, v)  # the RuntimeError: SDPA answers this very call
            out2 = fn(q, k, v)  # and every later one, without trying the backend again
        assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
        assert torch.equal(out, out2) and calls["n"] == 2
        assert "test-backend" in attention._RUN.off
        assert sum("test-backend attention failed" in r.getMessage() for r in caplog.records) == 1
    finally:
        fallback.restore(state)


@pytest.mark.parametrize("Lq,Lk,seed", [(200, 700, 0), (128, 1000, 1), (300, 333, 2)])
def test_code_sum_normalizer_keeps_the_accuracy_bar(Lq, Lk, seed):
    """The sm90 kernel's P·1 row sums (hopper.py, ONES) normalize by the sum of P's e4m3 codes. The same
    arithmetic in torch meets the per-call bar against float32 SDPA and stays within the error allowance
    the kernel's self-check gives it against the fp32-sum normalizer (attn8.gluon_disagrees)."""
    q, k, v = structured_qkv(1, 2, Lq, Lk, D=128, seed=seed)
    ref = sdpa_fp32(q, k, v)
    st = R.stats_reference(q, k, v)
    codes = R.quantize_reference(q, k, v, st, 128, True)
    run = lambda sums: R.attention_from_codes(*codes, st[3], st[4], Lq, Lk, 128, 128**-0.5, True, sums)  # noqa: E731
    cos, err = accuracy(run(True), ref)
    err_fp32 = accuracy(run(False), ref)[1]
    assert cos >= MIN_COSINE and err <= MAX_REL_L2, (cos, err)
    assert err <= A.GLUON_ERR_RATIO * err_fp32 + 1e-3, (err, err_fp32)
