"""Measure what a shared ComfyUI server feels when the pack is busy (CPU, tiny models).

1. /system_stats latency while N concurrent POST /wan4step/advisor calls are in flight;
2. /interrupt latency: a large-ish tiny-model job is interrupted inside a phase (UMT5 encode,
   sampling with fast_forward on and off, VAE decode) and the time to ComfyUI's
   `execution_interrupted` message is taken.

    python scripts/measure_shared_server.py [--calls 500] [--size 320x320x41] [--phases sample,sample_slow,decode]

Runs the pack from the repository this script lives in (point PYTHONPATH at another checkout
to measure that one). Needs a ComfyUI (COMFYUI_PATH or ~/.cache/wan4step/ComfyUI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from wan4step_dev.comfy_server import (  # noqa: E402
    ComfyServer,
    find_comfyui,
    interrupt_during,
    prepare_base_dir,
)
from wan4step_dev.fixtures.tiny_models import write_tiny_models  # noqa: E402

TINY_API = REPO / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"


async def _stats_latency(session, url: str, stop: asyncio.Event, out: list[float], every: float = 0.01) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        async with session.get(url + "/system_stats") as r:
            await r.read()
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(every)


async def flood(url: str, calls: int) -> dict:
    import aiohttp

    body = {"width": 832, "height": 480, "frames": 81, "priority": "speed", "gpu": "auto (detected)"}
    conn = aiohttp.TCPConnector(limit=0)  # every call in flight at once
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600), connector=conn) as s:
        idle: list[float] = []
        stop = asyncio.Event()
        t = asyncio.create_task(_stats_latency(s, url, stop, idle))
        await asyncio.sleep(1.0)
        stop.set()
        await t
        busy: list[float] = []
        stop = asyncio.Event()
        poll = asyncio.create_task(_stats_latency(s, url, stop, busy))
        await asyncio.sleep(0.05)
        statuses: dict[int, int] = {}

        async def one():
            async with s.post(url + "/wan4step/advisor", json=body) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        took = time.perf_counter() - t0
        stop.set()
        await poll
    return {"calls": calls, "flood_s": round(took, 2), "statuses": statuses,
            "system_stats_idle_ms": round(1000 * statistics.median(idle), 1),
            "system_stats_busy_median_ms": round(1000 * statistics.median(busy), 1),
            "system_stats_busy_max_ms": round(1000 * max(busy), 1), "samples": len(busy)}


def _job(size: tuple[int, int, int], fast_forward: bool) -> dict:
    wf = json.loads(TINY_API.read_text())
    w, h, f = size
    wf["4"]["inputs"].update(width=w, height=h, length=f)
    wf["1"]["inputs"]["fast_forward"] = fast_forward
    wf["5"]["inputs"]["seed"] = int(uuid.uuid4().int % 1000)  # a fresh seed: nothing is cached
    wf["3"]["inputs"]["text"] = f"interrupt probe {uuid.uuid4().hex[:8]}"
    return wf


async def interrupt_latency(url: str, size, phase: str, delay: float) -> dict:
    """Queue a job, wait until `phase`'s node runs (+ delay), interrupt, time the stop."""
    node = {"encode": "3", "sample": "5", "sample_slow": "5", "decode": "7"}[phase]
    wf = _job(size, fast_forward=phase != "sample_slow")
    r = await interrupt_during(url, wf, node, delay, timeout=1200)
    took = r["interrupt_to_stop_s"]
    return {"phase": phase, "size": "x".join(map(str, size)), "result": r["result"],
            "interrupt_to_stop_s": round(took, 2) if took is not None else None,
            "job_s_until_stop": round(r["job_s"], 1) if r["job_s"] is not None else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--size", default="320x320x41")
    ap.add_argument("--phases", default="sample,sample_slow,decode")
    ap.add_argument("--delay", type=float, default=1.0, help="seconds into the phase before /interrupt")
    ap.add_argument("--skip-flood", action="store_true")
    args = ap.parse_args()
    comfyui = find_comfyui()
    if comfyui is None:
        sys.exit("no ComfyUI found")
    base = Path(tempfile.mkdtemp(prefix="wan4step-measure-"))
    prepare_base_dir(base, [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()])
    write_tiny_models(base / "models")
    server = ComfyServer(comfyui, base)
    server.start()
    try:
        print(f"pack: {REPO}")
        if not args.skip_flood and args.calls:
            print(json.dumps(asyncio.run(flood(server.url, args.calls))))
        size = tuple(int(x) for x in args.size.split("x"))
        for phase in [p for p in args.phases.split(",") if p]:
            print(json.dumps(asyncio.run(interrupt_latency(server.url, size, phase, args.delay))), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
