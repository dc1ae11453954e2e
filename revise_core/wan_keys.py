"""Key names of Wan2.1 checkpoints: original Wan / ComfyUI layout <-> diffusers layout.

Original -> diffusers uses diffusers' own converters (`convert_wan_transformer_to_diffusers`,
`convert_wan_vae_to_diffusers`), so we follow upstream fixes. diffusers has no inverse; we need one to
write checkpoints that load in ComfyUI's native Wan nodes and in Omni-Video, so it is written here and
tested as an exact round trip through the diffusers converters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

COMFYUI_DIT_PREFIX = "model.diffusion_model."


def dit_original_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan DiT keys (bare or with the ComfyUI prefix) -> `WanTransformer3DModel` keys."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    # The converter pops from its input; give it a copy so the caller's dict survives.
    return convert_wan_transformer_to_diffusers(dict(state_dict))


# diffusers -> original, applied in order to every key (inverse of the diffusers rename table).
_DIT_TO_ORIGINAL: tuple[tuple[str, str], ...] = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1.", "self_attn."),
    ("attn2.", "cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
)


def dit_diffusers_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`WanTransformer3DModel` keys -> original Wan keys (as in ComfyUI's repackaged files, no prefix).

    Only the T2V architecture (no image embedder, no VACE) is mapped; anything else is an error.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key == "scale_shift_table":
            new = "head.modulation"
        elif key.startswith("proj_out."):
            new = "head.head." + key[len("proj_out."):]
        else:
            new = key
            for old, replacement in _DIT_TO_ORIGINAL:
                new = new.replace(old, replacement)
            new = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", new)
            # diffusers' block norm2 is the cross-attention norm, which the original calls norm3.
            new = re.sub(r"^(blocks\.\d+)\.norm2\.", r"\1.norm3.", new)
        if "image_embedder" in new or "add_k_proj" in new or "add_v_proj" in new:
            raise ValueError(f"cannot map diffusers key '{key}' to the original Wan T2V layout")
        out[new] = tensor
    return out


def vae_original_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan2.1 VAE keys (`Wan2.1_VAE.pth`, ComfyUI `wan_2.1_vae.safetensors`) -> diffusers."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    return convert_wan_vae_to_diffusers(dict(state_dict))


_RESNET_TO_ORIGINAL = (
    ("norm1.", "residual.0."),
    ("conv1.", "residual.2."),
    ("norm2.", "residual.3."),
    ("conv2.", "residual.6."),
    ("conv_shortcut.", "shortcut."),
)
# Wan2.1 decoder: each up block is 3 residual blocks followed by one upsampler, flattened into
# `decoder.upsamples.0..14` (the last block has no upsampler), hence index 4*block + position.
_DECODER_BLOCK_STRIDE = 4


def _resnet_param_to_original(rest: str) -> str:
    for old, new in _RESNET_TO_ORIGINAL:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def vae_diffusers_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`AutoencoderKLWan` keys -> original Wan2.1 VAE keys (inverse of `vae_original_to_diffusers`)."""
    out: dict[str, torch.Tensor] = {}
    fixed = {
        "quant_conv": "conv1",
        "post_quant_conv": "conv2",
        "encoder.conv_in": "encoder.conv1",
        "decoder.conv_in": "decoder.conv1",
        "encoder.norm_out": "encoder.head.0",
        "encoder.conv_out": "encoder.head.2",
        "decoder.norm_out": "decoder.head.0",
        "decoder.conv_out": "decoder.head.2",
    }
    for key, tensor in state_dict.items():
        module, _, param = key.rpartition(".")
        if module in fixed:
            out[f"{fixed[module]}.{param}"] = tensor
            continue
        match = re.match(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
        if match:
            side, kind, index, rest = match.groups()
            if kind == "attentions":
                out[f"{side}.middle.1.{rest}"] = tensor
            else:
                out[f"{side}.middle.{2 * int(index)}.{_resnet_param_to_original(rest)}"] = tensor
            continue
        match = re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key)
        if match:
            index, rest = match.groups()
            out[f"encoder.downsamples.{index}.{_resnet_param_to_original(rest)}"] = tensor
            continue
        match = re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key)
        if match:
            block, position, rest = (int(match.group(1)), int(match.group(2)), match.group(3))
            out[f"decoder.upsamples.{_DECODER_BLOCK_STRIDE * block + position}.{_resnet_param_to_original(rest)}"] = tensor
            continue
        match = re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", key)
        if match:
            block, rest = int(match.group(1)), match.group(2)
            out[f"decoder.upsamples.{_DECODER_BLOCK_STRIDE * block + 3}.{rest}"] = tensor
            continue
        raise ValueError(f"cannot map diffusers VAE key '{key}' to the original Wan2.1 layout")
    return out
