"""Wan4Step VAE Loader in a real ComfyUI (in-process, CPU): its VAE against ComfyUI's own
VAELoader VAE on the same tiny weights, through the core nodes VAEDecode / VAEDecodeTiled / VAEEncode."""

from __future__ import annotations

import pytest
import torch

from wan4step.errors import WrongModelError
from wan4step.tiny.vae import write_tiny_vae
from wan4step.vae import LATENT_MEAN, LATENT_STD
from wan4step.vae.model import WanVAE

# both sides float32 on the CPU; ComfyUI's Wan VAE orders its sums differently (upsample-then-conv,
# unfused norm): outputs in [0, 1] agree to float32 rounding through ~40 layers (observed ~1e-6)
TOL = 2e-5


@pytest.fixture(scope="module")
def vae_dir(comfy, tmp_path_factory):
    d = tmp_path_factory.mktemp("vae_models")
    write_tiny_vae(d / "tiny_wan21_vae.pth", "pth")
    write_tiny_vae(d / "tiny_wan21_vae.safetensors", "safetensors", dtype=torch.bfloat16)
    comfy.folder_paths.add_model_folder_path("vae", str(d))
    return d


@pytest.fixture(scope="module")
def both(comfy, pack, vae_dir):
    import nodes as comfy_nodes

    with torch.inference_mode():  # as ComfyUI's executor runs every node
        core = comfy_nodes.VAELoader().load_vae("tiny_wan21_vae.pth")[0]
        ours = pack.nodes.vae_loader.Wan4StepVAELoader.execute("tiny_wan21_vae.pth", "fp32", "off").result[0]
    assert core.vae_dtype == torch.float32
    return core, ours


def test_schema_and_registration(comfy, pack, vae_dir):
    import asyncio

    node = pack.nodes.vae_loader.Wan4StepVAELoader
    schema = node.define_schema()
    assert (schema.node_id, schema.display_name, schema.category) == ("Wan4StepVAELoader", "Wan4Step VAE Loader", "Wan4Step")
    names = [i.id for i in schema.inputs]
    assert names == ["vae_name", "dtype", "tiling", "tile_size", "tile_overlap"]
    assert all(i.tooltip for i in schema.inputs) and schema.outputs[0].tooltip
    assert "tiny_wan21_vae.pth" in schema.inputs[0].options
    ext = asyncio.run(pack.nodes.comfy_entrypoint())
    assert node in asyncio.run(ext.get_node_list())


def test_the_fields_the_adapter_replaces_are_ones_this_comfyui_sets_and_reads(comfy, pack, both):
    """comfy_compat/vae.py swaps exactly `REPLACED` on a VAE core's constructor built; if a ComfyUI
    release renames one, the swap would be silently ignored: this fails instead."""
    import importlib
    import inspect

    compat = pack.nodes.comfy_compat.vae
    core, ours = both
    for name in compat.REPLACED:
        assert name in vars(core), f"comfy.sd.VAE no longer sets {name}"
        assert getattr(ours, name) is not getattr(core, name), name
    readers = "".join(inspect.getsource(getattr(comfy.sd.VAE, m)) for m in ("decode", "encode", "decode_tiled",
                                                                            "encode_tiled", "model_size"))
    for name in compat.REPLACED:
        assert f"self.{name}" in readers, f"comfy.sd.VAE's decode/encode no longer read {name}"
    for hook in compat.MODEL_HOOKS:
        assert hook in readers and getattr(ours.first_stage_model, hook) is True
    patcher_mod = importlib.import_module("comfy.model_patcher")
    assert "cached_patcher_init" in inspect.getsource(patcher_mod.ModelPatcher.clone)


def test_is_a_comfy_vae_running_our_engine(comfy, both):
    core, ours = both
    assert isinstance(ours, comfy.sd.VAE) and isinstance(ours.first_stage_model, WanVAE)
    assert ours.patcher.model is ours.first_stage_model and ours.handles_tiling
    for attr in ("latent_channels", "latent_dim", "output_channels", "pad_channel_value", "upscale_index_formula",
                 "downscale_index_formula", "vae_dtype", "device", "output_device"):
        assert getattr(ours, attr) == getattr(core, attr), attr
    assert ours.upscale_ratio[0](21) == core.upscale_ratio[0](21) == 81
    assert ours.model_size() == pytest.approx(core.model_size(), rel=0.01)
    assert set(ours.get_sd()) == set(core.get_sd())  # saving a checkpoint keeps the original keys
    comfy.mm.load_models_gpu([ours.patcher])  # model management takes it like any VAE
    # the latent normalization ComfyUI applies around sampling is the engine's
    import comfy.latent_formats

    fmt = comfy.latent_formats.Wan21()
    assert torch.equal(fmt.latents_mean.flatten(), torch.tensor(LATENT_MEAN))
    assert torch.equal(fmt.latents_std.flatten(), torch.tensor(LATENT_STD))


