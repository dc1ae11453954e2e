"""ReviseEditor: (source video, instruction) -> edited video, the inference half of ReViSE.

    frames ─┬─ VAE encode ─ normalise ─ visual adapter ──────────────┐
            ├─ VLM encode(video, instruction) ─ RMSNorm ─ Linear ─────┼─ assemble ─ DiT sampler ─ VAE decode
            └─ [reasoning: VLM captions] ─ umT5 ───────────────────────┘
The null condition for guidance drops u and the text and keeps the source-video tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import checkpoints as ckpt
from . import vae as vae_ops
from . import video as video_ops
from .chat_text import check_instruction
from .connector import ContextConnector
from .context_budget import ContextBudget
from .critic import SelfCritic
from .model_sets import EditModels
from .placement import Placement
from .sampler import SamplerConfig, StepInfo, WindowContext, sample
from .text import TextEncoder, encode_text, pad_context
from .vlm import VisionLanguageModel
from .window_vlm import window_vlm_conditions
from .windows import TemporalWindows, blend_weights

logger = logging.getLogger(__name__)

REASONING_MODES = ("none", "caption")


@dataclass
class EditSettings:
    """Everything that shapes one edit besides the models and the inputs."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    num_frames: int | None = None  # 4k+1; None = the source's count made 4k+1
    height: int | None = None  # multiples of 32; None = the source's size rounded down
    width: int | None = None
    resize: str = "crop"  # crop | pad | stretch (see video.conform)
    frame_policy: str = "trim"  # trim | pad
    reasoning: str = "none"  # none | caption (Omni-Video 2: source caption -> target caption)
    max_text_len: int = 512  # umT5 tokens per prompt
    vlm_frames: int = 8  # frames the VLM sees
    caption_tokens: int = 128  # bound on each generated caption
    fps: float = 16.0
    tiled_decode: bool = False
    # Source frames left out before the edited clip (the ReViSE release skips 1: the VAE sees frames 1..17
    # while its VLM sees frame 0). The VLM sees the source from its first frame either way.
    skip_frames: int = 0
    # Every frame_stride-th source frame makes the clip (Omni-Video 2's sampling_rate 3); lowered, as the
    # release does, while the video is too short for num_frames at that stride.
    frame_stride: int = 1
    # Guidance against umT5 of this prompt (Omni-Video 2's inference null branch: with u as 2 tokens of 1e-6,
    # the source kept) instead of the connector's fixed null branch. Only for connectors that take one.
    negative_prompt: str | None = None
    # Rows the contexts are zero-padded to (the DiT attends to all); None: the connector's max_context_len.
    # Omni-Video 2's inference script pads to 6272.
    context_len: int | None = None
    # Denoise the latent video in overlapping temporal windows (revise_core.windows), each with its own slice
    # of the source as visual context and the VLM / instruction rows shared; None: one pass over the clip.
    window: TemporalWindows | None = None
    # An edit whose context would not hold the whole instruction and VLM rows is refused unless this is set;
    # then the connector cuts the context as its release does.
    allow_context_cut: bool = False
    # With windows: a VLM pass per window over its own frames (revise_core.window_vlm) instead of one shared by
    # every window: each window's VLM rows see what happens in it, at one VLM pass per window.
    window_vlm: bool = False

    def __post_init__(self) -> None:
        if self.reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning must be one of {REASONING_MODES}, got '{self.reasoning}'")
        if self.skip_frames < 0:
            raise ValueError(f"skip_frames must be >= 0, got {self.skip_frames}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if self.context_len is not None and self.context_len < 1:
            raise ValueError(f"context_len must be >= 1, got {self.context_len}")
        video_ops.check_clip_shape(self.num_frames, self.height, self.width,
                                   max_frames=video_ops.frame_limit(self.window is not None))
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be a positive finite number, got {self.fps}")
        if self.window_vlm and self.window is None:
            raise ValueError("window_vlm (a VLM pass per temporal window) needs temporal windows (window)")


@dataclass
class EditResult:
    frames: torch.Tensor  # [T, H, W, 3] in 0..1
    latents: torch.Tensor  # raw VAE latents [1, 16, t, h, w]
    source_frames: torch.Tensor  # the conformed source [T, H, W, 3]
    reasoning: str
    timings: dict[str, float]
    seed: int
    # best-of-N: one entry per candidate (seed, relative_delta, p_yes); empty for a single edit
    scores: list[dict] = field(default_factory=list)


@dataclass
class Condition:
    """What the sampler needs, plus what the critic and trainer reuse."""

    cond: torch.Tensor | None  # [1, max_context_len, D]; None when windowed
    uncond: torch.Tensor | None  # [1, max_context_len, D]; None when windowed
    source_latents: torch.Tensor  # normalised [1, 16, t, h, w]
    reasoning: str
    # the VAE's per-channel statistics, to turn sampled latents back into raw VAE space
    latents_mean: list[float] = field(default_factory=list)
    latents_std: list[float] = field(default_factory=list)
    windows: list[WindowContext] | None = None  # a windowed edit's contexts, one per temporal window
    # (cond, uncond) [1, context_len, D] for any list of latent frames: that slice of the source as v, the same
    # u and T5 (what a context-window sampler outside ours, e.g. ComfyUI's, needs per window)
    window_context: Callable[[Sequence[int]], tuple[torch.Tensor, torch.Tensor]] | None = None

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_ops.denormalize_with(latents, self.latents_mean, self.latents_std)


class ReviseEditor:
    """The inference composition used by the nodes and the CLIs.

    `placement` (placement.py) moves the models between host and device around each stage; without one the
    models stay where they are."""

    def __init__(self, models: EditModels, placement: Placement | None = None) -> None:
        if models.dit is None:
            raise ValueError("this model set was loaded without its DiT (with_dit=False); the editor samples with it")
        models.check()
        self.models = models
        self.placement = placement or Placement()

    @classmethod
    def placed(cls, models: EditModels, placement: Placement) -> ReviseEditor:
        """An editor over `models` placed by `placement` (applied here)."""
        return cls(models, placement.apply(models.components()))

    @property
    def device(self) -> torch.device:
        return ckpt.device_of(self.models.dit)

    def condition(self, source: torch.Tensor, instruction: str, settings: EditSettings,
                  timings: dict[str, float] | None = None, *, vlm_source: torch.Tensor | None = None) -> Condition:
        """Encode a conformed source [T, H, W, 3] and an instruction into cond / uncond contexts.

        `vlm_source` ([T', H', W', 3]) is what the VLM sees instead of `source` (the release: the video's
        own frames at their native size, from frame 0)."""
        check_instruction(instruction)
        check_settings_fit(self.models.connector, settings)
        timings = timings if timings is not None else {}
        with timed(timings, "vae_encode"), self.placement.use("vae"):
            raw = vae_ops.encode(self.models.vae, video_ops.to_model_space(source).to(self.device))
        return self.condition_from_latents(raw, source if vlm_source is None else vlm_source.float(), instruction,
                                           settings, timings, clip_frames=lambda: iter(source))

    def condition_from_latents(self, raw: torch.Tensor, vlm_frames, instruction: str, settings: EditSettings,
                               timings: dict[str, float] | None = None, *,
                               clip_frames: Callable[[], Iterable[torch.Tensor]] | None = None,
                               on_vlm_window: Callable[[int], None] | None = None) -> Condition:
        """`condition` from the source's raw VAE latents [1, 16, t, h, w] and what the VLM sees (frames
        [T, H, W, 3] or vlm.base.SampledFrames): the streamed edit encodes the clip itself, chunk by chunk.
        `clip_frames` gives the clip's fitted frames [H, W, 3] again, one at a time, for `settings.window_vlm`;
        `on_vlm_window(index)` after each window's VLM pass."""
        check_instruction(instruction)
        check_settings_fit(self.models.connector, settings)
        m, timings, use = self.models, timings if timings is not None else {}, self.placement.use
        with use("vlm"):
            vlm_condition = encode_instruction(m.vlm, vlm_frames, instruction, settings, timings)
        with use("t5", "connector"):
            condition = assemble_condition(m.connector, m.text, m.vae, raw, vlm_condition, settings.max_text_len,
                                           timings, negative_prompt=settings.negative_prompt,
                                           context_len=settings.context_len, window=settings.window,
                                           allow_cut=settings.allow_context_cut)
        if settings.window_vlm and condition.windows:
            if clip_frames is None:
                raise ValueError("window_vlm: a VLM pass per window reads the clip's frames again; this caller "
                                 "gave none (clip_frames)")
            with timed(timings, "vlm_windows"), use("vlm"):
                per_window = window_vlm_conditions(
                    clip_frames(), [(w.start, w.end) for w in condition.windows], vlm_frames=settings.vlm_frames,
                    fps=settings.fps, encode=lambda sampled: m.vlm.encode(sampled, instruction,
                                                                          num_frames=settings.vlm_frames,
                                                                          fps=settings.fps),
                    on_window=on_vlm_window)
            for window, u in zip(condition.windows, per_window, strict=True):
                window.build = functools.partial(_no_grad_context, condition.window_context, range(window.start,
                                                                                                   window.end), u)
        elif settings.window_vlm:
            logger.info("window_vlm: the clip is one window, whose VLM pass is the shared one")
        return condition


    def edit(
        self,
        frames: torch.Tensor,
        instruction: str,
        settings: EditSettings | None = None,
        *,
        callback: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        best_of: int = 1,
        critic: SelfCritic | None = None,
        vlm_source: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> EditResult:
        """Edit source frames [T, H, W, 3] in 0..1 following `instruction`.

        The clip starts after `settings.skip_frames` frames; the VLM sees `vlm_source` when given (e.g. the
        unresized video), else the frames from the first one, fitted like the clip.

        `best_of=N` (beyond the paper, test-time) samples N seeds (the settings' seed, +1, ...) and keeps
        the edit that the model's own VLM scores highest by relative reward Δ − Δ_base; the condition is
        encoded once and Δ_base computed once. `result.scores` lists every candidate.

        `noise` ([1, 16, t, h, w], normalised latent space) replaces the seed's noise: the releases draw theirs
        on CUDA, which no CPU generator reproduces, so an edit equals the release's only with its noise injected.
        """
        if best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {best_of}")
        if noise is not None and best_of > 1:
            raise ValueError("noise= gives one sample its noise; best_of > 1 draws one per seed")
        settings = settings or EditSettings()
        timings: dict[str, float] = {}
        start = time.perf_counter()
        source, stride = fit_source(frames, settings)
        if (settings.skip_frames or stride > 1) and vlm_source is None:
            # the VLM reads the video itself: its family fits the frames to its own input size (with a stride, at
            # the video's own frame rate: Omni-Video 2)
            vlm_source = frames.float()
        if best_of > 1 and critic is None:
            critic = SelfCritic(self.models.vlm)
        candidates = []
        with torch.no_grad():
            condition = self.condition(source, instruction, settings, timings, vlm_source=vlm_source)
            for offset in range(best_of):
                seed = settings.sampler.seed + offset
                raw, edited = self._sample_and_decode(condition, settings, seed, timings, callback=callback,
                                                      cancel=cancel, noise=noise)
                score = {"seed": seed}
                if best_of > 1:
                    with timed(timings, "critic"), self.placement.use("vlm"):
                        report = critic.report(source, edited, instruction, per_dimension=False)
                    score.update(relative_delta=report.relative_delta, p_yes=report.p_yes)
                candidates.append((raw, edited, score))
        best = max(range(best_of), key=lambda i: candidates[i][2].get("relative_delta", 0.0))
        raw, edited, score = candidates[best]
        timings["total"] = time.perf_counter() - start
        return EditResult(frames=edited, latents=raw, source_frames=source, reasoning=condition.reasoning,
                          timings=timings, seed=score["seed"],
                          scores=[c[2] for c in candidates] if best_of > 1 else [])

    def sample_latents(self, condition: Condition, settings: EditSettings, seed: int,
                       timings: dict[str, float] | None = None, *, callback=None, cancel=None, noise=None,
                       on_window=None) -> torch.Tensor:
        """Denoise with `condition` from the noise of `seed` (or `noise`) -> raw VAE latents [1, 16, t, h, w]
        (on the host when windowed: sampler.sample keeps a windowed latent video there)."""
        timings = timings if timings is not None else {}
        sampler = dataclasses.replace(settings.sampler, seed=seed)
        shape = tuple(condition.source_latents.shape)
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(f"noise of shape {tuple(noise.shape)} given for latents of shape {shape}")
        with timed(timings, "sample"), self.placement.use("dit"):
            latents = sample(self.models.dit, condition.cond, condition.uncond, latent_shape=shape, noise=noise,
                             config=sampler, callback=callback, cancel=cancel, windows=condition.windows,
                             on_window=on_window)
        return vae_ops.denormalize_latents(self.models.vae, latents)

    def _sample_and_decode(self, condition: Condition, settings: EditSettings, seed: int, timings: dict[str, float],
                           *, callback=None, cancel=None, noise=None) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.sample_latents(condition, settings, seed, timings, callback=callback, cancel=cancel, noise=noise)
        with timed(timings, "vae_decode"), self.placement.use("vae"):
            pixels = vae_ops.decode(self.models.vae, raw, tiled=settings.tiled_decode)
        return raw.cpu(), video_ops.from_model_space(pixels.float()).cpu()


@dataclass
class VLMCondition:
    """What the VLM contributes: u, the prompts umT5 encodes, and the reasoning it wrote."""

    u: torch.Tensor  # [L_u, H] last hidden states, system prefix dropped
    prompts: list[str]  # [instruction] or [target caption, instruction]
    reasoning: str


def fit_source(frames: torch.Tensor, settings: EditSettings) -> tuple[torch.Tensor, int]:
    """The clip an edit with `settings` starts from, and the frame stride used: the frames after the skipped ones,
    every stride-th, fitted to the frame count and size ([T, H, W, 3] in 0..1). The command line calls it before
    loading any model, so a video that cannot fit fails at once."""
    clip = video_ops.skip_leading(frames, settings.skip_frames)
    stride = clip_stride(clip.shape[0], settings.num_frames, settings.frame_stride)
    fitted = video_ops.conform(clip[::stride].float(), num_frames=settings.num_frames,
                               frame_policy=settings.frame_policy, height=settings.height, width=settings.width,
                               resize=settings.resize)
    return fitted, stride


def check_settings_fit(connector: ContextConnector, settings: EditSettings) -> None:
    """Settings a model set cannot honour fail before any encode: a negative prompt needs a connector family
    whose release encodes one (Omni-Video 2); the others fix their null branch."""
    if settings.negative_prompt is not None and not connector.takes_negative_prompt:
        raise ValueError(f"the settings guide against a negative prompt, which the {type(connector).__name__} "
                         "connector family does not take (its null branch is fixed by its release); use its own "
                         "preset")


def encode_instruction(vlm: VisionLanguageModel, source: torch.Tensor, instruction: str, settings: EditSettings,
                       timings: dict[str, float] | None = None) -> VLMCondition:
    """The VLM's part of the condition (reasoning mode "caption": source caption -> target caption first)."""
    check_instruction(instruction)
    timings = timings if timings is not None else {}
    reasoning, prompts = "", [instruction]
    if settings.reasoning == "caption":
        with timed(timings, "vlm_reasoning"):
            reasoning, prompts = caption_reasoning(vlm, source, instruction, settings)
    with timed(timings, "vlm_encode"):
        u = vlm.encode(source, instruction, num_frames=settings.vlm_frames, fps=settings.fps)
    return VLMCondition(u, prompts, reasoning)


def clip_stride(available: int, num_frames: int | None, stride: int) -> int:
    """Omni-Video 2's read_video_frames: the stride, lowered while `available` frames cannot give
    `num_frames` at it (never below 1)."""
    if num_frames is None:
        return stride
    asked = stride
    while stride > 1 and available < num_frames * stride:
        stride -= 1
    if stride != asked:
        logger.warning("the source has %d frames, too few for %d at a stride of %d: stride %d instead", available,
                       num_frames, asked, stride)
    return stride


def assemble_condition(connector: ContextConnector, text: TextEncoder, vae: nn.Module, source_latents_raw: torch.Tensor,
                       vlm_condition: VLMCondition, max_text_len: int = 512,
                       timings: dict[str, float] | None = None, *, negative_prompt: str | None = None,
                       context_len: int | None = None, window: TemporalWindows | None = None,
                       allow_cut: bool = False) -> Condition:
    """umT5 over the prompts, then f_C: cond from u, T5 and v; uncond = the family's null context (or, with a
    `negative_prompt`, its negative context); both zero-padded to `context_len` (default max_context_len).

    With a `window` shorter than the clip, one cond / uncond per temporal window: the window's slice of the
    source latents (one causal encode of the whole clip) as v, u and T5 shared; `Condition.window_context`
    builds the pair for any latent frames. A context that cannot hold the whole instruction and VLM rows raises
    ContextOverflowError unless `allow_cut` (then the connector cuts as its release does)."""
    timings = timings if timings is not None else {}
    source_latents = vae_ops.normalize_latents(vae, source_latents_raw.float())
    with timed(timings, "text_encode"):
        text_tokens = torch.cat(encode_text(text, vlm_condition.prompts, max_length=max_text_len))
    negative_tokens = None
    if negative_prompt is not None:
        with timed(timings, "text_encode"):
            negative_tokens = torch.cat(encode_text(text, [negative_prompt], max_length=max_text_len))
    dtype = _dtype(connector)
    latent_frames = source_latents.shape[2]
    length = context_len or connector.config.max_context_len
    first = connector.adapt_video(source_latents[:, :, :1].to(dtype))[0]
    vlm_tokens = connector.project_vlm(vlm_condition.u.to(first))
    text_tokens = text_tokens.to(vlm_tokens)

    def window_context(frames: Sequence[int], u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`u`: this window's own VLM output (EditSettings.window_vlm) instead of the shared one."""
        # wherever the connector is now (a placement may have moved it since the shared rows were computed)
        device = ckpt.device_of(connector)
        video_tokens = connector.adapt_video(source_latents[:, :, list(frames)].to(device=device, dtype=dtype))[0]
        own = vlm_tokens.to(device) if u is None else connector.project_vlm(u.to(video_tokens))
        # the context budget was measured with the shared rows; a window shorter than vlm_frames gives fewer
        if own.shape[0] > vlm_tokens.shape[0]:
            raise ValueError(f"a window's VLM pass gave {own.shape[0]} rows, more than the {vlm_tokens.shape[0]} of "
                             "the shared pass the context was planned with (its frames are larger than the "
                             "shared pass's): edit at a smaller size or without a VLM pass per window")
        cond = pad_context(connector.assemble(own, text_tokens.to(device), video_tokens), length)
        if negative_tokens is not None:
            uncond = pad_context(connector.negative_context(negative_tokens.to(video_tokens), video_tokens), length)
        else:
            uncond = pad_context(connector.null_context(video_tokens), length)
        return cond[None], uncond[None]

    budget = ContextBudget.measure(connector, vlm_rows=vlm_tokens.shape[0], text_rows=text_tokens.shape[0],
                                   video_rows=first.shape[0], latent_frames=1)
    if window is not None and window.length is None:
        budget.check(max(budget.max_latent_frames, 1), windowed=True)  # not even one latent frame fits: refused
        window = window.resolved(budget.max_latent_frames)
        logger.info("windows of %d latent frames: the most the context holds beside the instruction and VLM rows",
                    window.length)
    spans = window.spans(latent_frames) if window is not None else [(0, latent_frames)]
    if not allow_cut:
        budget.check(spans[0][1] - spans[0][0], windowed=len(spans) > 1)
    weights = blend_weights(spans, latent_frames)
    whole = len(spans) == 1  # one window over the whole clip is the plain edit, in every dtype
    if whole:
        contexts = [WindowContext(0, latent_frames, *window_context(range(latent_frames)), weights[0])]
    else:  # built when each window is denoised: a long clip's contexts are never all held
        contexts = [WindowContext(start, end, None, None, weights[index, start:end],
                                  build=functools.partial(_no_grad_context, window_context, range(start, end)))
                    for index, (start, end) in enumerate(spans)]
    return Condition(contexts[0].cond if whole else None, contexts[0].uncond if whole else None, source_latents,
                     vlm_condition.reasoning, latents_mean=list(vae.config.latents_mean),
                     latents_std=list(vae.config.latents_std), windows=None if whole else contexts,
                     window_context=window_context)


def _no_grad_context(window_context: Callable, frames: Sequence[int], u: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():  # inference contexts, built inside a sampling loop
        return window_context(frames, u)


def caption_reasoning(vlm: VisionLanguageModel, source: torch.Tensor, instruction: str,
                      settings: EditSettings) -> tuple[str, list[str]]:
    """Omni-Video 2's reasoning: a source caption, then a target caption from it and the instruction, with the
    family's prompts (`VisionLanguageModel.caption_prompts`: Omni-Video 2's own for Qwen3-VL)."""
    prompts = vlm.caption_prompts()
    source_caption = vlm.generate(source, prompts.source_user, system_prompt=prompts.source_system,
                                  max_new_tokens=settings.caption_tokens, num_frames=settings.vlm_frames,
                                  fps=settings.fps, options=prompts.options)
    target_caption = vlm.generate(
        None, prompts.target_user.format(source=source_caption, instruction=instruction),
        system_prompt=prompts.target_system, max_new_tokens=settings.caption_tokens, options=prompts.options,
    )
    reasoning = f"source: {source_caption}\ntarget: {target_caption}"
    if not target_caption.strip():
        logger.warning("the VLM wrote an empty target caption; conditioning on the instruction alone")
        return reasoning, [instruction]
    # Omni-Video 2 conditions T5 on [target caption ; instruction], concatenated along tokens.
    return reasoning, [target_caption, instruction]


class timed:
    """Adds the wall time of a block to timings[name] (synchronising CUDA so the figure is real)."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        _sync()
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        _sync()
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _dtype(module: nn.Module) -> torch.dtype:
    return ckpt.compute_dtype(module)
