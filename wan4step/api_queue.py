"""Queue saved workflows on one or more ComfyUI servers and collect the videos.

    python -m wan4step.api_queue workflows/api/wan4step_t2v_gguf.json --prompt "a fox in snow" --seed 7
    python -m wan4step.api_queue WORKFLOW.json --batch prompts.txt --server http://gpu1:8188 http://gpu2:8188

The workflow may be API format (workflows/api/) or UI format (workflows/, converted with the
first server's /object_info). Inputs are patched by the role a node plays, found by following
links from the sampler, never by node id: the text node feeding the sampler's positive (and
negative) input, the empty latent feeding its latent input, the loader at the end of its model
chain. Each job is POSTed to /prompt with this client's id; progress comes from ComfyUI's /ws
(aiohttp, which every ComfyUI install has; without it /history is polled), results from
/history + /view.

Batch mode spreads jobs over the servers, a few in flight per server so none idles between
jobs. A server that stops answering loses its jobs to the others (they are re-queued, up to
--attempts times each); a graph ComfyUI refuses (HTTP 400) fails at once with ComfyUI's own
validation text. Exit status: 0 all videos saved, 1 some jobs failed, 2 bad workflow/arguments.

Batch file: one prompt per line (blank lines and lines starting with # are skipped), or a JSON
object per line with any of prompt, negative, seed, width, height, frames, steps, model.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comfy_client import ComfyAPIError, ComfyClient, Event, parse_event
from .errors import Wan4StepError

# class_type -> names of its inputs (seed, steps, positive, negative, latent, model)
SAMPLERS = {
    "Wan4StepSampler": ("seed", "steps", "positive", "negative", "latent", "model"),
    "KSampler": ("seed", "steps", "positive", "negative", "latent_image", "model"),
    "KSamplerAdvanced": ("noise_seed", "steps", "positive", "negative", "latent_image", "model"),
}
MODEL_NAME_INPUTS = ("model_name", "unet_name", "ckpt_name")
DEFAULT_SERVER = "http://127.0.0.1:8188"


class WorkflowRoleError(ValueError):
    """The workflow lacks the node a requested patch needs (or has it wired in a way we can't patch)."""


# --------------------------------------------------------------------------------------
# roles: which node is the prompt, the size, the sampler, the loader
# --------------------------------------------------------------------------------------
def _link(value: Any) -> str | None:
    return str(value[0]) if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) else None


@dataclass
class Roles:
    sampler: str
    names: tuple[str, ...]  # SAMPLERS entry
    positive: str | None  # node id holding the positive text
    negative: str | None
    latent: str | None
    loader: str | None
    loader_input: str | None  # model_name / unet_name / ckpt_name


def _upstream(api: dict, start: str | None, want: Callable[[dict], bool], follow: tuple[str, ...], depth: int = 8) -> str | None:
    """Walk links up from `start` until a node satisfies `want`, following the named inputs (then any link)."""
    node_id = start
    for _ in range(depth):
        if node_id is None or node_id not in api:
            return None
        node = api[node_id]
        if want(node):
            return node_id
        ins = node.get("inputs", {})
        nxt = next((_link(ins[k]) for k in follow if _link(ins.get(k))), None)
        if nxt is None:
            nxt = next((_link(v) for v in ins.values() if _link(v)), None)
        node_id = nxt
    return None


def find_roles(api: dict) -> Roles:
    samplers = [nid for nid, n in api.items() if n.get("class_type") in SAMPLERS]
    if not samplers:
        raise WorkflowRoleError("the workflow has no sampler (Wan4StepSampler, KSampler or KSamplerAdvanced)")
    if len(samplers) > 1:
        raise WorkflowRoleError(f"the workflow has {len(samplers)} samplers ({', '.join(samplers)}): "
                                "patching by role is ambiguous; edit the file instead")
    sid = samplers[0]
    names = SAMPLERS[api[sid]["class_type"]]
    ins = api[sid]["inputs"]

    def is_text(n):
        return isinstance(n.get("inputs", {}).get("text"), str) or _link(n.get("inputs", {}).get("text")) is not None

    def is_latent(n):
        i = n.get("inputs", {})
        return "width" in i and "height" in i and ("length" in i or "frames" in i)

    def is_loader(n):
        return any(k in n.get("inputs", {}) for k in MODEL_NAME_INPUTS)

    loader = _upstream(api, _link(ins.get(names[5])), is_loader, ("model",))
    loader_input = next((k for k in MODEL_NAME_INPUTS if loader and k in api[loader]["inputs"]), None)
    return Roles(
        sampler=sid,
        names=names,
        positive=_upstream(api, _link(ins.get(names[2])), is_text, ("conditioning", "positive")),
        negative=_upstream(api, _link(ins.get(names[3])), is_text, ("conditioning", "negative")),
        latent=_upstream(api, _link(ins.get(names[4])), is_latent, ("samples", "latent")),
        loader=loader,
        loader_input=loader_input,
    )


