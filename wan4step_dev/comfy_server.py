"""Find a real ComfyUI and run it headless with this pack installed.

Used by the demo, the workflow builder, benchmarks and the integration tests (dev tooling:
the pack never imports it). It never fakes ComfyUI: when none
is found, `find_comfyui` returns None and callers say how to get one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from wan4step.comfy_client import ComfyClient

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "ComfyUI-Wan4Step"
DEFAULT_COMFYUI = Path("~/.cache/wan4step/ComfyUI").expanduser()
HOW_TO_GET_COMFYUI = (
    "no ComfyUI found: set COMFYUI_PATH to a ComfyUI checkout, or run `bash scripts/setup.sh` "
    f"with network access to clone the pinned release into {DEFAULT_COMFYUI}"
)


def find_comfyui() -> Path | None:
    for cand in (os.environ.get("COMFYUI_PATH"), str(DEFAULT_COMFYUI)):
        if cand and (Path(cand) / "main.py").is_file() and (Path(cand) / "comfy").is_dir():
            return Path(cand).resolve()
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base_dir(base: Path, extra_custom_nodes: list[Path] = (), link_pack: bool = True) -> Path:
    """A throw-away ComfyUI base directory: custom_nodes/ links to this pack (and extras)."""
    cn = base / "custom_nodes"
    cn.mkdir(parents=True, exist_ok=True)
    links = ([(PACK_DIR_NAME, REPO_ROOT)] if link_pack else []) + [(p.name, p) for p in extra_custom_nodes]
    for name, target in links:
        link = cn / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    for sub in ("models/diffusion_models", "models/text_encoders", "models/vae", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


@dataclass
class ComfyServer:
    """A headless ComfyUI subprocess; use as a context manager."""

    comfyui: Path
    base_dir: Path
    extra_args: list[str] = field(default_factory=list)
    cpu: bool = True  # tests and CPU machines; the demo turns it off when a GPU is present
    port: int = 0
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment, e.g. OMP_NUM_THREADS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ComfyClient:
        self.port = self.port or free_port()
        self.log_path = self.log_path or (self.base_dir / "comfyui.log")
        cmd = [
            sys.executable,
            "main.py",
            *(["--cpu"] if self.cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            *self.extra_args,
            *self._headless_frontend(),
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/object_info/Wan4StepEnvInfo", timeout=5) as r:
                    if r.status == 200:
                        return ComfyClient(self.url, timeout=120.0)
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def _headless_frontend(self) -> list[str]:
        """Without the frontend package (the GPU machine has none) ComfyUI exits at start; an empty
        web root serves the API alone, which is all a queued job needs."""
        import importlib.util

        if "--front-end-root" in self.extra_args or importlib.util.find_spec("comfyui_frontend_package"):
            return []
        root = self.base_dir / "no_frontend"
        root.mkdir(exist_ok=True)
        return ["--front-end-root", str(root)]

    def log_tail(self, n: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> ComfyClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def temp_base_dir(prefix: str = "wan4step-comfy-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


async def interrupt_during(url: str, wf: dict, node: str, delay: float, timeout: float = 600.0) -> dict:
    """Queue API workflow `wf`, POST /interrupt `delay` s after `node` starts executing, and report how
    the job ended: {"result": the websocket's final message type, "interrupt_to_stop_s": seconds from
    the interrupt to that message (None if it ended before), "job_s": seconds from queueing}."""
    import asyncio
    import json
    import uuid

    import aiohttp

    cid = uuid.uuid4().hex
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.ws_connect(f"{url}/ws?clientId={cid}") as ws:
            async with s.post(url + "/prompt", json={"prompt": wf, "client_id": cid}) as r:
                pid = (await r.json())["prompt_id"]
            t_int, t_start = None, time.perf_counter()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                d = m.get("data") or {}
                if d.get("prompt_id") not in (None, pid):
                    continue
                if m["type"] == "executing" and d.get("node") == node and t_int is None:
                    await asyncio.sleep(delay)
                    async with s.post(url + "/interrupt", json={}) as r:
                        await r.read()
                    t_int = time.perf_counter()
                if m["type"] in ("execution_interrupted", "execution_success", "execution_error"):
                    end = time.perf_counter()
                    return {"result": m["type"], "interrupt_to_stop_s": end - t_int if t_int else None,
                            "job_s": end - t_start}
    return {"result": "no answer", "interrupt_to_stop_s": None, "job_s": None}
