"""The VRAM advisor: recipe cards, the 8 GB floor, unknown cards, CPU-only, overrides.

Machines are built from `hardware.MachineInfo` (what detection returns) or from the
card table, so these tests exercise the same path as the node, minus torch.cuda.
"""

from __future__ import annotations

import pytest

from wan4step import advisor, cards, catalog
from wan4step.advisor import Machine, Request, machine_from_info, recommend, with_overrides
from wan4step.errors import SettingsError
from wan4step.hardware import GPUInfo, MachineInfo
from wan4step.memory_model import MemoryModel, video_tokens
from wan4step.wan_config import T2V_14B

GiB = 1024**3
MODEL = MemoryModel.load()


def _info(gpus, ram_gib=64, avail_gib=None, disk_gib=500) -> MachineInfo:
    return MachineInfo(
        gpus=gpus,
        ram_total_bytes=int(ram_gib * GiB),
        ram_available_bytes=int((avail_gib if avail_gib is not None else ram_gib - 4) * GiB),
        disk_free_bytes=int(disk_gib * GiB),
        torch_version="test",
        cuda_version="12.8",
    )


def _gpu(name, total_gib, cap, free_gib=None, index=0) -> GPUInfo:
    free = total_gib - 0.6 if free_gib is None else free_gib
    return GPUInfo(index, name, int(total_gib * GiB), int(free * GiB), cap)


def _card_machine(card: str, ram_gib: float = 64) -> Machine:
    blank = Machine(None, 0, 0, None, 0, 0)
    return with_overrides(blank, gpu=card, ram_gb=ram_gib)


def _assert_fits(rec, machine: Machine) -> None:
    assert rec.fits, rec.reason
    assert rec.phase_peaks["sampling"] <= rec.usable_vram_bytes <= machine.vram_free_bytes
    assert rec.peak_vram_bytes <= machine.vram_free_bytes
    assert rec.peak_ram_bytes <= machine.ram_available_bytes
    assert rec.sampling["total"] == rec.phase_peaks["sampling"]


# ---------------------------------------------------------------------------------------
# the recipe table of DESIGN.md
# ---------------------------------------------------------------------------------------
def test_rtx_5090_fp8_all_resident():
    m = _card_machine("RTX 5090")
    rec = recommend(m, Request(832, 480, 81))
    _assert_fits(rec, m)
    assert rec.kind == "fp8" and rec.blocks_to_swap == 0 and rec.placement == "gpu"
    assert "Agrees with the recipe for RTX 5090" in rec.reason
    assert "NVFP4" in rec.reason  # sm_120: says why the NVFP4 path is not offered


def test_rtx_4090_fp8_fits_natively():
    m = _card_machine("RTX 4090")
    rec = recommend(m, Request())
    _assert_fits(rec, m)
    assert rec.kind == "fp8" and rec.blocks_to_swap == 0
    assert rec.model_name == catalog.WEIGHTS["lightx2v_fp8"].model_name
    assert "Agrees with the recipe for RTX 4090" in rec.reason


def test_rtx_3090_int8_because_no_fp8_tensor_cores():
    m = _card_machine("RTX 3090")
    rec = recommend(m, Request())
    _assert_fits(rec, m)
    assert rec.kind == "int8" and rec.blocks_to_swap == 0
    assert rec.reason.startswith("RTX 3090") and "no FP8 tensor cores, so" in rec.reason and "INT8" in rec.reason
    assert "holds all 40 blocks at 832x480x81" in rec.reason


def test_rtx_4080_super_fp8_and_the_text_encoder_off_the_gpu_while_sampling():
    m = _card_machine("RTX 4080 SUPER")
    rec = recommend(m, Request())
    _assert_fits(rec, m)
    assert rec.kind == "fp8"
    assert rec.text_encoder_device in ("cpu", "gpu_then_free")
    assert rec.sampling["text_encoder"] == 0
    assert "Agrees with the recipe for RTX 4080 SUPER" in rec.reason
    if rec.text_encoder_device == "gpu_then_free":  # the reason must say why that is better than the recipe's CPU
        assert "keeps the UMT5 on the CPU" in rec.reason and "faster" in rec.reason
    fit = recommend(m, Request(priority="fit"))  # the recipe's exact path
    _assert_fits(fit, m)
    assert fit.kind == "fp8" and fit.text_encoder_device == "cpu" and fit.vae_tiled