def test_vae_decode_equals_core(both):
    import nodes as comfy_nodes

    core, ours = both
    latent = {"samples": torch.randn(1, 16, 3, 3, 4, generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        want = comfy_nodes.VAEDecode().decode(core, latent)[0]
        got = comfy_nodes.VAEDecode().decode(ours, latent)[0]
    assert got.shape == want.shape == (9, 24, 32, 3)
    assert 0.05 < want.mean() < 0.95
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    print("VAEDecode max |ours - core|:", (got - want).abs().max().item())


def test_vae_decode_tiled_node_uses_our_tiling(both):
    import nodes as comfy_nodes

    _, ours = both
    latent = {"samples": torch.randn(1, 16, 2, 4, 24, generator=torch.Generator().manual_seed(1))}
    calls = []
    orig = ours.first_stage_model.decode_tiled
    ours.first_stage_model.decode_tiled = lambda *a, **k: calls.append(k) or orig(*a, **k)
    try:
        with torch.inference_mode():
            tiled = comfy_nodes.VAEDecodeTiled().decode(ours, latent, tile_size=128, overlap=32, temporal_size=64,
                                                        temporal_overlap=8)[0]
    finally:
        del ours.first_stage_model.decode_tiled
    with torch.inference_mode():
        full = comfy_nodes.VAEDecode().decode(ours, latent)[0]
    assert calls and (calls[0]["tile_x"], calls[0]["tile_y"], calls[0]["overlap"]) == (16, 16, 4)
    assert tiled.shape == full.shape == (5, 32, 192, 3)
    assert (tiled - full).pow(2).mean().sqrt() < 0.01  # (border exactness/seams: tests/unit/test_vae.py)


def test_vae_encode_equals_core(both):
    import nodes as comfy_nodes

    core, ours = both
    pixels = torch.rand(9, 16, 24, 3, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = comfy_nodes.VAEEncode().encode(core, pixels)[0]["samples"]
        got = comfy_nodes.VAEEncode().encode(ours, pixels)[0]["samples"]
    assert got.shape == want.shape == (1, 16, 3, 2, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    print("VAEEncode max |ours - core|:", (got - want).abs().max().item())
    with torch.inference_mode():
        tiled = ours.encode_tiled(pixels, tile_x=256, tile_y=256, overlap=64)  # VAEEncodeTiled's path
    torch.testing.assert_close(tiled, got, rtol=0, atol=TOL)  # one tile covers it: exact


def test_safetensors_bf16_and_options(comfy, pack, vae_dir):
    loader = pack.nodes.vae_loader
    with torch.inference_mode():
        vae = loader.Wan4StepVAELoader.execute("tiny_wan21_vae.safetensors", "fp32", "on", 128, 32).result[0]
    m = vae.first_stage_model
    assert m.tiling == "on" and m.tile == (16, 16) and m.overlap == 4 and vae.vae_dtype == torch.float32
    # plain VAEDecode tiles with the loader's settings ("on")
    import nodes as comfy_nodes

    latent = {"samples": torch.randn(1, 16, 1, 4, 24, generator=torch.Generator().manual_seed(3))}
    calls = []
    orig = m._decode
    m._decode = lambda z, tile, overlap, buf: calls.append((tile, overlap)) or orig(z, tile, overlap, buf)
    try:
        with torch.inference_mode():
            tiled = comfy_nodes.VAEDecode().decode(vae, latent)[0]
            m.tiling = "off"
            full = comfy_nodes.VAEDecode().decode(vae, latent)[0]
    finally:
        del m._decode
    assert calls == [((16, 16), 4), (None, 4)]
    assert (tiled - full).pow(2).mean().sqrt() < 0.01
    assert vae.memory_used_decode((1, 16, 21, 60, 104), torch.bfloat16) < vae.memory_used_decode((1, 16, 21, 90, 160), torch.bfloat16) * 1.5
    # the multi-GPU / Select VAE Device factory rebuilds this VAE, not ComfyUI's
    factory, args = vae.patcher.cached_patcher_init
    assert isinstance(factory(*args, disable_dynamic=True).model, WanVAE)


def test_wrong_file_is_named(comfy, pack, vae_dir):
    p = vae_dir / "wan2.2_vae.pth"
    torch.save({"decoder.middle.0.residual.0.gamma": torch.ones(1024, 1, 1, 1),
                "decoder.upsamples.0.upsamples.0.residual.2.weight": torch.zeros(4, 4, 3, 3, 3),
                "conv2.weight": torch.zeros(48, 48, 1, 1, 1)}, p)
    with pytest.raises(WrongModelError) as e:
        pack.nodes.vae_loader.Wan4StepVAELoader.execute("wan2.2_vae.pth", "auto", "auto", 512, 64)
    assert "wan2.2_vae.pth" in str(e.value) and "Wan2.2 VAE" in str(e.value) and "Fix:" in str(e.value)


def test_through_a_real_server(comfy_server):
    """A queued workflow (API format): loader -> empty video latent -> VAEDecode / VAEDecodeTiled -> SaveImage,
    run by ComfyUI's executor (inference mode, progress hook); a wrong file fails with our message."""
    from wan4step.comfy_client import ComfyAPIError, output_files

    vae_dir = comfy_server.base_dir / "models" / "vae"
    write_tiny_vae(vae_dir / "srv_tiny_wan21_vae.safetensors", "safetensors")
    prompt = {
        "1": {"class_type": "Wan4StepVAELoader", "inputs": {"vae_name": "srv_tiny_wan21_vae.safetensors", "dtype": "auto",
                                                           "tiling": "auto", "tile_size": 512, "tile_overlap": 64}},
        "2": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "wan4step_vae"}},
        "5": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["2", 0], "vae": ["1", 0], "tile_size": 64,
                                                         "overlap": 0, "temporal_size": 64, "temporal_overlap": 8}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "wan4step_vae_tiled"}},
    }
    hist = comfy_server.run(prompt, timeout=120)
    files = output_files(hist)
    assert len([f for f in files if f["node"] == "4"]) == 5 and len([f for f in files if f["node"] == "6"]) == 5
    torch.save({"decoder.middle.0.residual.0.gamma": torch.ones(8, 1, 1, 1), "conv2.weight": torch.zeros(48, 48, 1, 1, 1)},
               vae_dir / "srv_wan22.pth")
    prompt["1"]["inputs"]["vae_name"] = "srv_wan22.pth"
    with pytest.raises(ComfyAPIError, match="Wan2.2 VAE"):
        comfy_server.run(prompt, timeout=60)