@dataclass
class Patch:
    """What a job changes in the workflow; None keeps the workflow's value."""

    prompt: str | None = None
    negative: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    steps: int | None = None
    model: str | None = None


def _set(api: dict, node_id: str | None, name: str, value: Any, what: str, role: str) -> None:
    if node_id is None:
        raise WorkflowRoleError(f"{what} was given but the workflow has no {role} feeding the sampler")
    inputs = api[node_id]["inputs"]
    if _link(inputs.get(name)) is not None:
        raise WorkflowRoleError(f"{what}: input '{name}' of node {node_id} ({api[node_id]['class_type']}) is wired "
                                f"to node {inputs[name][0]}; edit the workflow to set it")
    inputs[name] = value


def check_size(width: int, height: int, frames: int) -> list[str]:
    """Wan2.1's size rules, checked before anything is queued (the sampler checks again)."""
    out = []
    for name, v in (("width", width), ("height", height)):
        if v % 16:
            out.append(f"{name} {v} is not a multiple of 16 (nearest: {v // 16 * 16} or {v // 16 * 16 + 16})")
    if frames % 4 != 1:
        out.append(f"frames {frames} is not 4n+1 (nearest: {(frames - 1) // 4 * 4 + 1} or {(frames - 1) // 4 * 4 + 5})")
    return out


def apply_patch(api: dict, patch: Patch) -> dict:
    """A patched deep copy of the API workflow."""
    api = copy.deepcopy(api)
    roles = find_roles(api)
    s_seed, s_steps = roles.names[0], roles.names[1]
    if patch.prompt is not None:
        _set(api, roles.positive, "text", patch.prompt, "--prompt", "text encoder (CLIPTextEncode) on the positive input")
    if patch.negative is not None:
        if roles.negative is None:
            print("warning: --negative ignored: the workflow has no negative prompt (with cfg 1 it is never used)",
                  file=sys.stderr)
        else:
            _set(api, roles.negative, "text", patch.negative, "--negative", "negative text encoder")
    if patch.seed is not None:
        _set(api, roles.sampler, s_seed, int(patch.seed), "--seed", "sampler")
    if patch.steps is not None:
        _set(api, roles.sampler, s_steps, int(patch.steps), "--steps", "sampler")
    if any(v is not None for v in (patch.width, patch.height, patch.frames)):
        if roles.latent is None:
            raise WorkflowRoleError("--width/--height/--frames were given but no empty latent "
                                    "(EmptyHunyuanLatentVideo) feeds the sampler")
        ins = api[roles.latent]["inputs"]
        fkey = "length" if "length" in ins else "frames"
        for name, v in (("width", patch.width), ("height", patch.height), (fkey, patch.frames)):
            if v is not None:
                _set(api, roles.latent, name, int(v), f"--{'frames' if name == fkey else name}", "empty latent")
        w, h, f = (ins["width"], ins["height"], ins[fkey])
        if all(isinstance(x, int) for x in (w, h, f)):
            problems = check_size(w, h, f)
            if problems:
                raise WorkflowRoleError("invalid video size: " + "; ".join(problems))
    if patch.model is not None:
        _patch_model(api, roles, patch.model)
    return api


def _patch_model(api: dict, roles: Roles, model: str) -> None:
    """--model: a file/folder name as the loader lists it, or a catalog key (gguf_Q5_K_M, lightx2v_fp8)."""
    from . import catalog

    if roles.loader is None:
        raise WorkflowRoleError("--model was given but no model loader feeds the sampler")
    ins = api[roles.loader]["inputs"]
    src = _link(ins.get(roles.loader_input))
    if model in catalog.WEIGHTS:
        if src is not None and api[src]["class_type"] == "Wan4StepDownload":
            api[src]["inputs"]["weights"] = model  # the Download node fetches it and feeds the loader
            return
        model = catalog.weights(model).model_name
    ins[roles.loader_input] = model  # a plain name replaces a link from a Download node