def test_rtx_5070_fp8_block_offload_and_text_encoder_offload():
    m = _card_machine("RTX 5070")
    rec = recommend(m, Request())
    _assert_fits(rec, m)
    assert rec.kind == "fp8" and rec.blocks_to_swap > 0 and rec.placement == "stream"
    assert rec.text_encoder_device != "gpu"
    assert "Agrees with the recipe for RTX 5070" in rec.reason


@pytest.mark.parametrize("card", ["RTX 4060 8GB", "RTX 3070 8GB (override)"])
def test_8gb_floor_full_offload_with_16gb_ram(card):
    if card.startswith("RTX 4060"):
        m = _card_machine(card, ram_gib=16)
    else:  # a card not in the table, planned from typed-in numbers: 8 GB, sm_86
        m = with_overrides(Machine(None, 0, 0, None, 0, 0), gpu="NVIDIA GeForce RTX 3070", vram_gb=8,
                           capability="8.6", ram_gb=16)
    rec = recommend(m, Request())
    _assert_fits(rec, m)
    assert rec.blocks_to_swap >= 30
    assert rec.text_encoder_device != "gpu" and rec.sampling["text_encoder"] == 0
    assert rec.peak_ram_bytes <= 16 * GiB
    assert "floor" in rec.reason


def test_priority_quality_differs_from_the_recipe_and_says_why():
    m = _card_machine("RTX 4090")
    rec = recommend(m, Request(priority="quality"))
    _assert_fits(rec, m)
    assert rec.kind == "bf16" and rec.blocks_to_swap > 0
    assert "you asked for quality" in rec.reason
    assert any(a.startswith("speed: LightX2V FP8") for a in rec.alternatives)


# ---------------------------------------------------------------------------------------
# detection paths
# ---------------------------------------------------------------------------------------
def test_detected_known_card_uses_detected_free_memory():
    info = _info([_gpu("NVIDIA GeForce RTX 4090", 23.99, (8, 9), free_gib=12.0)])
    m = machine_from_info(info)
    assert m.vram_free_bytes == int(12.0 * GiB) + MODEL.context_bytes
    rec = recommend(m)
    _assert_fits(rec, m)
    assert rec.kind == "fp8" and rec.blocks_to_swap > 0  # only half the card is free: stream
    assert "not detected" not in rec.reason


def test_unknown_card_gets_an_answer_from_its_numbers():
    info = _info([_gpu("NVIDIA GeForce RTX 4070 Ti SUPER", 15.99, (8, 9))], ram_gib=32)
    m = machine_from_info(info)
    assert cards.find_card(m.gpu_name, m.vram_total_bytes) is None
    rec = recommend(m)
    _assert_fits(rec, m)
    assert rec.kind == "fp8"
    assert "not in the known-card table" in rec.reason
    assert rec.step_time_s is not None and "nearest known card" in rec.time_basis and "rough" in rec.time_basis


def test_unknown_architecture_gets_gguf():
    m = with_overrides(Machine(None, 0, 0, None, 0, 0), gpu="Mystery GPU", vram_gb=24, ram_gb=64)
    assert m.capability is None
    rec = recommend(m)
    _assert_fits(rec, m)
    assert rec.kind == "gguf"


def test_cpu_only_machine():
    m = machine_from_info(_info([], ram_gib=64))
    assert not m.has_gpu
    rec = recommend(m)
    assert rec.text_encoder_device == "cpu" and rec.blocks_to_swap == 0 and rec.step_time_s is None
    assert rec.reason.startswith("No CUDA GPU found") and rec.fits
    assert rec.peak_ram_bytes <= m.ram_available_bytes
    tiny = recommend(machine_from_info(_info([], ram_gib=8)))
    assert not tiny.fits and "only" in tiny.reason


def test_multi_gpu_plans_for_comfyuis_gpu_and_says_so():
    info = _info([_gpu("NVIDIA GeForce RTX 3090", 24, (8, 6), index=0),
                  _gpu("NVIDIA GeForce RTX 4090", 24, (8, 9), index=1)])
    on0 = recommend(machine_from_info(info, gpu_index=0))
    on1 = recommend(machine_from_info(info, gpu_index=1))
    assert on0.kind == "int8" and on1.kind == "fp8"
    assert any("2 GPUs found" in w and "GPU 1" in w for w in on1.warnings)
    assert machine_from_info(info, gpu_index=7).gpu_count == 2  # a bad index falls back to the largest GPU


