"""The adapter layer (nodes/comfy_compat/) against a real ComfyUI, in-process: state that follows
clone(), Block Swap re-planning, saving each format, other packs' attention overrides, ComfyUI's
use-time patch names, pinned-memory switches and route registration."""

from __future__ import annotations

import logging

import pytest
import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.formats.lightx2v_dir import write_lightx2v_dir
from wan4step.tiny import bundle
from wan4step.tiny.dit import tiny_dit_state_dict
from wan4step_dev.fixtures.tiny_models import write_tiny_models

SMALL = (1, 16, 3, 8, 8)
LARGE = (1, 16, 5, 16, 16)


def _cond(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]


def _sample(pack, model, shape=SMALL, seed=7):
    latent = {"samples": torch.zeros(shape)}
    out = pack.nodes.sampler.Wan4StepSampler.execute(model, _cond(), latent, seed=seed, steps=4, shift=5.0, cfg=1.0,
                                                     noise="comfy", update="lcm")
    return out.result[0]["samples"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("seam_models")
    sd = tiny_dit_state_dict()
    bf16 = d / "tiny_bf16.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(bf16))
    return {"bf16": bf16, "fp8": write_lightx2v_dir(d / "distill_fp8", sd, "fp8"),
            "int8": write_lightx2v_dir(d / "distill_int8", sd, "int8"), "gguf": write_gguf(d / "tiny-Q4_K_M.gguf", sd, "Q4_K_M")}


def _build(pack, path, dtype=torch.bfloat16):
    return pack.nodes.comfy_compat.model.build_model(load_dit(path), dtype)


def _realigned(model):
    """Every weight copied to a fresh allocation. CPU BLAS picks its kernel by the pointer's
    alignment (a weight at an mmap offset of 40 mod 64 sums in another order than the same weight
    at 0 mod 64: ulps, which 4 steps amplify); files written and read back must be compared
    without that."""
    for t in list(model.model.diffusion_model.parameters()) + list(model.model.diffusion_model.buffers()):
        t.data = t.data.clone()
    for m in model.model.diffusion_model.modules():
        if getattr(m, "weight_scale", None) is not None:
            m.weight_scale.data = m.weight_scale.data.clone()
    return model


# -- state that survives clone() ---------------------------------------------------------------------
def test_state_lives_in_transformer_options_and_follows_clones(comfy, pack, files):
    compat = pack.nodes.comfy_compat
    base = _build(pack, files["fp8"])
    fast = compat.fast_forward.install(base, "sdpa")
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(fast, 1, 1, True, "ram", False).result[0]
    clone = swapped.clone()
    for m in (fast, swapped, clone):
        assert compat.model.model_info(m).format.startswith("lightx2v")
        assert compat.fast_forward.info(m).name == "sdpa"
        assert not any(a.startswith("wan4step") for a in vars(m))  # nothing stored on the ModelPatcher
    assert compat.block_swap.holder_of(fast) is None
    assert compat.block_swap.holder_of(clone) is compat.block_swap.holder_of(swapped)


def test_fast_forward_runs_the_blocks_of_the_model_it_is_called_with(comfy, pack, files):
    """The block replacements find the running model per forward (DIFFUSION_MODEL wrapper): a clone
    whose model was replaced (`clone(model_override=...)`, as ComfyUI does to rebuild a model) runs
    its own weights, not the ones the fused forward was installed on."""
    compat = pack.nodes.comfy_compat
    a, b = _build(pack, files["bf16"]), _build(pack, files["int8"])
    want = _sample(pack, compat.fast_forward.install(b, "sdpa"))
    moved = compat.fast_forward.install(a, "sdpa").clone(model_override=b.get_clone_model_override())
    assert torch.equal(_sample(pack, moved), want)


# -- Block Swap re-plans -----------------------------------------------------------------------------
def test_block_swap_replans_for_a_larger_latent_on_a_clone(comfy, pack, files, monkeypatch, caplog):
    """"auto" plans at every run for the latent and the free VRAM: a clone sampling a larger video
    streams blocks the first plan did not (it shared that plan, and the old code kept it -> OOM), and
    a return to the small video retires the streaming plan. Outputs never change."""
    from wan4step.offload.wan import choose_k

    compat = pack.nodes.comfy_compat
    base = _build(pack, files["bf16"])
    ref_small, ref_large = _sample(pack, base, SMALL), _sample(pack, base, LARGE)
    dm = base.model.diffusion_model
    cpu = torch.device("cpu")
    lo, hi = 1, 1 << 40  # the least free VRAM at which the small latent needs no streaming
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if choose_k(dm, -1, cpu, SMALL, 1, free_bytes=mid) else (lo, mid)
    free = lo
    assert choose_k(dm, -1, cpu, LARGE, 1, free_bytes=free) > 0
    monkeypatch.setattr(compat.block_swap, "_free_for_plan", lambda patcher: free)  # "a GPU with this much free"

    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(base, -1, 1, True, "ram", False).result[0]
    holder = compat.block_swap.holder_of(swapped)
    with caplog.at_level(logging.INFO, logger="wan4step"):
        assert torch.equal(_sample(pack, swapped, SMALL), ref_small)
        assert holder.plan_for(swapped) is None and "no blocks streamed" in caplog.text
        clone = swapped.clone()
        assert torch.equal(_sample(pack, clone, LARGE), ref_large)
        plan = holder.plan_for(clone)
        assert plan is not None and len(plan.indices) > 0 and plan.streamer.stats.copies > 0
        assert "re-planning for latent [1, 16, 5, 16, 16]" in caplog.text
        assert torch.equal(_sample(pack, clone, LARGE), ref_large) and holder.plan_for(clone) is plan  # kept
        caplog.clear()
        assert torch.equal(_sample(pack, swapped, SMALL), ref_small)  # the original, small again
        assert holder.plan_for(swapped) is None and "re-planning for latent [1, 16, 3, 8, 8]" in caplog.text
        assert not [k for k, v in swapped.object_patches.items() if type(v).__name__ == "StreamedModule"]
    assert torch.equal(_sample(pack, base, LARGE), ref_large)


# -- saving ------------------------------------------------------------------------------------------
def _save_with_model_save(comfy, model, prefix):
    import comfy_extras.nodes_model_merging as merging

    merging.ModelSave().save(model, prefix)
    out = comfy.folder_paths.get_output_directory()
    import pathlib

    return sorted(pathlib.Path(out).glob(prefix + "_*.safetensors"))[-1]


@pytest.mark.parametrize("fmt", ["bf16", "fp8", "int8", "gguf"])
def test_model_save_writes_a_file_that_reloads_to_the_same_output(comfy, pack, files, fmt, tmp_path):
    """ModelSave (core's node, core's save path) on a pack MODEL: bf16 as is, FP8/INT8 as their
    codes + row scales (the pack's loader reads them back bit for bit), GGUF decoded to the compute
    dtype (exactly the weights the forward multiplies by). Reloaded, the output is identical."""
    from wan4step.formats.safetensors_file import open_safetensors

    comfy.folder_paths.set_output_directory(str(tmp_path))
    model = _build(pack, files[fmt])
    want = _sample(pack, _realigned(_build(pack, files[fmt])))
    path = _save_with_model_save(comfy, model, f"seam_{fmt}")
    sd, _ = open_safetensors(path)
    w = sd["model.diffusion_model.blocks.0.self_attn.q.weight"]
    compute = model.model.get_dtype_inference()  # bf16 on a GPU, fp32 on this CPU
    expect = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn, "int8": torch.int8, "gguf": compute}[fmt]
    assert w.dtype == expect and tuple(w.shape) == (256, 256)
    assert ("model.diffusion_model.blocks.0.self_attn.q.weight_scale" in sd) == (fmt in ("fp8", "int8"))
    reloaded = _build(pack, path)
    assert torch.equal(_sample(pack, _realigned(reloaded)), want)
    if fmt in ("bf16", "gguf"):  # plain bf16 files: ComfyUI's own loader reads them too
        core = pack.nodes.comfy_compat.model.set_shift(comfy.sd.load_diffusion_model(str(path)), 5.0)
        torch.testing.assert_close(_sample(pack, _realigned(core)), want, rtol=0, atol=0)


