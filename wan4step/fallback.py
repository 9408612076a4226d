"""One policy for optional fast paths: check once, else fall back for good; OOM and interrupts propagate.

A fast path (a Triton kernel, cuBLASLt's FP8 matmul, torch.compile, an optional attention
package) can fail where it was never tested: no C compiler, an old driver or cuBLASLt, a GPU the
kernel was not built for, a self-check that disagrees with the reference. Such a failure switches
that one path off for the rest of the process, with one warning, and the exact fallback runs
instead: same numbers (or the documented tolerance), only slower.

Two kinds of exception are never such a failure and always propagate unchanged:
- running out of memory (`torch.OutOfMemoryError`, or a RuntimeError saying "out of memory" as
  cuBLAS reports an allocation failure): the fallback needs the same memory, and the host
  (ComfyUI) must see the OOM to free models. Disabling a kernel after an OOM would also make every
  later run slower for good.
- a user's cancel: the host registers its interrupt type with `propagate_also` (the engine does
  not import it).

Each kind of fast path is a `KernelSwitch` from `switch(name, fallback)`; hot paths test a key
against its `off` set (one set lookup, no call); a failing call goes through `fail`, a first-use
self-check through `check_once(key, lambda: attempt(probe, ...))`, a callable through `guard`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

import torch

log = logging.getLogger("wan4step")

_PROPAGATE: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


def propagate_also(*types: type[BaseException]) -> None:
    """Exception types that must never switch a fast path off (the host's interrupt, ...)."""
    global _PROPAGATE
    _PROPAGATE = tuple(dict.fromkeys(_PROPAGATE + types))


def must_propagate(exc: BaseException) -> bool:
    """OOM, interrupts and anything that is not an Exception (KeyboardInterrupt, SystemExit)."""
    if isinstance(exc, _PROPAGATE) or not isinstance(exc, Exception):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class KernelSwitch:
    """The keys (a quant kind, a (device, kind) pair, a qtype, ...) of one fast path that are off here."""

    __slots__ = ("name", "fallback", "off", "checked")

    def __init__(self, name: str, fallback: str) -> None:
        self.name = name
        self.fallback = fallback
        self.off: set[Hashable] = set()
        self.checked: set[Hashable] = set()

    def fail(self, key: Hashable, exc: BaseException, what: str | None = None) -> None:
        """The fast path raised `exc` for `key`: re-raise OOM/interrupts, else switch it off (one warning)."""
        if must_propagate(exc):
            raise exc
        if key not in self.off:
            self.off.add(key)
            log.warning("wan4step: %s failed (%s); using %s", what or f"{self.name} {key}", _first_line(exc),
                        self.fallback)

    def check_once(self, key: Hashable, check: Callable[[], bool]) -> bool:
        """Whether the fast path may run for `key`: `check()` (usually `attempt(...)`, which logs its own
        refusal) decides the first time and its answer is kept. If `check` raises (an OOM while
        checking), `key` stays unchecked and the next call checks again."""
        if key not in self.checked:
            if not check():
                self.off.add(key)
            self.checked.add(key)
        return key not in self.off

    def guard(self, key: Hashable, fast: Callable, slow: Callable, what: str | None = None) -> Callable:
        """`fast` until it raises once (then `slow` for good); the failing call is answered by `slow`."""

        def call(*args, **kwargs):
            if key not in self.off:
                try:
                    return fast(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - fail() re-raises what must propagate
                    self.fail(key, exc, what)
            return slow(*args, **kwargs)

        return call


def attempt(probe: Callable[[], Any], what: str, fallback: str) -> bool:
    """Run a self-check: True when `probe` returns without raising. Any other failure is logged
    ("<what> disabled (<why>); using <fallback>") and gives False; OOM and interrupts propagate."""
    try:
        probe()
        return True
    except BaseException as exc:  # noqa: BLE001 - filtered right below
        if must_propagate(exc):
            raise
        log.warning("wan4step: %s disabled (%s); using %s", what, _first_line(exc), fallback)
        return False


SWITCHES: dict[str, KernelSwitch] = {}


def switch(name: str, fallback: str) -> KernelSwitch:
    """The process-wide switch called `name` (created on first use)."""
    sw = SWITCHES.get(name)
    if sw is None:
        sw = SWITCHES[name] = KernelSwitch(name, fallback)
    return sw


def snapshot() -> dict[str, tuple[set, set]]:
    """The state of every switch (tests restore it, so one test's failures do not leak into the next)."""
    return {name: (set(s.off), set(s.checked)) for name, s in SWITCHES.items()}


def restore(state: dict[str, tuple[set, set]]) -> None:
    """Put every switch back to `state`, in place (modules hold references to the sets)."""
    for name, s in SWITCHES.items():
        off, checked = state.get(name, (set(), set()))
        s.off.clear()
        s.off.update(off)
        s.checked.clear()
        s.checked.update(checked)
