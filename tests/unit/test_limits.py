"""wan4step.limits: the operator's job-size cap (WAN4STEP_MAX_TOKENS, read once by settings.py)."""

from __future__ import annotations

import pytest

from wan4step import limits
from wan4step.errors import SettingsError
from wan4step.settings import Settings


def test_no_cap_by_default():
    assert Settings.from_env({}).max_tokens == ""
    assert limits.max_tokens("") is None
    limits.check_job(10**9, "huge", raw="")


def test_cap_refuses_bigger_jobs_and_says_how_big():
    raw = Settings.from_env({"WAN4STEP_MAX_TOKENS": " 32760 "}).max_tokens
    limits.check_job(32760, "480x832, 81 frames", raw=raw)
    with pytest.raises(SettingsError, match=r"this job \(720x1280, 81 frames\) is 75,600 video tokens; "
                                            r"this server accepts at most 32,760 per job"):
        limits.check_job(75600, "720x1280, 81 frames", raw=raw)


@pytest.mark.parametrize("raw, cap", [("0", None), ("  ", None), ("-5", None), ("100", 100)])
def test_cap_values(raw, cap):
    assert limits.max_tokens(raw) == cap


def test_a_bad_cap_is_named_when_a_job_runs_not_at_import():
    assert Settings.from_env({"WAN4STEP_MAX_TOKENS": "lots"}).max_tokens == "lots"
    with pytest.raises(SettingsError, match="WAN4STEP_MAX_TOKENS='lots' is not a whole number"):
        limits.check_job(1, "tiny", raw="lots")
