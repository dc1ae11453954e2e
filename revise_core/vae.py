"""The Wan2.1 VAE (`diffusers.AutoencoderKLWan`): loading from a diffusers folder or original files.

Original layout: `Wan2.1_VAE.pth` (read with weights_only=True) and ComfyUI's
`wan_2.1_vae.safetensors`, keys like `encoder.downsamples.0.residual.0.gamma`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from . import checkpoints as ckpt
from . import video as video_ops
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


# --- encode / decode -----------------------------------------------------------------------------
# Latents outside the model path are raw VAE space (as ComfyUI's own Wan nodes keep them); the
# DiT and the connector see them normalised with the per-channel Wan mean / std.

def _latent_stats(vae: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _as_channels(vae.config.latents_mean, like), _as_channels(vae.config.latents_std, like)


def _as_channels(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1, 1)


def denormalize_with(latents: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised -> raw latents with given per-channel statistics (when the VAE itself is not at hand)."""
    return latents * _as_channels(std, latents) + _as_channels(mean, latents)


def normalize_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> the normalised space the DiT works in."""
    mean, std = _latent_stats(vae, latents)
    return (latents - mean) / std


def denormalize_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> raw VAE latents."""
    return denormalize_with(latents, vae.config.latents_mean, vae.config.latents_std)


