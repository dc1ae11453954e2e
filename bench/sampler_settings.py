"""Speed settings of our sampler on the tiny models: DiT calls saved against the difference they make.

    python -m bench.sampler_settings [--steps 20]

One edit's sampling (the tiny DiT, 5 latent frames of 16x16, guidance 3 with cond + uncond, UniPC) per setting:
the default (native attention, no cache), a plain diffusers WanPipeline-style loop over the same DiT (the
reference: its scheduler, its two calls and guidance per step), the other CPU attention kernels, regional compile,
every step cache at the thresholds users tune, a fused LoRA, and the few-step preset with and without a
step-distill LoRA. Reported: DiT calls made and skipped (as whole calls), the relative max difference of the final
latents from the default, and seconds per edit and per step (the median of 3 runs after a warm-up; compile's first
call is reported apart). A second table runs the caches on the release-parity fixture (the ReViSE release's own
layout and preset: its UniPC sigmas, official guidance, 40 steps). Adaptive caches decide on the model's own
activations: what they skip on random tiny weights says nothing about real ones.
Results: bench/results/sampler_settings.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import write_results


def main(argv: list[str] | None = None) -> int:
    from revise_core.dit import compile_repeated_blocks
    from revise_core.lora import LoraChoice, fuse_loras, load_loras
    from revise_core.presets import FEW_STEP
    from revise_core.sampler import SamplerConfig, sample
    from revise_core.step_cache import CacheReport, StepCache
    from revise_core.testing import tiny_model_set
    from revise_core.testing.loras import write_tiny_lora

    parser = argparse.ArgumentParser(prog="python -m bench.sampler_settings", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dit = tiny_model_set(0).dit
    generator = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 32, dit.config.text_dim, generator=generator)
    uncond = torch.zeros_like(cond)
    shape = (1, 16, 5, 16, 16)

    def run(model, **config) -> tuple[torch.Tensor, CacheReport, float]:
        report = CacheReport()
        started = time.perf_counter()
        config = {"steps": args.steps, "guidance_scale": 3.0, **config}
        with torch.no_grad():
            out = sample(model, cond, uncond, latent_shape=shape, cache_report=report, config=SamplerConfig(**config))
        return out, report, (time.perf_counter() - started) / config["steps"]

    ratios = _calibrated_ratios(lambda: run(dit, cache=StepCache("magcache", calibrate=True)))

    settings = [("default (native, no cache)", dit, {})]
    settings += [(f"attention {name}", dit, {"attention": name}) for name in ("math", "flex")]
    compiled = copy.deepcopy(dit)
    compile_repeated_blocks(compiled)
    settings.append(("compile (regional)", compiled, {}))
    settings += [(f"first-block {t}", dit, {"cache": StepCache("first-block", threshold=t)}) for t in (0.05, 0.1, 0.2, 0.3)]
    settings += [(f"taylorseer every {n}", dit, {"cache": StepCache("taylorseer", interval=n)}) for n in (2, 3, 5)]
    settings += [(f"magcache {t} (calibrated here)", dit,
                  {"cache": StepCache("magcache", threshold=t, mag_ratios=ratios)}) for t in (0.06, 0.2, 0.5)]
    with_lora = copy.deepcopy(dit)
    with tempfile.TemporaryDirectory() as folder:
        lora = write_tiny_lora(Path(folder) / "step.safetensors", dit, "step-distill")
        fuse_loras(with_lora, load_loras([LoraChoice(lora)], with_lora))
    settings.append(("LoRA fused (step-distill layout, strength 1)", with_lora, {}))
    settings.append(("few-step: 4 Euler steps at shift 5, guidance off", dit, dict(FEW_STEP)))
    settings.append(("few-step + the step-distill LoRA", with_lora, dict(FEW_STEP)))
    reference = None
    rows, results = [], []

    def record(name: str, timed: list, first: tuple, steps: int) -> None:
        nonlocal reference
        out, report, _ = timed[0]
        if reference is None:
            reference = out
        difference = float((out - reference).abs().max() / reference.abs().max())
        seconds = statistics.median(t[2] for t in timed)
        results.append({"setting": name, "dit_calls": report.dit_calls, "skipped_calls": round(report.skipped_calls, 2),
                        "relative_max_difference": difference, "seconds_per_step": seconds,
                        "seconds_per_edit": seconds * steps, "first_run_seconds_per_step": first[2]})
        rows.append([name, report.dit_calls, f"{report.skipped_calls:.1f}", f"{difference:.2e}",
                     f"{seconds * steps * 1e3:.0f}", f"{seconds * 1e3:.1f}"])

    for name, model, config in settings:
        first = run(model, **config)  # warm-up (compile's first call compiles)
        record(name, [run(model, **config) for _ in range(3)], first, config.get("steps", args.steps))
        if name.startswith("default"):  # the reference loop right after the default it must equal
            loop = lambda: _pipeline_loop(dit, cond, uncond, shape, args.steps)  # noqa: E731
            first = loop()
            record("diffusers WanPipeline-style loop (reference)", [loop() for _ in range(3)], first, args.steps)
    release_rows, release_results = _release_fixture()
    payload = {"device": f"CPU ({platform.processor() or platform.machine()}), 1 thread",
               "command": "python -m bench.sampler_settings " + " ".join(argv if argv is not None else sys.argv[1:]),
               "steps": args.steps, "latent_shape": list(shape), "results": results,
               "release_fixture": release_results}
    notes = (f"The tiny DiT ({len(dit.blocks)} blocks), {args.steps} UniPC steps with guidance 3 (2 DiT calls per "
             "step), latents 5x16x16; the few-step rows sample 4 Euler steps without guidance (1 call per step), so "
             "their difference is that of another sampler (and a LoRA on random weights), not an error. 'skipped' "
             "counts skipped block work as whole DiT calls (first-block always runs the first block; taylorseer "
             "skips attention only). Difference: max |latents - default| / max |default|. The WanPipeline-style loop "
             "is diffusers' scheduler driven as its pipeline drives it, around the same DiT: the default equals it. "
             "A fused LoRA costs nothing per step. Compile's first run (compiling) is in the JSON. MagCache's "
             "ratios were calibrated on this same model; on real weights calibrate once per model and step count "
             "(docs/performance.md). Adaptive skip rates on random tiny weights do not predict real ones.\n\n"
             "## The release-parity fixture\n\n"
             "The ReViSE release's own layout (`revise_core/testing/parity.py`, the folder the parity test reads), "
             "edited with its preset (UniPC over its sigmas, cond + 3 (cond - uncond), 40 steps, 17 frames at "
             "32x64) with every cache; difference against the same edit without one.\n\n"
             "| setting | DiT calls | skipped (whole calls) | difference | ms per edit |\n|---|---|---|---|---|\n"
             + "\n".join("| " + " | ".join(str(cell) for cell in row) + " |" for row in release_rows))
    path = write_results("sampler_settings", payload,
                         ["setting", "DiT calls", "skipped (whole calls)", "difference", "ms per edit",
                          "ms per step"], rows, notes)
    print(path.read_text())
    return 0


def _calibrated_ratios(calibrate: Callable[[], object]) -> tuple[float, ...]:
    """MagCache's magnitude ratios measured by `calibrate()` (one run with StepCache("magcache", calibrate=True)):
    diffusers prints them, as the command line's --cache-calibrate shows them, and they are read back here."""
    from revise_core.step_cache import parse_mag_ratios

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        calibrate()
    return parse_mag_ratios(printed.getvalue().split("mag_ratios=...):")[1].split("]")[0])


