"""The Wan2.1 VAE (`diffusers.AutoencoderKLWan`): loading from a diffusers folder or original files.

Original layout: `Wan2.1_VAE.pth` (read with weights_only=True) and ComfyUI's
`wan_2.1_vae.safetensors`, keys like `encoder.downsamples.0.residual.0.gamma`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import checkpoints as ckpt
from . import wan_keys
from .component_loading import ComponentSpec, SingleFileLayout, load_component
from .variants import KNOWN_VARIANTS, ConfigSpec, Variant


def _model_class() -> type[nn.Module]:
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan


VAE_LAYOUTS = (
    SingleFileLayout(
        ckpt.Layout(
            "wan", "original Wan2.1 VAE keys (Wan2.1_VAE.pth, wan_2.1_vae.safetensors)",
            ("encoder.conv1.weight", "decoder.head.2.weight", "conv2.weight"),
        ),
        wan_keys.vae_original_to_diffusers,
    ),
    SingleFileLayout(
        ckpt.Layout(
            "diffusers", "diffusers AutoencoderKLWan keys in one file",
            ("encoder.conv_in.weight", "decoder.conv_out.weight", "post_quant_conv.weight"),
        ),
        dict,
    ),
)

VAE_SPEC = ComponentSpec("vae", _model_class, VAE_LAYOUTS)


def load_vae(
    path: str | os.PathLike,
    *,
    config: ConfigSpec = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    variants: tuple[Variant, ...] = KNOWN_VARIANTS,
) -> nn.Module:
    """Load the Wan2.1 VAE from a diffusers folder or a single file (see `load_dit` for `config`)."""
    return load_component(VAE_SPEC, path, config=config, dtype=dtype, device=device, variants=variants)


def save_vae(vae: nn.Module, path: str | os.PathLike) -> os.PathLike:
    """Write the VAE in the original Wan2.1 layout (as ComfyUI's wan_2.1_vae.safetensors)."""
    tensors = wan_keys.vae_diffusers_to_original(vae.state_dict())
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    return ckpt.save_safetensors(tensors, path, format_name="revise.vae.wan", config=config)
