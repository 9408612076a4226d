"""Text to video end to end through a real headless ComfyUI: every DiT format writes a right-sized mp4."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest

from wan4step.comfy_client import output_files
from wan4step.tiny import bundle
from wan4step_dev.fixtures.tiny_models import write_tiny_models

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"


@pytest.fixture(scope="module")
def tiny_server(comfy_server):
    write_tiny_models(comfy_server.base_dir / "models")
    return comfy_server


def _frames(data: bytes) -> tuple[int, int, int]:
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = [f for f in c.decode(video=0)]
        return len(frames), frames[0].width, frames[0].height


@pytest.mark.parametrize("model", [bundle.DIT_BF16, bundle.DIT_GGUF, bundle.DIT_FP8, bundle.DIT_INT8])
def test_t2v_writes_mp4(tiny_server, model):
    wf = json.loads(WORKFLOW.read_text())
    wf["1"]["inputs"]["model_name"] = model
    wf["4"]["inputs"].update(width=64, height=48, length=9)
    hist = tiny_server.run(wf, timeout=600)
    files = [f for f in output_files(hist) if f["filename"].endswith(".mp4")]
    assert len(files) == 1
    data = tiny_server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"])
    assert _frames(data) == (9, 64, 48)


def test_bad_size_is_rejected_with_the_nearest_valid_values(tiny_server):
    from wan4step.comfy_client import ComfyAPIError

    wf = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    wf["4"]["inputs"].update(width=72, height=48, length=9)  # 72 = 9 latent columns: not a multiple of 16
    with pytest.raises(ComfyAPIError) as err:
        tiny_server.run(wf, timeout=300)
    assert "width 72 is not divisible by 16 (nearest valid: 64 or 80)" in str(err.value)


def _vace_workflow(mode: str) -> dict:
    """The demo graph with core's WanVaceToVideo (control video + reference image) between prompt and sampler,
    and TrimVideoLatent dropping the reference frame before decoding."""
    wf = json.loads(WORKFLOW.read_text())
    wf["1"]["inputs"].update(model_name=bundle.DIT_VACE_GGUF, mode=mode)
    wf["20"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 9, "color": 0x336699}}
    wf["21"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xCC3300}}
    wf["22"] = {"class_type": "WanVaceToVideo", "inputs": {
        "positive": ["3", 0], "negative": ["3", 0], "vae": ["6", 0], "width": 64, "height": 48, "length": 9,
        "batch_size": 1, "strength": 1.0, "control_video": ["20", 0], "reference_image": ["21", 0]}}
    wf["23"] = {"class_type": "TrimVideoLatent", "inputs": {"samples": ["5", 0], "trim_amount": ["22", 3]}}
    wf["5"]["inputs"].update(positive=["22", 0], latent=["22", 2])
    wf["7"]["inputs"]["samples"] = ["23", 0]
    return wf


def test_vace_merged_gguf_in_both_modes(tiny_server):
    """QuantStack-style VACE GGUF: mode t2v runs the demo as plain text-to-video, mode vace runs core's
    WanVaceToVideo at 4 steps, and VACE conditioning on the t2v model is refused by name."""
    from wan4step.comfy_client import ComfyAPIError

    wf = json.loads(WORKFLOW.read_text())
    wf["1"]["inputs"]["model_name"] = bundle.DIT_VACE_GGUF  # no mode: the default, t2v
    wf["4"]["inputs"].update(width=64, height=48, length=9)
    for graph in (wf, _vace_workflow("vace")):
        hist = tiny_server.run(graph, timeout=600)
        files = [f for f in output_files(hist) if f["filename"].endswith(".mp4")]
        assert len(files) == 1
        assert _frames(tiny_server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"])) == (9, 64, 48)
    with pytest.raises(ComfyAPIError) as err:
        tiny_server.run(_vace_workflow("t2v"), timeout=300)
    assert "VACE control conditioning was given to a text-to-video model" in str(err.value)
