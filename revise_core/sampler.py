"""Flow-matching sampling of the Wan DiT on diffusers schedulers (UniPC, Euler), with guidance.

The loop is the one of `diffusers.WanPipeline` (same noise, timesteps, guidance formula and scheduler
calls, so it reproduces the pipeline on the same weights), but takes any context: the connector's
[u; T5; v] sequence, or plain T5 embeddings. There is no `no_grad` in here: the caller chooses.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .attention import BACKENDS, attention_scope, resolve_backend
from .checkpoints import compute_dtype, device_of
from .step_cache import CacheReport, StepCache, cached_dit, call_context

logger = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler")
GUIDANCE_MODES = ("standard", "official")
SIGMA_SCHEDULES = ("diffusers", "official")


class SamplingCancelled(RuntimeError):
    """Raised between steps when the caller's `cancel()` returns True."""


@dataclass
class SamplerConfig:
    """How to sample. Defaults follow Omni-Video 2's editing settings (UniPC, shift 5, guidance 3)."""

    steps: int = 40
    guidance_scale: float = 3.0  # see guidance_mode; 1.0 disables standard guidance
    shift: float = 5.0  # flow shift of the sigma schedule (Wan: 3.0 for 480p, 5.0 for 720p)
    scheduler: str = "unipc"
    seed: int = 0
    # standard: uncond + g·(cond − uncond) (diffusers' WanPipeline); official: cond + g·(cond − uncond), the
    # ReViSE release's formula (revise_video_unified_gen.py:369), i.e. standard guidance at g + 1.
    guidance_mode: str = "standard"
    # diffusers: the scheduler's own flow sigmas (from 1.0); official: linspace(0.999, 0, steps + 1)[:-1], then
    # shifted, as Wan's FlowUniPCMultistepScheduler (the ReViSE and Wan2.1 releases) sets them.
    sigma_schedule: str = "diffusers"
    # the DiT's attention backend (attention.BACKENDS): native (torch SDPA, every parity figure) | auto (the fastest
    # installed that agrees with native) | flash | sage | xformers | flex | math
    attention: str = "native"
    # a step cache (step_cache.CACHES): fewer block evaluations, approximate; none by default
    cache: StepCache = field(default_factory=StepCache)

    def __post_init__(self) -> None:
        if self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {BACKENDS}, got '{self.attention}'")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got '{self.scheduler}'")
        if self.guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance_mode must be one of {GUIDANCE_MODES}, got '{self.guidance_mode}'")
        if self.sigma_schedule not in SIGMA_SCHEDULES:
            raise ValueError(f"sigma_schedule must be one of {SIGMA_SCHEDULES}, got '{self.sigma_schedule}'")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for name in ("shift", "guidance_scale"):  # NaN passes every comparison below
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")


@dataclass
class StepInfo:
    """What a callback sees after each step."""

    step: int  # 0-based index of the step just taken
    total: int
    timestep: float
    sigma: float
    latents: torch.Tensor  # the latents after this step (normalised space)
    denoised: torch.Tensor  # one-step clean estimate x0 = z_t - sigma * v (a cheap preview source)


