"""Shot segmentation: a synthetic film joined with hard cuts is split exactly at the cuts."""

from __future__ import annotations

import torch

from revise_core.data.shots import ShotConfig, detect_cuts, shots
from revise_core.video import synthetic_clip


def _film(lengths, seeds):
    clips = [synthetic_clip(num_frames=n, height=48, width=64, seed=s).frames for n, s in zip(lengths, seeds, strict=True)]
    # Give each shot its own look, as different scenes have: a different global tint.
    tints = [(1, 0, 0), (0, 0, 1), (0, 1, 0), (1, 1, 1)][:len(clips)]
    tinted = [c * 0.6 + torch.tensor(t) * 0.4 for c, t in zip(clips, tints, strict=True)]
    return torch.cat(tinted)


def test_detected_boundaries_are_exactly_the_cuts():
    lengths = [12, 9, 15, 10]
    film = _film(lengths, [0, 1, 2, 3])
    expected = [12, 21, 36]
    assert detect_cuts(film) == expected
    assert shots(film) == [(0, 12), (12, 21), (21, 36), (36, 46)]


def test_motion_inside_a_shot_is_not_a_cut():
    clip = synthetic_clip(num_frames=24, height=48, width=64, seed=4).frames  # a square sweeping across
    assert detect_cuts(clip) == []
    assert shots(clip) == [(0, 24)]


def test_short_flashes_are_merged():
    film = _film([10, 2, 10], [0, 1, 2])
    assert len(shots(film, ShotConfig(min_shot=4))) == 2
