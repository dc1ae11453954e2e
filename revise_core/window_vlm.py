"""A VLM pass per temporal window (`EditSettings.window_vlm`): each window's VLM rows from its own frames
instead of one VLM pass over the clip shared by every window.

The VLM sees each window as a clip of its own: the window's fitted frames, sampled as the whole clip's would be
(`vlm_frame_indices` over the window's frames, the frame times counted from the window's first frame), so the
ReViSE release's rule (its one VLM frame is the clip's first) gives each window its first frame. A preset whose
VLM reads the video file itself at its own size (the release, Omni-Video 2) keeps that view for the shared pass
only: a window's frames are those of the edited clip. The frames are read in one pass whatever the number of
windows, holding only the frames of the windows not yet encoded, so a streamed edit stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from .vlm.base import SampledFrames, vlm_frame_indices
from .windows import pixel_span


def window_vlm_conditions(frames: Iterable[torch.Tensor], spans: Sequence[tuple[int, int]], *,
                          vlm_frames: int | None, fps: float,
                          encode: Callable[[SampledFrames], torch.Tensor],
                          on_window: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """One u per window of latent frames `spans`, in their order, on the host: `encode` (the VLM's, with the
    instruction) of the window's sampled frames. `frames`: the clip's fitted frames [H, W, 3], one at a time from
    the first; `on_window(index)` after each window is encoded."""
    wanted = []
    for start, end in spans:
        first, stop = pixel_span(start, end)
        wanted.append([first + index for index in vlm_frame_indices(stop - first, vlm_frames)])
    needed: dict[int, list[int]] = {}  # pixel frame -> the windows that show it to the VLM
    for window, indices in enumerate(wanted):
        for index in indices:
            needed.setdefault(index, []).append(window)
    held: dict[int, torch.Tensor] = {}
    conditions: list[torch.Tensor | None] = [None] * len(spans)
    done = 0
    for position, frame in enumerate(frames):
        if position in needed:
            held[position] = frame
        # a window is encoded once its last frame went by, in order, and its frames dropped when no later one
        # shows them
        while done < len(spans) and wanted[done][-1] <= position:
            first = pixel_span(*spans[done])[0]
            sampled = SampledFrames(torch.stack([held[i] for i in wanted[done]]),
                                    [i - first for i in wanted[done]], fps)
            conditions[done] = encode(sampled).detach().cpu()
            if on_window is not None:
                on_window(done)
            for index in wanted[done]:
                if all(later <= done for later in needed[index]):
                    held.pop(index, None)
            done += 1
        if done == len(spans):
            break
    if done < len(spans):
        last = max(w[-1] for w in wanted)
        raise ValueError(f"the clip's frames ended before frame {last}, the last the windows' VLM passes show")
    return conditions
