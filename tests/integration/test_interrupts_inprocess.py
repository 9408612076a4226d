"""ComfyUI's interrupt flag is honoured inside the engine's VAE decode and UMT5 encode (in-process).

ComfyUI's Cancel sets a flag that only code asking for it raises. The UMT5 encode asks per
sub-layer (comfy_compat/progress.py: EncodeTicks; a CPU encode of the real XXL runs for seconds),
the VAE decode before every module call (comfy_compat/interrupts.py; its progress units are whole
upsampling stages). Here the flag is set before the call: the call must stop before any output is
produced, and the next call must run normally (the flag is consumed).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from wan4step.tiny.umt5 import tiny_spiece_model, tiny_umt5_state_dict, write_comfy
from wan4step.tiny.vae import write_tiny_vae


@pytest.fixture(scope="module")
def model_dirs(comfy, tmp_path_factory):
    d = tmp_path_factory.mktemp("interrupt_models")
    (d / "te").mkdir()
    (d / "vae").mkdir()
    write_comfy(d / "te" / "umt5_interrupt.safetensors", tiny_umt5_state_dict(), tiny_spiece_model())
    write_tiny_vae(d / "vae" / "vae_interrupt.safetensors", "safetensors", dtype=torch.bfloat16)
    comfy.folder_paths.add_model_folder_path("text_encoders", str(d / "te"))
    comfy.folder_paths.add_model_folder_path("vae", str(d / "vae"))
    return d


@contextlib.contextmanager
def _cancelled(comfy):
    """The body runs with ComfyUI's interrupt flag set and must raise its InterruptProcessingException."""
    comfy.mm.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.mm.InterruptProcessingException):
            yield
    finally:
        comfy.mm.interrupt_current_processing(False)


def test_umt5_encode_stops_on_interrupt(comfy, pack, model_dirs):
    with torch.inference_mode():
        clip = pack.nodes.text_encoder.Wan4StepUMT5Loader.execute("umt5_interrupt.safetensors", "auto", "cpu").result[0]
        tokens = clip.tokenize("a red fox in snow")
        with _cancelled(comfy):
            clip.encode_from_tokens(tokens)
        cond = clip.encode_from_tokens(tokens)
    assert cond.shape[-1] == 4096


def test_vae_decode_stops_before_the_first_frame(comfy, pack, model_dirs):
    with torch.inference_mode():
        vae = pack.nodes.vae_loader.Wan4StepVAELoader.execute("vae_interrupt.safetensors", "fp32", "off").result[0]
        engine = vae.first_stage_model
        seen = []
        original = engine.progress

        def progress(done, total):
            seen.append(done)
            original(done, total)

        engine.progress = progress
        latent = torch.randn(1, 16, 3, 8, 8)
        with _cancelled(comfy):
            vae.decode(latent)
        assert seen == [], "the decode produced frames before it stopped"
        video = vae.decode(latent)
    assert video.shape[-4] == 9 and seen
