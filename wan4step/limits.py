"""Operator limits for a shared server: the largest job the Wan4Step Sampler accepts.

ComfyUI has no job-size limit of its own (EmptyHunyuanLatentVideo takes up to 16384 frames of
16384x16384), and one huge job holds a shared GPU for hours. The operator sets the cap in the
environment of the ComfyUI process (`settings.py`: read once, at start); unset means no cap.

    WAN4STEP_MAX_TOKENS=75600   # 720x1280x81 per video (the recipe's largest size)
"""

from __future__ import annotations

from .errors import SettingsError

ENV_MAX_TOKENS = "WAN4STEP_MAX_TOKENS"


def max_tokens(raw: str | None = None) -> int | None:
    """The cap in DiT tokens per job (latent frames x h/16 x w/16 x batch), or None."""
    if raw is None:
        from .settings import SETTINGS

        raw = SETTINGS.max_tokens
    raw = raw.strip()
    if not raw:
        return None
    try:
        cap = int(raw)
    except ValueError:
        raise SettingsError(f"{ENV_MAX_TOKENS}={raw[:40]!r} is not a whole number",
                            fix=f"the server's operator sets {ENV_MAX_TOKENS} to a token count, e.g. 75600.") from None
    return cap if cap > 0 else None


def check_job(tokens: int, size_text: str, raw: str | None = None) -> None:
    """Refuse a job above the operator's cap (`raw`: the setting's text; None = SETTINGS)."""
    cap = max_tokens(raw)
    if cap is not None and tokens > cap:
        raise SettingsError(
            f"this job ({size_text}) is {tokens:,} video tokens; this server accepts at most {cap:,} per job",
            fix=f"lower the size, frames or batch (720x1280x81 is 75,600 tokens, 480x832x81 is 32,760); "
                f"the limit is the server's {ENV_MAX_TOKENS}.")
