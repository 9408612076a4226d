"""Every long phase moves its node's progress bar, seen the way the frontend sees it.

A real ComfyUI (subprocess, CPU) runs the tiny demo plus a Wan4Step Download of a 24 MB file from
the fake Hugging Face Hub of tests/unit/test_hub.py (HF_ENDPOINT points the server at it; no
network). The test listens on ComfyUI's websocket as the frontend does and reads `progress_state`
(what frontend 1.49 draws the node bars and the queue panel's current-node percentage from): the
download, the text encode (CLIPTextEncode with the pack's UMT5), the sampler and the VAE decode
each report several values between 0 and 1, in order, and end at 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.unit.test_hub import FakeHub, _data
from wan4step import catalog
from wan4step.comfy_client import ComfyClient
from wan4step_dev.comfy_server import ComfyServer, prepare_base_dir
from wan4step_dev.fixtures.tiny_models import write_tiny_models

REPO = Path(__file__).resolve().parents[2]
VAE_SIZE = 24 * 2**20  # six 4 MB download chunks (wan4step.hub.DOWNLOAD_CHUNK)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import require_comfyui

    comfyui = require_comfyui()
    hub = FakeHub()
    spec = catalog.vae(catalog.DEFAULT_VAE).files[0]
    hub.add(spec.repo_id, {spec.pattern: _data("vae", VAE_SIZE)})
    base = prepare_base_dir(tmp_path_factory.mktemp("comfy_progress"),
                            [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()])
    write_tiny_models(base / "models")
    srv = ComfyServer(comfyui, base, env={"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})
    client = srv.start()
    yield client, base
    srv.stop()
    hub.close()


def _job() -> dict:
    api = json.loads((REPO / "workflows" / "api" / "wan4step_t2v_tiny_demo.json").read_text())
    api["99"] = {"class_type": "Wan4StepDownload",
                 "inputs": {"weights": "none", "text_encoder": "none", "vae": catalog.DEFAULT_VAE}}
    return api


async def _run(client: ComfyClient, prompt: dict, timeout: float = 300) -> list[dict]:
    """Queue `prompt` and return every websocket message up to its end."""
    import aiohttp

    messages = []
    async with aiohttp.ClientSession() as session, session.ws_connect(client.ws_url) as ws:
        prompt_id = await asyncio.to_thread(client.queue_prompt, prompt)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await ws.receive(timeout=deadline - time.monotonic())
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            messages.append(data)
            if data["type"] in ("execution_success", "execution_error") and data["data"].get("prompt_id") == prompt_id:
                return messages
    raise AssertionError(f"the job did not finish in {timeout} s; last messages: {messages[-5:]}")


def _fractions(messages: list[dict], node: str) -> list[float]:
    """The node's progress as the frontend reads it: value/max of its running state, in order."""
    out = []
    for m in messages:
        if m["type"] != "progress_state":
            continue
        s = m["data"]["nodes"].get(node)
        if s and s["state"] == "running" and s["max"] > 0:
            out.append(s["value"] / s["max"])
    return out


def test_every_long_phase_reports_moving_progress(server):
    client, base = server
    prompt = _job()
    roles = {nid: n["class_type"] for nid, n in prompt.items()}
    messages = _run_sync(client, prompt)
    assert messages[-1]["type"] == "execution_success", messages[-1]
    assert (base / "models" / "vae" / "wan_2.1_vae.safetensors").stat().st_size == VAE_SIZE
    phases = {"Wan4StepDownload": "download", "CLIPTextEncode": "text encode", "Wan4StepSampler": "sampling",
              "VAEDecode": "VAE decode"}
    for nid, cls in roles.items():
        if cls not in phases:
            continue
        f = _fractions(messages, nid)
        assert f == sorted(f), f"{phases[cls]}: progress went backwards: {f}"
        inside = sorted({round(x, 4) for x in f if 0 < x < 1})
        assert len(inside) >= 3, f"{phases[cls]} ({cls}, node {nid}): too few intermediate values {f}"
        assert f[-1] == pytest.approx(1.0), f"{phases[cls]} did not end at 100 %: {f}"
        if cls == "Wan4StepSampler":  # after every block: 4 steps x 2 tiny blocks
            assert {round(k / 8, 4) for k in range(1, 8)} <= set(inside), f
        if cls == "VAEDecode":  # moving before the first frame is out (1 of 9 frames = 11 %)
            assert inside[0] < 0.1, f


def _run_sync(client, prompt):
    # on its own thread: Playwright's sync API (the browser tests of the same session) keeps an
    # event loop running on this one
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _run(client, prompt)).result()
