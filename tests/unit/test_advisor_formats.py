"""The advisor restricted to one weights format: which of that format's files fits, and it says so."""

from __future__ import annotations

import pytest

from wan4step import catalog
from wan4step.advisor import Machine, Request, recommend, with_overrides
from wan4step.errors import SettingsError


def _card(name: str, ram_gb: float) -> Machine:
    return with_overrides(Machine(None, 0, 0, None, 0, 0), gpu=name, ram_gb=ram_gb, disk_gb=500)


def test_gguf_only_picks_a_gguf_tier_where_fp8_would_win():
    m = _card("RTX 4080 SUPER", 32)
    free = recommend(m, Request(832, 480, 81))
    only = recommend(m, Request(832, 480, 81, formats=("gguf",)))
    assert free.kind == "fp8"  # the unrestricted pick, so the restriction is what changes the answer
    assert only.fits and only.kind == "gguf" and only.weights_key in catalog.WEIGHTS
    assert "only GGUF weights were considered" in only.reason
    assert "asked for GGUF weights only" in only.reason  # not "does not fit", which would be false
    assert all("LightX2V" not in a for a in only.alternatives)


def test_a_format_the_gpu_cannot_run_is_not_picked_anyway():
    rec = recommend(_card("RTX 3090", 64), Request(832, 480, 81, formats=("fp8",)))
    assert not rec.fits or rec.kind != "fp8"


def test_unknown_format_is_refused_and_a_list_becomes_a_tuple():
    with pytest.raises(SettingsError, match="unknown weights format"):
        Request(formats=("fp4",))
    assert Request(formats=["gguf"]).formats == ("gguf",)
