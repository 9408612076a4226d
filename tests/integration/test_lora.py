"""LoRA through ComfyUI's own LoRA loader on the pack's MODELs, including quantized weights."""

from __future__ import annotations

import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.formats.lightx2v_dir import write_lightx2v_dir
from wan4step.tiny.dit import tiny_dit_state_dict


def _lora(rank=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(2):
        for lin, (o, n) in {"self_attn.q": (256, 256), "ffn.0": (512, 256), "ffn.2": (256, 512)}.items():
            key = f"diffusion_model.blocks.{i}.{lin}"
            out[key + ".lora_down.weight"] = torch.randn(rank, n, generator=g) * 0.1
            out[key + ".lora_up.weight"] = torch.randn(o, rank, generator=g) * 0.1
    return out


def _forward(comfy, mp):
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 16, 4096, generator=g) * 0.3
    comfy.mm.load_models_gpu([mp])  # applies the patches the way sampling does
    with torch.no_grad():
        return mp.model.diffusion_model(x, torch.tensor([900.0]), ctx).float()


def test_lora_on_bf16_equals_comfyui_and_on_quantized_follows(comfy, pack, tmp_path):
    sd = tiny_dit_state_dict()
    bf16 = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(bf16))
    lora = _lora()

    def with_lora(mp):
        return comfy.sd.load_lora_for_models(mp, None, lora, 1.0, 0)[0]

    core = comfy.sd.load_diffusion_model(str(bf16), model_options={"dtype": torch.bfloat16})
    ours = pack.nodes.comfy_compat.model.build_model(load_dit(bf16), torch.float32)
    base = _forward(comfy, ours)
    want = _forward(comfy, with_lora(core))
    got = _forward(comfy, with_lora(ours))
    assert ((want - base).norm() / base.norm()) > 0.05  # the LoRA really changes the output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(_forward(comfy, ours), base)  # unpatched again afterwards

    for path in (write_lightx2v_dir(tmp_path / "distill_fp8", sd, "fp8"), write_gguf(tmp_path / "q8.gguf", sd, "Q8_0")):
        q = pack.nodes.comfy_compat.model.build_model(load_dit(path), torch.float32)
        before = q.model.diffusion_model.blocks[0].self_attn.q.weight.clone()
        got_q = _forward(comfy, with_lora(q))
        assert torch.equal(q.model.diffusion_model.blocks[0].self_attn.q.weight, before)  # stored bytes untouched
        rel = ((got_q - want).norm() / want.norm()).item()
        assert rel < 0.05, (path.name, rel)


def test_lora_reaches_streamed_blocks(comfy, pack, tmp_path):
    """Block Swap hides streamed weights from ComfyUI's patcher; their LoRA must still apply."""
    sd = tiny_dit_state_dict()
    bf16 = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(bf16))
    lora = _lora()
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]

    def sample(mp):
        latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
        return pack.nodes.sampler.Wan4StepSampler.execute(mp, cond, latent, seed=3, steps=4, shift=5.0, cfg=1.0,
                                                          noise="comfy", update="lcm").result[0]["samples"]

    for base in (pack.nodes.comfy_compat.model.build_model(load_dit(bf16), torch.bfloat16),
                 pack.nodes.comfy_compat.model.set_shift(comfy.sd.load_diffusion_model(str(bf16)), 5.0)):  # ours and core's
        plain = sample(base)
        lora_model = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)[0]
        want = sample(lora_model)
        swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(lora_model, 2, 1, True, "ram", False).result[0]
        got = sample(swapped)
        assert ((want - plain).norm() / plain.norm()) > 0.01
        rel = ((got - want).norm() / want.norm()).item()
        assert rel < 5e-3, rel  # baked (bf16-rounded) vs applied at use time (fp32): rounding only
        assert torch.equal(sample(swapped), got)  # patches removed after each run, re-added next run
        assert torch.equal(sample(base), plain)


def test_lora_on_norm_weights_reaches_the_fused_block_when_streamed(comfy, pack, tmp_path):
    """The fused block reads the q/k RMSNorm weights directly; when ComfyUI applies their LoRA at use
    time (Block Swap's streamed blocks, lowvram) the block must still see the patched weights."""
    sd = tiny_dit_state_dict()
    bf16 = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(bf16))
    g = torch.Generator().manual_seed(5)
    lora = {f"diffusion_model.blocks.{i}.{n}.diff": torch.randn(256, generator=g) * 0.5
            for i in range(2) for n in ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q")}
    cond = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]

    def sample(mp):
        latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
        return pack.nodes.sampler.Wan4StepSampler.execute(mp, cond, latent, seed=3, steps=4, shift=5.0, cfg=1.0,
                                                          noise="comfy", update="lcm").result[0]["samples"]

    base = pack.nodes.comfy_compat.model.build_model(load_dit(bf16), torch.bfloat16)
    plain = sample(pack.nodes.comfy_compat.fast_forward.install(base, "sdpa"))
    lora_model = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)[0]
    want = sample(lora_model)  # ComfyUI's own blocks, the LoRA baked in at load
    assert ((want - plain).norm() / plain.norm()) > 0.01  # the norm LoRA really matters
    fast = pack.nodes.comfy_compat.fast_forward.install(lora_model, "sdpa")
    torch.testing.assert_close(sample(fast), want, rtol=2e-2, atol=2e-2)  # resident: baked weights
    swapped = pack.nodes.block_swap.Wan4StepBlockSwap.execute(fast, 2, 1, True, "ram", False).result[0]
    got = sample(swapped)
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 5e-3, rel