def _pipeline_loop(dit, cond, uncond, shape, steps: int) -> tuple[torch.Tensor, object, float]:
    """diffusers' WanPipeline denoising loop, written out around the same DiT: its UniPC flow scheduler, the
    conditional and unconditional calls per step, uncond + 3 (cond - uncond), the scheduler's step."""
    from revise_core.sampler import initial_noise, make_scheduler
    from revise_core.step_cache import CacheReport

    started = time.perf_counter()
    scheduler = make_scheduler("unipc", 5.0)
    scheduler.set_timesteps(steps)
    latents = initial_noise(shape, 0)
    calls = 0
    with torch.no_grad():
        for t in scheduler.timesteps:
            timestep = t.expand(shape[0])
            positive = dit(hidden_states=latents, timestep=timestep, encoder_hidden_states=cond, return_dict=False)[0]
            negative = dit(hidden_states=latents, timestep=timestep, encoder_hidden_states=uncond, return_dict=False)[0]
            calls += 2
            latents = scheduler.step(negative + 3.0 * (positive - negative), t, latents, return_dict=False)[0]
    report = CacheReport()
    report.dit_calls = calls
    return latents, report, (time.perf_counter() - started) / steps


def _release_fixture() -> tuple[list, list]:
    """Every cache on the release-parity fixture's edit: rows of the markdown table and their JSON."""
    from revise_core.editor import ReviseEditor, fit_source
    from revise_core.model_sets import EditModels
    from revise_core.presets import edit_settings
    from revise_core.sampler import sample
    from revise_core.step_cache import CacheReport, StepCache
    from revise_core.testing import parity

    with tempfile.TemporaryDirectory() as folder:
        models = EditModels.load(parity.write_parity_release(Path(folder) / "revise_ckpt"))
    settings = edit_settings("revise-official", height=parity.CLIP_SIZE[0], width=parity.CLIP_SIZE[1])
    frames = parity.parity_source_frames().float() / 255
    clip, _ = fit_source(frames, settings)
    condition = ReviseEditor(models).condition(clip, parity.INSTRUCTION, settings, vlm_source=frames[:1])
    shape = tuple(condition.source_latents.shape)

    def run(cache: StepCache) -> tuple[torch.Tensor, CacheReport, float]:
        report = CacheReport()
        started = time.perf_counter()
        with torch.no_grad():
            out = sample(models.dit, condition.cond, condition.uncond, latent_shape=shape, cache_report=report,
                         config=replace(settings.sampler, cache=cache))
        return out, report, time.perf_counter() - started

    ratios = _calibrated_ratios(lambda: run(StepCache("magcache", calibrate=True)))
    caches = [("none", StepCache())] + [(f"first-block {t}", StepCache("first-block", threshold=t)) for t in (0.1, 0.2, 0.3)]
    caches += [(f"taylorseer every {n}", StepCache("taylorseer", interval=n)) for n in (3, 5)]
    caches += [(f"magcache {t} (calibrated here)", StepCache("magcache", threshold=t, mag_ratios=ratios)) for t in (0.06, 0.2)]
    reference, rows, results = None, [], []
    for name, cache in caches:
        run(cache)  # warm-up
        timed = [run(cache) for _ in range(3)]
        out, report, _ = timed[0]
        reference = out if reference is None else reference
        difference = float((out - reference).abs().max() / reference.abs().max())
        seconds = statistics.median(t[2] for t in timed)
        results.append({"setting": name, "dit_calls": report.dit_calls, "skipped_calls": round(report.skipped_calls, 2),
                        "relative_max_difference": difference, "seconds_per_edit": seconds})
        rows.append([name, report.dit_calls, f"{report.skipped_calls:.1f}", f"{difference:.2e}", f"{seconds * 1e3:.0f}"])
    return rows, results


if __name__ == "__main__":
    sys.exit(main())
