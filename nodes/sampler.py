"""Wan4Step Sampler (LCM 4-step) and Wan4Step Sigmas: the distilled recipe, guarded.

Sampling runs on ComfyUI's own stack (`comfy.sample.sample_custom`), so
conditioning, model management, progress, previews and interrupts are ComfyUI's;
the pack supplies the exact LightX2V sigmas and, for `noise=lightx2v`, the loop
that draws every re-noise from one seeded device generator.
"""

from __future__ import annotations

import logging
import math

import comfy.model_management
import comfy.sample
import comfy.samplers
import latent_preview
import torch
from comfy_api.latest import io

from ..wan4step import limits, requested, sampling, schedule
from ..wan4step.errors import OutOfMemoryError, SettingsError, WrongModelError
from .comfy_compat import progress

log = logging.getLogger("wan4step")

_IMAGE_COND_KEYS = ("concat_latent_image", "clip_vision_output", "reference_latents", "concat_mask")
# what core's WanVaceToVideo adds (comfy_extras/nodes_wan.py); comfy.model_base.WAN21_Vace consumes it
_VACE_COND_KEYS = ("vace_frames", "vace_mask", "vace_strength")


def _lightx2v_loop(model, x, sigmas, extra_args=None, callback=None, disable=None, update="lcm", noise=None):
    """A ComfyUI KSAMPLER function around the engine's loop."""
    extra_args = extra_args or {}

    def denoise(x_, sigma):
        comfy.model_management.throw_exception_if_processing_interrupted()
        return model(x_, sigma, **extra_args)

    def report(i, x0, x_):
        if callback is not None:
            callback({"x": x_, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

    return sampling.sample(denoise, x, sigmas, update=update, noise=noise, callback=report)


def recipe_warnings(steps: int, shift: float, cfg: float, step_list: list[int] | None) -> list[str]:
    warnings = []
    if step_list is None and steps != schedule.DEFAULT_STEPS:
        warnings.append(f"steps={steps}: the distilled model was trained for 4 steps; other counts blur or burn the video.")
    if shift != schedule.DEFAULT_SHIFT:
        warnings.append(f"shift={shift}: the distilled recipe uses shift 5.0.")
    if cfg != schedule.DEFAULT_CFG:
        warnings.append(f"cfg={cfg}: the model is CFG-distilled and expects cfg 1.0; cfg > 1 doubles the work and burns colours.")
    return warnings


def check_latent(samples, typed: dict | None = None) -> None:
    """Refuse a latent whose size breaks the recipe, naming what the user typed (`typed`: the
    latent node's width/height/frames read from the prompt) rather than the rounded latent."""
    if samples.ndim != 5 or samples.shape[1] != 16:
        raise SettingsError(
            "the latent is not a Wan2.1 video latent",
            expected="[batch, 16, frames, height/8, width/8] (use 'Empty HunyuanVideo 1.0 Latent' / EmptyHunyuanLatentVideo)",
            found=f"shape {list(samples.shape)}",
        )
    t, h, w = samples.shape[2:]
    size = {"width": w * 8, "height": h * 8, "frames": (t - 1) * 4 + 1}
    latent_of = {"width": lambda v: v // 8 == w, "height": lambda v: v // 8 == h,
                 "frames": lambda v: v >= 1 and (v - 1) // 4 + 1 == t}
    for k, v in (typed or {}).items():
        if k in size and latent_of[k](v):  # the typed value made this latent: report it
            size[k] = v
    problems = schedule.check_video_size(size["width"], size["height"], size["frames"])
    if problems:
        fixes = []
        if any(p.startswith(("width", "height")) for p in problems):
            fixes.append("set width/height to multiples of 16")
        if any(p.startswith("frames") for p in problems):
            fixes.append("set the length (frames) to 4n+1, e.g. 77 or 81")
        raise SettingsError("invalid video size: " + "; ".join(problems), fix="; ".join(fixes) + ".")
    batch = samples.shape[0]
    limits.check_job(batch * t * (h // 2) * (w // 2),
                     f"{size['width']}x{size['height']}, {size['frames']} frames" + (f", batch {batch}" if batch > 1 else ""))


def check_numbers(shift: float, cfg: float) -> None:
    """NaN passes ComfyUI's min/max checks (every comparison with NaN is False)."""
    for name, v in (("shift", shift), ("cfg", cfg)):
        if not math.isfinite(float(v)):
            raise SettingsError(f"{name} {v} is not a finite number", fix=f"set {name} to a number (the recipe: "
                                f"shift {schedule.DEFAULT_SHIFT}, cfg {schedule.DEFAULT_CFG}).")


def is_vace_model(model) -> bool:
    """ComfyUI's VACE model (Wan4Step Model Loader mode 'vace', or any loader of a VACE-merged file)."""
    import comfy.model_base

    return isinstance(getattr(model, "model", None), comfy.model_base.WAN21_Vace)


def check_text_only(conditioning, vace: bool = False) -> None:
    """Refuse image conditioning, and VACE control conditioning unless the model is a VACE model."""
    for _, extra in conditioning:
        hits = [k for k in _IMAGE_COND_KEYS if extra.get(k) is not None]
        if hits:
            raise WrongModelError(
                "image conditioning was given to the text-to-video model",
                found=f"conditioning with {', '.join(hits)} (from an image-to-video node)",
                fix="connect CLIPTextEncode output directly; Wan2.1 T2V-14B takes text only.",
            )
        hits = [k for k in _VACE_COND_KEYS if extra.get(k) is not None]
        if hits and not vace:
            raise WrongModelError(
                "VACE control conditioning was given to a text-to-video model, which would ignore it",
                found=f"conditioning with {', '.join(hits)} (from WanVaceToVideo)",
                fix="load a VACE-merged file (e.g. ..._StepCfgDistill_VACE-<TIER>.gguf) with the Wan4Step Model "
                    "Loader's mode set to 'vace', or connect CLIPTextEncode directly for plain text-to-video.",
            )


def out_of_memory(latent_image) -> OutOfMemoryError:
    _, _, t, h, w = latent_image.shape
    size = f"{w * 8}x{h * 8}, {(t - 1) * 4 + 1} frames"
    return OutOfMemoryError(
        f"the GPU ran out of memory while sampling {size}",
        fix="put a 'Wan4Step Block Swap' node (blocks_to_swap -1 = auto, or 40) between the loader and this "
            "sampler, set the UMT5 loader's device to 'cpu', pick a smaller GGUF tier, or lower the size/frames; "
            "'Wan4Step VRAM Advisor' computes settings that fit this card.",
    )


class Wan4StepSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepSampler",
            display_name="Wan4Step Sampler (LCM 4-step)",
            category="Wan4Step",
            description="Samples the 4-step distilled Wan2.1 T2V-14B with LightX2V's exact schedule (4 steps, shift 5, cfg 1).",
            inputs=[
                io.Model.Input("model", tooltip="A Wan2.1 T2V MODEL (Wan4Step Model Loader, UNETLoader or UnetLoaderGGUF)."),
                io.Conditioning.Input("positive", tooltip="The prompt, from CLIPTextEncode with the UMT5 encoder."),
                io.Latent.Input("latent", tooltip="An empty Wan latent: EmptyHunyuanLatentVideo (width/height step 16, length 4n+1)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Same seed + same settings + same device = same video."),
                io.Int.Input("steps", default=4, min=1, max=100, tooltip="The distilled model is trained for 4; other values warn."),
                io.Float.Input("shift", default=5.0, min=0.1, max=50.0, step=0.1, tooltip="Flow time shift; the recipe uses 5.0."),
                io.Float.Input("cfg", default=1.0, min=1.0, max=30.0, step=0.1,
                               tooltip="1.0 = CFG off: one forward per step and the negative prompt is never run."),
                io.Combo.Input("noise", options=["comfy", "lightx2v"], default="comfy",
                               tooltip="comfy: ComfyUI's CPU-seeded noise (matches KSampler). lightx2v: one seeded generator on the "
                                       "GPU for the initial latent and every re-noise (matches LightX2V's video for a seed)."),
                io.Combo.Input("update", options=list(schedule.UPDATES), default="lcm", advanced=True,
                               tooltip="lcm: re-noise between steps (the released model's sampler). euler: deterministic "
                                       "x0 + sigma'*v step (LightX2V's newer code)."),
                io.String.Input("step_list", default="", advanced=True,
                                tooltip="Optional custom training timesteps, e.g. '1000, 750, 500, 250' (overrides steps)."),
                io.Conditioning.Input("negative", optional=True, tooltip="Only used when cfg > 1."),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent; decode it with VAEDecode / VAEDecodeTiled.")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # to report the size as typed (wan4step/requested.py)
        )

    @classmethod
    def execute(cls, model, positive, latent, seed, steps, shift, cfg, noise, update, step_list="", negative=None) -> io.NodeOutput:
        latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        hidden = getattr(cls, "hidden", None)
        check_latent(latent_image, requested.latent_size(getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)))
        check_text_only(positive, vace=is_vace_model(model))
        check_numbers(shift, cfg)
        custom = schedule.parse_step_list(step_list)
        torch_seed = schedule.torch_seed(seed)
        warnings = recipe_warnings(steps, shift, cfg, custom)
        for w in warnings:
            log.warning("Wan4Step Sampler: %s", w)
        if cfg != 1.0 and negative is None:
            raise SettingsError("cfg > 1 needs a negative prompt", fix="connect a negative CLIPTextEncode, or set cfg to 1.0.")
        sigmas = schedule.sigmas(steps, shift, custom)
        neg = negative if negative is not None else positive  # cfg 1: never evaluated

        if noise == "lightx2v":
            gen = sampling.DeviceNoise(seed, model.load_device)
            noise_t = gen(tuple(latent_image.shape)).cpu()
            sampler = comfy.samplers.KSAMPLER(_lightx2v_loop, extra_options={"update": update, "noise": gen})
        else:
            noise_t = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
            sampler = (comfy.samplers.sampler_object("lcm") if update == "lcm"
                       else comfy.samplers.KSAMPLER(_lightx2v_loop, extra_options={"update": update}))

        callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
        try:
            samples = progress.sample_custom(  # comfy.sample.sample_custom + a bar that moves per block
                model, noise_t, cfg, sampler, sigmas, positive, neg, latent_image,
                noise_mask=latent.get("noise_mask"), callback=callback, seed=torch_seed,
            )
        except torch.OutOfMemoryError as exc:
            # still a torch.OutOfMemoryError, so ComfyUI's is_oom() sees it and unloads every model
            err = out_of_memory(latent_image)
            log.error("Wan4Step Sampler: %s", err)
            raise err from exc
        out = latent.copy()
        out.pop("downscale_ratio_spacial", None)
        out["samples"] = samples
        return io.NodeOutput(out, ui={"text": warnings} if warnings else None)


class Wan4StepSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepSigmas",
            display_name="Wan4Step Sigmas (LightX2V)",
            category="Wan4Step",
            description="LightX2V's distilled sigma schedule as SIGMAS, for SamplerCustomAdvanced.",
            inputs=[
                io.Int.Input("steps", default=4, min=1, max=100, tooltip="The distilled model is trained for 4 steps."),
                io.Float.Input("shift", default=5.0, min=0.1, max=50.0, step=0.1, tooltip="Flow time shift; the recipe uses 5.0."),
                io.String.Input("step_list", default="", tooltip="Optional custom timesteps, e.g. '1000, 750, 500, 250'."),
            ],
            outputs=[io.Sigmas.Output(tooltip="[1.0, 0.9375, 0.8333, 0.625, 0.0] for the default recipe.")],
        )

    @classmethod
    def execute(cls, steps, shift, step_list="") -> io.NodeOutput:
        return io.NodeOutput(schedule.sigmas(steps, shift, schedule.parse_step_list(step_list)))


NODES = [Wan4StepSampler, Wan4StepSigmas]