def test_model_save_bakes_a_lora_into_quantized_layers_as_computed(comfy, pack, files, tmp_path):
    """A LoRA on FP8 layers (applied at use time) is saved as those layers' patched, decoded weights."""
    comfy.folder_paths.set_output_directory(str(tmp_path))
    g = torch.Generator().manual_seed(1)
    key = "diffusion_model.blocks.0.ffn.0"
    lora = {key + ".lora_down.weight": torch.randn(4, 256, generator=g) * 0.1,
            key + ".lora_up.weight": torch.randn(512, 4, generator=g) * 0.1}
    model = comfy.sd.load_lora_for_models(_realigned(_build(pack, files["fp8"])), None, lora, 1.0, 0)[0]
    want = _sample(pack, model)
    path = _save_with_model_save(comfy, model, "seam_fp8_lora")
    from wan4step.formats.safetensors_file import open_safetensors

    sd, _ = open_safetensors(path)
    assert sd["model.diffusion_model.blocks.0.ffn.0.weight"].dtype == model.model.get_dtype_inference()  # patched: decoded
    assert "model.diffusion_model.blocks.0.ffn.0.weight_scale" not in sd
    assert sd["model.diffusion_model.blocks.1.ffn.0.weight"].dtype == torch.float8_e4m3fn  # untouched: codes
    got = _sample(pack, _realigned(_build(pack, path)))
    # the reloaded layer runs W16A16 where the LoRA'd layer ran decoded too: same weights, same math
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_checkpoint_save_with_the_packs_clip_and_vae(comfy, pack, files, tmp_path):
    """CheckpointSave (MODEL + CLIP + VAE in one file) of the pack's FP8 MODEL, UMT5 CLIP and VAE:
    the DiT part reloads to the same output; the text encoder and VAE keys are there too."""
    import pathlib

    import comfy_extras.nodes_model_merging as merging

    from wan4step.formats.safetensors_file import open_safetensors
    from wan4step.umt5 import file_tokenizer, read_umt5

    models = tmp_path / "models"
    write_tiny_models(models)
    f = read_umt5(models / "text_encoders" / bundle.UMT5)
    clip = pack.nodes.comfy_compat.clip.build_clip(f, file_tokenizer(f, None), "cpu")
    vae = pack.nodes.vae_loader.make_comfy_vae(str(models / "vae" / bundle.VAE))
    comfy.folder_paths.set_output_directory(str(tmp_path))
    want = _sample(pack, _realigned(_build(pack, files["fp8"])))
    merging.CheckpointSave().save(_build(pack, files["fp8"]), clip, vae, "seam_ckpt")
    path = sorted(pathlib.Path(tmp_path).glob("seam_ckpt_*.safetensors"))[-1]
    sd, _ = open_safetensors(path)
    assert any(k.startswith("vae.decoder.") for k in sd) and any(k.startswith("text_encoders.umt5xxl.") for k in sd)
    assert sd["model.diffusion_model.blocks.1.ffn.2.weight"].dtype == torch.float8_e4m3fn
    assert torch.equal(_sample(pack, _realigned(_build(pack, path))), want)


