"""The pack's loader + sampler against ComfyUI's own loader + KSampler, in-process, on the tiny DiT."""

from __future__ import annotations

import safetensors.torch
import torch

from wan4step import schedule
from wan4step.tiny.dit import tiny_dit_state_dict


def _tiny_file(tmp_path, dtype=torch.bfloat16):
    sd = {k: v.to(dtype) for k, v in tiny_dit_state_dict().items()}
    p = tmp_path / "tiny_dit_bf16.safetensors"
    safetensors.torch.save_file(sd, str(p))
    return p


def _cond(seed=0, tokens=512):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=g) * 0.1, {}]]


def test_loader_matches_comfyui_unet_loader(comfy, pack, tmp_path):
    from wan4step.formats import load_dit

    p = _tiny_file(tmp_path)
    ours = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.bfloat16)
    core = comfy.sd.load_diffusion_model(str(p), model_options={"dtype": torch.bfloat16})
    x = torch.randn(1, 16, 3, 8, 8)
    t = torch.tensor([937.5])
    ctx = _cond()[0][0]
    with torch.no_grad():
        a = ours.model.diffusion_model(x, t, ctx)
        b = core.model.diffusion_model(x, t, ctx)
    assert a.shape == (1, 16, 3, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sampler_equals_ksampler_lcm_simple_shift5(comfy, pack, tmp_path):
    import comfy_extras.nodes_model_advanced as adv

    import nodes as comfy_nodes

    p = _tiny_file(tmp_path)
    from wan4step.formats import load_dit

    ours = pack.nodes.comfy_compat.model.build_model(load_dit(p), torch.bfloat16)
    core = comfy.sd.load_diffusion_model(str(p), model_options={"dtype": torch.bfloat16})
    core = adv.ModelSamplingSD3().patch(core, shift=5.0)[0]
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    cond = _cond()

    # the sigma table ComfyUI's simple scheduler gives for shift 5, 4 steps == LightX2V's
    ks = comfy.samplers.calculate_sigmas(core.get_model_object("model_sampling"), "simple", 4)
    torch.testing.assert_close(ks.float(), schedule.sigmas(), rtol=0, atol=1e-7)

    out = pack.nodes.sampler.Wan4StepSampler.execute(
        ours, cond, latent, seed=42, steps=4, shift=5.0, cfg=1.0, noise="comfy", update="lcm"
    )
    ref = comfy_nodes.common_ksampler(core, 42, 4, 1.0, "lcm", "simple", cond, cond, latent)[0]
    torch.testing.assert_close(out.result[0]["samples"], ref["samples"], rtol=0, atol=0)


def test_guard_rails_and_lightx2v_noise(comfy, pack, tmp_path):
    import pytest

    from wan4step.errors import SettingsError, WrongModelError
    from wan4step.formats import load_dit

    model = pack.nodes.comfy_compat.model.build_model(load_dit(_tiny_file(tmp_path)), torch.bfloat16)
    S = pack.nodes.sampler.Wan4StepSampler
    latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}
    cond = _cond()
    a = S.execute(model, cond, latent, seed=1, steps=4, shift=5.0, cfg=1.0, noise="lightx2v", update="lcm")
    b = S.execute(model, cond, latent, seed=1, steps=4, shift=5.0, cfg=1.0, noise="lightx2v", update="lcm")
    c = S.execute(model, cond, latent, seed=2, steps=4, shift=5.0, cfg=1.0, noise="lightx2v", update="lcm")
    assert torch.equal(a.result[0]["samples"], b.result[0]["samples"])
    assert not torch.equal(a.result[0]["samples"], c.result[0]["samples"])
    assert a.ui is None or not a.ui.get("text")  # the recipe: no warnings
    w = S.execute(model, cond, latent, seed=1, steps=8, shift=3.0, cfg=1.0, noise="comfy", update="euler")
    text = " ".join(w.ui["text"])
    assert "steps=8" in text and "shift=3.0" in text
    with pytest.raises(SettingsError, match="negative prompt"):
        S.execute(model, cond, latent, seed=1, steps=4, shift=5.0, cfg=3.0, noise="comfy", update="lcm")
    i2v = [[cond[0][0], {"concat_latent_image": torch.zeros(1, 16, 2, 8, 8)}]]
    with pytest.raises(WrongModelError, match="image conditioning"):
        S.execute(model, i2v, latent, seed=1, steps=4, shift=5.0, cfg=1.0, noise="comfy", update="lcm")
    with pytest.raises(SettingsError, match="not a Wan2.1 video latent"):
        S.execute(model, cond, {"samples": torch.randn(1, 4, 8, 8)}, seed=1, steps=4, shift=5.0, cfg=1.0,
                  noise="comfy", update="lcm")
    sig = pack.nodes.sampler.Wan4StepSigmas.execute(4, 5.0, "").result[0]
    assert sig.tolist() == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0])
