"""What an edit reads from a video file: the clip the DiT edits, and what the VLM sees.

The edit command line and RVE-Bench read sources through `read_edit_source`, so a preset's way of showing
the video to its VLM (the ReViSE release: frame 0 at the video's own size; Omni-Video 2: frames sampled
over the whole file, with their times) holds for every caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from .presets import NO_PRESET, Preset
from .video import (
    SIZE_MULTIPLE,
    FrameStream,
    VideoClip,
    VideoError,
    check_clip_shape,
    count_frames,
    frame_limit,
    read_video,
    target_frame_count,
)
from .vlm.base import SampledFrames, vlm_frame_indices
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
    return EditSource(clip, read_vlm_source(path, settings, preset))


def read_vlm_source(path: str | os.PathLike, settings, preset: Preset = NO_PRESET, *, total: int | None = None
                    ) -> torch.Tensor | SampledFrames | None:
    """What the VLM of `preset` sees of the video at `path` when it reads the video's own frames (the ReViSE
    release: frame 0 at the video's own size; Omni-Video 2: frames sampled over the whole file, with their times);
    None when it sees the fitted clip. `total`: the file's frame count, when already counted."""
    if not preset.vlm_sees_native_frames:
        return None
    if preset.vlm_reads == "whole video":
        indices = sample_indices(total or count_frames(path), settings.vlm_frames)  # its processor's sampling
        native = read_video(path, indices=indices)
        return SampledFrames(native.frames, indices, float(native.fps))
    return read_video(path, max_frames=1).frames  # "first frame", at the video's own size


@dataclass
class StreamedSource:
    """A clip too long to hold as frames: what it will be (its 4k+1 frame count, stride and size), known before any
    model loads, and its fitted frames decoded one at a time (`frames()`). `vlm_source`: the preset's own view of
    the video, or None, then `vlm_view` collects the fitted frames the VLM samples while they stream by."""

    path: Path
    num_frames: int
    stride: int
    size: tuple[int, int]
    fps: Fraction  # the file's (as read_edit_source's clip, whatever the stride)
    settings: object  # EditSettings
    vlm_source: torch.Tensor | SampledFrames | None
    _vlm_frames: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike, settings, preset: Preset = NO_PRESET) -> StreamedSource:
        """Count the frames of `path` (one decode, nothing converted) and plan the clip as `fit_source` would fit
        it: a video too short, a bad size or frame count fails here, in one sentence."""
        from .editor import clip_stride  # the editor's rule for a stride the video is too short for

        total = count_frames(path)
        if settings.skip_frames >= total:
            raise VideoError(f"{path}: the video has {total} frames, all skipped by skip_frames={settings.skip_frames}")
        available = total - settings.skip_frames
        stride = clip_stride(available, settings.num_frames, settings.frame_stride)
        count = target_frame_count(-(-available // stride), settings.num_frames, settings.frame_policy)
        first = read_video(path, max_frames=1)
        height, width = first.size
        size = (settings.height or height // SIZE_MULTIPLE * SIZE_MULTIPLE,
                settings.width or width // SIZE_MULTIPLE * SIZE_MULTIPLE)
        check_clip_shape(count, *size, max_frames=frame_limit(settings.window is not None))
        return cls(Path(path), count, stride, size, first.fps, settings,
                   read_vlm_source(path, settings, preset, total=total))

    def frames(self) -> Iterator[torch.Tensor]:
        """The clip's fitted frames [H, W, 3] in 0..1, one at a time: those after the skipped ones, every stride-th,
        each fitted to the size; the last repeated up to `num_frames` (frame_policy "pad")."""
        settings = self.settings
        stream = FrameStream(self.path, skip=settings.skip_frames, stride=self.stride, size=self.size,
                             resize=settings.resize, max_frames=self.num_frames)
        wanted = set(vlm_frame_indices(self.num_frames, settings.vlm_frames)) if self.vlm_source is None else set()
        decoded, frame = 0, None
        for frame in stream:
            decoded += 1
            yield self._seen(decoded - 1, frame, wanted)
        for index in range(decoded, self.num_frames):  # frame_policy "pad": the last frame repeated
            yield self._seen(index, frame, wanted)

    def _seen(self, index: int, frame: torch.Tensor, wanted: set[int]) -> torch.Tensor:
        if index in wanted:
            self._vlm_frames[index] = frame
        return frame

    def vlm_view(self) -> torch.Tensor | SampledFrames:
        """What the VLM sees: the preset's own view, or the fitted frames it samples (after `frames()` ran)."""
        if self.vlm_source is not None:
            return self.vlm_source
        if not self._vlm_frames:
            raise RuntimeError("the VLM's frames are collected while the clip streams: iterate frames() first")
        indices = vlm_frame_indices(self.num_frames, self.settings.vlm_frames)
        return SampledFrames(torch.stack([self._vlm_frames[i] for i in indices]), indices, self.settings.fps)
