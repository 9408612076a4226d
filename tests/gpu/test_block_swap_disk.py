"""Block Swap `source=disk` on the GPU (skipped without CUDA): engine under inference_mode, and
a real ComfyUI server (no --cpu) rendering the tiny model with Block Swap source=disk.

The lead runs this on the GPU machine: `python -m pytest -q tests/gpu/test_block_swap_disk.py`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parents[2]
TINY_API = REPO / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"


def test_disk_streamer_on_cuda_under_inference_mode_equals_resident():
    from wan4step.offload import stream_modules

    g = torch.Generator().manual_seed(0)
    blocks = [torch.nn.Linear(256, 256).requires_grad_(False) for _ in range(6)]
    for b in blocks:
        b.weight.data = torch.randn(256, 256, generator=g) / 16
    x = torch.randn(4, 256, device="cuda")
    with torch.inference_mode():
        ref = x
        for b in blocks:
            ref = torch.nn.functional.linear(ref, b.weight.cuda(), b.bias.cuda())
        streamer, wrapped = stream_modules(blocks, "cuda", prefetch=2, disk=True)
        for _ in range(3):
            y = x
            for w in wrapped:
                y = w(y)
            torch.testing.assert_close(y, ref)
        streamer.close()
    assert streamer.stats.copies >= 3 * len(blocks)


def test_block_swap_from_disk_renders_in_a_gpu_server(tmp_path):
    from wan4step.comfy_client import output_files
    from wan4step_dev.comfy_server import ComfyServer, find_comfyui, prepare_base_dir
    from wan4step_dev.fixtures.tiny_models import write_tiny_models

    comfyui = find_comfyui()
    if comfyui is None:
        pytest.skip("no ComfyUI")
    prepare_base_dir(tmp_path, [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()])
    write_tiny_models(tmp_path / "models")
    wf = json.loads(TINY_API.read_text())
    ids = {node["class_type"]: key for key, node in wf.items()}
    swap = str(max(int(k) for k in wf) + 1)
    wf[swap] = {"class_type": "Wan4StepBlockSwap", "inputs": {
        "model": [ids["Wan4StepModelLoader"], 0], "blocks_to_swap": 2, "prefetch": 1, "pin_memory": True,
        "source": "disk", "offload_embeddings": False}}
    wf[ids["Wan4StepSampler"]]["inputs"]["model"] = [swap, 0]
    wf[ids["EmptyHunyuanLatentVideo"]]["inputs"].update(width=64, height=48, length=9)
    server = ComfyServer(comfyui, tmp_path, cpu=False)
    client = server.start()
    try:
        try:
            hist = client.run(wf, timeout=600)
        except Exception as exc:  # show what the server said, not only the client's view
            pytest.fail(f"{exc}\n--- server log ---\n{server.log_tail(80)}")
        files = [f for f in output_files(hist) if f["filename"].endswith(".mp4")]
        data = client.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"])
        import av

        with av.open(io.BytesIO(data)) as c:
            frames = list(c.decode(video=0))
        assert (len(frames), frames[0].width, frames[0].height) == (9, 64, 48)
        assert "Wan4Step Block Swap" in server.log_tail(400)
    finally:
        server.stop()
