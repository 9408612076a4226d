"""Every bench/profile script runs end to end with --smoke (CPU, tiny shapes), so a broken import, a
renamed engine function or a typo fails here instead of on the GPU machine, where the lead has
little device time and each script must work the first time.

The scripts run one after another in one worker process that imports torch, ComfyUI (--cpu) and
the pack once (~8 s on 2 cores), so the whole file stays within about a minute; each script is
still run as `python scripts/<name>.py --smoke` would run it (`runpy`, `__name__ == "__main__"`).
A script that needs ComfyUI is skipped, loudly, where no ComfyUI checkout is found.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI, find_comfyui

REPO = Path(__file__).resolve().parents[2]
COMFYUI = find_comfyui()
SCRIPTS = REPO / "scripts"
NEEDS_COMFY = {"bench_advisor", "bench_comfy_offload", "bench_e2e", "bench_forward", "bench_load", "bench_lora",
               "bench_stream", "bench_vae", "profile_block"}
ENGINE_ONLY = {"bench_attention", "bench_fused", "bench_gguf", "bench_linear", "bench_umt5", "bench_vae_conv", "profile_attn8",
               "profile_vae"}
PER_SCRIPT_S = 90  # one script's limit on a loaded 2-core machine; they take 1-10 s each

# The worker: imports once, then runs `{"script": path}` requests from stdin, one JSON answer per line.
WORKER = r"""
import contextlib, io, json, runpy, sys, time, traceback
sys.path.insert(0, sys.argv[1])
import benchlib
if sys.argv[2] == "1":
    benchlib.import_comfy(("--disable-dynamic-vram", "--cpu"))
    benchlib.import_pack()
answer = sys.stdout
print(json.dumps({"ready": True}), file=answer, flush=True)
for line in sys.stdin:
    req = json.loads(line)
    buf, t0, res = io.StringIO(), time.perf_counter(), {"ok": True}
    sys.argv = [req["script"], "--smoke"]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_path(req["script"], run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            res = {"ok": False, "error": f"SystemExit({exc.code!r})"}
    except BaseException:
        res = {"ok": False, "error": traceback.format_exc()}
    res.update(seconds=time.perf_counter() - t0, output=buf.getvalue()[-6000:])
    print(json.dumps(res), file=answer, flush=True)
"""


class Worker:
    def __init__(self, with_comfy: bool) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the scripts run torch's CPU paths
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(SCRIPTS), "1" if with_comfy else "0"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.read(120)

    def read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise AssertionError(f"the smoke worker gave no answer within {timeout:.0f} s (or died)")
        return json.loads(line)

    def run(self, script: Path) -> dict:
        self.proc.stdin.write(json.dumps({"script": str(script)}) + "\n")
        self.proc.stdin.flush()
        return self.read(PER_SCRIPT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def worker():
    w = Worker(with_comfy=COMFYUI is not None)
    yield w
    w.close()


def test_every_script_is_covered():
    """A new bench/profile script gets a --smoke mode and a line here."""
    found = {p.stem for p in SCRIPTS.glob("bench_*.py")} | {p.stem for p in SCRIPTS.glob("profile_*.py")}
    assert found == NEEDS_COMFY | ENGINE_ONLY


@pytest.mark.parametrize("name", sorted(ENGINE_ONLY | NEEDS_COMFY))
def test_smoke(worker, name):
    if name in NEEDS_COMFY and COMFYUI is None:
        pytest.skip(HOW_TO_GET_COMFYUI)
    res = worker.run(SCRIPTS / f"{name}.py")
    assert res["ok"], f"scripts/{name}.py --smoke failed:\n{res.get('error')}\n--- output ---\n{res['output']}"
    assert res["output"].strip(), f"scripts/{name}.py --smoke printed nothing"