def test_patch_weight_to_device_returns_the_weight_it_computes_with(comfy, pack, files):
    model = _build(pack, files["gguf"])
    key = "diffusion_model.blocks.0.self_attn.q.weight"
    w = model.patch_weight_to_device(key, device_to=torch.device("cpu"), return_weight=True)
    lin = model.model.diffusion_model.blocks[0].self_attn.q
    assert torch.equal(w, lin.decoded_weight(model.model.get_dtype_inference(), torch.device("cpu")))


# -- other packs' attention overrides ----------------------------------------------------------------
def test_another_packs_attention_override_is_used_by_the_fused_block(comfy, pack, files):
    import comfy.ldm.modules.attention as comfy_attention

    compat = pack.nodes.comfy_compat
    base = _build(pack, files["bf16"], torch.float32)
    fast = compat.fast_forward.install(base, "sdpa")
    plain = _sample(pack, fast)
    calls = []

    def override(func, *args, **kwargs):  # what ModelPatcher.set_model_optimized_attention installs
        calls.append(args[0].shape)
        return comfy_attention.attention_basic(*args, **kwargs)

    patched = fast.clone()
    patched.set_model_optimized_attention(lambda *a, **k: override(None, *a, **k))
    out = _sample(pack, patched)
    assert len(calls) == 4 * 2 * 2  # 4 steps x 2 blocks x (self, cross)
    assert calls[0] == (1, 48, 256) and calls[1] == (1, 48, 256)  # [B, L, heads * head_dim], as Wan's block passes
    torch.testing.assert_close(out, plain, rtol=1e-3, atol=1e-3)
    assert len(calls) == 16 and torch.equal(_sample(pack, fast), plain)  # the unpatched model is untouched


