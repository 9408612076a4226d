"""The LightX2V StepDistill-CfgDistill schedule for Wan2.1 T2V, as pure functions.

Source: LightX2V `WanStepDistillScheduler` (lightx2v/models/schedulers/wan/
step_distill/scheduler.py) with the released T2V config
(`configs/distill/wan_t2v_distill_4step_cfg.json`: denoising_step_list
[1000, 750, 500, 250], sample_shift 5, sample_guide_scale 1):

    sigmas    = linspace(1, 0, 1001)[:-1]                    (fp32, 1000 values)
    sigmas    = shift * sigmas / (1 + (shift - 1) * sigmas)  (flow-matching time shift)
    timesteps = sigmas * 1000
    step i uses index 1000 - denoising_step_list[i]          -> sigma [1, .9375, .8333, .625]

and each step (`step_post`):

    x0 = x - sigma_i * v                                     (fp32; v is the model's flow prediction)
    x  = (1 - sigma_{i+1}) * x0 + sigma_{i+1} * noise         (LCM re-noising; last step returns x0)

LightX2V's Wan2.2 distilled scheduler replaces the re-noise with a deterministic
Euler step `x = x0 + sigma_{i+1} * v`; it is offered as `update="euler"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .errors import SettingsError

DEFAULT_STEPS = 4
DEFAULT_SHIFT = 5.0
DEFAULT_CFG = 1.0
NUM_TRAIN_TIMESTEPS = 1000
UPDATES = ("lcm", "euler")
SEED_MAX = 2**64 - 1  # torch generators take any unsigned 64-bit seed
STEP_LIST_FIX = "type training timesteps from 1000 down, separated by commas, e.g. '1000, 750, 500, 250' (or leave it empty)."


class ScheduleError(SettingsError, ValueError):
    """A step count, step_list or seed the schedule cannot use (also a ValueError, for old callers)."""


def denoising_step_list(steps: int = DEFAULT_STEPS) -> list[int]:
    """Evenly spaced training timesteps from 1000 down: 4 steps -> [1000, 750, 500, 250]."""
    if steps < 1 or steps > NUM_TRAIN_TIMESTEPS:
        raise ScheduleError(f"steps must be in 1..{NUM_TRAIN_TIMESTEPS}, got {steps}")
    return [NUM_TRAIN_TIMESTEPS - (i * NUM_TRAIN_TIMESTEPS) // steps for i in range(steps)]


def shifted_sigma_table(shift: float = DEFAULT_SHIFT) -> torch.Tensor:
    """The 1000-entry fp32 sigma table, index 0 = sigma 1."""
    s = torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1, dtype=torch.float32)[:-1]
    return shift * s / (1 + (shift - 1) * s)


def sigmas(
    steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT, step_list: Sequence[int] | None = None
) -> torch.Tensor:
    """Sigmas of each step plus a trailing 0 (the form ComfyUI's SIGMAS type uses), fp32."""
    steps_list = list(step_list) if step_list is not None else denoising_step_list(steps)
    for t in steps_list:
        if not 1 <= int(t) <= NUM_TRAIN_TIMESTEPS:
            raise ScheduleError(f"step_list: timestep {t} is outside 1..{NUM_TRAIN_TIMESTEPS}", fix=STEP_LIST_FIX)
    if any(a <= b for a, b in zip(steps_list, steps_list[1:], strict=False)):
        raise ScheduleError(f"step_list: timesteps must strictly decrease, got {steps_list}", fix=STEP_LIST_FIX)
    table = shifted_sigma_table(shift)
    idx = torch.tensor([NUM_TRAIN_TIMESTEPS - int(t) for t in steps_list])
    return torch.cat([table[idx], torch.zeros(1, dtype=torch.float32)])


def timesteps(sig: torch.Tensor) -> torch.Tensor:
    """What the model is conditioned on: sigma * 1000, as floats."""
    return sig[:-1] * NUM_TRAIN_TIMESTEPS


def parse_step_list(text: str) -> list[int] | None:
    """'1000, 750, 500, 250' -> [1000, 750, 500, 250]; empty -> None. Anything that is not a
    whole number is refused naming the field (never truncated)."""
    if not isinstance(text, str):
        raise ScheduleError("step_list must be text", found=type(text).__name__, fix=STEP_LIST_FIX)
    text = text.strip()
    if not text:
        return None
    out = []
    for item in (t.strip() for t in text.replace(";", ",").split(",")):
        if not item:
            continue
        try:
            v = float(item)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or not v.is_integer():
            shown = item if len(item) <= 40 else item[:37] + "..."
            raise ScheduleError(f"step_list: {shown!r} is not a whole number", fix=STEP_LIST_FIX)
        out.append(int(v))
    return out


def torch_seed(seed: int) -> int:
    """The seed as torch's generators take it everywhere: values >= 2^63 as their two's-complement
    negative twin (torch wraps negative seeds to the same unsigned 64-bit state), because
    ComfyUI's CPU noise sampler seeds `seed + 1` and 2^64 overflows torch's int64 argument
    ("Overflow when unpacking long long"). Same noise for every seed in 0..2^64-1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ScheduleError(f"seed {seed!r} is outside 0..{SEED_MAX}", fix="use a seed from 0 to 2^64-1.")
    return seed - 2**64 if seed >= 2**63 else seed


def step(
    x: torch.Tensor,
    x0: torch.Tensor,
    sigma: float,
    sigma_next: float,
    update: str,
    noise: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Move from x (at sigma) to sigma_next given the model's clean estimate x0 (all fp32)."""
    if sigma_next <= 0:
        return x0
    if update == "lcm":
        return (1 - sigma_next) * x0 + sigma_next * noise()
    if update == "euler":
        v = (x - x0) / sigma
        return x0 + sigma_next * v
    raise ValueError(f"update must be one of {UPDATES}, got {update!r}")


def latent_shape(width: int, height: int, frames: int, channels: int = 16) -> tuple[int, int, int, int]:
    """[C, T, H/8, W/8] of a Wan2.1 video latent."""
    return (channels, (frames - 1) // 4 + 1, height // 8, width // 8)


def check_video_size(width: int, height: int, frames: int) -> list[str]:
    """Problems with a requested size (empty = valid), each naming the nearest valid values."""
    problems = []
    for name, v in (("width", width), ("height", height)):
        if v < 16:
            problems.append(f"{name} {v} is below 16 (nearest valid: 16)")
        elif v % 16:
            lo, hi = v - v % 16, v - v % 16 + 16
            problems.append(f"{name} {v} is not divisible by 16 (nearest valid: {lo or 16} or {hi})")
    if frames < 1 or (frames - 1) % 4:
        lo = max(1, frames - (frames - 1) % 4)
        problems.append(f"frames {frames} is not 4n+1 (nearest valid: {lo} or {lo + 4})")
    return problems
