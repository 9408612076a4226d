"""Block swap through ComfyUI's sampling stack: streamed output equals resident output exactly."""

from __future__ import annotations

import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.tiny.dit import tiny_dit_state_dict


def _cond(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]


def _sample(pack, model, seed=7):
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    out = pack.nodes.sampler.Wan4StepSampler.execute(model, _cond(), latent, seed=seed, steps=4, shift=5.0, cfg=1.0,
                                                     noise="comfy", update="lcm")
    return out.result[0]["samples"]


def test_swapped_sampling_equals_resident(comfy, pack, tmp_path):
    p = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}, str(p))
    base = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.bfloat16)
    ref = _sample(pack, base)
    for k, prefetch, source, emb in [(1, 1, "ram", False), (2, 2, "ram", True), (2, 1, "disk", False)]:
        swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(base, k, prefetch, True, source, emb).result[0]
        for _ in range(2):  # repeated runs reuse the plan
            assert torch.equal(_sample(pack, swapped), ref)
        plan = pack.nodes.comfy_compat.block_swap.holder_of(swapped).plan_for(swapped)
        assert plan is not None and len(plan.indices) == k
        assert plan.streamer.stats.copies > 0
        assert swapped.model_size() < base.model_size(), (k, source, emb)
    # the unswapped model is untouched by the swapped clones
    assert torch.equal(_sample(pack, base), ref)


def test_fast_forward_matches_comfy_block_and_streams(comfy, pack, tmp_path):
    p = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}, str(p))
    base = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.bfloat16)
    ref = _sample(pack, base)
    fast = pack.nodes.comfy_compat.fast_forward.install(base, "sdpa")
    out = _sample(pack, fast)
    torch.testing.assert_close(out, ref, rtol=2e-4, atol=2e-4)
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(fast, 2, 1, True, "ram", False).result[0]
    assert torch.equal(_sample(pack, swapped), out)  # streaming never changes a bit


def test_ram_stays_flat_across_five_swapped_runs(comfy, pack, tmp_path):
    import gc

    import psutil

    p = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}, str(p))
    base = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.bfloat16)
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(base, 2, 1, True, "ram", True).result[0]
    proc = psutil.Process()
    rss = []
    outs = []
    for _ in range(5):
        outs.append(_sample(pack, swapped))
        gc.collect()
        rss.append(proc.memory_info().rss)
    assert all(torch.equal(o, outs[0]) for o in outs)
    growth = max(rss[1:]) - rss[1]
    assert growth < 32 * 2**20, [r / 2**20 for r in rss]  # no per-run host allocations survive
    plan = pack.nodes.comfy_compat.block_swap.holder_of(swapped).plan_for(swapped)
    assert plan.streamer.slots == []  # device ring released after each run


def test_w8a8_shared_codes_equal_per_linear_quantization(comfy, pack, tmp_path, monkeypatch):
    """The fast block quantizes q/k/v's input once (in the LayerNorm kernel) and the FFN's hidden
    state in the GELU pass; every linear must see exactly the codes it would have made itself."""
    from wan4step.dit import block as fast_block
    from wan4step.formats.lightx2v_dir import write_lightx2v_dir

    for kind in ("fp8", "int8"):
        folder = write_lightx2v_dir(tmp_path / f"distill_{kind}", tiny_dit_state_dict(), kind)
        fast = pack.nodes.comfy_compat.fast_forward.install(pack.nodes.comfy_compat.model.build_model(load_dit(folder), torch.bfloat16), "sdpa")
        shared = _sample(pack, fast)
        calls = []
        real = fast_block._shared_w8a8
        monkeypatch.setattr(fast_block, "_shared_w8a8", lambda x, *lins, c=calls, r=real: c.append(r(x, *lins)))
        separate = _sample(pack, fast)  # every linear quantizes its own input
        monkeypatch.undo()
        assert kind in calls  # the fused path was on before
        assert torch.equal(shared, separate), kind


def test_compiled_block_matches_eager_and_survives_block_swap(comfy, pack, tmp_path):
    """Loader switch `compile`: torch.compile of the fused block (inductor; on this CPU it needs
    gcc). One graph serves every block, streamed blocks reuse it, and the output is the eager one."""
    import shutil

    import pytest
    import torch._dynamo

    from wan4step.dit import block as fast_block

    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("inductor needs a C/C++ compiler on the CPU (the loader then runs uncompiled, tested below)")

    p = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}, str(p))
    base = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.float32)
    eager = _sample(pack, pack.nodes.comfy_compat.fast_forward.install(base, "sdpa"))
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = pack.nodes.comfy_compat.fast_forward.install(base, "sdpa", compile=True)
    out = _sample(pack, compiled)
    fast = compiled.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]
    assert fast.__closure__ is not None
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    graphs = counters["stats"]["unique_graphs"]
    assert 0 < graphs <= 2, graphs  # one graph for both blocks (not one compile per block)
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(compiled, 2, 1, True, "ram", False).result[0]
    torch.testing.assert_close(_sample(pack, swapped), out, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs, "streamed blocks recompiled"
    assert fast_block.block_forward is not None


def test_compile_failure_falls_back_to_eager_with_one_warning(comfy, pack, tmp_path, monkeypatch, caplog):
    from wan4step import fallback

    state = fallback.snapshot()  # the switch is process-wide: later tests get compile back
    p = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}, str(p))
    base = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.bfloat16)
    eager = _sample(pack, pack.nodes.comfy_compat.fast_forward.install(base, "sdpa"))

    def broken(*args, **kwargs):
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(pack.nodes.comfy_compat.fast_forward, "_compiled", broken)
    model = pack.nodes.comfy_compat.fast_forward.install(base, "sdpa", compile=True)
    with caplog.at_level("WARNING", logger="wan4step"):
        assert torch.equal(_sample(pack, model), eager)
        assert torch.equal(_sample(pack, model), eager)
    fallback.restore(state)
    warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0].getMessage()
