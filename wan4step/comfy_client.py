"""A small client for ComfyUI's HTTP API: queue a prompt, wait, fetch outputs.

Used by the API queue CLI, the demo and the integration tests (against a real
ComfyUI). Standard library only, so it runs anywhere ComfyUI's API is reachable.
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

    def queue_prompt(self, prompt: dict) -> str:
        answer = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        return answer["prompt_id"]

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
