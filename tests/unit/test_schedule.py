"""The LightX2V 4-step schedule against values computed here from its published configuration."""

from __future__ import annotations

import pytest
import torch

from wan4step import sampling, schedule


def test_sigmas_match_lightx2v_published_config_computed_in_float64():
    # configs/distill/wan_t2v_distill_4step_cfg.json: denoising_step_list [1000, 750, 500, 250], sample_shift 5
    # sigma(t) = 5 s / (1 + 4 s) with s = t / 1000 (the linspace(1, 0, 1001) entry at index 1000 - t)
    want = [5 * (t / 1000) / (1 + 4 * (t / 1000)) for t in (1000, 750, 500, 250)] + [0.0]
    assert want[:4] == pytest.approx([1.0, 0.9375, 0.833333333, 0.625])
    got = schedule.sigmas()
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(want, abs=1e-7)
    assert schedule.timesteps(got).tolist() == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)


def test_other_step_counts_and_custom_lists_follow_the_same_family():
    assert schedule.denoising_step_list(4) == [1000, 750, 500, 250]
    assert schedule.denoising_step_list(2) == [1000, 500]
    s8 = schedule.sigmas(8)
    assert len(s8) == 9 and s8[0] == 1.0 and s8[-1] == 0.0 and bool((s8[:-1].diff() < 0).all())
    custom = schedule.sigmas(step_list=schedule.parse_step_list("1000, 800; 400"))
    assert custom.tolist() == pytest.approx([1.0, 5 * .8 / (1 + 4 * .8), 5 * .4 / (1 + 4 * .4), 0.0], abs=1e-6)
    for bad in ([1000, 1000], [0, 1], [1200]):
        with pytest.raises(ValueError):
            schedule.sigmas(step_list=bad)
    assert schedule.parse_step_list("  ") is None


def test_video_size_checks_name_the_nearest_valid_values():
    assert schedule.check_video_size(832, 480, 81) == []
    msgs = schedule.check_video_size(830, 470, 80)
    assert "width 830 is not divisible by 16 (nearest valid: 816 or 832)" in msgs
    assert "height 470 is not divisible by 16 (nearest valid: 464 or 480)" in msgs
    assert "frames 80 is not 4n+1 (nearest valid: 77 or 81)" in msgs
    assert schedule.latent_shape(832, 480, 81) == (16, 21, 60, 104)


def _oracle_denoiser(target):
    """A model whose flow prediction points exactly at `target`: v = (x - target) / sigma."""
    return lambda x, sigma: target.expand_as(x)


def test_lcm_loop_renoises_from_the_same_stream_and_returns_x0():
    target = torch.randn(1, 16, 2, 4, 4)
    noise = sampling.DeviceNoise(123, "cpu")
    x = noise((1, 16, 2, 4, 4))
    out = sampling.sample(_oracle_denoiser(target), x, schedule.sigmas(), "lcm", noise)
    assert torch.equal(out, target)
    # replay: the generator gave the initial latent then one draw per re-noise (3 draws)
    g = torch.Generator().manual_seed(123)
    draws = [torch.randn((1, 16, 2, 4, 4), generator=g) for _ in range(4)]
    assert torch.equal(draws[0], x)
    seen = []

    def recording(x_, sigma):
        seen.append(x_.clone())
        return target.expand_as(x_)

    sampling.sample(recording, draws[0], schedule.sigmas(), "lcm", _Replay(draws[1:]))
    sig = schedule.sigmas()
    for i in range(1, 4):  # x_i = (1 - sigma_i) x0 + sigma_i * noise_i
        expect = (1 - sig[i]) * target + sig[i] * draws[i]
        torch.testing.assert_close(seen[i], expect)


class _Replay:
    def __init__(self, draws):
        self.draws = list(draws)

    def __call__(self, shape):
        return self.draws.pop(0)


def test_euler_update_is_deterministic_flow_step():
    target = torch.randn(1, 16, 1, 2, 2)
    x = torch.randn_like(target)
    sig = schedule.sigmas()
    seen = []

    def rec(x_, sigma):
        seen.append(x_.clone())
        return target.expand_as(x_)

    out = sampling.sample(rec, x, sig, "euler")
    assert torch.equal(out, target)
    v0 = (x - target) / sig[0]
    torch.testing.assert_close(seen[1], target + sig[1] * v0)
    with pytest.raises(ValueError):
        sampling.sample(rec, x, sig, "lcm")  # LCM needs noise
