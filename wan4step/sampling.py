"""The 4-step sampling loop, independent of ComfyUI.

`denoise(x, sigma)` returns the model's clean estimate x0 (for Wan's flow
prediction v: x0 = x - sigma * v). The loop follows `schedule.step`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import schedule


class DeviceNoise:
    """LightX2V-compatible noise: one `torch.Generator` on the sampling device, seeded once,
    drawing the initial latent and then every re-noise from the same stream (fp32)."""

    def __init__(self, seed: int, device: torch.device | str) -> None:
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self.device = torch.device(device)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, dtype=torch.float32, device=self.device, generator=self.generator)


def sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    update: str = "lcm",
    noise: Callable[[tuple[int, ...]], torch.Tensor] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run len(sigmas)-1 steps from x (already noised to sigmas[0]); returns the final x0."""
    if update not in schedule.UPDATES:
        raise ValueError(f"update must be one of {schedule.UPDATES}, got {update!r}")
    if update == "lcm" and noise is None:
        raise ValueError("the LCM update needs a noise source")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(x, sigmas[i] * s_in).to(torch.float32)
        if callback is not None:
            callback(i, x0, x)
        draw = (lambda shape=tuple(x.shape), dev=x.device: noise(shape).to(dev)) if noise is not None else None
        x = schedule.step(x.to(torch.float32), x0, sigma, sigma_next, update, draw)
    return x
