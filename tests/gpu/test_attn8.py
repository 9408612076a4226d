"""The 8-bit attention on the GPU (skipped elsewhere): its passes against the torch reference of the same
quantization, each call against float32 SDPA at the 14B shapes, and a 40-block forward of the real 14B
block shapes (random weights) against bf16 attention, bounded by what FP8 linears alone change."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from wan4step import attn8
from wan4step.attn8 import reference as R
from wan4step.attn8.structured import MAX_REL_L2, MIN_COSINE, accuracy, sdpa_fp32, structured_qkv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEV = torch.device("cuda")
H, D = 40, 128


def _fp32_sdpa(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):  # O(L) memory in float32
        return torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())


def _pv_modes():
    return ("fp8", "fp16") if attn8.pv_mode(torch.cuda.get_device_capability()) == "fp8" else ("fp16",)


@pytest.mark.parametrize("pv", ["fp8", "fp16"])
def test_passes_match_the_torch_reference(pv):
    if pv not in _pv_modes():
        pytest.skip("no FP8 on this GPU")
    fp8 = pv == "fp8"
    cfg = replace(attn8.config_for(torch.cuda.get_device_capability()), gluon=False)  # the Triton kernel
    B, h, Lq, Lk = 2, 4, 1000, 1500
    q, k, v = structured_qkv(B, h, Lq, Lk, seed=3, device=DEV)
    st = attn8.stats(q, k, v)
    for a, b in zip(st, R.stats_reference(q, k, v), strict=True):
        torch.testing.assert_close(a.view_as(b), b, rtol=1e-5, atol=1e-5)
    codes = attn8.quantize(q, k, v, st, cfg.block_n, fp8)
    want = R.quantize_reference(q, k, v, tuple(s.view(B, h, D) for s in st), cfg.block_n, fp8)
    for a, b in zip(codes, want, strict=True):  # bit for bit, given the same statistics
        b = b.reshape(a.shape)
        if a.dtype == torch.float8_e4m3fn:
            a, b = a.view(torch.uint8), b.view(torch.uint8)
        assert torch.equal(a, b)
    out = attn8.attention_codes(*codes, st[3], st[4], B, h, Lq, Lk, torch.float32, cfg, fp8)
    ref = R.attention_from_codes(*[c.cpu().view(B, h, *c.shape[1:]) for c in codes], st[3].cpu().view(B, h, D),
                                 st[4].cpu().view(B, h, D), Lq, Lk, cfg.block_n, D**-0.5, fp8)
    cos, rel = accuracy(out.cpu(), ref)
    # the GPU's exp2 and FMAs round differently from torch's: a few P codes land one e4m3 step apart
    assert rel < 2e-3 and cos > 0.99999, (cos, rel)


@pytest.mark.parametrize("size,Lq,Lk,seed", [("480p self", 32760, 32760, 0), ("480p self", 32760, 32760, 1),
                                            ("720p self", 75600, 75600, 2), ("480p text", 32760, 512, 3),
                                            ("720p text", 75600, 512, 4)])
def test_call_accuracy_at_14b_shapes(size, Lq, Lk, seed):
    q, k, v = structured_qkv(1, H, Lq, Lk, seed=seed, device=DEV)
    ref = _fp32_sdpa(q, k, v)
    for pv in _pv_modes():
        out = attn8.attn8(q, k, v, pv_fp8=(pv == "fp8"))
        assert out.shape == q.shape and out.dtype == q.dtype
        cos, rel = accuracy(out, ref)
        assert cos >= MIN_COSINE and rel <= MAX_REL_L2, (size, pv, cos, rel)


GLUON = [(64, 3, 4, {}), (64, 2, 4, {}), (128, 3, 8, {}), (64, 3, 4, {"ws": True}), (64, 4, 4, {"ws": True}),
         (64, 5, 4, {"ws": True}), (64, 3, 4, {"ws": True, "ones": True})]  # m, stages, warps, variant


def _gluon():
    if torch.cuda.get_device_capability()[0] != 9 or not attn8.HAVE_GLUON:
        pytest.skip("the Gluon kernel is for sm90 with Triton's Gluon")
    from wan4step.attn8 import hopper

    return hopper


@pytest.mark.parametrize("launch", GLUON, ids=str)
@pytest.mark.parametrize("Lq,Lk", [(1000, 1500), (64, 128), (333, 100), (130, 256), (2048, 2049)])
def test_gluon_kernel_matches_the_triton_kernel(launch, Lq, Lk):
    """The Gluon kernel (wan4step/attn8/hopper.py) on the same codes as the Triton one, V in key order:
    the same arithmetic, except that P passes through fp16 on its way to e4m3 (a tie may round the
    other way) and that P·V is added by the MMA, so near-equal outputs. Both of its forms: one
    warpgroup per program, and the warp-specialized one (ws: producer warp + two consumer warpgroups);
    with P·1 row sums (ones) it normalizes by P's codes, and is held to the Triton kernel's error against
    float32 attention instead (attn8.gluon_disagrees)."""
    hopper = _gluon()
    B, h = 2, 3
    q, k, v = structured_qkv(B, h, Lq, Lk, seed=Lq + Lk, device=DEV)
    st = attn8.stats(q, k, v)
    plain = attn8.quantize(q, k, v, st, 128, True)
    ordered = attn8.quantize(q, k, v, st, 128, True, key_order=True)
    tri = attn8.attention_codes(*plain, st[3], st[4], B, h, Lq, Lk, torch.float32, attn8.Config(64, 128, 4, 3), True)
    bm, stages, warps, kw = launch
    glu = hopper.attention_codes(*ordered, st[3], st[4], B, h, Lq, Lk, torch.float32, bm, stages, warps, **kw)
    ones = kw.get("ones", False)
    assert attn8.gluon_disagrees(glu, tri, sdpa_fp32(q, k, v) if ones else tri, ones) is None
    cos, rel = accuracy(glu, tri)
    assert cos > 0.9999 and rel < (2e-2 if ones else attn8.GLUON_MAX_REL), (cos, rel)


def test_attn8_runs_the_gluon_kernel_on_sm90_and_falls_back_to_triton(caplog, monkeypatch):
    """attn8 picks the Gluon kernel on sm90 after its self-check; when it raises, the call is
    answered by the Triton kernel, with one warning, and the Gluon kernel stays off."""
    hopper = _gluon()
    from wan4step import fallback

    q, k, v = structured_qkv(1, 4, 2000, 2000, seed=12, device=DEV)
    cfg = attn8.config_for(torch.cuda.get_device_capability())
    assert cfg.gluon
    state = fallback.snapshot()
    try:
        calls = []
        real = hopper.attention_codes
        monkeypatch.setattr(hopper, "attention_codes", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        attn8.attn8(q, k, v)  # (the first call on a GPU runs the self-check)
        calls.clear()
        out = attn8.attn8(q, k, v)
        assert calls, "the Gluon kernel did not run on sm90"
        st = attn8.stats(q, k, v)
        tri = attn8.attention_codes(*attn8.quantize(q, k, v, st, 128, True), st[3], st[4], 1, 4, 2000, 2000,
                                    q.dtype, attn8.Config(64, 128, 4, 3), True)
        assert attn8.gluon_disagrees(out.float(), tri.float(), sdpa_fp32(q, k, v), cfg.ones) is None

        def broken(*a, **kw):
            raise RuntimeError("compile error (simulated)")

        monkeypatch.setattr(hopper, "attention_codes", broken)
        with caplog.at_level("WARNING", logger="wan4step"):
            for _ in range(2):
                assert torch.equal(attn8.attn8(q, k, v), tri)  # the Triton kernel answers, same codes
        assert caplog.text.count("Hopper kernel (Gluon)") == 1
    finally:
        fallback.restore(state)


def test_batch_and_odd_lengths():
    """B > 1, lengths that fill no block, and a contiguous [B, H, L, D] input (other strides)."""
    q, k, v = structured_qkv(3, 5, 333, 197, seed=9, device=DEV)
    ref = _fp32_sdpa(q, k, v)
    for qq, kk, vv in ((q, k, v), (q.contiguous(), k.contiguous(), v.contiguous())):
        cos, rel = accuracy(attn8.attn8(qq, kk, vv), ref)
        assert cos >= MIN_COSINE and rel <= MAX_REL_L2, (cos, rel)


def test_resolve_checks_and_picks_8bit():
    from wan4step import attention

    name, fn = attention.resolve("8bit", DEV)
    assert name == "8bit"
    key = ("8bit", str(DEV))
    assert key in attention._ACCURACY.checked and key not in attention._ACCURACY.off
    q, k, v = structured_qkv(1, H, 4096, 4096, seed=5, device=DEV)
    cos, rel = accuracy(fn(q, k, v), _fp32_sdpa(q, k, v))
    assert cos >= MIN_COSINE and rel <= MAX_REL_L2


# ---------------------------------------------------------------------------- 40 blocks at the 14B shapes
def _rope_tables(f: int, h: int, w: int, d: int = 128):
    """cos/sin [f*h*w, d/2] of Wan's 3D RoPE: axes of d - 4*(d//6), 2*(d//6), 2*(d//6) channels, theta 1e4
    (ComfyUI comfy/ldm/wan/model.py: EmbedND(dim=d, theta=10000.0, axes_dim=[...]))."""
    angs = []
    grids = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    for pos, dim in zip(grids, (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)), strict=True):
        omega = 1.0 / 10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angs.append(pos.reshape(-1, 1).double() * omega)
    a = torch.cat(angs, -1)
    return a.cos().float().to(DEV), a.sin().float().to(DEV)


def _blocks(n: int, C: int, F: int, kind: str | None, seed: int = 0):
    """n modules shaped like ComfyUI's WanAttentionBlock, random weights (same for every `kind`)."""
    from wan4step.quant.linear import QuantLinear
    from wan4step.quant.scaled import quantize_rowwise
    from wan4step.quant.weights import QuantWeight

    g = torch.Generator(device=DEV).manual_seed(seed)

    def lin(i, o):
        m = QuantLinear(i, o)
        w = (torch.randn(o, i, generator=g, device=DEV) / math.sqrt(i)).to(torch.bfloat16)
        b = (0.02 * torch.randn(o, generator=g, device=DEV)).to(torch.bfloat16)
        if kind is None:
            m.assign_weight(w, b)
        else:
            qw, s = quantize_rowwise(w, kind)
            m.assign_weight(QuantWeight(kind, qw, (o, i), s), b)
        return m

    def norm():
        m = torch.nn.Module()
        m.weight = torch.nn.Parameter((1 + 0.1 * torch.randn(C, generator=g, device=DEV)).to(torch.bfloat16))
        return m

    out = []
    for _ in range(n):
        blk = torch.nn.Module()
        blk.num_heads = H
        blk.modulation = torch.nn.Parameter((0.1 * torch.randn(1, 6, C, generator=g, device=DEV)).to(torch.bfloat16))
        for name in ("self_attn", "cross_attn"):
            a = torch.nn.Module()
            a.q, a.k, a.v, a.o = (lin(C, C) for _ in range(4))
            a.norm_q, a.norm_k = norm(), norm()
            setattr(blk, name, a)
        blk.norm3 = torch.nn.LayerNorm(C, eps=1e-6, device=DEV, dtype=torch.bfloat16)
        with torch.no_grad():
            blk.norm3.weight.copy_(1 + 0.1 * torch.randn(C, generator=g, device=DEV))
            blk.norm3.bias.copy_(0.02 * torch.randn(C, generator=g, device=DEV))
        blk.ffn = torch.nn.Sequential(lin(C, F), torch.nn.GELU(approximate="tanh"), lin(F, C))
        out.append(blk)
    return out


