"""wan4step.limits: the operator's job-size cap, read from the environment when a job starts."""

from __future__ import annotations

import pytest

from wan4step import limits
from wan4step.errors import SettingsError


def test_no_cap_by_default(monkeypatch):
    monkeypatch.delenv(limits.ENV_MAX_TOKENS, raising=False)
    assert limits.max_tokens() is None
    limits.check_job(10**9, "huge")


def test_cap_refuses_bigger_jobs_and_says_how_big(monkeypatch):
    monkeypatch.setenv(limits.ENV_MAX_TOKENS, "32760")
    limits.check_job(32760, "480x832, 81 frames")
    with pytest.raises(SettingsError, match=r"this job \(720x1280, 81 frames\) is 75,600 video tokens; "
                                            r"this server accepts at most 32,760 per job"):
        limits.check_job(75600, "720x1280, 81 frames")


@pytest.mark.parametrize("raw, cap", [("0", None), ("  ", None), ("-5", None), ("100", 100)])
def test_cap_values(monkeypatch, raw, cap):
    monkeypatch.setenv(limits.ENV_MAX_TOKENS, raw)
    assert limits.max_tokens() == cap


def test_a_bad_cap_is_named(monkeypatch):
    monkeypatch.setenv(limits.ENV_MAX_TOKENS, "lots")
    with pytest.raises(SettingsError, match="WAN4STEP_MAX_TOKENS='lots' is not a whole number"):
        limits.max_tokens()
