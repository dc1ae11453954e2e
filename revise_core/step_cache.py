"""Step caches for the DiT on our sampler path: diffusers' maintained hooks, driven as its pipelines drive them.

- "first-block" (FirstBlockCache): runs the first block, and reuses the other blocks' residual while the first
  block's output changes by less than `threshold` (relative L1) since the last full call.
- "taylorseer" (TaylorSeerCache): every `interval` steps the attention layers run, in between their outputs are
  predicted by a Taylor expansion; hooked on Wan's `attn1` / `attn2` (diffusers' default identifiers match none
  of Wan's modules and would cache nothing).
- "magcache" (MagCache): skips whole calls while the accumulated residual-magnitude error, from per-step
  magnitude ratios of the model, stays under `threshold`. The ratios belong to a model's real weights: give them
  (`mag_ratios`) or measure them (`calibrate`, which logs the list to copy); none are invented here.

Outside a pipeline the caller does what the pipeline does (`cached_dit`): caches are enabled with `enable_cache`,
each DiT call runs in its own `cache_context` (cond and uncond, per temporal window, so that each keeps its own
state), and the state is reset after every run. Adaptive caches skip according to the model's own activations:
what they skip on random tiny models says nothing about real weights. Caching is for sampling only; the trainer
never uses it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

logger = logging.getLogger(__name__)

CACHES = ("none", "first-block", "taylorseer", "magcache")
DEFAULT_THRESHOLDS = {"first-block": 0.05, "magcache": 0.06}  # diffusers' defaults
# Wan's attention modules, for TaylorSeer (matched with re.fullmatch against module names)
WAN_ATTENTION = r"blocks\.\d+\.attn\d"


@dataclass(frozen=True)
class StepCache:
    kind: str = "none"
    threshold: float | None = None  # first-block / magcache; None: diffusers' default (DEFAULT_THRESHOLDS)
    interval: int = 5  # taylorseer: a full computation every `interval` steps
    mag_ratios: tuple[float, ...] | None = None  # magcache: the model's per-step ratios (steps + 1 values)
    calibrate: bool = False  # magcache: measure the ratios (nothing is skipped) and log them

    def __post_init__(self) -> None:
        if self.kind not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got '{self.kind}'")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"cache threshold must be > 0, got {self.threshold}")
        if self.interval < 1:
            raise ValueError(f"cache interval must be >= 1, got {self.interval}")
        if self.kind == "magcache" and not self.calibrate and not self.mag_ratios:
            raise ValueError("magcache needs the model's magnitude ratios (mag_ratios, --mag-ratios), measured once "
                             "with calibrate (--cache-calibrate) on real weights; see docs/performance.md")

    def diffusers_config(self, steps: int):
        from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

        threshold = self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS.get(self.kind)
        if self.kind == "first-block":
            return FirstBlockCacheConfig(threshold=threshold)
        if self.kind == "taylorseer":
            return TaylorSeerCacheConfig(cache_interval=self.interval, cache_identifiers=[WAN_ATTENTION])
        return MagCacheConfig(threshold=threshold, num_inference_steps=steps, calibrate=self.calibrate,
                              mag_ratios=list(self.mag_ratios) if self.mag_ratios else None)


@dataclass
class CacheReport:
    """Block work done during a run: executions of each block's attn1, attn2 and FFN, against a full run's."""

    kind: str = "none"
    dit_calls: int = 0
    blocks: int = 0
    executed: int = 0
    counts: dict = field(default_factory=dict)

    @property
    def skipped_calls(self) -> float:
        """Skipped work as whole DiT calls: the skipped share of block parts times the calls made."""
        full = self.dit_calls * self.blocks * 3
        if self.kind == "none" or not full:
            return 0.0
        return self.dit_calls * (1 - self.executed / full)


def _counted_parts(dit: nn.Module) -> list[nn.Module]:
    # the first Linear of each heavy part: a cache that skips the part never calls it (forward hooks on the parts
    # themselves would also fire for TaylorSeer's predictions, which replace their forward)
    return [part for block in dit.blocks for part in (block.attn1.to_q, block.attn2.to_q, block.ffn.net[0].proj)]


@contextlib.contextmanager
def cached_dit(dit: nn.Module, cache: StepCache, steps: int, *, report: CacheReport | None = None
               ) -> Iterator[CacheReport]:
    """Enable `cache` on `dit` for one sampling run of `steps` steps; on exit, reset its state and disable it.
    Yields `report` (or a new one), which counts the calls and the block work done."""
    report = report if report is not None else CacheReport()
    report.kind = cache.kind
    if cache.kind == "none":  # nothing hooked: any denoiser works (test stand-ins have no blocks)
        yield report
        return
    report.blocks = len(dit.blocks)
    dit.enable_cache(cache.diffusers_config(steps))

    def count(module, args, output) -> None:
        report.executed += 1

    handles = [part.register_forward_hook(count) for part in _counted_parts(dit)]
    try:
        yield report
    finally:
        for handle in handles:
            handle.remove()
        dit._reset_stateful_cache()  # what a pipeline does after each run (maybe_free_model_hooks)
        dit.disable_cache()
    logger.info("step cache %s: %.1f of %d DiT calls skipped (as whole calls)", cache.kind, report.skipped_calls,
                report.dit_calls)


def call_context(dit: nn.Module, cache: StepCache, report: CacheReport, name: str, *, step: int, steps: int,
                 sigma: float):
    """The context one DiT call runs in: its own cache state per `name` (cond / uncond, per window)."""
    report.dit_calls += 1
    if cache.kind == "none":
        return contextlib.nullcontext()
    return dit.cache_context(name, step_index=step, num_inference_steps=steps, sigma=sigma)


def parse_mag_ratios(text: str) -> tuple[float, ...] | None:
    """Magnitude ratios as users paste them: comma-separated numbers, brackets allowed (the list MagCache's
    calibration prints); None when empty."""
    try:
        values = tuple(float(item) for item in text.replace("[", "").replace("]", "").split(",") if item.strip())
    except ValueError:
        raise ValueError(f"mag_ratios must be comma-separated numbers, got '{text[:60]}'") from None
    return values or None


def check_identifiers(dit: nn.Module) -> int:
    """How many of the DiT's modules TaylorSeer hooks (WAN_ATTENTION): 0 would mean nothing is cached."""
    return sum(bool(re.fullmatch(WAN_ATTENTION, name)) for name, _ in dit.named_modules())