def _stack(blocks, x, e0, rope, ctx, fn):
    from wan4step.dit.block import block_forward

    with torch.no_grad():
        for blk in blocks:
            x = block_forward(blk, x, e0, rope, ctx, fn)
    return x.float()


def test_dit_forward_8bit_attention_within_fp8_linear_error():
    """40 blocks of the 14B shapes at 480p (21 x 30 x 52 latent tokens), random weights: 8-bit attention
    moves the output no more than 1.5x what FP8 W8A8 linears alone move it (both vs bf16 everything)."""
    from wan4step.attention import _sdpa

    C, F, n = 5120, 13824, 40
    g = torch.Generator(device=DEV).manual_seed(1)
    x = torch.randn(1, 32760, C, generator=g, device=DEV).to(torch.bfloat16)
    e0 = (0.1 * torch.randn(1, 1, 6, C, generator=g, device=DEV)).to(torch.bfloat16)
    ctx = torch.randn(1, 512, C, generator=g, device=DEV).to(torch.bfloat16)
    rope = _rope_tables(21, 30, 52)

    def eight(q, k, v):
        return attn8.attn8(q, k, v) if k.shape[2] >= attn8.MIN_KEYS else _sdpa(q, k, v)

    bf = _blocks(n, C, F, None)
    ref = _stack(bf, x, e0, rope, ctx, _sdpa)
    a8 = _stack(bf, x, e0, rope, ctx, eight)
    del bf
    torch.cuda.empty_cache()
    f8 = _blocks(n, C, F, "fp8")
    lin8 = _stack(f8, x, e0, rope, ctx, _sdpa)
    both = _stack(f8, x, e0, rope, ctx, eight)

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    d_attn, d_lin, d_both = rel(a8, ref), rel(lin8, ref), rel(both, ref)
    print(f"40 blocks 480p: rel L2 vs bf16: 8-bit attention {d_attn:.4f}, FP8 linears {d_lin:.4f}, both {d_both:.4f}")
    assert torch.isfinite(a8).all() and d_attn <= 1.5 * d_lin, (d_attn, d_lin, d_both)
