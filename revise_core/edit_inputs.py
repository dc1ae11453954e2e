"""What an edit reads from a video file: the clip the DiT edits, and what the VLM sees.

The edit command line and RVE-Bench read sources through `read_edit_source`, so a preset's way of showing
the video to its VLM (the ReViSE release: frame 0 at the video's own size; Omni-Video 2: frames sampled
over the whole file, with their times) holds for every caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .presets import NO_PRESET, Preset
from .video import VideoClip, count_frames, read_video
from .vlm.base import SampledFrames
from .vlm.qwen3_vl import sample_indices


@dataclass
class EditSource:
    """`clip`: the decoded frames the edit starts from (only as many as it uses, fitted to the settings' size
    while decoding); `vlm_source`: what the VLM sees instead of the fitted clip (None: the fitted clip)."""

    clip: VideoClip
    vlm_source: torch.Tensor | SampledFrames | None = None


def read_edit_source(path: str | os.PathLike, settings, preset: Preset = NO_PRESET) -> EditSource:
    """Decode what an edit with `settings` (EditSettings) and `preset` uses of the video at `path`: the skipped
    frames and at most `num_frames` (times the frame stride) frames, each fitted to the settings' size on the fly,
    and, for presets whose VLM sees the video's own frames, those frames."""
    size = (settings.height, settings.width) if settings.height and settings.width else None
    # with a frame stride, enough frames for it (the editor lowers it for a short video, as the release does)
    wanted = settings.num_frames * settings.frame_stride + settings.skip_frames if settings.num_frames else None
    clip = read_video(path, max_frames=wanted, size=size, resize=settings.resize)
    if not preset.vlm_sees_native_frames:
        return EditSource(clip)
    if preset.vlm_reads == "whole video":
        indices = sample_indices(count_frames(path), settings.vlm_frames)  # its processor's sampling
        native = read_video(path, indices=indices)
        return EditSource(clip, SampledFrames(native.frames, indices, float(native.fps)))
    return EditSource(clip, read_video(path, max_frames=1).frames)  # "first frame", at the video's own size