def test_every_detected_value_can_be_overridden():
    detected = machine_from_info(_info([_gpu("NVIDIA GeForce RTX 4090", 24, (8, 9))], ram_gib=64, disk_gib=500))
    as_3090 = with_overrides(detected, gpu="RTX 3090")
    assert as_3090.capability == (8, 6) and as_3090.sources["gpu"] == "card table"
    assert recommend(as_3090).kind == "int8"
    no_fp8 = with_overrides(detected, capability="8.6")
    assert recommend(no_fp8).kind != "fp8"
    small = with_overrides(detected, vram_gb=12)
    assert small.vram_total_bytes == 12 * GiB and recommend(small).blocks_to_swap > 0
    tight = with_overrides(detected, free_vram_gb=10)
    assert tight.vram_free_bytes == 10 * GiB
    ram = with_overrides(detected, ram_gb=16)
    assert ram.ram_total_bytes == 16 * GiB and ram.ram_available_bytes < 16 * GiB
    disk = with_overrides(detected, disk_gb=5)
    assert any("disk" in w for w in recommend(disk).warnings)
    cpu = with_overrides(detected, gpu="none")
    assert not cpu.has_gpu and recommend(cpu).reason.startswith("No CUDA GPU")


# ---------------------------------------------------------------------------------------
# never recommend something that does not fit
# ---------------------------------------------------------------------------------------
SIZES = [(832, 480, 81), (512, 288, 33), (1280, 720, 81), (1280, 720, 33)]


@pytest.mark.parametrize("card", cards.card_names())
def test_no_recommendation_exceeds_its_budget(card):
    for ram in (16, 64):
        m = _card_machine(card, ram_gib=ram)
        for w, h, f in SIZES:
            for prio in advisor.PRIORITIES:
                rec = recommend(m, Request(w, h, f, priority=prio))
                if rec.fits:
                    _assert_fits(rec, m)
                else:
                    assert "Fix:" in rec.reason


@pytest.mark.parametrize("budget", [8, 12, 16, 24, 32])
def test_emulated_budgets_of_the_benchmark_fit(budget):
    """The bench's machines: an H100 with a ballast leaving `budget` GiB."""
    m = with_overrides(Machine(None, 0, 0, None, 0, 0), gpu="H100 SXM", vram_gb=budget, free_vram_gb=budget, ram_gb=128)
    rec = recommend(m, Request(832, 480, 81))
    _assert_fits(rec, m)
    assert rec.kind == "fp8"


def test_too_big_says_how_many_frames_fit():
    m = _card_machine("RTX 4060 8GB", ram_gib=32)
    rec = recommend(m, Request(1280, 720, 81))
    assert not rec.fits and "at most" in rec.reason
    frames = int(rec.reason.split("at most ")[1].split(" frames")[0])
    assert 1 <= frames < 81 and (frames - 1) % 4 == 0
    smaller = recommend(m, Request(1280, 720, frames))
    _assert_fits(smaller, m)


# ---------------------------------------------------------------------------------------
# the numbers behind it
# ---------------------------------------------------------------------------------------
def test_memory_model_matches_the_architecture():
    assert video_tokens(832, 480, 81) == 32_760 and video_tokens(1280, 720, 81) == 75_600
    bf16 = catalog.WEIGHTS["lightx2v_bf16"]
    assert MODEL.block_bytes(bf16) == pytest.approx(2 * T2V_14B.block_param_count(), rel=0.01)
    fp8 = catalog.WEIGHTS["lightx2v_fp8"]
    assert MODEL.block_bytes(fp8) == pytest.approx(T2V_14B.block_param_count(), rel=0.01)
    q4 = catalog.WEIGHTS["gguf_Q4_K_M"]
    # the loaded bytes, not the download: the QuantStack tier's VACE blocks are never read in t2v mode
    assert MODEL.weights_bytes(q4) == pytest.approx(q4.load_bytes, rel=0.01)
    assert q4.load_bytes < q4.size_bytes
    # streaming k blocks frees k blocks and costs a ring of prefetch + 1 slots
    a, b = MODEL.sampling_vram(fp8, 32_760, 0), MODEL.sampling_vram(fp8, 32_760, 10, prefetch=1)
    # (the calibrated overhead grows with the resident weights, not with the ring)
    assert a.total - b.total == pytest.approx(10 * 352e6 - 2 * 352e6 + MODEL.data["resident_overhead_frac"] * 10 * 352e6,
                                              rel=1e-6)
    assert MODEL.status in ("uncalibrated", "calibrated")


