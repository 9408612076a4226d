"""city96 ComfyUI-GGUF's MODEL with this pack's Block Swap, fused forward and sampler."""

from __future__ import annotations

import pytest
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.tiny.dit import tiny_dit_state_dict


@pytest.fixture(scope="module")
def gguf_nodes(comfyui_gguf):
    return comfyui_gguf.nodes


def _sample(pack, model, seed=3):
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    out = pack.nodes.sampler.Wan4StepSampler.execute(model, cond, latent, seed=seed, steps=4, shift=5.0, cfg=1.0,
                                                     noise="comfy", update="lcm")
    return out.result[0]["samples"]


def test_unet_loader_gguf_model_swaps_and_samples_like_ours(comfy, pack, gguf_nodes, tmp_path):
    path = write_gguf(tmp_path / "tiny-Q8_0.gguf", tiny_dit_state_dict(), "Q8_0")
    theirs = gguf_nodes.UnetLoaderGGUF().load_unet_from_path(str(path)) if hasattr(gguf_nodes.UnetLoaderGGUF, "load_unet_from_path") else None
    if theirs is None:
        comfy.folder_paths.add_model_folder_path("unet", str(tmp_path))
        theirs = gguf_nodes.UnetLoaderGGUF().load_unet(path.name)[0]
    theirs = pack.nodes.comfy_compat.model.set_shift(theirs.clone(), 5.0)
    ref = _sample(pack, theirs)
    # streaming their GGMLTensor weights changes nothing
    for k, source in ((1, "ram"), (2, "disk")):
        swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(theirs, k, 1, True, source, False).result[0]
        assert torch.equal(_sample(pack, swapped), ref)
    # the pack's fused block forward runs their modules too, and agrees with our own loader on the same file
    fast = pack.nodes.comfy_compat.fast_forward.install(theirs, "sdpa")
    ours = pack.nodes.comfy_compat.model.build_model(load_dit(path), torch.bfloat16)
    # ComfyUI-GGUF decodes in fp16 arithmetic, the pack in fp32 (bit-exact vs gguf's numpy): tiny differences
    for out in (_sample(pack, fast), _sample(pack, ours)):
        rel = ((out - ref).norm() / ref.norm()).item()
        assert rel < 2e-3, rel


def test_lora_on_comfyui_gguf_model_reaches_streamed_blocks(comfy, pack, gguf_nodes, tmp_path):
    path = write_gguf(tmp_path / "tiny-Q8_0.gguf", tiny_dit_state_dict(), "Q8_0")
    comfy.folder_paths.add_model_folder_path("unet", str(tmp_path))
    theirs = pack.nodes.comfy_compat.model.set_shift(gguf_nodes.UnetLoaderGGUF().load_unet(path.name)[0].clone(), 5.0)
    g = torch.Generator().manual_seed(2)
    lora = {}
    for i in range(2):
        key = f"diffusion_model.blocks.{i}.ffn.0"
        lora[key + ".lora_down.weight"] = torch.randn(4, 256, generator=g) * 0.1
        lora[key + ".lora_up.weight"] = torch.randn(512, 4, generator=g) * 0.1
    plain = _sample(pack, theirs)
    with_lora = comfy.sd.load_lora_for_models(theirs, None, lora, 1.0, 0)[0]
    want = _sample(pack, with_lora)
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(with_lora, 2, 1, True, "ram", False).result[0]
    got = _sample(pack, swapped)
    assert ((want - plain).norm() / plain.norm()) > 0.01
    assert ((got - want).norm() / want.norm()) < 1e-3
