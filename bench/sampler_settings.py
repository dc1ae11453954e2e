"""Speed settings of our sampler on the tiny models: DiT calls saved against the difference they make.

    python -m bench.sampler_settings [--steps 20]

One edit's sampling (the tiny DiT, 5 latent frames of 16x16, guidance 3 with cond + uncond, UniPC) per setting:
the default (native attention, no cache), the other CPU attention kernels, regional compile, and every step cache
at the thresholds users tune. Reported: DiT calls made and skipped (as whole calls), the relative max difference
of the final latents from the default, and seconds per step (the median of 3 runs after a warm-up; compile's
first call is reported apart). Adaptive caches decide on the model's own activations: what they skip on random
tiny weights says nothing about real ones. Results: bench/results/sampler_settings.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time

import torch

from bench.common import write_results


def main(argv: list[str] | None = None) -> int:
    from revise_core.dit import compile_repeated_blocks
    from revise_core.sampler import SamplerConfig, sample
    from revise_core.step_cache import CacheReport, StepCache
    from revise_core.testing import tiny_model_set

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
        with torch.no_grad():
            out = sample(model, cond, uncond, latent_shape=shape, cache_report=report,
                         config=SamplerConfig(steps=args.steps, guidance_scale=3.0, **config))
        return out, report, (time.perf_counter() - started) / args.steps

    calibration = {}
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # diffusers prints the calibrated ratios
        run(dit, cache=StepCache("magcache", calibrate=True))
    text = printed.getvalue().split("mag_ratios=...):")[1].split("]")[0]
    calibration["ratios"] = tuple(float(v) for v in text.strip(" \n[").split(","))

    settings = [("default (native, no cache)", dit, {})]
    settings += [(f"attention {name}", dit, {"attention": name}) for name in ("math", "flex")]
    compiled = copy.deepcopy(dit)
    compile_repeated_blocks(compiled)
    settings.append(("compile (regional)", compiled, {}))
    settings += [(f"first-block {t}", dit, {"cache": StepCache("first-block", threshold=t)}) for t in (0.05, 0.1, 0.2, 0.3)]
    settings += [(f"taylorseer every {n}", dit, {"cache": StepCache("taylorseer", interval=n)}) for n in (2, 3, 5)]
    settings += [(f"magcache {t} (calibrated here)", dit,
                  {"cache": StepCache("magcache", threshold=t, mag_ratios=calibration["ratios"])}) for t in (0.06, 0.2, 0.5)]
    reference = None
    rows, results = [], []
    for name, model, config in settings:
        first = run(model, **config)  # warm-up (compile's first call compiles)
        timed = [run(model, **config) for _ in range(3)]
        out, report, _ = timed[0]
        if reference is None:
            reference = out
        difference = float((out - reference).abs().max() / reference.abs().max())
        seconds = statistics.median(t[2] for t in timed)
        result = {"setting": name, "dit_calls": report.dit_calls, "skipped_calls": round(report.skipped_calls, 2),
                  "relative_max_difference": difference, "seconds_per_step": seconds,
                  "first_run_seconds_per_step": first[2]}
        results.append(result)
        rows.append([name, report.dit_calls, f"{report.skipped_calls:.1f}", f"{difference:.2e}", f"{seconds * 1e3:.1f}"])
    payload = {"device": f"CPU ({platform.processor() or platform.machine()}), 1 thread",
               "command": "python -m bench.sampler_settings " + " ".join(argv if argv is not None else sys.argv[1:]),
               "steps": args.steps, "latent_shape": list(shape), "results": results}
    notes = (f"The tiny DiT ({len(dit.blocks)} blocks), {args.steps} UniPC steps with guidance 3 (2 DiT calls per "
             "step), latents 5x16x16. 'skipped' counts skipped block work as whole DiT calls (first-block always "
             "runs the first block; taylorseer skips attention only). Difference: max |latents - default| / max "
             "|default|. Compile's first run (compiling) is in the JSON. MagCache's ratios were calibrated on this "
             "same model; on real weights calibrate once per model and step count (docs/performance.md). Adaptive "
             "skip rates on random tiny weights do not predict real ones.")
    path = write_results("sampler_settings", payload,
                         ["setting", "DiT calls", "skipped (whole calls)", "difference", "ms per step"], rows, notes)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
