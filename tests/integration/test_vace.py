"""VACE-merged DiTs through a real ComfyUI: mode t2v is the plain T2V model, mode vace is core's VACE model.

Oracles: diffusers' WanVACETransformer3DModel (same weights), the plain T2V file
(mode t2v must match it bit for bit), and city96's ComfyUI-GGUF loading the same
GGUF as a VACE model. Fixture: `wan4step.tiny.dit.tiny_vace_state_dict` (4 blocks,
VACE blocks after blocks 0 and 2, 96-channel VACE input as in Wan2.1 VACE-14B).
"""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.formats.keymaps import canonical_to_diffusers
from wan4step.tiny.dit import TINY_VACE, TINY_VACE_DIT, tiny_dit_state_dict, tiny_vace_state_dict

X_SHAPE = (1, 16, 3, 8, 12)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(X_SHAPE, generator=g)
    ctx = torch.randn(1, 24, 4096, generator=g) * 0.5
    control = torch.randn(1, 96, *X_SHAPE[2:], generator=g)
    return x, torch.tensor([937.5]), ctx, control


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vace")
    sd = tiny_vace_state_dict()
    f32 = d / "tiny_vace_f32.safetensors"
    safetensors.torch.save_file(sd, str(f32))
    plain = d / "tiny_t2v_f32.safetensors"
    safetensors.torch.save_file(tiny_dit_state_dict(TINY_VACE_DIT), str(plain))
    return {"sd": sd, "f32": f32, "plain": plain, "q8": write_gguf(d / "tiny_vace-Q8_0.gguf", sd, "Q8_0")}


def _forward(mp, x, t, ctx, control=None, strength=1.0):
    opts = mp.model_options.get("transformer_options", {})
    kw = {} if control is None else {"vace_context": control.unsqueeze(1), "vace_strength": [strength]}
    with torch.no_grad():
        return mp.model.diffusion_model(x, t, ctx, transformer_options=dict(opts), **kw).float()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_vace_mode_equals_diffusers_wan_vace_transformer(comfy, pack, files, inputs):
    diffusers = pytest.importorskip("diffusers")
    import comfy.ldm.wan.model as wan

    ref = diffusers.WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=512, num_layers=TINY_VACE_DIT.num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, vace_layers=list(TINY_VACE.host_blocks(TINY_VACE_DIT.num_layers)),
        vace_in_channels=TINY_VACE.in_dim)
    ref.load_state_dict({canonical_to_diffusers(k): v for k, v in files["sd"].items()}, strict=True)
    x, t, ctx, control = inputs
    with torch.no_grad():
        want = ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx, control_hidden_states=control,
                   control_hidden_states_scale=torch.full((TINY_VACE.num_layers,), 0.8), return_dict=False)[0].float()
    loaded = load_dit(files["f32"], "vace")
    for fast in (False, True):  # ComfyUI's blocks, and the pack's fused main blocks beside ComfyUI's VACE blocks
        mp = pack.nodes.comfy_compat.model.build_model(loaded, torch.float32)
        if fast:
            mp = pack.nodes.comfy_compat.fast_forward.install(mp, "sdpa")
        assert isinstance(mp.model.diffusion_model, wan.VaceWanModel)
        got = _forward(mp, x, t, ctx, control, 0.8)
        assert rel(got, want) < 1e-5, (fast, rel(got, want))
    plain = _forward(pack.nodes.comfy_compat.model.build_model(loaded, torch.float32), x, t, ctx, control, 0.0)
    assert rel(plain, want) > 0.05  # the control input matters: a test feeding it wrong would fail


def test_t2v_mode_is_the_plain_t2v_model(comfy, pack, files, inputs):
    import comfy.ldm.wan.model as wan

    x, t, ctx, _ = inputs
    loaded = load_dit(files["f32"], "t2v")
    assert loaded.vace is None and not any(k.startswith("vace_") for k in loaded.state)
    assert loaded.skipped_bytes == sum(v.numel() * 4 for k, v in files["sd"].items() if k.startswith("vace_"))
    plain = load_dit(files["plain"])
    assert loaded.state.keys() == plain.state.keys()
    assert all(torch.equal(loaded.state[k], plain.state[k]) for k in plain.state)
    mp = pack.nodes.comfy_compat.model.build_model(loaded, torch.float32)
    assert type(mp.model.diffusion_model) is wan.WanModel
    want = _forward(pack.nodes.comfy_compat.model.build_model(plain, torch.float32), x, t, ctx)
    # the same weights at other file offsets: CPU GEMMs may round differently by alignment (1e-6 seen)
    assert rel(_forward(mp, x, t, ctx), want) < 1e-6


