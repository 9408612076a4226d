"""Block streaming on CPU: streamed output equals resident output bit for bit."""

from __future__ import annotations

import torch

from wan4step.offload import stream_modules
from wan4step.offload.layout import ALIGN, layout_of
from wan4step.quant.linear import QuantLinear
from wan4step.quant.scaled import quantize_rowwise
from wan4step.quant.weights import INT8, QuantWeight


class Block(torch.nn.Module):
    def __init__(self, d: int, g: torch.Generator, quant: bool) -> None:
        super().__init__()
        self.a = QuantLinear(d, d)
        w = torch.randn(d, d, generator=g) / d**0.5
        if quant:
            q, s = quantize_rowwise(w, INT8)
            self.a.assign_weight(QuantWeight(INT8, q, (d, d), s), torch.randn(d, generator=g))
        else:
            self.a.assign_weight(w.to(torch.bfloat16), torch.randn(d, generator=g).to(torch.bfloat16))
        self.norm = torch.nn.LayerNorm(d)
        self.mod = torch.nn.Parameter(torch.randn(1, d, generator=g))

    def forward(self, x):
        return x + self.a(self.norm(x)) * self.mod


def _model(n=6, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.ModuleList([Block(d, g, quant=i % 2 == 0) for i in range(n)])


def _run(blocks, x, order=None):
    for i in order or range(len(blocks)):
        x = blocks[i](x)
    return x


def test_layout_is_aligned_and_complete():
    b = _model(1)[0]
    lay = layout_of(b)
    names = sorted(e.name for e in lay.entries)
    assert names == sorted(["weight", "weight_scale", "bias", "weight", "bias", "mod"])
    assert all(e.offset % ALIGN == 0 for e in lay.entries)


def test_streamed_equals_resident_over_repeated_forwards():
    x = torch.randn(3, 64)
    ref_blocks = _model()
    ref = [_run(ref_blocks, x), _run(ref_blocks, x * 2)]
    blocks = _model()
    originals = [b for b in blocks]
    streamer, wrapped = stream_modules([blocks[i] for i in (0, 2, 3, 5)], "cpu", prefetch=2)
    for j, i in enumerate((0, 2, 3, 5)):
        blocks[i] = wrapped[j]
    for _ in range(3):  # several "steps": ring state wraps round correctly
        assert torch.equal(_run(blocks, x), ref[0])
        assert torch.equal(_run(blocks, x * 2), ref[1])
    assert streamer.stats.stalls <= 1  # only the very first module of the very first forward
    # weights are back on their host slabs between calls, identical to the originals
    for i in (0, 2, 3, 5):
        for p_ref, p in zip(ref_blocks[i].parameters(), originals[i].parameters(), strict=True):
            assert torch.equal(p_ref.float(), p.float())


def test_out_of_order_calls_still_correct():
    x = torch.randn(2, 64)
    ref_blocks = _model(seed=1)
    order = [5, 0, 3, 2, 1, 4, 5, 5]
    ref = _run(ref_blocks, x, order)
    blocks = _model(seed=1)
    _, wrapped = stream_modules(list(blocks), "cpu", prefetch=1)
    for i in range(len(blocks)):
        blocks[i] = wrapped[i]
    assert torch.equal(_run(blocks, x, order), ref)


def test_disk_mode_matches():
    x = torch.randn(2, 64)
    ref = _run(_model(seed=2), x)
    blocks = _model(seed=2)
    streamer, wrapped = stream_modules(list(blocks), "cpu", prefetch=2, disk=True)
    for i in range(len(blocks)):
        blocks[i] = wrapped[i]
    assert torch.equal(_run(blocks, x), ref)
    assert torch.equal(_run(blocks, x), ref)
    streamer.close()


def test_streamed_modules_hide_their_weights_from_the_tree():
    blocks = _model(3)
    total = sum(p.numel() for p in blocks.parameters())
    _, wrapped = stream_modules([blocks[1]], "cpu")
    blocks[1] = wrapped[0]
    assert sum(p.numel() for p in blocks.parameters()) < total
    assert blocks[1].a is blocks[1].inner.a  # attribute reads reach the real block


def test_spread_picks_exactly_k_distinct_blocks():
    from wan4step.offload.plan import spread

    for n in (2, 30, 40):
        for k in range(n + 1):
            idx = spread(k, n)
            assert len(idx) == k and len(set(idx)) == k and all(0 <= i < n for i in idx)



def test_host_cast_dtype_is_applied_when_packing():
    """A host that casts weights at use (ComfyUI's DynamicVRAM keeps a bf16 file's weights in bf16
    and computes in fp16) names that dtype through `dtype_of`; a streamed module is hidden from
    the host, so the streamer must pack the cast weights (the 0.33 GPU run failed with 'Half and
    BFloat16' before this). Quantized codes are never cast."""
    for disk in (False, True):
        g = torch.Generator().manual_seed(3)
        lin = torch.nn.Linear(32, 16, dtype=torch.bfloat16)
        q, s = quantize_rowwise(torch.randn(16, 32, generator=g), INT8)
        ql = QuantLinear(32, 16)
        ql.assign_weight(QuantWeight(INT8, q, (16, 32), s), None)
        casts = {(lin, "weight"): torch.float16, (lin, "bias"): torch.float16,
                 (ql, "weight"): torch.float16}  # must not turn int8 codes into fp16 numbers
        expect_w, expect_b = lin.weight.to(torch.float16), lin.bias.to(torch.float16)
        streamer, (wl, wq) = stream_modules([lin, ql], "cpu", disk=disk,
                                            dtype_of=lambda owner, name, c=casts: c.get((owner, name)))
        x = torch.randn(4, 32, generator=g, dtype=torch.float16)
        assert torch.equal(wl(x), torch.nn.functional.linear(x, expect_w, expect_b))
        assert lin.weight.dtype == torch.float16 or disk  # RAM mode: the host copy is fp16 too
        assert ql.weight.dtype == torch.int8 and torch.equal(ql.weight, q)
        streamer.close()


def test_host_pinner_decides_and_is_undone():
    """A host pinner (ComfyUI's budget) is asked for every slab, page-aligned at whole pages; a refused
    slab stays ordinary pageable memory (no torch fallback that would bypass the budget); close()
    unpins exactly what was pinned."""
    import mmap

    from wan4step.offload.pinned import PinnedSlabs

    class Budget:
        def __init__(self, left):
            self.left, self.pinned, self.unpinned = left, [], []

        def pin(self, buf):
            if buf.nbytes > self.left:
                return False
            self.left -= buf.nbytes
            self.pinned.append(buf.data_ptr())
            return True

        def unpin(self, buf):
            self.unpinned.append(buf.data_ptr())

    budget = Budget(3 * mmap.PAGESIZE)
    slabs = PinnedSlabs(True, budget)
    a = slabs.empty(mmap.PAGESIZE + 1)  # two pages
    b = slabs.empty(2 * mmap.PAGESIZE)  # refused: one page left
    c = slabs.empty(10)  # one page
    assert a.numel() == mmap.PAGESIZE + 1 and b.numel() == 2 * mmap.PAGESIZE and c.numel() == 10
    assert len(budget.pinned) == 2 and all(p % mmap.PAGESIZE == 0 for p in budget.pinned)
    assert slabs.pinned_bytes == 3 * mmap.PAGESIZE and slabs.refused_bytes == 2 * mmap.PAGESIZE
    a[:] = 1
    slabs.close()
    assert sorted(budget.unpinned) == sorted(budget.pinned) and int(a[-1]) == 1  # unlocked, still valid
    assert PinnedSlabs(False, budget).empty(100).numel() == 100 and len(budget.pinned) == 2  # pin off: never asked


def test_disk_mode_under_inference_mode_like_comfyui():
    """ComfyUI runs every node under torch.inference_mode(); the read-ahead thread must copy in
    that mode too (it failed with 'Inplace update to inference tensor outside InferenceMode')."""
    blocks = _model(seed=3)
    x = torch.randn(2, 5, 64)
    with torch.inference_mode():
        ref = _run(blocks, x)
        streamer, wrapped = stream_modules(list(blocks), "cpu", prefetch=2, disk=True)
        for _ in range(2):
            assert torch.equal(_run(wrapped, x), ref)
        streamer.close()
    assert streamer.stats.copies >= 2 * len(blocks)
