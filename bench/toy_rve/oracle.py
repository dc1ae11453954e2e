"""The Toy-RVE oracle: the exact target of every sample and the four RVE-Bench sub-metrics of an edit.

All scores are 0-10 and combine like RVE-Bench (revise_core.evaluation.scores, VIEScore-style Overall):
- EA: how much of the required change happened, in the pixels the rule changes:
      10 · clamp(1 − |edit − target| / |source − target|) averaged over that region;
- PC: outside that region, how close the edit stays to the source: 10 · clamp(1 − mean|edit − source| / 0.25);
- GN: temporal naturalness, the edit's frame-to-frame changes against the target's:
      10 · clamp(1 − mean|Δt edit − Δt target| / 0.25);
- GR: realism as "pixel statistics stay in the data distribution": the share of values inside [0, 1]
      and the gap between the edit's and the target's per-channel mean and standard deviation.
"""

from __future__ import annotations

import torch

from revise_core.evaluation.scores import SampleScore

from .task import Sample, render

CHANGE_THRESHOLD = 0.05
TOLERANCE = 0.25


def target_of(sample: Sample) -> torch.Tensor:
    return render(sample.scene, category=sample.category)


def score(sample: Sample, edit: torch.Tensor, method: str = "edit") -> SampleScore:
    source, target = render(sample.scene), target_of(sample)
    edit = edit.float()
    changed = (source - target).abs().amax(-1) > CHANGE_THRESHOLD  # [T, H, W]
    need = (source - target).abs().mean(-1)
    miss = (edit - target).abs().mean(-1)
    ea = (1 - miss[changed] / need[changed].clamp(min=1e-6)).clamp(0, 1).mean().item() if changed.any() else 1.0
    kept = ~changed
    pc = 1 - ((edit - source).abs().mean(-1)[kept].mean().item() / TOLERANCE) if kept.any() else 1.0
    gn = 1 - ((edit[1:] - edit[:-1]) - (target[1:] - target[:-1])).abs().mean().item() / TOLERANCE
    inside = ((edit >= -0.02) & (edit <= 1.02)).float().mean().item()
    stats_gap = ((edit.mean((0, 1, 2)) - target.mean((0, 1, 2))).abs().mean()
                 + (edit.std((0, 1, 2)) - target.std((0, 1, 2))).abs().mean()).item()
    gr = inside * (1 - stats_gap / TOLERANCE)
    clamp = lambda v: 10.0 * min(1.0, max(0.0, v))  # noqa: E731 - a local one-liner
    return SampleScore(sample.id, "RAVE", sample.category, method,
                       {"EA": clamp(ea), "PC": clamp(pc), "GN": clamp(gn), "GR": clamp(gr)})
