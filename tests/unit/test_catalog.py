"""The catalog names only files that exist, with their published sizes, and README's table is the catalog's.

CITED is written from the public listings, independently of wan4step/catalog.py: a name or size
that drifts in one place and not the other fails here. Sizes are as listed (HF rounds to 3 digits;
exact byte counts where an LFS pointer was found).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wan4step import catalog

GB, MB = 1e9, 1e6
QS = "QuantStack/Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-GGUF"
QS_SRC = ("DESIGN.md 'QuantStack GGUF of the distilled model'; repo + file template as public scripts use them "
          "(GGUF_REPO_14B / GGUF_FILE_TEMPLATE = 'Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-{quant}.gguf')")
C96 = "city96/Wan2.1-T2V-14B-gguf"
C96_SRC = "https://huggingface.co/city96/Wan2.1-T2V-14B-gguf/tree/main (+ blob pages of Q5_K_M, Q6_K)"
COMFY = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
LX = "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
LXD = "lightx2v/Wan2.1-Distill-Models"
LXD_SRC = ("https://huggingface.co/lightx2v/Wan2.1-Distill-Models model card ('BF16 ~28-32 GB', 'FP8/INT8 ~15-17 GB'); "
           "names: ModelTC/LightX2V docs/EN/source/getting_started/model_structure.md")

# (repo, path) -> (published bytes, approximate?, source)
CITED: dict[tuple[str, str], tuple[float, bool, str]] = {
    **{(QS, f"Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-{t}.gguf"): (gb * GB, False, QS_SRC) for t, gb in {
        "Q2_K": 6.36, "Q3_K_S": 7.84, "Q3_K_M": 8.64, "Q3_K_L": 9.37, "Q4_0": 10.3, "Q4_K_S": 10.6, "Q4_1": 11.2,
        "Q4_K_M": 11.6, "Q5_K_S": 12.3, "Q5_0": 12.5, "Q5_K_M": 13.0, "Q5_1": 13.3, "Q6_K": 14.5, "Q8_0": 18.7}.items()},
    **{(C96, f"wan2.1-t2v-14b-{t}.gguf"): (gb * GB, False, C96_SRC) for t, gb in {
        "Q3_K_S": 6.99, "Q3_K_M": 7.65, "Q4_0": 9.03, "Q4_K_S": 9.22, "Q4_1": 9.73, "Q4_K_M": 10.1, "Q5_0": 10.8,
        "Q5_K_M": 11.3, "Q5_1": 11.5, "Q6_K": 12.5}.items()},
    (COMFY, "split_files/diffusion_models/wan2.1_t2v_14B_bf16.safetensors"): (28.6 * GB, False,
        "HF listing of a mirror of Comfy-Org split_files/diffusion_models (wan2.1_t2v_14B_bf16 28.6 GB)"),
    (COMFY, "split_files/diffusion_models/wan2.1_t2v_14B_fp8_scaled.safetensors"): (14.3 * GB, False,
        "fp8_e4m3fn twin 14.3 GB on its Comfy-Org blob page; approx_gb 14.3 in a public manifest"),
    (COMFY, "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"): (6_735_906_897, False,
        "Comfy-Org commit dfcea77 LFS pointer"),
    (COMFY, "split_files/text_encoders/umt5_xxl_fp16.safetensors"): (11_366_399_385, False,
        "Comfy-Org commit dfcea77 LFS pointer"),
    (COMFY, "split_files/vae/wan_2.1_vae.safetensors"): (254 * MB, False,
        "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/vae"),
    (LX, "distill_fp8/block_*.safetensors"): (14.1 * GB, True, "DESIGN.md 'Facts': 40 block files ~352 MB, ~14.1 GB"),
    (LX, "distill_int8/block_*.safetensors"): (14.1 * GB, True, "DESIGN.md 'Facts'"),
    (LX, "distill_fp8/non_block.safetensors"): (0.93 * GB, False, "DESIGN.md 'Facts'"),
    (LX, "distill_int8/non_block.safetensors"): (0.93 * GB, False, "DESIGN.md 'Facts'"),
    (LX, "distill_models/distill_model.safetensors"): (28.6 * GB, False,
        "DESIGN.md 'Facts'; path linked from LightX2V's docs (configs table, hugging-face link)"),
    (LXD, "wan2.1_t2v_14b_lightx2v_4step.safetensors"): (28.6 * GB, True, LXD_SRC),
    (LXD, "wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step.safetensors"): (15.0 * GB, True, LXD_SRC),
    (LXD, "wan2.1_t2v_14b_int8_lightx2v_4step.safetensors"): (15.0 * GB, True, LXD_SRC),
    (LXD, "wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step_comfyui.safetensors"): (15.0 * GB, True, LXD_SRC),
    ("lightx2v/Wan2.1-Distill-Loras", "wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors"): (631 * MB, False,
        "https://huggingface.co/lightx2v/Wan2.1-Distill-Loras/tree/main"),
    ("Kijai/WanVideo_comfy", "Lightx2v/lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors"): (
        631 * MB, True, "path in public download scripts/workflows; 631 MB in a public model list, 0.6 GiB in another"),
    ("Kijai/WanVideo_comfy", "Lightx2v/lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank128_bf16.safetensors"): (
        1_253_192_432, False, "LFS pointer of a copy 'Uploaded ... from Kijai/WanVideo_comfy' (sha256 ef33de1a...)"),
}


def _specs():
    out = [s for w in catalog.WEIGHTS.values() for s in w.files]
    out += [s for c in [*catalog.TEXT_ENCODERS_TABLE.values(), *catalog.VAES.values(), *catalog.LORA_FILES.values()]
            for s in c.files]
    return out


def test_every_catalog_file_is_a_cited_real_file_with_its_published_size():
    for spec in _specs():
        assert (spec.repo_id, spec.pattern) in CITED, f"{spec.repo_id}/{spec.pattern} is not in the cited list"
        size, approx, source = CITED[(spec.repo_id, spec.pattern)]
        assert source
        assert spec.size_bytes == pytest.approx(size, rel=0.005 if not approx else 0.01), spec.pattern


def test_no_invented_repositories():
    repos = {s.repo_id for s in _specs()}
    assert "QuantStack/Wan2.1-T2V-14B-GGUF" not in repos  # never existed (issue 16)
    assert repos == {r for r, _ in CITED}


def test_choice_sizes_add_up_and_base_plus_lora_carries_its_lora():
    for w in catalog.WEIGHTS.values():
        assert w.size_bytes == pytest.approx(sum(s.size_bytes for s in w.files), rel=1e-3), w.key
        if w.route == "base+lora":
            lora = [s for s in w.files if s.folder == catalog.LORAS]
            assert len(lora) == 1 and w.lora_name == lora[0].dest
            assert w.model_name == next(s.dest for s in w.files if s.folder == catalog.DIFFUSION_MODELS)
        else:
            assert w.lora_name is None


def test_vace_tiers_load_less_than_they_download_and_about_the_base_model_of_their_tier():
    """t2v mode skips the VACE blocks: what is left is the T2V-14B at that tier, which city96
    publishes for the base model (converted with the same scripts). The computed share is an upper
    bound (VACE counted at the tier's main type), within a few percent of city96's sizes."""
    for tier in catalog.GGUF_TIERS:
        w = catalog.WEIGHTS[f"gguf_{tier}"]
        assert w.load_bytes < w.size_bytes
        assert 0.80 < catalog.vace_loaded_share(tier) < 0.90
        if tier in catalog.BASE_GGUF_TIERS:
            base = catalog.BASE_GGUF_TIERS[tier] * GB
            assert w.load_bytes == pytest.approx(base, rel=0.07), tier
    # the architecture: 8 VACE blocks of a full Wan block + after_proj, before_proj once, a 96-channel patch conv
    assert catalog.VACE_LINEAR_PARAMS == 8 * (351_272_960 + 5120**2) + 5120**2 + 5120 * 96 * 4


def test_gguf_file_names_are_quantstacks():
    assert catalog.gguf_file_name("Q4_K_M") == "Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-Q4_K_M.gguf"
    assert catalog.WEIGHTS["gguf_Q4_K_M"].files[0].repo_id == catalog.GGUF_REPO


def test_files_land_in_folders_comfyuis_loaders_list():
    folders = {s.folder for s in _specs()}
    assert folders == {"diffusion_models", "text_encoders", "vae", "loras"}


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_file_table_is_the_catalogs():
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- catalog:files:begin -->\n(.*?)\n<!-- catalog:files:end -->", text, re.S)
    assert m, "README.md lacks the generated file table (run python scripts/readme_files.py)"
    assert m.group(1).strip() == catalog.markdown_table().strip(), "README file table is stale: python scripts/readme_files.py"
