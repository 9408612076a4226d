"""The pack loads in a real ComfyUI, registers its nodes with tooltips, and runs through /prompt."""

from __future__ import annotations

from wan4step.comfy_client import output_files  # noqa: F401


def test_object_info_lists_pack_nodes(comfy_server):
    info = comfy_server.object_info()
    ours = {k: v for k, v in info.items() if v.get("category", "").startswith("Wan4Step")}
    assert "Wan4StepEnvInfo" in ours, sorted(ours)
    env = ours["Wan4StepEnvInfo"]
    assert env["display_name"] == "Wan4Step Environment Info"
    assert env["output_tooltips"][0]


def test_env_info_runs_through_prompt(comfy_server):
    hist = comfy_server.run({"1": {"class_type": "Wan4StepEnvInfo", "inputs": {}}}, timeout=60)
    text = hist["outputs"]["1"]["text"][0]
    assert "ComfyUI-Wan4Step" in text and "RAM:" in text


def test_paths_measured_slower_are_labelled_experimental(comfy_server):
    """The Model Loader's `compile` (torch.compile of the block: 2.5 % slower than the hand-fused
    block on an H100, docs/BENCHMARKS.md) says so in its label and tooltip."""
    spec = comfy_server.object_info()["Wan4StepModelLoader"]["input"]["optional"]["compile"][1]
    assert "experimental, measured slower" in spec["display_name"]
    assert spec["tooltip"].startswith("(experimental, measured slower)")