# --------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------
@dataclass
class Job:
    index: int
    patch: Patch
    prompt: dict  # the API workflow to POST
    name: str  # output file stem
    attempts: int = 0
    server: str | None = None
    prompt_id: str | None = None
    status: str = "pending"  # pending | running | done | failed
    error: str = ""
    files: list[Path] = field(default_factory=list)
    servers_tried: list[str] = field(default_factory=list)
    seconds: float = 0.0
    node: str = ""
    value: int = 0
    max: int = 0


def slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text or "").strip("_").lower()
    return s[:n].rstrip("_") or "video"


def read_batch(path: Path) -> list[dict]:
    """A prompts file -> per-job overrides (see the module docstring)."""
    out = []
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise SystemExit(f"{path}:{lineno}: not valid JSON: {exc}") from None
            unknown = set(item) - set(Patch.__dataclass_fields__)
            if unknown:
                raise SystemExit(f"{path}:{lineno}: unknown keys {sorted(unknown)} "
                                 f"(allowed: {', '.join(Patch.__dataclass_fields__)})")
            out.append(item)
        else:
            out.append({"prompt": line})
    return out


def make_jobs(api: dict, base: Patch, batch: list[dict] | None) -> list[Job]:
    """One job per batch line (or one job); seeds: a batch line's own, else --seed + index, else the workflow's."""
    roles = find_roles(api)
    wf_seed = api[roles.sampler]["inputs"].get(roles.names[0])
    wf_seed = wf_seed if isinstance(wf_seed, int) else 0
    items = batch if batch is not None else [{}]
    jobs = []
    for i, item in enumerate(items):
        fields = {k: getattr(base, k) for k in Patch.__dataclass_fields__}
        fields.update({k: v for k, v in item.items() if v is not None})
        if "seed" not in item:
            start = base.seed if base.seed is not None else wf_seed
            fields["seed"] = start + i if batch is not None else base.seed
        patch = Patch(**fields)
        prompt = apply_patch(api, patch)
        text = patch.prompt if patch.prompt is not None else (
            prompt[roles.positive]["inputs"].get("text") if roles.positive else "")
        seed = prompt[roles.sampler]["inputs"].get(roles.names[0])
        stem = f"{slug(text if isinstance(text, str) else '')}_{seed}"
        jobs.append(Job(i, patch, prompt, f"{i:03d}_{stem}" if batch is not None else stem))
    return jobs


