"""One way the pack's HTTP routes answer: checked body, work off the event loop, 400 not 500.

ComfyUI serves its whole API (/prompt, /queue, /system_stats, the websocket) from one asyncio
loop, so a route that computes on the loop stalls every client (500 concurrent advisor calls
held /system_stats for 5.2 s). Here the body is read with a size limit, parsed and checked by
`wan4step.web_schema`, and the work runs in a worker thread, at most `WORKERS` at a time, with
at most `MAX_WAITING` requests queued behind them (more get 503 at once instead of piling up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..wan4step.errors import Wan4StepError
from ..wan4step.web_schema import BadRequest, Field, decode_json, parse

log = logging.getLogger("wan4step")

MAX_BODY = 64 * 1024  # bytes; the web extension sends a few hundred
WORKERS = 2
MAX_WAITING = 1000


class _Gate:
    """A semaphore made on first use (inside the server's loop) plus a count of waiters."""

    def __init__(self) -> None:
        self.sem: asyncio.Semaphore | None = None
        self.waiting = 0


_GATE = _Gate()


def _error(status: int, field: str | None, text: str, extra: dict | None = None):
    from aiohttp import web

    return web.json_response(dict(extra or {}, error=text, field=field), status=status)


async def answer(request, fields: tuple[Field, ...], work: Callable[[dict], dict], error_extra: dict | None = None):
    """Parse `request`'s JSON body against `fields`, run `work(values)` in a thread, reply."""
    from aiohttp import web

    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, "body", f"body: larger than {MAX_BODY} bytes", error_extra)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _error(413, "body", f"body: larger than {MAX_BODY} bytes", error_extra)
    try:
        values = parse(decode_json(raw), fields)
    except BadRequest as exc:
        return _error(400, exc.field, str(exc), error_extra)
    if _GATE.sem is None:
        _GATE.sem = asyncio.Semaphore(WORKERS)
    if _GATE.waiting >= MAX_WAITING:
        return _error(503, None, "busy: too many requests at once; try again in a moment", error_extra)
    _GATE.waiting += 1
    try:
        async with _GATE.sem:
            result = await asyncio.to_thread(work, values)
    except BadRequest as exc:
        return _error(400, exc.field, str(exc), error_extra)
    except Wan4StepError as exc:
        return _error(400, None, str(exc), error_extra)
    except Exception:  # noqa: BLE001 - logged with its traceback; the client gets no internals
        log.exception("Wan4Step: %s failed", request.path)
        return _error(500, None, "internal error in the Wan4Step route (details in the server log)", error_extra)
    finally:
        _GATE.waiting -= 1
    return web.json_response(result)
