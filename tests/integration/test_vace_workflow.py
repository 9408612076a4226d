"""The shipped VACE workflow runs, end to end, through a real headless ComfyUI on the tiny VACE-merged GGUF.

As the tiny demo does, the files come from the **Wan4Step Tiny Models** node (dit_format `gguf_vace_Q8_0`:
the tiny DiT with its VACE blocks merged, as QuantStack's tiers carry them), put where the workflow's
Download node was: same output slots (model, text encoder, VAE). Everything else is the shipped graph
(workflows/api/wan4step_vace_control.json): Model Loader in mode vace, Block Swap, the pack's UMT5 and VAE
loaders, core's Load Video -> Get Video Components -> WanVaceToVideo, the Wan4Step Sampler,
TrimVideoLatent, decode, CreateVideo, SaveVideo. Only the size shrinks (64x48, 9 frames) and a control clip
sits in the input folder as if uploaded. A second run links a Load Image into WanVaceToVideo's
reference_image, as the workflow's note says: the reference frame is trimmed off again.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest

from tests.integration.media import VACE_API, write_control_video, write_reference_image
from wan4step.comfy_client import output_files

W, H, FRAMES = 64, 48, 9


def _frames(data: bytes) -> tuple[int, int, int]:
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
        return len(frames), frames[0].width, frames[0].height


def _by_type(api: dict, class_type: str) -> str:
    (nid,) = [k for k, n in api.items() if n["class_type"] == class_type]
    return nid


@pytest.fixture(scope="module")
def tiny_vace_graph(comfy_server) -> dict:
    write_control_video(comfy_server.base_dir / "input", frames=FRAMES, width=W, height=H)
    api = json.loads(VACE_API.read_text())
    dl = _by_type(api, "Wan4StepDownload")
    api[dl] = {"class_type": "Wan4StepTinyModels", "inputs": {"dit_format": "gguf_vace_Q8_0"}}
    api[_by_type(api, "WanVaceToVideo")]["inputs"].update(width=W, height=H, length=FRAMES)
    api[_by_type(api, "CLIPTextEncode")]["inputs"]["text"] = "a bar moving right, tiny VACE test"
    return api


def _run_and_check(server, api: dict) -> dict:
    hist = server.run(api, timeout=600)
    videos = [f for f in output_files(hist) if f["filename"].endswith(".mp4")]
    assert len(videos) == 1, hist.get("outputs")
    assert _frames(server.view(videos[0]["filename"], videos[0]["subfolder"], videos[0]["type"])) == (FRAMES, W, H)
    return hist


def test_the_shipped_vace_graph_runs_on_the_tiny_vace_gguf(comfy_server, tiny_vace_graph):
    api = tiny_vace_graph
    loader = api[_by_type(api, "Wan4StepModelLoader")]["inputs"]
    assert loader["mode"] == "vace" and loader["model_name"] == [_by_type(api, "Wan4StepTinyModels"), 0]
    hist = _run_and_check(comfy_server, api)
    ran = hist["prompt"][2]
    assert {n["class_type"] for n in ran.values()} >= {"LoadVideo", "GetVideoComponents", "WanVaceToVideo",
                                                       "Wan4StepSampler", "TrimVideoLatent", "Wan4StepBlockSwap"}


def test_with_a_reference_image_linked_as_the_note_says(comfy_server, tiny_vace_graph):
    image = write_reference_image(comfy_server.base_dir / "input", width=W, height=H)
    api = copy.deepcopy(tiny_vace_graph)
    api["900"] = {"class_type": "LoadImage", "inputs": {"image": image.name}}
    api[_by_type(api, "WanVaceToVideo")]["inputs"]["reference_image"] = ["900", 0]
    _run_and_check(comfy_server, api)  # WanVaceToVideo adds the reference frame, TrimVideoLatent takes it off


def test_mode_t2v_refuses_the_control_video_by_name(comfy_server, tiny_vace_graph):
    from wan4step.comfy_client import ComfyAPIError

    api = copy.deepcopy(tiny_vace_graph)
    api[_by_type(api, "Wan4StepModelLoader")]["inputs"]["mode"] = "t2v"
    with pytest.raises(ComfyAPIError) as err:
        comfy_server.run(api, timeout=300)
    assert "VACE control conditioning was given to a text-to-video model" in str(err.value)


def test_the_file_names_stay_inside_the_servers_folders(comfy_server):
    """The tiny models were written by the node under models/*/wan4step_tiny/ (not next to the pack)."""
    models = Path(comfy_server.base_dir) / "models"
    assert (models / "diffusion_models" / "wan4step_tiny" / "wan2.1_t2v_tiny_vace_Q8_0.gguf").is_file()