# --------------------------------------------------------------------------------------
# progress display
# --------------------------------------------------------------------------------------
class Display:
    """One line per running job, redrawn in place on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, stream=None, quiet: bool = False) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.quiet = quiet
        self.lines = 0
        self.done = 0
        self.failed = 0
        self.active: dict[int, Job] = {}
        self.last = 0.0

    def log(self, text: str) -> None:
        if self.quiet:
            return
        self._clear()
        print(text, file=self.stream, flush=True)
        self.redraw(force=True)

    def _clear(self) -> None:
        if self.tty and self.lines:
            self.stream.write(f"\x1b[{self.lines}F\x1b[J")
            self.lines = 0

    @staticmethod
    def bar(value: int, maximum: int, width: int = 20) -> str:
        frac = value / maximum if maximum else 0.0
        full = int(frac * width)
        return "[" + "#" * full + "." * (width - full) + f"] {value}/{maximum}" if maximum else "[" + "." * width + "]"

    def redraw(self, force: bool = False) -> None:
        if not self.tty or self.quiet:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        self._clear()
        rows = [f"{self.done}/{self.total} done" + (f", {self.failed} failed" if self.failed else "")]
        for job in sorted(self.active.values(), key=lambda j: j.index):
            host = (job.server or "").split("://")[-1]
            rows.append(f"  job {job.index:03d} @ {host:<21} {self.bar(job.value, job.max)} {job.node[:28]:<28}")
        self.stream.write("\n".join(rows) + "\n")
        self.stream.flush()
        self.lines = len(rows)

    def finish(self) -> None:
        self._clear()


# --------------------------------------------------------------------------------------
# the scheduler
# --------------------------------------------------------------------------------------
@dataclass
class Report:
    jobs: list[Job]
    retried: int = 0
    dead_servers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(j.status == "done" for j in self.jobs)

    def summary(self) -> str:
        done = sum(j.status == "done" for j in self.jobs)
        return (f"{done}/{len(self.jobs)} jobs done in {self.seconds:.1f} s"
                + (f", {self.retried} re-queued after a server failed" if self.retried else "")
                + (f"; servers lost: {', '.join(self.dead_servers)}" if self.dead_servers else ""))


class _ServerGone(Exception):
    pass


class Scheduler:
    """Jobs from one shared queue, `depth` in flight per server, re-queued when a server dies."""

    def __init__(self, jobs: list[Job], servers: list[str], out_dir: Path, *, depth: int = 2, attempts: int = 3,
                 timeout: float = 3600.0, display: Display | None = None,
                 on_event: Callable[[str, Job, str], None] | None = None, use_ws: bool = True) -> None:
        self.jobs = jobs
        self.servers = list(dict.fromkeys(servers))
        self.out_dir = Path(out_dir)
        self.depth = max(1, depth)
        self.attempts = attempts
        self.timeout = timeout
        self.display = display or Display(len(jobs), quiet=True)
        self.on_event = on_event
        self.use_ws = use_ws
        self.pending: deque[Job] = deque(jobs)
        self.report = Report(jobs)
        self.wakeup: asyncio.Event | None = None

    # -- bookkeeping ----------------------------------------------------------------
    def _emit(self, kind: str, job: Job, server: str) -> None:
        if self.on_event:
            self.on_event(kind, job, server)

    def _unfinished(self) -> bool:
        return any(j.status in ("pending", "running") for j in self.jobs)

    def _requeue(self, job: Job, server: str, why: str) -> None:
        self.display.active.pop(job.index, None)
        job.prompt_id, job.server, job.value, job.max, job.node = None, None, 0, 0, ""
        if job.attempts >= self.attempts:
            self._fail(job, f"gave up after {job.attempts} attempts; last: {why}")
            return
        job.status = "pending"
        self.pending.appendleft(job)
        self.report.retried += 1
        self.display.log(f"job {job.index:03d}: {server} {why}; re-queued")
        self._emit("requeued", job, server)
        self.wakeup.set()

    def _fail(self, job: Job, error: str) -> None:
        job.status, job.error = "failed", error
        self.display.active.pop(job.index, None)
        self.display.failed += 1
        self.display.log(f"job {job.index:03d} FAILED: {error}")
        self._emit("failed", job, job.server or "")
        self.wakeup.set()

    # -- one server -----------------------------------------------------------------
    async def _worker(self, url: str) -> None:
        client = ComfyClient(url, timeout=60.0)
        inflight: dict[str, Job] = {}
        events: asyncio.Queue = asyncio.Queue()
        ws_task = None
        if self.use_ws:
            ws_task = asyncio.create_task(self._listen(client, events))
        try:
            await self._serve(url, client, inflight, events, ws_task)
        except _ServerGone as gone:
            self.report.dead_servers.append(url)
            self.display.log(f"server {url} stopped answering ({gone}); its jobs go to the others")
            for job in list(inflight.values()):
                self._requeue(job, url, "died")
        finally:
            if ws_task:
                ws_task.cancel()
            self.wakeup.set()

    async def _listen(self, client: ComfyClient, events: asyncio.Queue) -> None:
        """Forward /ws messages as Events; put None when the socket closes (or cannot open)."""
        try:
            import aiohttp
        except ImportError:
            await events.put(None)
            return
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(client.ws_url, heartbeat=10, max_msg_size=0) as ws:
                    await events.put(Event("connected"))
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                await events.put(parse_event(json.loads(msg.data)))
                            except ValueError:
                                continue
                        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            pass
        await events.put(None)

    async def _serve(self, url, client, inflight, events, ws_task) -> None:
        ws_open = False
        if ws_task is not None:  # wait for the socket before queueing, so no progress message is missed
            first = await asyncio.wait_for(events.get(), timeout=30)
            ws_open = first is not None and first.kind == "connected"
            if not ws_open and not await asyncio.to_thread(client.alive):
                raise _ServerGone("no answer on /ws or /queue")
        poll_every = 2.0 if ws_open else 0.25
        last_poll = time.monotonic()
        while True:
            while len(inflight) < self.depth and self.pending:
                job = self.pending.popleft()
                await self._submit(url, client, job, inflight)
            if not inflight:
                if not self._unfinished():
                    return
                # nothing to do here now: wait for a job to be re-queued or everything to finish
                self.wakeup.clear()
                if not self.pending:
                    await self.wakeup.wait()
                continue
            try:
                ev = await asyncio.wait_for(events.get(), timeout=poll_every)
            except asyncio.TimeoutError:
                ev = "poll"
            if ev is None:  # the socket closed: the server is gone unless /queue still answers
                if not await asyncio.to_thread(client.alive):
                    raise _ServerGone("websocket closed")
                ws_open, poll_every = False, 0.25
                continue
            if isinstance(ev, Event):
                await self._on_event(url, client, ev, inflight)
            if ev == "poll" or time.monotonic() - last_poll > poll_every:
                last_poll = time.monotonic()
                await self._poll(url, client, inflight)

    async def _submit(self, url: str, client: ComfyClient, job: Job, inflight: dict) -> None:
        job.attempts += 1
        job.server = url
        job.servers_tried.append(url)
        job.status = "running"
        job.seconds = time.monotonic()
        try:
            job.prompt_id = await asyncio.to_thread(client.queue_prompt, job.prompt)
        except ComfyAPIError as err:  # ComfyUI refused the graph: the same on every server
            job.attempts = self.attempts
            self._fail(job, f"ComfyUI rejected the workflow:\n{err}")
            return
        except OSError as err:
            job.attempts -= 1  # never reached the server: not the job's fault
            self.pending.appendleft(job)
            job.status = "pending"
            raise _ServerGone(f"POST /prompt failed: {err}") from None
        inflight[job.prompt_id] = job
        self.display.active[job.index] = job
        job.node = "queued"
        self.display.redraw()
        self._emit("queued", job, url)

    async def _on_event(self, url, client, ev: Event, inflight: dict) -> None:
        job = inflight.get(ev.prompt_id) if ev.prompt_id else None
        if job is None:
            return
        if ev.kind == "progress":
            job.value, job.max = ev.value, ev.max
            self._emit("progress", job, url)
        elif ev.kind == "executing" and ev.node:
            job.node, job.value, job.max = self._title(job, ev.node), 0, 0
        elif ev.kind == "start":
            job.node = "started"
        elif ev.kind in ("done", "error", "interrupted"):
            await self._finish(url, client, job, inflight)
            return
        self.display.redraw()

    @staticmethod
    def _title(job: Job, node: str) -> str:
        n = job.prompt.get(str(node), {})
        return (n.get("_meta") or {}).get("title") or n.get("class_type") or str(node)

    async def _poll(self, url, client, inflight: dict) -> None:
        for pid, job in list(inflight.items()):
            try:
                entry = await asyncio.to_thread(client.history, pid)
            except OSError as err:
                raise _ServerGone(f"GET /history failed: {err}") from None
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                await self._finish(url, client, job, inflight, entry)
            elif time.monotonic() - job.seconds > self.timeout:
                inflight.pop(pid, None)
                self._fail(job, f"no result within {self.timeout:.0f} s on {url}")

    async def _finish(self, url, client, job: Job, inflight: dict, entry: dict | None = None) -> None:
        if job.prompt_id not in inflight:
            return
        try:
            if entry is None:
                entry = await asyncio.to_thread(client.history, job.prompt_id)
            if entry is None or entry.get("status", {}).get("completed") is None:
                return  # not in /history yet: the poll picks it up
            status = entry.get("status", {})
            if status.get("status_str") == "error" or not status.get("completed"):
                from .comfy_client import execution_error_text

                inflight.pop(job.prompt_id, None)
                self._fail(job, execution_error_text(entry))
                return
            outputs = await asyncio.to_thread(client.fetch_outputs, entry)
        except OSError as err:
            # the job stays in `inflight` until its video is here, so a server that dies while
            # the files are fetched has the job re-queued (it was lost, and the batch never ended)
            raise _ServerGone(f"fetching results failed: {err}") from None
        inflight.pop(job.prompt_id, None)
        if not outputs:
            self._fail(job, f"the prompt finished on {url} but wrote no video (is a SaveVideo node connected?)")
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for k, (info, data) in enumerate(outputs):
            ext = Path(info["filename"]).suffix
            path = self.out_dir / f"{job.name}{'' if k == 0 else f'_{k}'}{ext}"
            n = 1
            while path.exists():
                path = path.with_name(f"{job.name}{'' if k == 0 else f'_{k}'}-{n}{ext}")
                n += 1
            path.write_bytes(data)
            job.files.append(path)
        job.status = "done"
        job.seconds = time.monotonic() - job.seconds
        self.display.active.pop(job.index, None)
        self.display.done += 1
        self.display.log(f"job {job.index:03d} done on {url.split('://')[-1]} in {job.seconds:.1f} s: "
                         + ", ".join(str(p) for p in job.files))
        self._emit("done", job, url)
        self.wakeup.set()

    # -- all servers ----------------------------------------------------------------
    async def run(self) -> Report:
        t0 = time.monotonic()
        self.wakeup = asyncio.Event()
        await asyncio.gather(*(self._worker(url) for url in self.servers))
        for job in self.jobs:
            if job.status in ("pending", "running"):
                job.status, job.error = "failed", "no ComfyUI server left to run it"
        self.display.finish()
        self.report.seconds = time.monotonic() - t0
        return self.report


def run_jobs(jobs: list[Job], servers: list[str], out_dir: str | Path, **kw) -> Report:
    """Run jobs to completion (blocking); see Scheduler for the keyword arguments."""
    return asyncio.run(Scheduler(jobs, servers, Path(out_dir), **kw).run())


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def load_workflow(path: Path, server: str) -> dict:
    """API JSON as is; UI JSON converted with the server's node definitions."""
    from .workflow_convert import is_ui_workflow, to_api

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if is_ui_workflow(data):
        data = to_api(data, ComfyClient(server, timeout=60).object_info(), strict=False)
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise WorkflowRoleError(f"{path}: not a ComfyUI workflow (API format: {{id: {{class_type, inputs}}}})")
    return data


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wan4step.api_queue", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("workflow", type=Path, help="workflow JSON (API or UI format)")
    ap.add_argument("--prompt", help="positive prompt")
    ap.add_argument("--negative", help="negative prompt (only used when the sampler's cfg > 1)")
    ap.add_argument("--seed", type=int, help="seed (batch: the first job's; job i uses seed + i)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--frames", type=int, help="frame count, 4n+1 (81 = 5 s at 16 fps)")
    ap.add_argument("--steps", type=int, help="sampling steps (the distilled model expects 4)")
    ap.add_argument("--model", help="loader file/folder name, or a catalog key such as gguf_Q5_K_M or lightx2v_fp8")
    ap.add_argument("--server", nargs="+", action="extend", help=f"ComfyUI base URL(s) (default {DEFAULT_SERVER})")
    ap.add_argument("--out", type=Path, default=Path("out"), help="folder for the videos (default ./out)")
    ap.add_argument("--batch", type=Path, help="prompts file: one job per line")
    ap.add_argument("--depth", type=int, default=2, help="jobs in flight per server (default 2)")
    ap.add_argument("--attempts", type=int, default=3, help="tries per job when servers fail (default 3)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds a job may take (default 3600)")
    ap.add_argument("--no-ws", action="store_true", help="poll /history instead of following /ws")
    ap.add_argument("--quiet", action="store_true", help="print only the final summary")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    servers = args.server or [DEFAULT_SERVER]
    base = Patch(prompt=args.prompt, negative=args.negative, seed=args.seed, width=args.width, height=args.height,
                 frames=args.frames, steps=args.steps, model=args.model)
    try:
        api = load_workflow(args.workflow, servers[0])
        batch = read_batch(args.batch) if args.batch else None
        jobs = make_jobs(api, base, batch)
    except (WorkflowRoleError, OSError, ValueError, ComfyAPIError, Wan4StepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    display = Display(len(jobs), quiet=args.quiet)
    report = run_jobs(jobs, servers, args.out, depth=args.depth, attempts=args.attempts, timeout=args.timeout,
                      display=display, use_ws=not args.no_ws)
    manifest = [{"job": j.index, "status": j.status, "files": [str(p) for p in j.files], "server": j.server,
                 "seed": j.prompt[find_roles(j.prompt).sampler]["inputs"].get(find_roles(j.prompt).names[0]),
                 "prompt": j.patch.prompt, "error": j.error or None, "attempts": j.attempts} for j in jobs]
    if batch is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "queue_report.json").write_text(json.dumps(manifest, indent=1))
    for j in jobs:
        if j.status != "done":
            if args.quiet:
                print(f"job {j.index:03d} failed: {j.error}", file=sys.stderr)
        elif not args.quiet or len(jobs) == 1:
            for p in j.files:
                print(p)
    print(report.summary(), file=sys.stderr)
    if not report.ok and all(j.error.startswith("ComfyUI rejected") for j in jobs if j.status != "done"):
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