# -- ComfyUI's module attributes, read in one place --------------------------------------------------
def test_use_time_patch_names_are_recognised(comfy, pack):
    """lowvram's `weight_function`, DynamicVRAM's `*_lowvram_function`, ComfyUI-GGUF's tensor
    `patches` mean "the module applies a patch when it runs"; the fused block then leaves a q/k norm
    to ComfyUI's block and norm3 to its own forward."""
    import comfy.ops

    patches = pack.nodes.comfy_compat.patches

    def block():
        b = torch.nn.Module()
        for att in ("self_attn", "cross_attn"):
            a = torch.nn.Module()
            a.norm_q, a.norm_k = comfy.ops.manual_cast.RMSNorm(8), comfy.ops.manual_cast.RMSNorm(8)
            setattr(b, att, a)
        b.norm3 = comfy.ops.manual_cast.LayerNorm(8)
        return b

    b = block()
    assert patches.direct_weights_patched(b) == (False, False)  # ComfyUI's unpatched defaults
    b.cross_attn.norm_k.weight_function = [lambda w: w * 2]
    assert patches.direct_weights_patched(b) == (True, False)
    b = block()
    b.self_attn.norm_q.weight_lowvram_function = lambda w: w
    assert patches.direct_weights_patched(b)[0]
    b = block()
    b.self_attn.norm_k.weight.patches = [("lora", "key")]
    assert patches.direct_weights_patched(b)[0]
    b = block()
    b.norm3.bias_lowvram_function = lambda x: x
    assert patches.direct_weights_patched(b) == (False, True)


def test_the_pack_linear_is_a_comfy_op_whose_patch_lists_reach_the_forward(comfy, pack, files):
    import comfy.ops

    model = _build(pack, files["int8"], torch.float32)
    lin = model.model.diffusion_model.blocks[0].ffn[0]
    assert isinstance(lin, comfy.ops.CastWeightBiasOp) and lin.comfy_cast_weights is False
    x = torch.randn(3, 256)
    plain = lin(x)
    lin.weight_function = [lambda w: w * 0]  # what ComfyUI's lowvram load writes
    assert lin.weight_transforms is lin.weight_function and torch.equal(lin(x), lin.bias.float().expand(3, -1))
    lin.weight_function.clear()
    assert torch.equal(lin(x), plain)


def test_streamed_weights_take_dynamic_vram_cast_dtypes(comfy, pack):
    """DynamicVRAM's `<param>_comfy_model_dtype` reaches the streamer through the adapter's dtype_of."""
    from wan4step.offload.wrap import stream_modules

    patches = pack.nodes.comfy_compat.patches
    lin = torch.nn.Linear(8, 4, dtype=torch.bfloat16)
    lin.weight_comfy_model_dtype = lin.bias_comfy_model_dtype = torch.float16
    _, (w,) = stream_modules([lin], "cpu", dtype_of=patches.cast_dtype)
    assert lin.weight.dtype == torch.float16 and patches.cast_dtype(torch.nn.ReLU(), "weight") is None


# -- pinned memory -----------------------------------------------------------------------------------
def test_pin_decision_follows_comfyui_switch_and_budget(comfy, pack, monkeypatch):
    import comfy.cli_args
    import comfy.model_management as mm

    memory = pack.nodes.comfy_compat.memory
    assert not memory.pin_decision(False).pin
    monkeypatch.setattr(comfy.cli_args.args, "disable_pinned_memory", True)
    d = memory.pin_decision(True)
    assert not d.pin and "--disable-pinned-memory" in d.reason
    monkeypatch.setattr(comfy.cli_args.args, "disable_pinned_memory", False)
    monkeypatch.setattr(mm, "MAX_PINNED_MEMORY", -1)  # what ComfyUI sets without an NVIDIA/AMD GPU
    assert not memory.pin_decision(True).pin
    monkeypatch.setattr(mm, "MAX_PINNED_MEMORY", 8 * 2**30)
    monkeypatch.setattr(mm, "TOTAL_PINNED_MEMORY", 8 * 2**30 - 4096)
    d = memory.pin_decision(True)
    assert d.pin and "budget" in d.reason
    # a slab larger than what is left (nothing to evict here) is refused: it streams from pageable RAM
    assert memory.ComfyPinner().pin(torch.empty(2 * 4096, dtype=torch.uint8)) is False


# -- routes ------------------------------------------------------------------------------------------
def test_routes_are_registered_by_on_load_not_by_import(comfy, pack):
    import asyncio

    from aiohttp import web

    nodes = pack.nodes
    routes = web.RouteTableDef()
    paths = nodes.comfy_compat.routes.register(nodes._ROUTE_MODULES, routes)
    assert sorted(paths) == ["/wan4step/advisor", "/wan4step/estimate"]
    assert nodes.comfy_compat.routes.server_routes() is None  # no server in this process: on_load is a no-op
    asyncio.run(nodes.Wan4StepExtension().on_load())
