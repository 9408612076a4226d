"""The Wan2.1 VAE engine against diffusers' AutoencoderKLWan (an oracle nobody here wrote) on the
same tiny weights; file formats; tiling; errors. CPU, tiny dims (16 / 8), a few frames."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wan4step.errors import FormatError, WrongModelError
from wan4step.tiny.vae import TINY_VAE, tiny_vae_state_dict, write_tiny_vae
from wan4step.vae import (
    LATENT_MEAN,
    LATENT_STD,
    denormalize_latent,
    load_vae,
    normalize_latent,
    read_vae_state_dict,
    tiled,
)
from wan4step.vae.formats import diffusers_key_to_original, original_key_to_diffusers, original_to_diffusers
from wan4step.vae.kernels import rms_norm_eager
from wan4step.vae.model import VAEConfig, WanVAE, WanVAEModel, _upsample_conv, subpixel_weight

diffusers = pytest.importorskip("diffusers")
REPO = Path(__file__).resolve().parents[2]
# fp32 on both sides; the engine sums in other orders (sub-pixel upsample convs, fused norm), so
# outputs agree to float32 rounding of O(1) values through ~40 layers: observed ~2e-6.
FP32_TOL = 2e-5


def ours(cfg: VAEConfig = TINY_VAE, seed: int = 0) -> WanVAE:
    m = WanVAE(cfg)
    m.load_state_dict(tiny_vae_state_dict(cfg, seed))
    return m.eval()


@pytest.fixture(scope="module")
def oracle():
    ref = diffusers.AutoencoderKLWan(base_dim=TINY_VAE.dim, z_dim=16).eval()
    ref.load_state_dict(original_to_diffusers(tiny_vae_state_dict()))
    return ref


@pytest.fixture(scope="module")
def model():
    return ours()


# -- key maps -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [16, 96])
def test_key_map_both_ways(dim):
    """original -> diffusers gives exactly AutoencoderKLWan's keys (and shapes); back is the identity."""
    cfg = VAEConfig(dim=dim)
    with torch.device("meta"):
        orig = {k: tuple(v.shape) for k, v in WanVAEModel(cfg).state_dict().items()}
        diff = {k: tuple(v.shape) for k, v in diffusers.AutoencoderKLWan(base_dim=dim, z_dim=16).state_dict().items()}
    mapped = {original_key_to_diffusers(k): s for k, s in orig.items()}
    assert mapped == diff
    assert {diffusers_key_to_original(k): s for k, s in diff.items()} == orig
    assert original_key_to_diffusers("decoder.upsamples.11.resample.1.weight") == "decoder.up_blocks.2.upsamplers.0.resample.1.weight"
    assert diffusers_key_to_original("decoder.up_blocks.1.resnets.0.conv_shortcut.bias") == "decoder.upsamples.4.shortcut.bias"
    with pytest.raises(KeyError):
        original_key_to_diffusers("decoder.nonsense.weight")


def test_real_config_matches_release_parameter_count():
    with torch.device("meta"):
        n = sum(p.numel() for p in WanVAEModel().parameters())
    assert n == 126_892_531  # Wan2.1_VAE.pth: 508 MB of float32