def test_comfyui_gguf_loads_the_vace_gguf_like_our_vace_mode(comfy, pack, comfyui_gguf, files, inputs):
    import comfy.ldm.wan.model as wan

    comfy.folder_paths.add_model_folder_path("unet", str(files["q8"].parent))
    theirs = comfyui_gguf.nodes.UnetLoaderGGUF().load_unet(files["q8"].name)[0]
    assert isinstance(theirs.model.diffusion_model, wan.VaceWanModel)
    assert len(theirs.model.diffusion_model.vace_blocks) == TINY_VACE.num_layers
    ours = pack.nodes.comfy_compat.model.build_model(load_dit(files["q8"], "vace"), torch.bfloat16)
    x, t, ctx, control = inputs
    want = _forward(theirs, x, t, ctx, control)
    got = _forward(ours, x, t, ctx, control)
    # same Q8_0 bytes; ComfyUI-GGUF decodes in fp16 arithmetic, the pack in fp32: tiny differences
    assert rel(got, want) < 2e-3, rel(got, want)
    ref = _forward(pack.nodes.comfy_compat.model.build_model(load_dit(files["f32"], "vace"), torch.float32), x, t, ctx, control)
    assert rel(got, ref) < 0.01  # and both are the float model within Q8_0's error


# -- sampling with core's WanVaceToVideo -------------------------------------------------

W, H, FRAMES = 64, 48, 9


@pytest.fixture(scope="module")
def vace_cond(comfy, tmp_path_factory):
    """Core WanVaceToVideo conditioning (control video, mask, reference image) on the tiny VAE."""
    from comfy_extras.nodes_wan import WanVaceToVideo

    import nodes as comfy_nodes
    from wan4step.tiny.vae import write_tiny_vae

    d = tmp_path_factory.mktemp("vace_vae")
    write_tiny_vae(d / "tiny_vae.pth", "pth")
    comfy.folder_paths.add_model_folder_path("vae", str(d))
    g = torch.Generator().manual_seed(3)
    text = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]
    control = torch.rand(FRAMES, H, W, 3, generator=g)
    mask = (torch.rand(FRAMES, H, W, generator=g) > 0.5).float()
    ref = torch.rand(1, H, W, 3, generator=g)
    with torch.inference_mode():
        vae = comfy_nodes.VAELoader().load_vae("tiny_vae.pth")[0]
        pos, _, latent, trim = WanVaceToVideo.execute(text, text, vae, W, H, FRAMES, 1, 1.0, control, mask, ref).result
    pos0 = [[c, dict(extra, vace_strength=[0.0])] for c, extra in pos]
    return {"text": text, "pos": pos, "pos0": pos0, "latent": latent, "trim": trim}


def _sample(pack, model, cond, latent, seed=7):
    out = pack.nodes.sampler.Wan4StepSampler.execute(model, cond, latent, seed=seed, steps=4, shift=5.0, cfg=1.0,
                                                     noise="comfy", update="lcm")
    return out.result[0]["samples"]


@pytest.fixture(scope="module")
def vace_model(comfy, pack, files):
    return pack.nodes.comfy_compat.model.build_model(load_dit(files["q8"], "vace"), torch.bfloat16)


def test_sampler_runs_vace_conditioning_on_a_vace_model_and_refuses_it_on_t2v(comfy, pack, files, vace_cond, vace_model):
    from wan4step.errors import WrongModelError

    latent = vace_cond["latent"]
    assert vace_cond["trim"] == 1 and latent["samples"].shape == (1, 16, 1 + (FRAMES - 1) // 4 + 1, H // 8, W // 8)
    out = _sample(pack, vace_model, vace_cond["pos"], latent)
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()
    no_control = _sample(pack, vace_model, vace_cond["pos0"], latent)
    assert rel(out, no_control) > 0.05  # strength 0 vs 1: the control video reaches the model
    t2v = pack.nodes.comfy_compat.model.build_model(load_dit(files["q8"], "t2v"), torch.bfloat16)
    with pytest.raises(WrongModelError, match="VACE control conditioning.*mode set to 'vace'"):
        _sample(pack, t2v, vace_cond["pos"], latent)
    _sample(pack, vace_model, vace_cond["text"], latent)  # a VACE model also runs plain text-to-video


def test_block_swap_streams_vace_blocks_and_changes_nothing(comfy, pack, vace_cond, vace_model):
    latent = vace_cond["latent"]
    ref = _sample(pack, vace_model, vace_cond["pos"], latent)
    for k, source in ((2, "ram"), (4, "disk")):
        swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(vace_model, k, 1, True, source, False).result[0]
        assert torch.equal(_sample(pack, swapped, vace_cond["pos"], latent), ref)
        plan = pack.nodes.comfy_compat.block_swap.holder_of(swapped).plan_for(swapped)
        assert plan.vace_indices == ([1] if k == 2 else [0, 1])
        order = list(plan.patches)
        if k == 4:  # execution order: each VACE block right after its host block (0 and 2)
            assert order == ["blocks.0", "vace_blocks.0", "blocks.1", "blocks.2", "vace_blocks.1", "blocks.3"]
        assert swapped.model_size() < vace_model.model_size()
    fast = pack.nodes.comfy_compat.fast_forward.install(vace_model, "sdpa")
    out = _sample(pack, fast, vace_cond["pos"], latent)
    assert rel(out, ref) < 2e-3  # fused main blocks (bf16) beside ComfyUI's VACE blocks
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(fast, 4, 2, True, "ram", False).result[0]
    assert torch.equal(_sample(pack, swapped, vace_cond["pos"], latent), out)
