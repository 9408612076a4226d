"""The advisor with files already on disk (`Request.present`) and in the Model Loader's VACE mode.

- A DiT already in ComfyUI's model folders wins over downloading one that is no faster: the
  Comfy-Org base on disk makes base + distill LoRA the pick, a 0.63 GB download, and the reason
  says so; a present file that is slower is named as an alternative, never picked.
- Mode vace plans ComfyUI's VACE model: only VACE-merged files, their VACE bytes loaded (the
  memory model's blocks grow by them), 48 blocks per forward (the step 1.2x), and the estimate
  badge agrees with the advisor on the same settings.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan4step import catalog
from wan4step.advisor import Machine, Request, estimate_step_time, recommend, with_overrides
from wan4step.cards import by_name
from wan4step.errors import SettingsError
from wan4step.estimate import estimate
from wan4step.formats.scan import DiTScan
from wan4step.memory_model import MemoryModel, video_tokens

MODEL = MemoryModel.load()
BASE_FP8 = catalog.WEIGHTS["lora_fp8"].files[0].dest  # Comfy-Org's wan2.1_t2v_14B_fp8_scaled.safetensors
LORA = catalog.LORA_FILES[catalog.DEFAULT_LORA]


def _card(name: str, ram_gb: float = 64, disk_gb: float = 500) -> Machine:
    return with_overrides(Machine(None, 0, 0, None, 0, 0), gpu=name, ram_gb=ram_gb, disk_gb=disk_gb)


# ---- files already on disk ------------------------------------------------------------------
def test_the_base_on_disk_makes_base_plus_lora_the_pick_and_the_reason_says_so():
    rec = recommend(_card("RTX 4090"), Request(present=frozenset({BASE_FP8})))
    assert rec.weights_key == "lora_fp8" and rec.route == "base+lora"
    assert rec.model_name == BASE_FP8 and rec.lora_name == LORA.name
    assert "base already on disk: base + LoRA needs only the 0.63 GB LoRA" in rec.reason
    te, vae = catalog.text_encoder(rec.text_encoder_key), catalog.vae(rec.vae_key)
    assert rec.download_bytes == LORA.size_bytes + te.size_bytes + vae.size_bytes  # the base is not fetched again
    assert any(a.startswith("distilled file: LightX2V FP8") for a in rec.alternatives), rec.alternatives
    distilled = recommend(_card("RTX 4090"))
    assert distilled.weights_key == "lightx2v_fp8"  # nothing on disk: the distilled file, as before
    assert rec.step_time_s == pytest.approx(distilled.step_time_s)  # merged at load: the same step


def test_with_everything_on_disk_nothing_is_downloaded():
    files = catalog.files_for(weights_key="lora_fp8", text_encoder_key="umt5_fp8", vae_key=catalog.DEFAULT_VAE)
    rec = recommend(_card("RTX 4090"), Request(present=frozenset(f.dest for f in files)))
    assert rec.weights_key == "lora_fp8" and rec.download_bytes == 0
    assert "(" not in rec.reason.split("needs only the 0.63 GB LoRA")[1][:3]  # no "with the text encoder" remark


def test_quality_priority_still_wants_the_distilled_release():
    rec = recommend(_card("RTX 4090"), Request(priority="quality", present=frozenset({BASE_FP8})))
    assert rec.route == "distilled"


def test_a_slower_file_on_disk_is_named_not_picked():
    q4 = catalog.WEIGHTS["gguf_Q4_K_M"].files[0].dest
    rec = recommend(_card("RTX 4090"), Request(present=frozenset({q4})))
    assert rec.weights_key == "lightx2v_fp8"  # FP8 is more than the speed tie faster on sm_89
    alt = [a for a in rec.alternatives if a.startswith("already on disk: ")]
    assert len(alt) == 1 and "GGUF" in alt[0] and "downloads 7.0 GB instead of 22.0 GB" in alt[0], alt


def test_a_distilled_folder_on_disk_is_used_as_is():
    fp8 = catalog.WEIGHTS["lightx2v_fp8"]
    rec = recommend(_card("RTX 4090"), Request(present=frozenset(f.dest for f in fp8.files) | {BASE_FP8}))
    assert rec.weights_key == "lightx2v_fp8"  # both on disk: the better network
    assert "already on disk: nothing to download for the DiT" in rec.reason


# ---- mode vace ------------------------------------------------------------------------------
def test_vace_mode_picks_only_vace_merged_files_and_loads_their_vace_blocks():
    t2v = recommend(_card("RTX 4090"), Request(formats=("gguf",)))
    vace = recommend(_card("RTX 4090"), Request(mode="vace"))
    assert vace.mode == "vace" and catalog.WEIGHTS[vace.weights_key].has_vace and vace.kind == "gguf"
    assert vace.weights_key == t2v.weights_key == "gguf_Q8_0"
    assert vace.blocks_to_swap > t2v.blocks_to_swap  # 3.2 GB more to hold
    assert "mode vace (WanVaceToVideo)" in vace.reason and "mode vace needs a VACE-merged file" in vace.reason
    assert vace.report().splitlines()[2].endswith(", mode = vace")
    q8 = catalog.WEIGHTS["gguf_Q8_0"]
    as_vace = catalog.in_mode(q8, "vace")
    assert as_vace.load_bytes == q8.size_bytes == q8.load_bytes + q8.vace_bytes  # the whole file
    assert MODEL.block_bytes(as_vace) > MODEL.block_bytes(q8)


def test_vace_blocks_cost_a_fifth_more_compute_and_their_activations():
    card = by_name("RTX 4090")
    q8 = catalog.WEIGHTS["gguf_Q8_0"]
    tokens = video_tokens(832, 480, 81)
    t2v, _ = estimate_step_time(MODEL, q8, tokens, 0, "gpu", "sdpa", card)
    vace, _ = estimate_step_time(MODEL, catalog.in_mode(q8, "vace"), tokens, 0, "gpu", "sdpa", card)
    assert vace == pytest.approx(t2v * 48 / 40, rel=1e-3)  # 8 VACE blocks beside the 40 (+ larger blocks to decode)
    a = MODEL.sampling_vram(q8, tokens, 40, 2)
    b = MODEL.sampling_vram(catalog.in_mode(q8, "vace"), tokens, 40, 2)
    assert b.activations - a.activations == MODEL.data["vace"]["act_bytes_per_token"] * tokens


def test_vace_mode_without_a_vace_format_is_refused_by_name():
    with pytest.raises(SettingsError, match="carries the VACE blocks"):
        Request(mode="vace", formats=("fp8",))
    with pytest.raises(SettingsError, match="unknown mode"):
        Request(mode="i2v")
    with pytest.raises(SettingsError, match="unknown mode"):
        catalog.in_mode(catalog.WEIGHTS["gguf_Q8_0"], "vace2")


def test_the_estimate_badge_agrees_with_the_advisor_in_vace_mode():
    rec = recommend(_card("RTX 4080 SUPER", 32), Request(mode="vace"))
    est = estimate(_card("RTX 4080 SUPER", 32), model_name=rec.weights_key, width=832, height=480, frames=81,
                   blocks_to_swap=rec.blocks_to_swap, prefetch=rec.prefetch, te_name=rec.text_encoder_key,
                   te_device=rec.text_encoder_device, vae_tiling="on" if rec.vae_tiled else "off", mode="vace")
    assert est.known and est.phase_peaks["sampling"] == rec.phase_peaks["sampling"]
    assert est.step_time_s == pytest.approx(rec.step_time_s)
    assert ", mode vace" in est.lines[0]
    plain = estimate(_card("RTX 4080 SUPER", 32), model_name="lightx2v_fp8", width=832, height=480, frames=81,
                     mode="vace")
    assert not plain.known and "no VACE blocks" in plain.badge


def test_the_estimate_uses_the_files_own_headers_when_it_is_on_disk():
    """A scanned file's stored bytes replace the catalog's published sizes (here a VACE tier whose
    VACE part measured larger than the catalog's lower bound): mode t2v ignores the VACE part."""
    q8 = catalog.WEIGHTS["gguf_Q8_0"]
    scan = DiTScan(None, "gguf", t2v_bytes=q8.loaded_bytes - 10**9, vace_bytes=q8.vace_bytes + 10**9)
    kw = dict(model_name=q8.model_name, width=832, height=480, frames=81, blocks_to_swap=40, prefetch=2)
    catalog_t2v = estimate(_card("RTX 4090"), **kw)
    measured_t2v = estimate(_card("RTX 4090"), **kw, scan=scan)
    measured_vace = estimate(_card("RTX 4090"), **kw, scan=scan, mode="vace")
    ring = 3  # prefetch 2: three streamed blocks on the GPU at a time
    # all 40 blocks streamed: only the ring holds blocks, each 1 GB / 40 smaller than the catalog says
    assert catalog_t2v.phase_peaks["sampling"] - measured_t2v.phase_peaks["sampling"] == pytest.approx(
        ring * 10**9 / 40, abs=ring)
    assert "loaded in mode t2v (read from the file's headers)" in measured_t2v.lines[0]
    assert f"{scan.loaded_bytes('vace') / 1e9:.2f} GB loaded in mode vace" in measured_vace.lines[0]
    assert measured_vace.phase_peaks["sampling"] > measured_t2v.phase_peaks["sampling"]


def test_an_fp8_folder_measured_on_disk_counts_its_real_blocks():
    fp8 = catalog.WEIGHTS["lightx2v_fp8"]
    big = DiTScan(None, "lightx2v", t2v_bytes=fp8.size_bytes + 40 * 10**8, vace_bytes=0)
    kw = dict(model_name=fp8.model_name, width=832, height=480, frames=81, blocks_to_swap=0)
    assert (estimate(_card("RTX 4090"), **kw, scan=big).phase_peaks["sampling"]
            > estimate(_card("RTX 4090"), **kw).phase_peaks["sampling"])
    same = DiTScan(None, "lightx2v", t2v_bytes=MODEL.weights_bytes(fp8), vace_bytes=0)
    assert MODEL.block_bytes(replace(fp8, loaded_bytes=same.t2v_bytes)) == MODEL.block_bytes(fp8)
