"""A small client for ComfyUI's HTTP API: queue a prompt, wait, fetch outputs.

Used by the API queue CLI (`wan4step.api_queue`), the demo and the integration tests
(against a real ComfyUI). Standard library only, so it runs anywhere ComfyUI's API is
reachable; the queue's websocket progress (aiohttp) builds on `ws_url` and `parse_event`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any


class ComfyAPIError(RuntimeError):
    """ComfyUI refused or failed a prompt; `details` carries its JSON answer."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


def format_validation_error(body: dict) -> str:
    """ComfyUI's /prompt 400 answer as the text its UI would show."""
    lines = []
    err = body.get("error") or {}
    if isinstance(err, dict):
        lines.append(f"{err.get('message', 'invalid prompt')}: {err.get('details', '')}".rstrip(": "))
    for node_id, info in (body.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            lines.append(f"  node {node_id} ({info.get('class_type', '?')}): {e.get('message')}: {e.get('details', '')}")
    return "\n".join(lines) or json.dumps(body)


VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".gif")


@dataclass
class ComfyClient:
    base_url: str
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timeout: float = 30.0

    def _url(self, path: str, query: dict | None = None) -> str:
        url = self.base_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def get_json(self, path: str, query: dict | None = None) -> Any:
        with urllib.request.urlopen(self._url(path, query), timeout=self.timeout) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str, query: dict | None = None) -> bytes:
        with urllib.request.urlopen(self._url(path, query), timeout=self.timeout) as r:
            return r.read()

    def post_json(self, path: str, payload: Any) -> Any:
        req = urllib.request.Request(
            self._url(path), data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = r.read()
                return json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                data = json.loads(body)
            except ValueError:
                data = {"error": {"message": body.decode(errors="replace")}}
            raise ComfyAPIError(format_validation_error(data), data) from None

    # -- API ---------------------------------------------------------------------
    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def queue_prompt(self, prompt: dict, extra_data: dict | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        answer = self.post_json("/prompt", payload)
        return answer["prompt_id"]

    @property
    def ws_url(self) -> str:
        """The websocket that streams progress for prompts queued with this client id."""
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        host = self.base_url.split("://", 1)[-1].rstrip("/")
        return f"{scheme}://{host}/ws?clientId={self.client_id}"

    def queue_state(self) -> dict:
        """GET /queue: {'queue_running': [...], 'queue_pending': [...]}."""
        return self.get_json("/queue")

    def alive(self, timeout: float = 5.0) -> bool:
        """Does the server answer at all (used to tell a dead server from a slow prompt)?"""
        try:
            with urllib.request.urlopen(self._url("/queue"), timeout=timeout) as r:
                return r.status == 200
        except OSError:
            return False

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def interrupt(self) -> None:
        self.post_json("/interrupt", {})

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> dict:
        """Poll /history until the prompt finished; raise with ComfyUI's error on failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.history(prompt_id)
            if h is not None and h.get("status", {}).get("completed") is not None:
                status = h["status"]
                if status.get("status_str") == "error" or not status.get("completed"):
                    raise ComfyAPIError(execution_error_text(h), h)
                return h
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue_prompt(prompt), timeout)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        return self.get_bytes("/view", {"filename": filename, "subfolder": subfolder, "type": type})

    def fetch_outputs(self, history_entry: dict, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[tuple[dict, bytes]]:
        """The bytes of every output file of a finished prompt whose name ends with one of `extensions`."""
        out = []
        for f in output_files(history_entry):
            if f.get("type", "output") == "output" and f["filename"].lower().endswith(extensions):
                out.append((f, self.view(f["filename"], f.get("subfolder", ""), f.get("type", "output"))))
        return out


@dataclass(frozen=True)
class Event:
    """One websocket message from ComfyUI, reduced to what a progress display needs.

    kind: "queued" | "start" | "executing" | "progress" | "cached" | "executed" | "done" | "error"
          | "interrupted" | "status" | "other"; `done` is ComfyUI's execution_success (or the
          final `executing` with node None), `error` carries the node's exception text.
    """

    kind: str
    prompt_id: str | None = None
    node: str | None = None
    value: int = 0
    max: int = 0
    text: str = ""
    data: dict = field(default_factory=dict)


_KINDS = {"execution_start": "start", "execution_cached": "cached", "executed": "executed",
          "execution_success": "done", "execution_error": "error", "execution_interrupted": "interrupted",
          "status": "status", "progress": "progress", "executing": "executing"}


def parse_event(message: dict) -> Event:
    """A decoded JSON websocket message -> Event (binary preview frames never get here)."""
    typ = message.get("type", "")
    data = message.get("data") or {}
    kind = _KINDS.get(typ, "other")
    pid = data.get("prompt_id")
    if kind == "executing" and data.get("node") is None and pid:
        kind = "done"  # ComfyUI's end-of-prompt marker
    if kind == "progress":
        return Event(kind, pid, data.get("node"), int(data.get("value", 0)), int(data.get("max", 0)), data=data)
    if kind == "error":
        text = f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_type')}: " \
               f"{str(data.get('exception_message', '')).strip()}"
        return Event(kind, pid, data.get("node_id"), text=text, data=data)
    if kind == "status":
        remaining = ((data.get("status") or {}).get("exec_info") or {}).get("queue_remaining", 0)
        return Event(kind, None, value=int(remaining or 0), data=data)
    return Event(kind, pid, data.get("node") or data.get("display_node"), data=data)


def execution_error_text(history_entry: dict) -> str:
    for kind, data in history_entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return (
                f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}"
            )
        if kind == "execution_interrupted":
            return "execution was interrupted"
    return "execution failed (no error message in /history)"


def output_files(history_entry: dict) -> list[dict]:
    """Every file a finished prompt wrote: [{'filename', 'subfolder', 'type', 'node'}]."""
    files = []
    for node_id, out in history_entry.get("outputs", {}).items():
        for kind in ("images", "gifs", "videos", "video", "audio", "files"):
            for item in out.get(kind, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append(dict(item, node=node_id))
    return files