def test_time_model_reproduces_the_h100_measurements():
    h100 = cards.by_name("H100 SXM")
    bf16 = catalog.WEIGHTS["lightx2v_bf16"]
    s480, _ = advisor.estimate_step_time(MODEL, bf16, 32_760, 0, "gpu", "sdpa", h100)
    s720, _ = advisor.estimate_step_time(MODEL, bf16, 75_600, 0, "gpu", "sdpa", h100)
    assert s480 / 40 == pytest.approx(0.074, rel=0.05)  # DESIGN.md: 74 ms per block at 480p
    assert s720 / 40 == pytest.approx(0.291, rel=0.05)  # 291 ms at 720p


def test_step_time_states_its_basis():
    rec = recommend(_card_machine("RTX 4090"))
    assert rec.step_time_s and rec.total_time_s == pytest.approx(4 * rec.step_time_s)
    assert "estimate" in rec.time_basis and "H100" in rec.time_basis and "RTX 4090" in rec.time_basis
    assert "estimate" in rec.reason
    assert "uncalibrated" in rec.report() or MODEL.calibrated


def test_known_cards_table():
    names = set(cards.card_names())
    for required in ["RTX 3060 12GB", "RTX 3080 10GB", "RTX 3090", "RTX 4060 8GB", "RTX 4070 12GB", "RTX 4080 SUPER",
                     "RTX 4090", "RTX 5070", "RTX 5080", "RTX 5090", "A100 80GB", "H100 SXM", "L40S"]:
        assert required in names
    for c in cards.load_cards():
        assert c.bf16_tflops > 0 and c.mem_bw_gbs > 0 and c.pcie_gbs > 0 and c.vram_bytes > 0
        assert (c.fp8_tflops is not None) == (c.capability >= (8, 9)), c.name


@pytest.mark.parametrize("device, vram_gib, expected", [
    ("NVIDIA GeForce RTX 4080 SUPER", 16, "RTX 4080 SUPER"),
    ("NVIDIA GeForce RTX 4080", 16, None),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", 6, None),
    ("NVIDIA GeForce RTX 3060 Ti", 8, None),
    ("NVIDIA GeForce RTX 3060", 12, "RTX 3060 12GB"),
    ("NVIDIA H100 80GB HBM3", 80, "H100 SXM"),
    ("NVIDIA H100 PCIe", 80, "H100 PCIe"),
    ("NVIDIA A100-SXM4-40GB", 40, "A100 40GB"),
    ("NVIDIA A100 80GB PCIe", 80, "A100 80GB"),
    ("NVIDIA L40S", 45, "L40S"),
    ("NVIDIA GeForce RTX 5090", 32, "RTX 5090"),
])
def test_device_names_match_the_table(device, vram_gib, expected):
    card = cards.find_card(device, int(vram_gib * GiB))
    assert (card.name if card else None) == expected


def test_bad_requests_are_settings_errors():
    m = _card_machine("RTX 4090")
    with pytest.raises(SettingsError, match="multiple of 16"):
        recommend(m, Request(830, 480, 81))
    with pytest.raises(SettingsError, match="4n\\+1"):
        recommend(m, Request(832, 480, 80))
    with pytest.raises(SettingsError, match="priority"):
        Request(priority="fastest")


