"""The Wan2.1 VAE: a plain-torch engine (model.py), readers and key maps (formats.py),
chunked/tiled decode and encode (tiled.py), a fused norm kernel (kernels.py).

Entry points: `load_vae(path, dtype, device) -> WanVAE`, `WanVAE.decode / decode_tiled / encode /
encode_tiled`, `read_vae_state_dict(path) -> VAEFile`, `normalize_latent / denormalize_latent`.
"""

from .formats import VAEFile, diffusers_to_original, load_vae, original_to_diffusers, read_vae_state_dict
from .model import LATENT_MEAN, LATENT_STD, WAN21_VAE, VAEConfig, WanVAE, denormalize_latent, normalize_latent

__all__ = [
    "LATENT_MEAN",
    "LATENT_STD",
    "WAN21_VAE",
    "VAEConfig",
    "VAEFile",
    "WanVAE",
    "denormalize_latent",
    "diffusers_to_original",
    "load_vae",
    "normalize_latent",
    "original_to_diffusers",
    "read_vae_state_dict",
]
