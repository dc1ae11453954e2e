"""Shot segmentation by colour-histogram differences (the classic method of the paper's reference).

A cut is declared between frames t−1 and t when the L1 distance of their normalised HSV-free RGB
histograms (per channel, `bins` bins) exceeds `threshold` and is also `ratio` times the median distance
of the surrounding `window` frames, which keeps fast motion from reading as cuts. Kept here in plain torch
rather than PySceneDetect, which would add OpenCV to the dependencies for one function.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ShotConfig:
    bins: int = 32
    threshold: float = 0.5  # L1 distance of per-channel histograms, in [0, 2]
    ratio: float = 3.0  # ... and this many times the local median distance
    window: int = 8  # frames each side used for the local median
    min_shot: int = 4  # shorter shots are merged into the previous one


def histograms(frames: torch.Tensor, bins: int) -> torch.Tensor:
    """[T, H, W, 3] in 0..1 -> per-frame normalised histograms [T, 3 * bins]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {tuple(frames.shape)}")
    index = (frames.clamp(0, 1) * (bins - 1)).round().long()  # [T, H, W, 3]
    count = frames.shape[1] * frames.shape[2]
    out = torch.zeros(frames.shape[0], 3, bins)
    for channel in range(3):
        out[:, channel].scatter_add_(1, index[..., channel].flatten(1), torch.ones(frames.shape[0], count))
    return (out / count).flatten(1)


def frame_distances(frames: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Histogram distance between consecutive frames: [T − 1], entry t-1 is between frames t-1 and t."""
    hist = histograms(frames, bins)
    return (hist[1:] - hist[:-1]).abs().sum(-1) / 3


def detect_cuts(frames: torch.Tensor, config: ShotConfig | None = None) -> list[int]:
    """Indices t of the first frame of every new shot (frame 0 excluded)."""
    config = config or ShotConfig()
    if frames.shape[0] < 2:
        return []
    distances = frame_distances(frames, config.bins)
    cuts = []
    for index, value in enumerate(distances.tolist()):
        low, high = max(0, index - config.window), min(len(distances), index + config.window + 1)
        neighbours = torch.cat([distances[low:index], distances[index + 1:high]])
        local = neighbours.median().item() if neighbours.numel() else 0.0
        if value > config.threshold and value > config.ratio * local:
            cut = index + 1
            if cuts and cut - cuts[-1] < config.min_shot or cut < config.min_shot:
                continue
            cuts.append(cut)
    return cuts


def shots(frames: torch.Tensor, config: ShotConfig | None = None) -> list[tuple[int, int]]:
    """[(start, end)) frame ranges of the shots."""
    boundaries = [0, *detect_cuts(frames, config), frames.shape[0]]
    return list(itertools.pairwise(boundaries))