@pytest.mark.parametrize("free_gib", [6, 9, 14, 20, 24, 40])
def test_block_swap_auto_uses_the_advisors_arithmetic(free_gib):
    """Wan4Step Block Swap's auto (sizes measured from the loaded modules) = the advisor's k."""
    fp8 = catalog.WEIGHTS["lightx2v_fp8"]
    free = int(free_gib * GiB)
    k = MODEL.auto_blocks_to_swap(block_bytes=MODEL.block_bytes(fp8), non_block_bytes=MODEL.non_block_bytes(fp8),
                                  n_blocks=40, kind="fp8", tokens=32_760, free_bytes=free, prefetch=2)
    headroom = max(MODEL.decision("headroom_min_bytes"), int(MODEL.decision("headroom_frac") * free))
    expect = MODEL.min_blocks_to_swap(fp8, 32_760, free - headroom + MODEL.context_bytes, prefetch=2)
    assert k == (40 if expect is None else expect)
    # H100-measured: FP8 at 480p peaks at 17.7 GiB resident, 5.7 GiB with 39 blocks streamed
    # (docs/bench/advisor_s4.log); resident needs that plus the advisor's headroom
    assert (k == 0) == (free_gib >= 20) and (k >= 39) == (free_gib <= 6)


def test_block_swap_auto_leaves_room_for_the_vae_decode():
    """At 288x512x33 the tiled VAE decode (~2 GiB) needs more than sampling's activations: "auto" (given
    the video's size, as Block Swap computes it from the latent) streams enough blocks that the decode
    fits beside the resident weights, as the advisor's plan does."""
    fp8 = catalog.WEIGHTS["lightx2v_fp8"]
    free = 12 * GiB
    common = dict(block_bytes=MODEL.block_bytes(fp8), non_block_bytes=MODEL.non_block_bytes(fp8), n_blocks=40,
                  kind="fp8", tokens=5_184, free_bytes=free, prefetch=2)
    sampling_only = MODEL.auto_blocks_to_swap(**common)
    with_vae = MODEL.auto_blocks_to_swap(**common, pixel_frames=512 * 288 * 33)
    assert with_vae > sampling_only
    headroom = max(MODEL.decision("headroom_min_bytes"), int(MODEL.decision("headroom_frac") * free))
    s = MODEL.sampling_vram(fp8, 5_184, with_vae, prefetch=2)
    assert MODEL.vae_vram(512 * 288 * 33, tiled=True, resident_bytes=s.weights + s.ring) <= free - headroom + MODEL.context_bytes


# ---------------------------------------------------------------------------------------
# base model + distill LoRA
# ---------------------------------------------------------------------------------------
def test_distilled_file_beats_base_plus_lora_and_the_lora_route_is_listed():
    rec = recommend(_card_machine("RTX 4090", ram_gib=64))
    assert rec.route == "distilled" and rec.lora_name is None
    assert any(a.startswith("base + distill LoRA: base FP8") for a in rec.alternatives)


def test_base_plus_lora_when_only_its_download_fits_the_disk():
    """The base model already on disk (Comfy-Org fp8_scaled) and 12 GiB free: the LightX2V FP8 folder
    (15 GB) does not fit, the 631 MB LoRA does; merged at load it steps as fast as the distilled file."""
    base = catalog.WEIGHTS["lora_fp8"].files[0]
    m = with_overrides(_card_machine("RTX 4090", ram_gib=64), disk_gb=12)
    rec = recommend(m, Request(present=frozenset({base.dest})))
    assert rec.weights_key == "lora_fp8" and rec.kind == "fp8"
    assert rec.lora_name == catalog.LORA_FILES[catalog.DEFAULT_LORA].name and rec.model_name == base.dest
    assert rec.download_bytes < 12 * GiB and not any("disk" in w for w in rec.warnings)
    assert "distill LoRA" in rec.reason and "merged into the weights at load" in rec.reason
    assert "lora_name = " in rec.report()
    same = recommend(_card_machine("RTX 4090", ram_gib=64), Request(present=frozenset({base.dest})))
    assert rec.step_time_s == pytest.approx(same.step_time_s)  # the same step as the distilled FP8 pick


def test_base_plus_lora_needs_ram_for_the_merge():
    """Merging writes the merged weights into RAM at load: a BF16 base needs its 28.6 GB there."""
    bf16 = catalog.WEIGHTS["lora_bf16"]
    assert MODEL.host_ram(bf16, 0, "gpu") >= bf16.load_bytes
    assert MODEL.host_ram(catalog.WEIGHTS["lightx2v_bf16"], 0, "gpu") < bf16.load_bytes
