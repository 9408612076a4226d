"""CUDA-only checks, run on the GPU machine (skipped elsewhere): every fast path equals its reference."""

from __future__ import annotations

import itertools

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEV = torch.device("cuda")


def test_fused_kernels_match_reference():
    from wan4step.dit import fused

    x = torch.randn(2, 300, 5120, device=DEV, dtype=torch.bfloat16)
    sh, sc = torch.randn(2, 5120, device=DEV, dtype=torch.bfloat16), torch.randn(2, 5120, device=DEV, dtype=torch.bfloat16)
    torch.testing.assert_close(fused.ln_modulate(x, sh, sc), fused.ln_modulate_reference(x, sh, sc), atol=2e-2, rtol=1e-2)
    w = torch.randn(5120, device=DEV, dtype=torch.bfloat16)
    ang = torch.randn(300, 64, device=DEV)
    a = fused.rmsnorm_rope(x, w, ang.cos(), ang.sin(), 40)
    b = fused.rmsnorm_rope_reference(x, w, ang.cos(), ang.sin(), 40)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_scaled_linear_cuda_matches_emulation(kind):
    from wan4step.quant.scaled import quantize_rowwise, scaled_linear

    if kind == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no FP8 tensor cores")
    w = torch.randn(1024, 512, device=DEV) / 512**0.5
    q, s = quantize_rowwise(w, kind)
    x = torch.randn(4, 300, 512, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(1024, device=DEV, dtype=torch.bfloat16)
    out = scaled_linear(x, q, s, b, kind)
    ref = scaled_linear(x.cpu().float(), q.cpu(), s.cpu(), b.cpu().float(), kind)
    rel = (out.float().cpu() - ref).norm() / ref.norm()
    assert rel < 1e-2, rel


def test_act_quant_triton_bitexact():
    from wan4step.quant.act_quant import quantize_act_reference, quantize_act_triton

    kinds = ("int8",) + (("fp8",) if torch.cuda.get_device_capability() >= (8, 9) else ())
    for kind, width in itertools.product(kinds, (5120, 13824, 96, 128)):  # rows in two parts, or one
        x = torch.randn(777, width, device=DEV, dtype=torch.bfloat16) * 3
        qa, sa = quantize_act_triton(x, kind)
        qb, sb = quantize_act_reference(x, kind)
        assert torch.equal(sa.float(), sb.float())
        assert torch.equal(qa.view(torch.uint8), qb.view(torch.uint8))


@pytest.mark.parametrize("qname", ["Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q3_K", "Q2_K", "Q4_0", "Q5_1"])
def test_gguf_cuda_decode_bitexact(qname):
    import gguf

    from wan4step.quant.gguf_dequant import dequantize
    from wan4step.quant.gguf_encode import random_raw
    from wan4step.quant.gguf_matmul import dequantize_on_device

    qt = gguf.GGMLQuantizationType[qname]
    raw = random_raw(qt, (512, 1024), device=DEV, generator=torch.Generator(device=DEV).manual_seed(0))
    a = dequantize_on_device(raw, qt, (512, 1024), torch.bfloat16)
    b = dequantize(raw, qt, (512, 1024), torch.bfloat16)
    ref = torch.from_numpy(gguf.quants.dequantize(raw.cpu().numpy(), qt).reshape(512, 1024)).to(torch.bfloat16)
    assert torch.equal(a, b)
    assert torch.equal(b.cpu(), ref)


def test_streamer_cuda_equals_resident_and_never_stalls():
    from wan4step.offload import stream_modules

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([torch.nn.Linear(1024, 1024, dtype=torch.bfloat16) for _ in range(8)])
    x = torch.randn(64, 1024, device=DEV, dtype=torch.bfloat16)
    ref_blocks = [torch.nn.Linear(1024, 1024, dtype=torch.bfloat16, device=DEV) for _ in range(8)]
    for r, b in zip(ref_blocks, blocks, strict=True):
        r.load_state_dict(b.state_dict())

    def run(bs, x):
        for b in bs:
            x = torch.tanh(b(x))
        return x

    ref = [run(ref_blocks, x), run(ref_blocks, x * 2)]
    streamer, wrapped = stream_modules(list(blocks), DEV, prefetch=2)
    for _ in range(5):
        assert torch.equal(run(wrapped, x), ref[0])
        assert torch.equal(run(wrapped, x * 2), ref[1])
    assert streamer.stats.stalls == 1
    assert all(p.device.type == "cpu" and p.is_pinned() for p in blocks.parameters())
    before = torch.cuda.memory_allocated()
    for _ in range(3):
        run(wrapped, x)
    assert torch.cuda.memory_allocated() == before  # no per-block allocations survive


def test_streamer_disk_mode_cuda():
    from wan4step.offload import stream_modules

    torch.manual_seed(1)
    blocks = [torch.nn.Linear(512, 512, dtype=torch.bfloat16) for _ in range(5)]
    refs = [torch.nn.Linear(512, 512, dtype=torch.bfloat16, device=DEV) for _ in range(5)]
    for r, b in zip(refs, blocks, strict=True):
        r.load_state_dict(b.state_dict())
    x = torch.randn(32, 512, device=DEV, dtype=torch.bfloat16)
    ref = x
    for r in refs:
        ref = r(ref)
    streamer, wrapped = stream_modules(blocks, DEV, prefetch=2, disk=True)
    for _ in range(3):
        y = x
        for w in wrapped:
            y = w(y)
        assert torch.equal(y, ref)
    streamer.close()


def test_cudnn_first_sdpa_matches_math_backend():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wan4step.attention import attention

    q = torch.randn(1, 4096, 5120, device=DEV, dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    ours = attention(q, k, v, 40)
    with sdpa_kernel([SDPBackend.MATH]):
        ref = attention(q.float(), k.float(), v.float(), 40)
    assert torch.isfinite(ours).all()
    rel = (ours.float() - ref).norm() / ref.norm()
    assert rel < 2e-2, rel


@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_fused_quantizing_kernels_cuda(kind):
    """LayerNorm+modulate -> codes and GELU -> codes match the two-pass paths within the rounding of
    their row sums / GELU ulps: (nearly) all codes equal, the rest one step away."""
    from wan4step.dit import fused
    from wan4step.quant.act_quant import quantize_act

    if kind == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no FP8 in Triton below sm_89")
    x = torch.randn(1, 999, 5120, device=DEV, dtype=torch.bfloat16) * 3
    sh, sc = torch.randn(1, 5120, device=DEV, dtype=torch.bfloat16), torch.randn(1, 5120, device=DEV, dtype=torch.bfloat16)
    q, s = fused.ln_modulate_quant(x, sh, sc, kind)
    rq, rs = quantize_act(fused.ln_modulate(x, sh, sc).view(-1, 5120), kind)
    _assert_codes_close(q, s, rq, rs, kind)
    h = torch.randn(999, 13824, device=DEV, dtype=torch.bfloat16) * 3
    q, s = fused.gelu_quant(h, kind)
    rq, rs = fused.gelu_quant_reference(h, kind)
    _assert_codes_close(q, s, rq, rs, kind)


def _assert_codes_close(q, s, rq, rs, kind):
    assert (q.float() == rq.float()).float().mean() > 0.999
    torch.testing.assert_close(s, rs, rtol=8e-3, atol=0)  # the row's amax may move by one bf16 ulp
    step = (rs * (32 if kind == "fp8" else 2)).max().item()  # two codes at the top of the fp8 range
    torch.testing.assert_close(q.float() * s, rq.float() * rs, rtol=0, atol=step)


def test_norm3_through_the_layernorm_kernel_cuda():
    """Cross-attention's affine LayerNorm via ln_modulate (shift = b, scale = w - 1) matches torch's."""
    from wan4step.dit import fused
    from wan4step.dit.block import _affine_ln

    norm = torch.nn.LayerNorm(5120, eps=1e-6).to(DEV, torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.2)
    x = torch.randn(1, 999, 5120, device=DEV, dtype=torch.bfloat16) * 3
    shift, scale, eps = _affine_ln(norm, x)
    out = fused.ln_modulate(x, shift, scale, eps)
    torch.testing.assert_close(out.float(), norm(x).float(), rtol=1.6e-2, atol=1e-2)  # a bf16 ulp


def test_pinned_slabs_lock_exact_sizes():
    """Streamed blocks are page-locked at their own size (torch's pin_memory rounds up to 2^k)."""
    import psutil

    from wan4step.offload.pinned import PinnedSlabs

    proc = psutil.Process()
    n = 300 * 2**20 + 12345  # torch's allocator would lock 512 MiB for this
    before = proc.memory_info().rss
    slabs = PinnedSlabs(True)
    t = slabs.empty(n)
    assert t.is_pinned() and t.numel() == n and n <= slabs.pinned_bytes < n + 4096 * 16  # whole pages
    small = [slabs.empty(1000) for _ in range(3)]  # small slabs never share a page: all register
    assert all(s.is_pinned() for s in small) and not slabs._fallback
    grown = proc.memory_info().rss - before
    assert n <= grown < n + 64 * 2**20, grown / 2**20  # the registration faults in exactly these pages
    t.fill_(7)
    d = torch.empty(n, dtype=torch.uint8, device=DEV)
    d.copy_(t, non_blocking=True)
    torch.cuda.synchronize()
    assert int(d[-1]) == 7
    view = t[:10]
    slabs.close()
    assert not t.is_pinned() and int(view[3]) == 7  # unlocked, still valid host memory


def test_failed_page_lock_falls_back_without_a_stale_cuda_error(monkeypatch, caplog):
    """A cudaHostRegister that fails for real (here: on a range already registered) falls back to
    torch's pinning with one warning and leaves no error behind for torch's next launch check."""
    from wan4step.offload.pinned import PinnedSlabs

    held = PinnedSlabs(True)
    taken = held.empty(2**20)
    real = torch.cuda.cudart()

    class Failing:
        def cudaHostRegister(self, ptr, size, flags):
            return real.cudaHostRegister(taken.data_ptr(), 2**20, 0)  # cudaErrorHostMemoryAlreadyRegistered

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(torch.cuda, "cudart", lambda: Failing())
    slabs = PinnedSlabs(True)
    with caplog.at_level("WARNING", logger="wan4step"):
        t = slabs.empty(3 * 2**20)
    monkeypatch.undo()
    assert "cudaHostRegister failed" in caplog.text
    assert t.is_pinned() and slabs.pinned_bytes == 0  # torch-pinned fallback
    torch.ones(4, device=DEV).add_(1)  # a kernel launch check: raises if the error were left over
    torch.cuda.synchronize()
    held.close()


def test_gated_residual_equals_addcmul_cuda():
    """The tiled residual kernel gives torch.addcmul's values bit for bit (both an fp32 fma)."""
    from wan4step.dit import fused

    x = torch.randn(2, 333, 5120, device=DEV, dtype=torch.bfloat16)
    y = torch.randn_like(x)
    for g in (torch.randn(2, 5120, device=DEV, dtype=torch.bfloat16), torch.randn(2, 5120, device=DEV)):
        for xx in (x, x.float()):
            r = fused.gated_residual(xx, y, g)
            ref = torch.addcmul(xx, y, g.unsqueeze(1))
            assert r.dtype == ref.dtype and torch.equal(r, ref)