def make_scheduler(name: str, shift: float, num_train_timesteps: int = 1000):
    """The diffusers scheduler Wan uses, configured for flow matching with `shift`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=num_train_timesteps,
            flow_shift=shift,
        )
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got '{name}'")


def official_sigmas(steps: int):
    """Unshifted sigmas of Wan's FlowUniPCMultistepScheduler: linspace(0.999, 0, steps + 1) without the last;
    the diffusers scheduler shifts them by its flow_shift and appends the final 0 (verified to give the same
    timesteps as Wan's own scheduler, which the ReViSE release uses)."""
    import numpy as np

    return np.linspace(0.999, 0.0, steps + 1)[:-1]


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 Gaussian noise from a CPU generator: the same numbers on every device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


@dataclass
class WindowContext:
    """One temporal window of a windowed edit: its latent frames [start, end), its contexts (the source slice's
    video tokens with the shared VLM and text rows), and its blending weight per latent frame of the window."""

    start: int
    end: int
    cond: torch.Tensor | None  # [B, L, D]; None when `build` makes it
    uncond: torch.Tensor | None
    weight: torch.Tensor  # [end - start], windows.blend_weights' row over this window's frames
    # Builds (cond, uncond) when the window is denoised, instead of holding them: a long clip's contexts (2 x 2,560
    # rows per window at the release's size, 2.6 GiB for 1,001 frames) would otherwise grow with its length.
    build: Callable[[], tuple[torch.Tensor, torch.Tensor | None]] | None = None

    def contexts(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.build() if self.build is not None else (self.cond, self.uncond)


def sample(
    dit: nn.Module,
    cond: torch.Tensor | None,
    uncond: torch.Tensor | None,
    *,
    latent_shape: tuple[int, ...] | None = None,
    noise: torch.Tensor | None = None,
    config: SamplerConfig | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    windows: list[WindowContext] | None = None,
    on_window: Callable[[int, int], None] | None = None,
    cache_report: CacheReport | None = None,
) -> torch.Tensor:
    """Denoise from noise to normalised latents [B, 16, t, h, w].

    `cond` / `uncond` are DiT contexts [B, L, text_dim] (uncond may be None when guidance is off).
    Either `noise` or `latent_shape` (then noise comes from `config.seed`) must be given.
    `windows` (instead of cond / uncond): the latent frames are denoised window by window with each window's
    contexts, and the windows' velocities blended by their weights (`revise_core.windows`); one scheduler steps
    the whole latent video. `cancel` is also asked between windows, and `on_window(step, window)` is called
    after each window's prediction, the whole clip's included (a progress bar of steps × windows).
    `cache_report` is filled with the DiT calls made and the block work a step cache (`config.cache`) skipped.
    """
    config = config or SamplerConfig()
    device = device_of(dit)
    dtype = compute_dtype(dit)
    if noise is None:
        if latent_shape is None:
            raise ValueError("sample() needs either noise or latent_shape")
        noise = initial_noise(tuple(latent_shape), config.seed, device)
    guided = config.guidance_scale != (1.0 if config.guidance_mode == "standard" else 0.0)
    if windows is None:
        if cond is None:
            raise ValueError("sample() needs a context (cond) or windows")
        windows = [WindowContext(0, noise.shape[2], cond, uncond, torch.ones(noise.shape[2]))]
        whole = True
    else:
        if cond is not None or uncond is not None:
            raise ValueError("give sample() either cond / uncond or windows, not both")
        _check_windows(windows, noise.shape[2])
        whole = False
    for window in windows if whole else windows[:1]:  # built contexts are checked as they are built
        _check_contexts(*window.contexts(), batch=noise.shape[0], guided=guided, config=config)
    # A windowed edit keeps the latent video and the scheduler's state on the host and moves one window (its
    # latents and contexts) at a time to the device: device memory is one window's, whatever the clip's length.
    storage = device if whole else torch.device("cpu")
    if whole:
        windows = [WindowContext(0, noise.shape[2], windows[0].cond.to(device=device, dtype=dtype),
                                 windows[0].uncond.to(device=device, dtype=dtype) if guided else None,
                                 windows[0].weight)]

    scheduler = make_scheduler(config.scheduler, config.shift)
    if config.sigma_schedule == "official":
        scheduler.set_timesteps(sigmas=official_sigmas(config.steps), device=storage)
    else:
        scheduler.set_timesteps(config.steps, device=storage)
    scheduler.set_begin_index(0)
    latents = noise.to(device=storage, dtype=torch.float32)
    backend = resolve_backend(config.attention, device)
    timesteps = scheduler.timesteps
    with cached_dit(dit, config.cache, len(timesteps), report=cache_report) as report:
        for index, timestep in enumerate(timesteps):
            if cancel is not None and cancel():
                raise SamplingCancelled(f"sampling cancelled before step {index + 1}/{len(timesteps)}")
            model_input = latents.to(dtype)
            batch_t = timestep.expand(latents.shape[0]).to(device)
            sigma = float(scheduler.sigmas[index])

            def in_context(name: str, index=index, sigma=sigma):
                return call_context(dit, config.cache, report, name, step=index, steps=len(timesteps), sigma=sigma)

            if whole:
                velocity = _guided_velocity(dit, model_input, batch_t, windows[0].cond, windows[0].uncond, config,
                                            backend, in_context)
                if on_window is not None:  # the whole clip is one window
                    on_window(index, 0)
            else:
                velocity = torch.zeros_like(latents)
                for number, window in enumerate(windows):
                    if number and cancel is not None and cancel():
                        raise SamplingCancelled(f"sampling cancelled in step {index + 1}/{len(timesteps)}, before "
                                                f"window {number + 1}/{len(windows)}")
                    cond, uncond = window.contexts()
                    _check_contexts(cond, uncond, batch=noise.shape[0], guided=guided, config=config)
                    part = _guided_velocity(dit, model_input[:, :, window.start:window.end].to(device), batch_t,
                                            cond.to(device=device, dtype=dtype),
                                            uncond.to(device=device, dtype=dtype) if guided else None, config, backend,
                                            in_context, f"/window {number}")
                    blend = window.weight.to(device=storage, dtype=torch.float32).view(1, 1, -1, 1, 1)
                    velocity[:, :, window.start:window.end] += part.float().to(storage) * blend
                    if on_window is not None:
                        on_window(index, number)
            denoised = latents - sigma * velocity.float()
            latents = scheduler.step(velocity, timestep, latents, return_dict=False)[0]
            if callback is not None:
                callback(StepInfo(index, len(timesteps), float(timestep), sigma, latents, denoised))
    return latents


def _guided_velocity(dit: nn.Module, model_input: torch.Tensor, batch_t: torch.Tensor, cond: torch.Tensor,
                     uncond: torch.Tensor | None, config: SamplerConfig, backend: str = "native",
                     in_context: Callable | None = None, suffix: str = "") -> torch.Tensor:
    # each call in its own step-cache context (cond / uncond, per window); attention scoped to these calls:
    # nothing else in the process changes backend
    in_context = in_context or (lambda name: contextlib.nullcontext())
    with attention_scope(backend):
        with in_context("cond" + suffix):
            velocity = dit(hidden_states=model_input, timestep=batch_t, encoder_hidden_states=cond,
                           return_dict=False)[0]
        if uncond is not None:
            with in_context("uncond" + suffix):
                velocity_uncond = dit(hidden_states=model_input, timestep=batch_t, encoder_hidden_states=uncond,
                                      return_dict=False)[0]
    if uncond is not None:
        if config.guidance_mode == "standard":  # in the model's dtype, as diffusers' WanPipeline
            velocity = velocity_uncond + config.guidance_scale * (velocity - velocity_uncond)
        else:  # the release casts both predictions to fp32 first (wan/modules/model.py:595, RU:369)
            velocity, velocity_uncond = velocity.float(), velocity_uncond.float()
            velocity = velocity + config.guidance_scale * (velocity - velocity_uncond)
    return velocity


def _check_contexts(cond: torch.Tensor, uncond: torch.Tensor | None, *, batch: int, guided: bool,
                    config: SamplerConfig) -> None:
    if guided and uncond is None:
        raise ValueError(f"guidance_scale {config.guidance_scale} ({config.guidance_mode} guidance) needs an "
                         "unconditional context (uncond)")
    if cond.ndim != 3 or cond.shape[0] != batch:
        raise ValueError(f"cond must be [B, L, D] with B={batch}, got {tuple(cond.shape)}")


def _check_windows(windows: list[WindowContext], latent_frames: int) -> None:
    """Every latent frame covered, with weights summing to one (windows.blend_weights gives such weights)."""
    total = torch.zeros(latent_frames, dtype=torch.float64)
    for window in windows:
        if not 0 <= window.start < window.end <= latent_frames or window.weight.numel() != window.end - window.start:
            raise ValueError(f"window [{window.start}, {window.end}) with {window.weight.numel()} weights does not "
                             f"fit a clip of {latent_frames} latent frames")
        total[window.start:window.end] += window.weight.double().cpu()
    if not torch.allclose(total, torch.ones_like(total), atol=1e-5):
        raise ValueError(f"window weights must sum to one at every latent frame, got {total.tolist()}")
