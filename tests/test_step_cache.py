"""Step caches on our sampler path: each one runs, stays within its bound of the uncached edit, says what it
skipped, resets between runs, and refuses what it cannot do."""

from __future__ import annotations

import pytest
import torch

from revise_core.sampler import SamplerConfig, sample
from revise_core.step_cache import CacheReport, StepCache, check_identifiers
from revise_core.windows import TemporalWindows


def _run(dit, cache: StepCache, *, steps: int = 8, windows=None):
    generator = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 12, dit.config.text_dim, generator=generator)
    report = CacheReport()
    config = SamplerConfig(steps=steps, guidance_scale=3.0, scheduler="euler", cache=cache)
    with torch.no_grad():
        out = sample(dit, cond, torch.zeros_like(cond), latent_shape=(1, 16, 3, 8, 8), config=config,
                     cache_report=report)
    return out, report


@pytest.mark.parametrize(("cache", "bound"), [(StepCache("first-block", threshold=0.3), 0.05),
                                              (StepCache("taylorseer", interval=3), 0.05)])
def test_each_cache_skips_work_within_a_bound_and_resets_between_runs(tiny_models, cache, bound):
    dit = tiny_models.dit
    reference, plain = _run(dit, StepCache())
    assert (plain.dit_calls, plain.skipped_calls) == (16, 0.0)  # 8 steps x (cond + uncond)
    out, report = _run(dit, cache)
    again, _ = _run(dit, cache)
    assert report.skipped_calls > 1  # random tiny weights: the skip rate says nothing about real ones
    assert (out - reference).abs().max() / reference.abs().max() < bound
    assert torch.equal(out, again)  # the state was reset after the first run
    assert not dit._diffusers_hook.hooks or all("cache" not in name for name in dit._diffusers_hook.hooks)
    assert torch.equal(_run(dit, StepCache())[0], reference)  # disabled again: the plain edit


def test_magcache_calibrates_then_runs_on_the_given_ratios_and_taylorseer_hooks_wans_attention(tiny_models, capsys):
    dit = tiny_models.dit
    assert check_identifiers(dit) == 2 * len(dit.blocks)  # attn1 and attn2 of every block
    reference, _ = _run(dit, StepCache())
    calibrated, report = _run(dit, StepCache("magcache", calibrate=True))
    assert torch.equal(calibrated, reference) and report.skipped_calls == 0  # calibration skips nothing
    ratios = [float(v) for v in capsys.readouterr().out.split("mag_ratios=...):")[1].split("]")[0].strip(" \n[").split(",")]
    assert len(ratios) == 8
    out, report = _run(dit, StepCache("magcache", threshold=0.5, mag_ratios=tuple(ratios)))
    assert report.skipped_calls > 0 and (out - reference).abs().max() / reference.abs().max() < 0.2
    with pytest.raises(ValueError, match="magcache needs the model's magnitude ratios"):
        StepCache("magcache")
    with pytest.raises(ValueError, match="cache must be one of"):
        StepCache("teacache")


def test_a_cache_keeps_one_state_per_window(tiny_models):
    from revise_core.sampler import WindowContext
    from revise_core.windows import blend_weights

    dit = tiny_models.dit
    spans = TemporalWindows(2, 1).spans(3)
    weights = blend_weights(spans, 3)
    cond = torch.randn(1, 12, dit.config.text_dim, generator=torch.Generator().manual_seed(0))
    windows = [WindowContext(a, b, cond, torch.zeros_like(cond), weights[i, a:b]) for i, (a, b) in enumerate(spans)]
    results = {}
    for cache in (StepCache(), StepCache("first-block", threshold=0.3)):
        report = CacheReport()
        with torch.no_grad():
            results[cache.kind] = sample(dit, None, None, latent_shape=(1, 16, 3, 8, 8), windows=windows,
                                         config=SamplerConfig(steps=6, scheduler="euler", cache=cache),
                                         cache_report=report)
        assert report.dit_calls == 6 * 2 * 2  # steps x windows x (cond + uncond), each in its own context
    difference = (results["first-block"] - results["none"]).abs().max() / results["none"].abs().max()
    assert difference < 0.05
