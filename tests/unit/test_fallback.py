"""The one fallback policy (wan4step/fallback.py) and the settings object (wan4step/settings.py)."""

from __future__ import annotations

import pytest
import torch

from wan4step import fallback
from wan4step.settings import Settings


@pytest.fixture(autouse=True)
def _isolated():
    state = fallback.snapshot()
    yield
    fallback.restore(state)


class Cancelled(Exception):
    """A host's interrupt (ComfyUI's InterruptProcessingException in the pack)."""


def test_a_failing_fast_path_is_switched_off_once_with_one_warning(caplog):
    sw = fallback.switch("test kernel", "the slow path")
    with caplog.at_level("WARNING", logger="wan4step"):
        for _ in range(3):
            try:
                raise RuntimeError("PTX assembly failed\nmore")
            except RuntimeError as e:
                sw.fail("fp8", e, "test kernel for fp8")
    assert "fp8" in sw.off
    assert caplog.text.count("test kernel for fp8 failed (RuntimeError: PTX assembly failed); using the slow path") == 1


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory"),
                                 RuntimeError("CUBLAS_STATUS_ALLOC_FAILED: out of memory"), Cancelled("stop")])
def test_oom_and_interrupts_propagate_and_never_switch_anything_off(exc):
    fallback.propagate_also(Cancelled)
    sw = fallback.switch("test kernel", "the slow path")
    with pytest.raises(type(exc)):
        sw.fail("fp8", exc)
    assert "fp8" not in sw.off
    calls = []
    guarded = sw.guard("k", lambda: (_ for _ in ()).throw(exc), lambda: calls.append(1))
    with pytest.raises(type(exc)):
        guarded()
    assert "k" not in sw.off and not calls
    with pytest.raises(type(exc)):
        sw.check_once("c", lambda: fallback.attempt(lambda: (_ for _ in ()).throw(exc), "probe", "slow"))
    assert "c" not in sw.checked  # checked again next time


def test_check_once_keeps_the_answer_and_attempt_logs_the_reason(caplog):
    sw = fallback.switch("test decoder", "the torch decoder")
    runs = []

    def bad():
        runs.append(1)
        raise ValueError("differs from the torch decoder")

    with caplog.at_level("WARNING", logger="wan4step"):
        for _ in range(3):
            assert not sw.check_once(12, lambda: fallback.attempt(bad, "test decoder for Q4_K", sw.fallback))
    assert runs == [1] and 12 in sw.off
    assert "test decoder for Q4_K disabled (ValueError: differs from the torch decoder); using the torch decoder" in caplog.text
    assert sw.check_once(13, lambda: fallback.attempt(lambda: None, "x", "y")) and 13 not in sw.off


def test_guard_answers_the_failing_call_with_the_fallback():
    sw = fallback.switch("test attention", "SDPA")

    def fast(x):
        raise RuntimeError("no kernel image for this GPU")

    g = sw.guard("sage", fast, lambda x: x + 1)
    assert g(1) == 2 and g(2) == 3 and "sage" in sw.off


def test_the_engine_oom_error_is_a_torch_oom():
    from wan4step.errors import OutOfMemoryError, Wan4StepError

    e = OutOfMemoryError("the GPU ran out of memory while sampling 832x480", fix="add Block Swap")
    assert isinstance(e, torch.OutOfMemoryError) and isinstance(e, Wan4StepError)
    assert fallback.must_propagate(e) and "Fix: add Block Swap" in str(e)


def test_settings_read_every_switch_from_one_environment():
    s = Settings.from_env({"WAN4STEP_GGUF_TRITON": "0", "WAN4STEP_FUSED": "0",
                           "WAN4STEP_TUNING": "ln=8", "TRITON_INTERPRET": "1"})
    assert (s.gguf_triton, s.fused, s.tuning, s.triton_interpret) == (False, False, "ln=8", True)
    d = Settings.from_env({})
    assert (d.gguf_triton, d.fused, d.tuning, d.triton_interpret) == (True, True, "", False)


def test_no_engine_module_reads_the_environment_at_run_time():
    """WAN4STEP_* switches come from settings.py only (Triton's own TRITON_INTERPRET is read where
    Triton-specific code needs it at import)."""
    import pathlib
    import re

    root = pathlib.Path(fallback.__file__).parent
    hits = [str(p.relative_to(root)) for p in root.rglob("*.py")
            if p.name != "settings.py" and re.search(r"environ(\.get)?\(?\[?[\"']WAN4STEP_", p.read_text())]
    assert hits == []
