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
        mp = pack.nodes.comfy_model.build_model(loaded, torch.float32)
        if fast:
            mp = pack.nodes.fast_forward.install(mp, "sdpa")
        assert isinstance(mp.model.diffusion_model, wan.VaceWanModel)
        got = _forward(mp, x, t, ctx, control, 0.8)
        assert rel(got, want) < 1e-5, (fast, rel(got, want))
    plain = _forward(pack.nodes.comfy_model.build_model(loaded, torch.float32), x, t, ctx, control, 0.0)
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
    mp = pack.nodes.comfy_model.build_model(loaded, torch.float32)
    assert type(mp.model.diffusion_model) is wan.WanModel
    want = _forward(pack.nodes.comfy_model.build_model(plain, torch.float32), x, t, ctx)
    # the same weights at other file offsets: CPU GEMMs may round differently by alignment (1e-6 seen)
    assert rel(_forward(mp, x, t, ctx), want) < 1e-6


def test_comfyui_gguf_loads_the_vace_gguf_like_our_vace_mode(comfy, pack, comfyui_gguf, files, inputs):
    import comfy.ldm.wan.model as wan

    comfy.folder_paths.add_model_folder_path("unet", str(files["q8"].parent))
    theirs = comfyui_gguf.nodes.UnetLoaderGGUF().load_unet(files["q8"].name)[0]
    assert isinstance(theirs.model.diffusion_model, wan.VaceWanModel)
    assert len(theirs.model.diffusion_model.vace_blocks) == TINY_VACE.num_layers
    ours = pack.nodes.comfy_model.build_model(load_dit(files["q8"], "vace"), torch.bfloat16)
    x, t, ctx, control = inputs
    want = _forward(theirs, x, t, ctx, control)
    got = _forward(ours, x, t, ctx, control)
    # same Q8_0 bytes; ComfyUI-GGUF decodes in fp16 arithmetic, the pack in fp32: tiny differences
    assert rel(got, want) < 2e-3, rel(got, want)
    ref = _forward(pack.nodes.comfy_model.build_model(load_dit(files["f32"], "vace"), torch.float32), x, t, ctx, control)
    assert rel(got, ref) < 0.01  # and both are the float model within Q8_0's error
