"""One training sample's loss: flow matching, and the critic on the one-step estimate when σ <= σ_max.

Shared by the trainer and the benchmarks so that both measure the same computation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from revise_core import losses
from revise_core import vae as vae_ops
from revise_core.critic import SelfCritic

from .config import USOConfig
from .data import Features


@dataclass
class MicroResult:
    loss: torch.Tensor  # with graph
    l_fm: float
    l_reason: float  # NaN when the critic did not run
    triggered: bool
    delta: float
    delta_base: float
    p_yes: float
    sigma: float


def autocast(device: torch.device, dtype: torch.dtype | None):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@dataclass
class LossParts:
    """The tensors of one sample's loss, before anything is read back to the host."""

    loss: torch.Tensor  # with graph
    fm: torch.Tensor
    reason: torch.Tensor  # [1]; NaN when the critic did not run
    p_yes: torch.Tensor  # [1]; NaN when the critic did not run
    delta: torch.Tensor | None = None
    delta_base: torch.Tensor | None = None


def loss_parts(model: nn.Module, vae: nn.Module, critic: SelfCritic, feats: Features, instruction: str, *,
               sigma: torch.Tensor, noise: torch.Tensor, drop: bool, triggered: bool, config: USOConfig,
               device: torch.device, autocast_dtype: torch.dtype | None) -> LossParts:
    """The computation of `sample_loss` without host synchronisation (also what the cost model runs on fake
    tensors): `triggered` says whether the critic runs (σ <= σ_max, objective not SFT)."""
    x0 = feats.target_latents.to(device)
    noise = noise.to(device)
    z_t = losses.noisy_latents(x0, noise, sigma)
    with autocast(device, autocast_dtype):
        velocity = model(z_t, sigma, feats.source_latents.to(device), feats.vlm_states.to(device),
                         feats.text_tokens.to(device), drop,
                         None if feats.vlm_tokens is None else feats.vlm_tokens.to(device))
    fm = losses.flow_matching_loss(velocity, losses.flow_target(x0, noise))
    nan = torch.full((1,), float("nan"), device=fm.device)
    reason, p_yes, delta, delta_base = nan, nan, None, None
    if triggered:
        # RWR only needs the value of P(Yes): no graph through the decoder and the VLM.
        grad_context = contextlib.nullcontext() if config.objective == "uso" else torch.no_grad()
        with grad_context, autocast(device, autocast_dtype):
            relative, verdict, delta_base = critic_on_estimate(vae, critic, z_t, sigma, velocity, feats, instruction,
                                                               config.decode_latent_frames or None,
                                                               checkpoint=config.checkpointing_vae,
                                                               sampled_frames=(config.critic_frames
                                                                               if config.critic_decode == "frames"
                                                                               else None))
        delta = verdict.delta.detach()
        p_yes = torch.sigmoid(delta.float()).view(1)
        reason = losses.reason_loss(relative.float()).view(1)
    loss = losses.combine(config.objective, fm, reason=reason.to(fm.device), p_yes=p_yes.to(fm.device),
                          weight=config.reason_weight)
    return LossParts(loss, fm, reason, p_yes, delta, delta_base)


def sample_loss(model: nn.Module, vae: nn.Module, critic: SelfCritic, feats: Features, instruction: str, *,
                sigma: torch.Tensor, noise: torch.Tensor, drop: bool, config: USOConfig, device: torch.device,
                autocast_dtype: torch.dtype | None) -> MicroResult:
    """`model` is the (possibly DDP/FSDP-wrapped) Generator; everything else is frozen."""
    triggered = config.objective != "sft" and float(sigma) <= config.sigma_max
    parts = loss_parts(model, vae, critic, feats, instruction, sigma=sigma, noise=noise, drop=drop,
                       triggered=triggered, config=config, device=device, autocast_dtype=autocast_dtype)
    nan = float("nan")
    return MicroResult(loss=parts.loss, l_fm=float(parts.fm.detach().mean()), l_reason=float(parts.reason[0].detach()),
                       triggered=triggered, delta=float(parts.delta) if parts.delta is not None else nan,
                       delta_base=float(parts.delta_base) if parts.delta_base is not None else nan,
                       p_yes=float(parts.p_yes[0]), sigma=float(sigma))


def decode_estimate(vae, z_t, sigma, velocity, *, latent_frames: int | None = None, checkpoint: bool = False,
                    sampled_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂0 = z_t − σ·v decoded unclamped by the frozen VAE: (frames [T, H, W, 3] in ~[0, 1], the pixel-frame
    index of each in the clip).

    Either the first `latent_frames` latent frames are decoded as a video, or (`sampled_frames`, the paper's
    section 3.2) that many latent frames spread over the clip are decoded one at a time.
    """
    estimate = vae_ops.denormalize_latents(vae, losses.one_step_estimate(z_t, sigma, velocity.float()))
    if sampled_frames:
        indices = vae_ops.sampled_latent_frames(estimate.shape[2], sampled_frames)
        pixels = vae_ops.decode_frames(vae, estimate, indices, checkpoint=checkpoint)
        frame_index = torch.tensor([vae_ops.pixel_frame_of(i) for i in indices])
    else:
        pixels = vae_ops.decode(vae, estimate, num_latent_frames=latent_frames, clamp=False, checkpoint=checkpoint)
        frame_index = torch.arange(pixels.shape[2])
    # [1, 3, T, H, W] in ~[-1, 1] -> [T, H, W, 3] in ~[0, 1]; no clamp, so saturated pixels keep gradient.
    return ((pixels[0].permute(1, 2, 3, 0) + 1.0) / 2.0).float(), frame_index


def critic_on_estimate(vae, critic: SelfCritic, z_t, sigma, velocity, feats: Features, instruction: str,
                       latent_frames: int | None, *, checkpoint: bool = False, sampled_frames: int | None = None):
    """The decoded one-step estimate (`decode_estimate`) judged against the source frames at the same times."""
    edited, frame_index = decode_estimate(vae, z_t, sigma, velocity, latent_frames=latent_frames,
                                          checkpoint=checkpoint, sampled_frames=sampled_frames)
    source = feats.source_frames[frame_index].to(edited)
    relative, verdict = critic.relative(source, edited, instruction)
    return relative, verdict, critic.baseline(source, instruction, preprocessing=verdict.preprocessing)
