"""Core's behaviour honoured, through a real headless ComfyUI started with --disable-pinned-memory:
an OOM inside a sampling step reaches ComfyUI as an OOM (it unloads every model) and the next job
runs; Block Swap does not pin; the HTTP routes come from ComfyExtension.on_load."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest

from wan4step.comfy_client import ComfyAPIError, output_files
from wan4step.tiny import bundle
from wan4step_dev.fixtures.tiny_models import write_tiny_models

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"

# a model patch of "another pack": the diffusion model raises torch.OutOfMemoryError once per process
OOM_ONCE_NODE = textwrap.dedent('''
    import torch
    import comfy.patcher_extension

    ARMED = [True]


    def _oom_once(executor, *args, **kwargs):
        if ARMED[0]:
            ARMED[0] = False
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (test patch)")
        return executor(*args, **kwargs)


    class Wan4StepTestOOMOnce:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",)}}

        RETURN_TYPES = ("MODEL",)
        FUNCTION = "patch"
        CATEGORY = "testing"

        def patch(self, model):
            m = model.clone()
            m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "oom_once", _oom_once)
            return (m,)


    NODE_CLASS_MAPPINGS = {"Wan4StepTestOOMOnce": Wan4StepTestOOMOnce}
''')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from wan4step_dev.comfy_server import ComfyServer, find_comfyui, prepare_base_dir

    path = find_comfyui()
    if path is None:
        pytest.skip("no ComfyUI")
    base = tmp_path_factory.mktemp("comfy_seam")
    node = tmp_path_factory.mktemp("nodes") / "wan4step_test_oom_once"
    node.mkdir()
    (node / "__init__.py").write_text(OOM_ONCE_NODE)
    prepare_base_dir(base, [node])
    write_tiny_models(base / "models")
    srv = ComfyServer(path, base, extra_args=["--disable-pinned-memory"])
    client = srv.start()
    client.server = srv
    yield client
    srv.stop()


def _workflow() -> dict:
    wf = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    wf["1"]["inputs"]["model_name"] = bundle.DIT_FP8
    wf["seam_oom"] = {"class_type": "Wan4StepTestOOMOnce", "inputs": {"model": ["1", 0]}}
    wf["seam_swap"] = {"class_type": "Wan4StepBlockSwap", "inputs": {"model": ["seam_oom", 0], "blocks_to_swap": 1,
                                                                    "prefetch": 1, "pin_memory": True, "source": "ram",
                                                                    "offload_embeddings": False}}
    wf["5"]["inputs"]["model"] = ["seam_swap", 0]
    return wf


def test_oom_in_a_step_unloads_models_and_the_next_job_runs(server):
    wf = _workflow()
    with pytest.raises(ComfyAPIError) as err:
        server.run(wf, timeout=600)
    text = str(err.value)
    assert "OutOfMemoryError" in text and "ran out of memory while sampling 64x48, 9 frames" in text
    assert "Wan4Step Block Swap" in text  # the pack's advice survives
    log = server.server.log_path.read_text(errors="replace")
    assert "Got an OOM, unloading all loaded models." in log  # ComfyUI's is_oom() recognised it
    hist = server.run(wf, timeout=600)
    assert [f for f in output_files(hist) if f["filename"].endswith(".mp4")]


def test_disable_pinned_memory_is_honoured_by_block_swap(server):
    log = server.server.log_path.read_text(errors="replace")
    if "not pinning streamed blocks" not in log:  # the OOM test ran the swap already when run first
        server.run(_workflow(), timeout=600)
        log = server.server.log_path.read_text(errors="replace")
    assert "Wan4Step Block Swap: not pinning streamed blocks: ComfyUI runs with --disable-pinned-memory" in log


def test_routes_come_from_on_load(server):
    log = server.server.log_path.read_text(errors="replace")
    assert "Wan4Step: HTTP routes registered: /wan4step/advisor, /wan4step/estimate" in log
    answer = server.post_json("/wan4step/estimate", {"width": 832, "height": 480, "frames": 81})
    assert "badge" in answer
