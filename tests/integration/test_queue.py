"""The API queue client against real headless ComfyUI servers running the tiny models.

Two servers: the session's `comfy_server` and one of this module's own (the one killed in
the last test). Jobs are 32x32, 5 frames: well under a second of sampling each.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wan4step import api_queue as queue
from wan4step_dev.comfy_server import ComfyServer, prepare_base_dir
from wan4step_dev.fixtures.tiny_models import write_tiny_models

REPO = Path(__file__).resolve().parents[2]
TINY_API = REPO / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"
TINY_UI = REPO / "workflows" / "wan4step_t2v_tiny_demo.json"
SIZE = ["--width", "32", "--height", "32", "--frames", "5"]


@pytest.fixture(scope="module")
def server_a(comfy_server):
    write_tiny_models(comfy_server.base_dir / "models")
    return comfy_server


@pytest.fixture(scope="module")
def server_b(server_a, tmp_path_factory):
    """A second ComfyUI sharing A's models folder; one thread, so the two share two cores well."""
    comfyui = server_a.server.comfyui
    base = tmp_path_factory.mktemp("comfy_b")
    (base / "models").symlink_to(server_a.base_dir / "models", target_is_directory=True)
    extras = [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()]
    prepare_base_dir(base, extras)
    server = ComfyServer(comfyui, base, env={"OMP_NUM_THREADS": "1"})
    client = server.start()
    client.server = server
    yield client
    server.stop()


def _frames(path: Path) -> tuple[int, int, int]:
    import av

    with av.open(io.BytesIO(path.read_bytes())) as c:
        frames = list(c.decode(video=0))
        return len(frames), frames[0].width, frames[0].height


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wan4step.api_queue", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_single_job_patches_by_role_and_saves_the_mp4(server_a, tmp_path):
    r = _cli(str(TINY_API), "--server", server_a.base_url, "--prompt", "a heron in fog", "--seed", "7",
             *SIZE, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "a_heron_in_fog_7.mp4"
    assert r.stdout.strip() == str(out)
    assert _frames(out) == (5, 32, 32)
    # the server ran exactly the patched graph: prompt, seed and size found by role
    ran = [h["prompt"][2] for h in server_a.get_json("/history").values()]
    ran = [p for p in ran if any(n["inputs"].get("text") == "a heron in fog" for n in p.values())]
    assert len(ran) == 1
    prompt = ran[0]
    roles = queue.find_roles(prompt)
    assert roles.positive == "3" and roles.latent == "4" and roles.sampler == "5" and roles.loader == "1"
    assert prompt[roles.sampler]["inputs"]["seed"] == 7
    assert {k: prompt[roles.latent]["inputs"][k] for k in ("width", "height", "length")} == dict(width=32, height=32, length=5)


def test_ui_format_workflow_is_converted_with_the_servers_node_definitions(server_a, tmp_path):
    r = _cli(str(TINY_UI), "--server", server_a.base_url, "--prompt", "ui format", *SIZE, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert _frames(tmp_path / "ui_format_42.mp4") == (5, 32, 32)


def test_bad_graph_exits_nonzero_with_comfyuis_validation_text(server_a, tmp_path):
    r = _cli(str(TINY_API), "--server", server_a.base_url, "--model", "no_such_model.gguf", *SIZE,
             "--out", str(tmp_path))
    assert r.returncode == 2
    assert "Prompt outputs failed validation" in r.stderr
    assert "Value not in list: model_name: 'no_such_model.gguf'" in r.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_bad_size_is_refused_before_queueing(server_a, tmp_path):
    r = _cli(str(TINY_API), "--server", server_a.base_url, "--width", "72", "--out", str(tmp_path))
    assert r.returncode == 2
    assert "width 72 is not a multiple of 16 (nearest: 64 or 80)" in r.stderr


def test_fifty_jobs_over_two_servers_all_saved(server_a, server_b, tmp_path):
    prompts = tmp_path / "prompts.txt"
    lines = ["# fifty tiny jobs", ""] + [f"fox number {i} crossing a frozen river" for i in range(49)]
    lines.append(json.dumps({"prompt": "the last one, as JSON", "seed": 1234}))
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = _cli(str(TINY_API), "--batch", str(prompts), "--seed", "100", *SIZE, "--out", str(out),
             "--server", server_a.base_url, server_b.base_url, timeout=600)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "queue_report.json").read_text())
    assert len(report) == 50 and all(j["status"] == "done" for j in report)
    assert [j["seed"] for j in report] == [100 + i for i in range(49)] + [1234]
    files = sorted(out.glob("*.mp4"))
    assert len(files) == 50
    assert files[0].name == "000_fox_number_0_crossing_a_frozen_river_100.mp4"
    assert files[-1].name == "049_the_last_one_as_json_1234.mp4"
    assert _frames(files[0]) == (5, 32, 32) and _frames(files[-1]) == (5, 32, 32)
    used = {j["server"] for j in report}
    assert used == {server_a.base_url, server_b.base_url}, f"not fanned out: {used}"
    print(f"50 jobs over 2 servers in {took:.1f} s")


def test_server_killed_mid_batch_loses_no_job(server_a, server_b, tmp_path):
    api = json.loads(TINY_API.read_text())
    batch = [{"prompt": f"otter {i} sliding on ice"} for i in range(12)]
    jobs = queue.make_jobs(api, queue.Patch(width=32, height=32, frames=5, seed=500), batch)
    killed = threading.Event()
    done_on_b_before_kill = []
    progress = []

    def on_event(kind, job, server):
        if kind == "progress":
            progress.append((job.node, job.value, job.max))
        if kind == "done" and server == server_b.base_url and not killed.is_set():
            done_on_b_before_kill.append(job.index)
            server_b.server.proc.kill()  # SIGKILL: no goodbye, in-flight jobs vanish with it
            killed.set()

    report = queue.run_jobs(jobs, [server_a.base_url, server_b.base_url], tmp_path, depth=2, on_event=on_event)
    assert killed.is_set(), "server B never finished a job"
    assert server_b.server.proc.poll() is not None
    assert report.ok, [(j.index, j.error) for j in report.jobs if j.status != "done"]
    assert report.dead_servers == [server_b.base_url]
    assert report.retried >= 1, "B had a job in flight when it died; it should have been re-queued"
    requeued = [j for j in report.jobs if len(j.servers_tried) > 1]
    assert requeued and all(j.server == server_a.base_url for j in requeued)
    files = sorted(tmp_path.glob("*.mp4"))
    assert len(files) == 12 and all(_frames(f) == (5, 32, 32) for f in files)
    # progress came over /ws: the sampler's 4 steps, per job
    assert ("Wan4Step Sampler (LCM 4-step)", 4, 4) in progress


def test_polling_fallback_without_websocket(server_a, tmp_path):
    api = json.loads(TINY_API.read_text())
    jobs = queue.make_jobs(api, queue.Patch(width=32, height=32, frames=5, seed=3),
                           [{"prompt": "polled one"}, {"prompt": "polled two"}])
    seen = []
    report = queue.run_jobs(jobs, [server_a.base_url], tmp_path, use_ws=False,
                            on_event=lambda kind, job, server: seen.append(kind))
    assert report.ok and sorted(p.name for p in tmp_path.glob("*.mp4")) == ["000_polled_one_3.mp4", "001_polled_two_4.mp4"]
    assert "progress" not in seen and seen.count("done") == 2
