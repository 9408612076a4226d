"""The web badges' estimate agrees with the advisor on the settings the advisor recommends."""

from __future__ import annotations

import pytest

from wan4step import advisor, catalog
from wan4step.estimate import estimate, weights_for

NO_GPU = advisor.Machine(gpu_name=None, vram_total_bytes=0, vram_free_bytes=0, capability=None,
                         ram_total_bytes=64 * 2**30, ram_available_bytes=56 * 2**30)


def _card(name: str, ram_gb: float = 64) -> advisor.Machine:
    return advisor.with_overrides(NO_GPU, gpu=name, ram_gb=ram_gb)


@pytest.mark.parametrize("name,key", [
    ("Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-Q4_K_M.gguf", "gguf_Q4_K_M"),  # QuantStack's distilled tier
    ("Wan2.1-T2V-14B-Q4_K_M.gguf", "lora_gguf_Q4_K_M"),  # city96's base tier (names compared without case)
    ("sub/wan2.1-t2v-14b-q5_k_s.gguf", "gguf_Q5_K_S"),  # a tier the catalog has no base file of: by its tier
    ("wan2.1-t2v-14b-Q8_0.gguf", "gguf_Q8_0"),
    ("Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v/distill_fp8/", "lightx2v_fp8"),
    ("mine/distill_int8/", "lightx2v_int8"),
    ("gguf_Q6_K", "gguf_Q6_K"),  # a Download node's catalog key
])
def test_weights_are_recognized_from_loader_names(name, key):
    assert weights_for(name) is catalog.WEIGHTS[key]


@pytest.mark.parametrize("name", ["wan4step_tiny/wan2.1_t2v_tiny_Q4_K_M.gguf", "flux1-dev.gguf", "", None])
def test_unknown_or_tiny_weights_get_no_estimate(name):
    assert weights_for(name) is None
    est = estimate(NO_GPU, model_name=name, width=832, height=480, frames=81)
    assert not est.known and est.badge.startswith("Wan4Step: no estimate")


@pytest.mark.parametrize("card,size", [("RTX 4090", (1280, 720, 81)), ("RTX 4060 8GB", (832, 480, 81)),
                                       ("RTX 3090", (832, 480, 81)), ("RTX 4070 12GB", (832, 480, 33))])
def test_estimate_of_the_advisors_pick_matches_the_advisor(card, size):
    m = _card(card)
    rec = advisor.recommend(m, advisor.Request(*size))
    est = estimate(m, model_name=rec.model_name, width=size[0], height=size[1], frames=size[2],
                   blocks_to_swap=rec.blocks_to_swap, prefetch=rec.prefetch, te_name=rec.text_encoder_name,
                   te_device=rec.text_encoder_device, vae_tiling="on" if rec.vae_tiled else "off")
    assert est.known and est.fits is True
    assert est.phase_peaks == rec.phase_peaks
    assert est.step_time_s == pytest.approx(rec.step_time_s)
    # Block Swap "auto" plans the same number of blocks the advisor picked
    auto = estimate(m, model_name=rec.model_name, width=size[0], height=size[1], frames=size[2], blocks_to_swap=-1,
                    prefetch=rec.prefetch, te_name=rec.text_encoder_name, te_device="gpu_then_free")
    assert auto.blocks_to_swap == rec.blocks_to_swap and auto.blocks_auto
    assert auto.badge.startswith(f"{card}: peak ~") and "s/step" in auto.badge


def test_a_setting_that_does_not_fit_says_so_and_what_to_change():
    est = estimate(_card("RTX 4060 8GB"), model_name="Wan2.1-T2V-14B-Q8_0.gguf", width=1280, height=720, frames=81,
                   blocks_to_swap=0)
    assert est.fits is False
    assert any(line.startswith("does NOT fit") and "blocks_to_swap" in line for line in est.lines)


def test_without_a_gpu_vram_is_shown_for_reference_only():
    est = estimate(NO_GPU, model_name="Wan2.1-T2V-14B-Q4_K_M.gguf", width=832, height=480, frames=81,
                   blocks_to_swap=-1, te_device="cpu")
    assert est.known and est.fits is None and est.step_time_s is None
    assert est.gpu == "no CUDA GPU" and any("no CUDA GPU" in line for line in est.lines)


def test_bad_size_is_reported_not_raised():
    est = estimate(NO_GPU, model_name="Wan2.1-T2V-14B-Q4_K_M.gguf", width=830, height=480, frames=81)
    assert not est.known and "multiple of 16" in est.note
