"""The estimate badges measure a loader file that is on disk from its headers, in the loader's mode.

POST /wan4step/estimate with a `model_name` (a file picked in the Model Loader, not a Download choice): the
route finds it in ComfyUI's model folders (nodes/model_files.resolve) and reads its stored bytes per part
(`formats.scan_dit`, no tensor loaded) instead of the catalog's published sizes. The file here is the tiny
VACE-merged GGUF saved under a QuantStack tier's name in a sub-folder (the name says which tier it is, the
headers how many bytes it holds); gguf's own reader gives the oracle sizes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wan4step.formats.gguf_file import write_gguf
from wan4step.tiny.dit import tiny_vace_state_dict
from wan4step.wan_config import is_vace_key

NAME = "mine/Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-Q8_0.gguf"
BODY = {"gpu": "RTX 4090", "ram_gb": 64, "width": 832, "height": 480, "frames": 81, "blocks_to_swap": 40,
        "prefetch": 2, "te_device": "cpu"}


@pytest.fixture(scope="module")
def local_file(comfy_server):
    folder = Path(comfy_server.base_dir) / "models" / "diffusion_models" / "mine"
    folder.mkdir(parents=True, exist_ok=True)
    path = write_gguf(folder / NAME.rsplit("/", 1)[-1], tiny_vace_state_dict(), "Q8_0")
    yield path
    shutil.rmtree(folder)


def _gb_loaded(line: str) -> float:
    return float(line.split("; ")[-1].split(" GB loaded")[0])


def test_a_file_on_disk_is_measured_from_its_headers_in_the_loaders_mode(comfy_server, local_file):
    from gguf import GGUFReader

    tensors = GGUFReader(local_file).tensors
    vace = sum(int(t.n_bytes) for t in tensors if is_vace_key(t.name))
    t2v = sum(int(t.n_bytes) for t in tensors) - vace
    assert vace > 0 and t2v > 0

    by_catalog = comfy_server.post_json("/wan4step/estimate", dict(BODY, weights_key="gguf_Q8_0"))
    measured = comfy_server.post_json("/wan4step/estimate", dict(BODY, model_name=NAME, mode="t2v"))
    as_vace = comfy_server.post_json("/wan4step/estimate", dict(BODY, model_name=NAME, mode="vace"))
    for est in (by_catalog, measured, as_vace):
        assert est["known"], est
    assert "read from the file's headers" not in by_catalog["lines"][0]
    assert measured["lines"][0].endswith("loaded in mode t2v (read from the file's headers)")
    assert _gb_loaded(measured["lines"][0]) == pytest.approx(t2v / 1e9, abs=0.006)
    assert _gb_loaded(as_vace["lines"][0]) == pytest.approx((t2v + vace) / 1e9, abs=0.006)
    assert ", mode vace" in as_vace["lines"][0]
    # a tiny file in place of 18.7 GB: every streamed block (the ring of three) is almost nothing
    ring_catalog = by_catalog["phase_peaks"]["sampling"] - measured["phase_peaks"]["sampling"]
    assert ring_catalog > 3 * 0.3e9


def test_a_name_not_on_disk_falls_back_to_the_catalog(comfy_server):
    est = comfy_server.post_json("/wan4step/estimate", dict(BODY, model_name="other/" + NAME.rsplit("/", 1)[-1]))
    assert est["known"] and "read from the file's headers" not in est["lines"][0]


def test_mode_vace_on_a_file_without_vace_blocks_gets_no_estimate(comfy_server):
    est = comfy_server.post_json("/wan4step/estimate", dict(BODY, weights_key="lightx2v_fp8", mode="vace"))
    assert not est["known"] and "no VACE blocks" in est["badge"]
