"""The on-canvas advisor of each shipped workflow, asked through the real ComfyUI route ("Advise now" posts the
node's widget values), answers with the settings the workflow ships: the node's detected machine plus its
overrides plans exactly the machine the workflow was built for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


# every workflow with an advisor node on its canvas (the interop one has none: its note says how to add one)
WORKFLOWS = sorted(p.stem for p in (REPO / "workflows" / "api").glob("*.json")
                   if any(n["class_type"] == "Wan4StepVRAMAdvisor" for n in _api(p.stem).values()))


def test_most_workflows_have_an_advisor():
    assert len(WORKFLOWS) >= 5, WORKFLOWS


@pytest.mark.parametrize("name", WORKFLOWS)
def test_advise_now_gives_the_shipped_settings(comfy_server, name):
    api = _api(name)
    advisors = [n["inputs"] for n in api.values() if n["class_type"] == "Wan4StepVRAMAdvisor"]
    rec = comfy_server.post_json("/wan4step/advisor", advisors[0])["recommendation"]
    by = {n["class_type"]: n["inputs"] for n in api.values()}
    assert by["Wan4StepDownload"]["weights"] == rec["weights_key"]
    assert by["Wan4StepBlockSwap"]["blocks_to_swap"] == rec["blocks_to_swap"]
    assert by["Wan4StepBlockSwap"]["source"] == ("disk" if rec["placement"] == "disk" else "ram")
    assert by["Wan4StepUMT5Loader"]["device"] == rec["text_encoder_device"]
    assert by["Wan4StepVAELoader"]["tiling"] == ("on" if rec["vae_tiled"] else "off")


def test_an_api_prompt_saved_before_weights_format_existed_still_validates(comfy_server):
    old = {"1": {"class_type": "Wan4StepVRAMAdvisor", "inputs": {
        "width": 832, "height": 480, "frames": 81, "priority": "speed", "gpu": "RTX 4080 SUPER", "vram_gb": 0.0,
        "free_vram_gb": 0.0, "compute_capability": "auto", "ram_gb": 32.0, "disk_gb": 0.0, "attention": "auto"}}}
    text = comfy_server.run(old, timeout=60)["outputs"]["1"]["text"][0]
    assert "LightX2V FP8" in text.splitlines()[2]  # any format: the fastest
    gguf = json.loads(json.dumps(old))
    gguf["1"]["inputs"]["weights_format"] = "gguf"
    text = comfy_server.run(gguf, timeout=60)["outputs"]["1"]["text"][0]
    assert text.splitlines()[2].startswith("Weights: GGUF ")


def test_the_estimate_badge_plans_with_the_same_format(comfy_server):
    body = {"gpu": "RTX 4080 SUPER", "ram_gb": 32, "priority": "speed", "width": 832, "height": 480, "frames": 81,
            "weights_key": "gguf_Q8_0", "blocks_to_swap": 20}
    assert "FP8" in comfy_server.post_json("/wan4step/estimate", body)["recommendation"]
    body["weights_format"] = "gguf"
    assert "GGUF" in comfy_server.post_json("/wan4step/estimate", body)["recommendation"]