# -- against the oracle ------------------------------------------------------------------------------
def test_decode_matches_diffusers(model, oracle):
    z = torch.randn(1, 16, 3, 3, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = oracle.decode(z).sample  # clamped to [-1, 1] by diffusers
        got = model.decode(z)
    assert got.shape == want.shape == (1, 3, 9, 24, 32)
    assert (want.abs() < 1).float().mean() > 0.99  # the oracle is not blinded by its clamp
    torch.testing.assert_close(got.clamp(-1, 1), want, rtol=0, atol=FP32_TOL)


def test_decode_and_encode_under_inference_mode(model):
    """ComfyUI runs nodes under torch.inference_mode(), where tensors have no version counters."""
    z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        want = model.decode(z)
    with torch.inference_mode():
        m = ours()  # weights created in inference mode, as ComfyUI's loader does
        got = m.decode(z)
        assert torch.equal(got, m.decode(z))  # cached derived weights reused across calls
        for p in m.parameters():
            p.data = p.data * 1.0  # a patcher replacing weights between calls
        assert torch.equal(m.decode(z), got)
        x = torch.rand(1, 3, 5, 16, 8) * 2 - 1
        assert m.encode(x).shape == (1, 16, 2, 2, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_decode_is_chunking_invariant(model):
    """Passes of one frame at every stage (the causal history carries across) == default passes."""
    z = torch.randn(2, 16, 3, 2, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = tiled.decode_video(model, z)
        b = tiled.decode_video(model, z, max_pass_elements=1)
        c = tiled.decode_video(model, z, channels_last=True)  # the CUDA layout, on the CPU
        d = tiled.decode_video(model, z[1:])
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(c, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(a[1:], d, rtol=0, atol=1e-5)  # batch items are independent


def test_encode_matches_diffusers(model, oracle):
    x = torch.rand(1, 3, 9, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        want = oracle.encode(x).latent_dist.mode()
        got = model.encode(x)
        for chunk in (1, 2, 3):  # the temporal downsample's pending frames carry across any chunking
            torch.testing.assert_close(tiled.encode_video(model, x, chunk_frames=chunk), got, rtol=0, atol=1e-5)
        extra = model.encode(torch.cat([x, x[:, :, :2]], 2))  # 11 frames: the 2 past 1+4k are dropped
    assert got.shape == want.shape == (1, 16, 3, 2, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=FP32_TOL)
    torch.testing.assert_close(extra, got, rtol=0, atol=0)


def test_latent_normalization_constants(oracle):
    assert list(LATENT_MEAN) == pytest.approx(oracle.config.latents_mean, abs=0)
    assert list(LATENT_STD) == pytest.approx(oracle.config.latents_std, abs=0)
    z = torch.randn(1, 16, 2, 3, 3)
    torch.testing.assert_close(denormalize_latent(normalize_latent(z)), z)
    torch.testing.assert_close(normalize_latent(z)[0, 7], (z[0, 7] - 1.5508) / 2.0743)


# -- building blocks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsample_conv_equals_upsample_then_conv(channels_last):
    g = torch.Generator().manual_seed(4)
    conv = torch.nn.Conv2d(6, 3, 3, padding=1)
    x = torch.randn(1, 6, 2, 5, 7, generator=g)
    st = WanVAEModel(VAEConfig(dim=8)).new_stream(torch.device("cpu"), channels_last)
    with torch.no_grad():
        got = _upsample_conv(st.layout(x), conv, False, st)
        frames = x.transpose(1, 2).reshape(2, 6, 5, 7)
        want = conv(F.interpolate(frames, scale_factor=2.0, mode="nearest-exact")).reshape(1, 2, 3, 10, 14).transpose(1, 2)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        # time split: channels [0:C) -> even frames, [C:2C) -> odd frames
        got = _upsample_conv(st.layout(torch.cat([x, x + 1], 1)), conv, True, st)
        assert got.shape == (1, 3, 4, 10, 14)
        torch.testing.assert_close(got[:, :, 0::2], want, rtol=0, atol=1e-5)
    k1 = subpixel_weight(conv, x)
    assert subpixel_weight(conv, x) is k1  # cached within a call ...
    conv.weight = torch.nn.Parameter(conv.weight.detach() * 2)  # (what ComfyUI's patchers do)
    assert subpixel_weight(conv, x) is not k1  # ... per weight tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_eager(dtype):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 24, 2, 3, 4, generator=g).to(dtype)
    gamma = (1 + 0.1 * torch.randn(24, generator=g)).to(dtype)
    ref = F.normalize(x.float(), dim=1) * 24**0.5 * gamma.float().view(1, 24, 1, 1, 1)
    tol = 1e-6 if dtype == torch.float32 else 2 ** -7 * 4
    torch.testing.assert_close(rms_norm_eager(x, gamma, silu=False).float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(rms_norm_eager(x, gamma, silu=True).float(), F.silu(ref), rtol=tol, atol=tol)


_INTERPRET = textwrap.dedent(
    """
    import os, sys
    assert os.environ["TRITON_INTERPRET"] == "1"
    sys.path.insert(0, sys.argv[1])
    import torch
    import torch.nn.functional as F
    from wan4step.vae.kernels import rms_norm_triton
    g = torch.Generator().manual_seed(0)
    n = 0
    for c, dtype in ((96, torch.float32), (40, torch.bfloat16), (384, torch.float16)):
        x = torch.randn(1, c, 3, 5, 7, generator=g).to(dtype).contiguous(memory_format=torch.channels_last_3d)
        gamma = (1 + 0.1 * torch.randn(c, generator=g)).to(dtype)
        buf = torch.full((1, c, 5, 5, 7), 7.0, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)
        for silu in (False, True):
            assert rms_norm_triton(x, gamma, silu=silu, out=buf[:, :, 2:]) is not None
            ref = F.normalize(x.float(), dim=1) * c**0.5 * gamma.float().view(1, c, 1, 1, 1)
            ref = F.silu(ref) if silu else ref
            tol = 1e-6 if dtype == torch.float32 else 2 ** -6  # the interpreter truncates to 16 bits
            assert torch.allclose(buf[:, :, 2:].float(), ref, rtol=tol, atol=tol), (c, dtype, silu)
            assert (buf[:, :, :2] == 7).all()  # the history frames in front are untouched
            n += 1
    assert rms_norm_triton(x.contiguous(), gamma, silu=True) is None  # not channels-last: eager
    print("OK", n)
    """
)


def test_triton_norm_kernel_under_interpreter():
    """The fused CUDA kernel on CPU via TRITON_INTERPRET=1 (subprocess: set before triton imports)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", _INTERPRET, str(REPO)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 6" in r.stdout


# -- formats ----------------------------------------------------------------------------------------
def test_formats_give_identical_frames(tmp_path, model):
    """Wan2.1_VAE.pth layout, Comfy-Org safetensors layout (original keys) and diffusers layout."""
    paths = {fmt: write_tiny_vae(tmp_path / f"vae.{fmt}", fmt) for fmt in ("pth", "safetensors", "diffusers")}
    z = torch.randn(1, 16, 2, 3, 4, generator=torch.Generator().manual_seed(6))
    frames = {}
    for fmt, p in paths.items():
        f = read_vae_state_dict(p)
        assert f.config == TINY_VAE and f.dtype == torch.float32
        assert (f.layout, f.container) == {"pth": ("original", "torch"), "safetensors": ("original", "safetensors"),
                                           "diffusers": ("diffusers", "safetensors")}[fmt]
        with torch.no_grad():
            frames[fmt] = load_vae(p).decode(z)
    assert torch.equal(frames["pth"], frames["safetensors"]) and torch.equal(frames["pth"], frames["diffusers"])
    with torch.no_grad():
        assert torch.equal(frames["pth"], model.decode(z))
    # half precision files (what Comfy-Org ships) load and keep their dtype unless asked otherwise
    p16 = write_tiny_vae(tmp_path / "vae_bf16.safetensors", "safetensors", dtype=torch.bfloat16)
    assert read_vae_state_dict(p16).dtype == torch.bfloat16
    m16 = load_vae(p16, dtype=torch.float32)
    assert m16.conv2.weight.dtype == torch.float32
    with torch.no_grad():
        assert (m16.decode(z) - frames["pth"]).abs().max() < 0.05


def test_wrapped_and_prefixed_checkpoints(tmp_path):
    sd = tiny_vae_state_dict()
    torch.save({"state_dict": {f"vae.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    f = read_vae_state_dict(tmp_path / "wrapped.pth")
    assert set(f.state_dict) == set(sd)


# -- tiling -----------------------------------------------------------------------------------------
def test_plan_spans_and_blend_weights():
    assert tiled.plan_spans(104, 64, 8) == [tiled.Span(0, 56), tiled.Span(48, 104)]  # 480p width: 7.7 % extra
    assert tiled.plan_spans(60, 64, 8) == [tiled.Span(0, 60)]
    spans = tiled.plan_spans(160, 64, 8)  # 720p width: 3 tiles
    assert len(spans) == 3 and all(s.size <= 64 for s in spans) and spans[-1].stop == 160
    assert all(a.stop - b.start >= 8 for a, b in zip(spans, spans[1:], strict=False))
    for length, tile, ov in ((104, 64, 8), (160, 64, 8), (37, 10, 2), (50, 12, 0)):
        spans = tiled.plan_spans(length, tile, ov)
        total = torch.zeros(length * 8, dtype=torch.float64)
        for s, w in zip(spans, tiled.blend_weights(spans, 8), strict=True):
            total[s.start * 8 : s.stop * 8] += w.double()
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)
    assert all(s.start % 8 == 0 and s.size % 8 == 0 for s in tiled.plan_spans(832, 512, 64, align=8)[:-1])


def test_write_rules_cover_each_pixel_once_with_a_write():
    ys, xs = tiled.plan_spans(20, 8, 2), tiled.plan_spans(30, 12, 3)
    writes = torch.zeros(20, 30, dtype=torch.int32)
    adds = torch.zeros(20, 30, dtype=torch.int32)
    for iy, sy in enumerate(ys):
        for ix, sx in enumerate(xs):
            for y0, y1, x0, x1, add in tiled._write_rules(ys, xs, iy, ix, 1):
                region = (slice(sy.start + y0, sy.start + y1), slice(sx.start + x0, sx.start + x1))
                if add:
                    assert (writes[region] == 1).all()  # only add where something was written before
                    adds[region] += 1
                else:
                    writes[region] += 1
    assert (writes == 1).all()


def test_staged_output_ring(small):
    """The CUDA->CPU output path (pinned pool, deferred writes), exercised on the CPU: pieces of
    several sizes reuse the pool and land where the direct path puts them."""
    z = torch.randn(1, 16, 2, 5, 7, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        want = tiled.decode_video(small, z, tile=(3, 4), overlap=1)
        sink_log = []
        orig = tiled.FrameSink._host
        tiled.FrameSink._host = lambda self, like: sink_log.append(len(self.free)) or orig(self, like)
        try:
            got = tiled.decode_video(small, z, tile=(3, 4), overlap=1, _stage_output=True, max_pass_elements=2**14)
        finally:
            tiled.FrameSink._host = orig
    assert len(sink_log) > 10 and max(sink_log) >= 1  # buffers came back to the pool and were reused
    assert torch.equal(got, want)


@pytest.fixture(scope="module")
def small():
    return ours(VAEConfig(dim=8), seed=1)


def test_tiled_decode_exact_inside_and_seamless_at_borders(small):
    """Tiles differ from the untiled decode only by zero padding at their inner borders: beyond the
    receptive field of the upsampling path (12.25 latent px) they are exact (this also proves the
    middle attention ran on the whole frame and each tile's history is right over 3 latent frames).
    In the blend band the weights are random (no spatial smoothness: a worst case), so the bound is
    relative: a seam is visible when the tiled frame steps across the band where the untiled one
    doesn't. With the default overlap (8 latent = 64 px) that excess step must stay a small part of
    the frame's own pixel-to-pixel variation and far below a hard (overlap 0) seam's."""
    z = torch.randn(1, 16, 2, 2, 40, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = small.decode(z)
        hard = tiled.decode_video(small, z, tile=(64, 32), overlap=0)
        soft = small.decode_tiled(z, tile_x=32, tile_y=64, overlap=8)
    spans = tiled.plan_spans(40, 32, 8)
    assert spans == [tiled.Span(0, 24), tiled.Span(16, 40)]
    rf = 12.25
    left, right = int((spans[1].start - rf) * 8), int((spans[0].stop + rf) * 8) + 1
    torch.testing.assert_close(soft[..., :left], full[..., :left], rtol=0, atol=1e-6)
    torch.testing.assert_close(soft[..., right:], full[..., right:], rtol=0, atol=1e-6)

    def step(v):
        return v[..., 1:] - v[..., :-1]

    natural = step(full).abs().amax()
    err_soft, err_hard = (soft - full).abs().amax(), (hard - full).abs().amax()
    seam_soft, seam_hard = (step(soft) - step(full)).abs().amax(), (step(hard) - step(full)).abs().amax()
    assert seam_hard > 0.8 * natural  # a hard seam is as strong as the strongest real edge
    assert seam_soft < 0.25 * natural and seam_soft < 0.3 * seam_hard
    assert err_soft < 0.3 * err_hard
    assert (soft - full).pow(2).mean().sqrt() < 0.01


def test_tiled_decode_2d_grid_and_output_buffer(small):
    z = torch.randn(1, 16, 2, 6, 8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        full = small.decode(z)
        buf = torch.full(small.decode_output_shape(z.shape), float("nan"))
        out = small.decode_tiled(z, tile_x=5, tile_y=4, overlap=1, tile_t=4, overlap_t=1, output_buffer=buf)
    assert out is buf and not buf.isnan().any()  # every pixel written, no zero-fill needed
    # 4x5-latent tiles are all border (error, not misplacement: that would be ~1.4x the signal)
    assert (out - full).pow(2).mean().sqrt() < 0.5 * full.pow(2).mean().sqrt()


def test_tiled_encode_close_to_untiled(small):
    x = torch.rand(1, 3, 5, 32, 128, generator=torch.Generator().manual_seed(9)) * 2 - 1
    with torch.no_grad():
        full = small.encode(x)
        tl = small.encode_tiled(x, tile_x=80, tile_y=512, overlap=16)
    assert tl.shape == full.shape == (1, 16, 2, 4, 16)
    assert (tl - full).pow(2).mean().sqrt() < 0.1 * full.pow(2).mean().sqrt()


def test_auto_tiling_and_memory_model(small):
    real = WanVAEModel.__new__(WanVAEModel)  # shapes only: a meta model
    with torch.device("meta"):
        real = WanVAEModel()
    untiled = tiled.decode_vram_bytes(real, (1, 16, 21, 60, 104), 2)
    tiled_480 = tiled.decode_vram_bytes(real, (1, 16, 21, 60, 104), 2, tile=(64, 64), overlap=8)
    tiled_720 = tiled.decode_vram_bytes(real, (1, 16, 21, 90, 160), 2, tile=(64, 64), overlap=8)
    assert 1.5e9 < untiled < 4e9  # ~1.9 GB of causal history at 480p alone
    assert tiled_480 < 1.8e9 and tiled_720 < 2.2e9  # budgets 2.0 / 2.5 GiB including weights
    assert tiled.decode_vram_bytes(real, (1, 16, 21, 90, 160), 2) > untiled
    small.tiling = "auto"  # CPU: always fits -> untiled
    z = torch.randn(1, 16, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(small.decode(z), tiled.decode_video(small, z))


# -- errors -----------------------------------------------------------------------------------------
def _fix_named(err, path):
    msg = str(err)
    assert str(path) in msg and "Fix:" in msg and "wan_2.1_vae.safetensors" in msg, msg
    return msg


def test_truncated_files(tmp_path):
    for fmt in ("pth", "safetensors"):
        p = write_tiny_vae(tmp_path / f"cut.{fmt}", fmt)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(FormatError) as e:
            read_vae_state_dict(p)
        assert "truncated" in _fix_named(e.value, p)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_vae_state_dict(empty)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickled_code_is_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"decoder.head.0.gamma": torch.ones(3), "payload": _Evil()}, p)
    with pytest.raises(FormatError) as e:
        read_vae_state_dict(p)
    assert "pickled Python code" in _fix_named(e.value, p)


def test_wan22_vae_is_named(tmp_path):
    from safetensors.torch import save_file

    # diffusers' Wan2.2 VAE layout (z_dim 48, residual up/down blocks)
    ref = diffusers.AutoencoderKLWan(base_dim=16, decoder_base_dim=16, z_dim=48, is_residual=True, in_channels=12,
                                     out_channels=12, patch_size=2, scale_factor_spatial=16)
    p = tmp_path / "wan2.2_vae.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(p))
    with pytest.raises(WrongModelError) as e:
        read_vae_state_dict(p)
    assert "Wan2.2 VAE" in _fix_named(e.value, p)
    # the original release layout of Wan2.2_VAE.pth
    p2 = tmp_path / "Wan2.2_VAE.pth"
    torch.save({"decoder.middle.0.residual.0.gamma": torch.ones(1024, 1, 1, 1),
                "decoder.upsamples.0.upsamples.0.residual.2.weight": torch.zeros(4, 4, 3, 3, 3),
                "conv2.weight": torch.zeros(48, 48, 1, 1, 1)}, p2)
    with pytest.raises(WrongModelError, match="Wan2.2 VAE"):
        read_vae_state_dict(p2)


@pytest.mark.parametrize("latent, name", [(4, "Stable Diffusion"), (16, "Flux")])
def test_image_vae_is_named(tmp_path, latent, name):
    from safetensors.torch import save_file

    ref = diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=latent)
    p = tmp_path / "image_vae.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(p))
    with pytest.raises(WrongModelError) as e:
        read_vae_state_dict(p)
    assert name in _fix_named(e.value, p)
    # the original (LDM) layout, as in sd-vae-ft-mse / ae.safetensors
    p2 = tmp_path / "ldm_vae.pth"
    torch.save({"decoder.conv_in.weight": torch.zeros(8, latent, 3, 3), "decoder.mid.block_1.norm1.weight": torch.ones(8)}, p2)
    with pytest.raises(WrongModelError, match=name):
        read_vae_state_dict(p2)


def test_other_models_and_incomplete_files(tmp_path):
    from wan4step.tiny.dit import tiny_dit_state_dict

    p = tmp_path / "dit.pth"
    torch.save(tiny_dit_state_dict(), p)
    with pytest.raises(WrongModelError, match="diffusion model"):
        read_vae_state_dict(p)
    sd = tiny_vae_state_dict()
    del sd["decoder.upsamples.5.residual.6.weight"]
    p = tmp_path / "partial.pth"
    torch.save(sd, p)
    with pytest.raises(FormatError) as e:
        read_vae_state_dict(p)
    assert "decoder.upsamples.5.residual.6.weight" in _fix_named(e.value, p)
    p = tmp_path / "random.bin"
    p.write_bytes(os.urandom(64))
    with pytest.raises(FormatError, match="unknown file format"):
        read_vae_state_dict(p)


@pytest.mark.parametrize("tile, max_pass", [(None, 96 * 2**20), (None, 2_000), ((4, 5), 2_000)])
def test_decode_progress_moves_through_the_whole_decode(small, tile, max_pass):
    """The progress callback (the node's bar in ComfyUI) counts work, not finished frames: it moves
    during the middle and inside the depth-first upsampling, never goes back, and the work it
    predicted is the work done (no jump to 100 % at the end). Small passes split every stage."""
    z = torch.randn(1, 16, 4, 6, 8, generator=torch.Generator().manual_seed(10))
    seen = []
    with torch.no_grad():
        out = tiled.decode_video(small, z, tile=tile, overlap=1, max_pass_elements=max_pass,
                                 progress=lambda d, t: seen.append((d, t)))
    assert out.shape[2] == 13
    totals = {t for _, t in seen}
    assert len(totals) == 1
    total = totals.pop()
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total
    assert len(set(done)) >= 10  # many intermediate values
    # the last callback is the last stage's own work, not a catch-up: predicted == done
    assert seen[-2][0] < total and done.count(total) == 1
    # the middle (4 latent frames) reports before any frame leaves the decoder
    assert done[3] < total / 2