@contextlib.contextmanager
def on_each_chunk(vae: nn.Module, callback: Callable[[], None] | None) -> Iterator[None]:
    """Call `callback()` before each causal chunk the VAE's encoder or decoder processes (diffusers' Wan VAE
    runs them one at a time: the first frame, then 4 frames per latent frame to encode; one latent frame per
    call to decode; per tile when tiled). A callback that raises stops the pass there: ComfyUI's Cancel
    between chunks, and a progress bar that moves during a minutes-long encode or decode."""
    if callback is None:
        yield
        return

    def before_chunk(module: nn.Module, args: tuple) -> None:
        callback()
        return None  # a forward pre-hook that returns something replaces the module's input

    handles = [module.register_forward_pre_hook(before_chunk) for module in (vae.encoder, vae.decoder)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        # a pass stopped mid-way leaves diffusers' causal caches (activations, on the GPU) filled until the
        # next pass; after a finished pass they are empty already
        vae.clear_cache()


def encode_chunk_count(num_frames: int) -> int:
    """How many times `on_each_chunk` fires while encoding `num_frames` pixel frames (untiled, as `encode`
    runs): the first frame, then 4 frames per chunk (diffusers' `_encode` loop)."""
    return 1 + (num_frames - 1) // 4


def chunk_count(vae: nn.Module, latent_shape: tuple[int, ...], *, tiled: bool = False) -> int:
    """How many times `on_each_chunk` fires while decoding latents of `latent_shape` [B, C, t, h, w]: one
    chunk per latent frame, per tile when tiling applies."""
    frames, height, width = latent_shape[2], latent_shape[3], latent_shape[4]
    ratio = vae.spatial_compression_ratio
    if tiled and (height * ratio > vae.tile_sample_min_height or width * ratio > vae.tile_sample_min_width):
        rows = len(range(0, height, vae.tile_sample_stride_height // ratio))
        columns = len(range(0, width, vae.tile_sample_stride_width // ratio))
        return frames * rows * columns
    return frames


def encode(vae: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """Pixels [B, 3, T, H, W] in -1..1 -> raw latents [B, 16, (T-1)/4+1, H/8, W/8] (distribution mode)."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"VAE encode expects pixels [B, 3, T, H, W], got shape {tuple(video.shape)}")
    return vae.encode(video.to(ckpt.compute_dtype(vae))).latent_dist.mode()


def decode(
    vae: nn.Module,
    latents: torch.Tensor,
    *,
    num_latent_frames: int | None = None,
    tiled: bool = False,
    clamp: bool = True,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Raw latents [B, 16, t, h, w] -> pixels [B, 3, 4(t'-1)+1, 8h, 8w] in -1..1.

    - `num_latent_frames`: decode only the first t' latent frames (the decoder is causal, so a prefix
      decodes exactly as it would inside the full video, for a fraction of the cost).
    - `tiled`: diffusers' spatial tiling, for memory (not with clamp=False).
    - `clamp=False`: the differentiable path; diffusers clamps to [-1, 1], which zeroes the gradient of
      every saturated pixel, so the unclamped decode runs the same causal loop without the clamp.
    - `checkpoint` (unclamped path only): gradient checkpointing per latent frame, so the decoder's
      activations of one frame at a time are kept for backward.
    """
    if latents.ndim != 5:
        raise ValueError(f"VAE decode expects latents [B, C, T, H, W], got shape {tuple(latents.shape)}")
    if num_latent_frames is not None:
        if not 1 <= num_latent_frames <= latents.shape[2]:
            raise ValueError(f"num_latent_frames must be in 1..{latents.shape[2]}, got {num_latent_frames}")
        latents = latents[:, :, :num_latent_frames]
    latents = latents.to(device=ckpt.device_of(vae), dtype=ckpt.compute_dtype(vae))
    if not clamp:
        if tiled:
            raise ValueError("tiled decoding always clamps; use tiled=False for the differentiable path")
        return _decode_unclamped(vae, latents, checkpoint=checkpoint)
    previous = vae.use_tiling
    vae.use_tiling = tiled
    try:
        return vae.decode(latents).sample
    finally:
        vae.use_tiling = previous


def sampled_latent_frames(num_latent_frames: int, count: int) -> list[int]:
    """`count` latent frame indices spread uniformly over the clip (first and last included), no repeats."""
    if num_latent_frames < 1 or count < 1:
        raise ValueError(f"need at least one latent frame and one sample, got {num_latent_frames} and {count}")
    count = min(count, num_latent_frames)
    return sorted({round(i * (num_latent_frames - 1) / max(count - 1, 1)) for i in range(count)})


def pixel_frame_of(latent_index: int) -> int:
    """The source frame a latent frame is paired with: 0 for the first, the last of its 4 frames after it."""
    return 4 * latent_index


def decode_frames(vae: nn.Module, latents: torch.Tensor, indices: list[int], *, checkpoint: bool = False) -> torch.Tensor:
    """Decode each chosen latent frame on its own, unclamped: [B, 16, t, h, w] -> [B, 3, len(indices), 8h, 8w].

    The paper's critic input (section 3.2, "we uniformly sample F frames from x̂0 and decode them"): each
    latent frame goes through the causal decoder as a first chunk, which yields one frame and needs no
    temporal context, so the decoder's cost and memory are those of F single frames. For a later latent
    frame this approximates its last pixel frame rather than reproducing it exactly (no causal cache).
    """
    if latents.ndim != 5:
        raise ValueError(f"VAE decode expects latents [B, C, T, H, W], got shape {tuple(latents.shape)}")
    if not indices or any(not 0 <= i < latents.shape[2] for i in indices):
        raise ValueError(f"latent frame indices must be in 0..{latents.shape[2] - 1}, got {indices}")
    latents = latents.to(ckpt.compute_dtype(vae))
    frames = [_decode_unclamped(vae, latents[:, :, i:i + 1], checkpoint=checkpoint) for i in indices]
    return torch.cat(frames, dim=2)


def _decode_unclamped(vae: nn.Module, latents: torch.Tensor, *, checkpoint: bool = False) -> torch.Tensor:
    # Hand-written on purpose: the same frame-by-frame causal loop as AutoencoderKLWan._decode, minus
    # its final clamp (gradients must reach saturated pixels). The feature cache is cloned, never
    # detached, inside the decoder, so autograd flows through it.
    vae.clear_cache()
    try:
        hidden = vae.post_quant_conv(latents)
        cache: list = list(vae._feat_map)
        outputs = []
        for index in range(hidden.shape[2]):
            frame = hidden[:, :, index:index + 1]
            if checkpoint and torch.is_grad_enabled():
                # The decoder rewrites its cache list in place; giving each call a fresh list built from
                # the saved entries makes the recomputation in backward see exactly the same inputs.
                from torch.utils.checkpoint import checkpoint as run_checkpointed

                out, *cache = run_checkpointed(_decode_frame, vae, frame, index == 0, *cache, use_reentrant=False)
            else:
                out, *cache = _decode_frame(vae, frame, index == 0, *cache)
            outputs.append(out)
        return torch.cat(outputs, dim=2)
    finally:
        vae.clear_cache()


def _decode_frame(vae: nn.Module, frame: torch.Tensor, first: bool, *cache_in):
    cache = list(cache_in)
    out = vae.decoder(frame, feat_cache=cache, feat_idx=[0], first_chunk=first)
    return (out, *cache)


def encode_stream(vae: nn.Module, frames: Iterable[torch.Tensor]) -> torch.Tensor:
    """Frames [H, W, 3] in 0..1, one at a time (4k+1 of them) -> raw latents [1, 16, k+1, H/8, W/8] on the host.

    The same causal loop as `AutoencoderKLWan._encode` (the first frame alone, then 4 frames per latent frame,
    the encoder's cache carried between chunks) fed chunk by chunk, so that only one chunk of pixels is ever in
    memory: the whole clip never is. Equal to `encode` of the stacked frames. Written out because diffusers'
    loop takes the whole clip as one tensor."""
    if getattr(vae.config, "patch_size", None) is not None:
        raise ValueError("streamed encoding follows Wan2.1's VAE; this VAE patchifies its input (Wan2.2)")
    device, dtype = ckpt.device_of(vae), ckpt.compute_dtype(vae)
    chunk: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    count = 0
    vae.clear_cache()
    try:
        for frame in frames:
            chunk.append(frame)
            count += 1
            if len(chunk) == (1 if not outputs else 4):
                pixels = video_ops.to_model_space(torch.stack(chunk))
                vae._enc_conv_idx = [0]
                outputs.append(vae.encoder(pixels.to(device=device, dtype=dtype), feat_cache=vae._enc_feat_map,
                                           feat_idx=vae._enc_conv_idx))
                chunk = []
        if not outputs or chunk:
            raise ValueError(f"streamed encoding needs 4k+1 frames, got {count}")
        # quant_conv is a 1x1x1 convolution: applied to all latent frames at once, as diffusers does
        moments = vae.quant_conv(torch.cat(outputs, 2))
    finally:
        vae.clear_cache()
    return moments[:, : moments.shape[1] // 2].cpu()  # the distribution's mode, as `encode`


def decode_stream(vae: nn.Module, latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """Raw latents [1, 16, t, h, w] (on the host) -> pixels [n, H, W, 3] in 0..1 on the host, one latent frame at a
    time (1 pixel frame, then 4 per latent frame), clamped as diffusers' decode.

    `AutoencoderKLWan._decode`'s causal loop, with each latent frame moved to the device only when it is decoded
    and each chunk of pixels handed back at once, so neither the latents nor the pixels of the clip sit on the
    device. Equal to `decode` of the whole latents."""
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"streamed decoding expects latents [1, C, T, H, W], got shape {tuple(latents.shape)}")
    device, dtype = ckpt.device_of(vae), ckpt.compute_dtype(vae)
    vae.clear_cache()
    try:
        cache: list = list(vae._feat_map)
        for index in range(latents.shape[2]):
            # post_quant_conv is 1x1x1: per latent frame it gives what it gives on the whole clip
            hidden = vae.post_quant_conv(latents[:, :, index:index + 1].to(device=device, dtype=dtype))
            out, *cache = _decode_frame(vae, hidden, index == 0, *cache)
            yield video_ops.from_model_space(out.clamp(-1.0, 1.0).float()).cpu()
    finally:
        vae.clear_cache()
