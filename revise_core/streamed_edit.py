"""A video file edited with memory that does not grow with its decoded frames (the long-clip path of the edit CLI).

    file ─ decode + fit, one frame at a time ─ VAE encode, one causal chunk at a time ─┐
                                   VLM (its few frames) ─ umT5 ─ connector ─ windows ───┼─ sampler ─ VAE decode,
                                                                                        │  one latent frame at a
                                                                                        │  time ─ write ─ file
Host memory holds the clip's latents (source and edit), the windows' contexts and a few frames, never the clip's
decoded frames; the sampler keeps a windowed latent video on the host and moves one window at a time to the
device, whose memory is then one window's whatever the length. Equal to `ReviseEditor.edit` of the same clip
(tests/test_streamed_edit.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from . import vae as vae_ops
from .edit_inputs import StreamedSource
from .editor import EditSettings, ReviseEditor, timed
from .sampler import StepInfo


@dataclass
class StreamedEditResult:
    frames_written: int
    latents: torch.Tensor  # raw VAE latents of the edit [1, 16, t, h, w], on the host
    reasoning: str
    seed: int
    timings: dict[str, float] = field(default_factory=dict)


def edit_streamed(editor: ReviseEditor, source: StreamedSource, instruction: str, settings: EditSettings,
                  write: Callable[[torch.Tensor], None], *, callback: Callable[[StepInfo], None] | None = None,
                  on_window: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                  noise: torch.Tensor | None = None,
                  progress: Callable[[str, int], None] | None = None) -> StreamedEditResult:
    """Edit the clip `source` streams, handing the edited frames to `write` ([n, H, W, 3] in 0..1, 1 then 4 frames
    per latent frame; e.g. `video.VideoWriter.write`). `callback` / `on_window` / `cancel` / `noise`: as
    `ReviseEditor.edit` and `sampler.sample`; `progress(stage, count)` for progress bars: "encode" per source
    frame read, "vlm" per window's own VLM pass (settings.window_vlm), "windows" once with the number of temporal
    windows (known when the context is built: an automatic window length comes from the context budget), "decode"
    per chunk of edited frames written."""
    progress = progress or (lambda stage, count: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    models, use = editor.models, editor.placement.use
    with torch.no_grad():
        with timed(timings, "vae_encode"), use("vae"):
            raw = vae_ops.encode_stream(models.vae, _counted(source.frames(), progress))
        condition = editor.condition_from_latents(raw, source.vlm_view(), instruction, settings, timings,
                                                  clip_frames=source.frames,
                                                  on_vlm_window=lambda index: progress("vlm", 1))
        progress("windows", len(condition.windows or [None]))
        seed = settings.sampler.seed
        edited = editor.sample_latents(condition, settings, seed, timings, callback=callback, cancel=cancel,
                                       noise=noise, on_window=on_window).cpu()
        written = 0
        with timed(timings, "vae_decode"), use("vae"):
            for frames in vae_ops.decode_stream(models.vae, edited):
                write(frames)
                written += frames.shape[0]
                progress("decode", frames.shape[0])
    timings["total"] = time.perf_counter() - start
    return StreamedEditResult(written, edited, condition.reasoning, seed, timings)


def _counted(frames: Iterator[torch.Tensor], progress: Callable[[str, int], None]) -> Iterator[torch.Tensor]:
    for frame in frames:
        progress("encode", 1)
        yield frame
