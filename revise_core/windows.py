"""Temporal context windows: a long latent video denoised as overlapping windows of latent frames.

At every sampling step each window is denoised with its own slice of the source latents as the connector's
visual context, and the windows' velocities are blended where they overlap. Sizes count latent frames, as
ComfyUI's context-window node counts them; with Wan's VAE a window of n latent frames covers 4·(n − 1) + 1
pixel frames when it starts the clip and 4·n pixel frames anywhere else.

Blending: inside its overlap with a neighbour, a window's weight ramps linearly (1/(overlap+1), 2/(overlap+1),
…) toward its interior, where it is 1; the weights of all windows are then divided by their sum at each latent
frame, so they sum to one everywhere (`blend_weights`). With one window covering the clip the edit is the
whole-clip edit exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

AUTO = None  # TemporalWindows(AUTO): windows as long as the context budget allows
WINDOW_SCHEDULES = ("static",)  # the same windows at every step (ComfyUI's "standard_static")


@dataclass(frozen=True)
class TemporalWindows:
    """Windows of `length` latent frames, neighbours sharing `overlap` of them. `length` None (AUTO): the most
    latent frames the edit's context holds beside the instruction and VLM rows (context_budget), set by the
    editor once it knows them (`resolved`)."""

    length: int | None
    overlap: int = 1
    schedule: str = "static"

    def __post_init__(self) -> None:
        if self.length is not None and self.length < 1:
            raise ValueError(f"window length must be at least 1 latent frame, got {self.length}")
        if self.overlap < 0 or (self.length is not None and self.overlap >= self.length):
            raise ValueError(f"window overlap must be in [0, {(self.length or 1) - 1}] latent frames (below the "
                             f"window length {self.length}), got {self.overlap}")
        if self.schedule not in WINDOW_SCHEDULES:
            raise ValueError(f"window schedule must be one of {WINDOW_SCHEDULES}, got '{self.schedule}'")

    def resolved(self, most: int) -> TemporalWindows:
        """These windows with an AUTO length set to `most`, the latent frames the context holds."""
        if self.length is not None:
            return self
        if most <= self.overlap:
            raise ValueError(f"the context holds windows of {most} latent frames, not more than the overlap of "
                             f"{self.overlap}: lower the overlap or the resolution")
        return replace(self, length=most)

    def spans(self, latent_frames: int) -> list[tuple[int, int]]:
        """[start, end) of every window over `latent_frames`: a stride of length − overlap from frame 0, the last
        window moved back to end with the clip so that every window has the full length (a clip no longer than
        one window is one window)."""
        if self.length is None:
            raise ValueError("an automatic window length is set from the context budget first (resolved)")
        if latent_frames < 1:
            raise ValueError(f"a windowed clip needs at least 1 latent frame, got {latent_frames}")
        if latent_frames <= self.length:
            return [(0, latent_frames)]
        stride = self.length - self.overlap
        starts = list(range(0, latent_frames - self.length, stride)) + [latent_frames - self.length]
        return [(start, start + self.length) for start in starts]


def blend_weights(spans: list[tuple[int, int]], latent_frames: int) -> torch.Tensor:
    """[windows, latent_frames] float32 weights, zero outside each window, summing to one at every frame."""
    raw = torch.zeros(len(spans), latent_frames, dtype=torch.float64)
    for index, (start, end) in enumerate(spans):
        ramp = torch.ones(end - start, dtype=torch.float64)
        if index > 0:  # overlap with the previous window: rise from its side
            shared = spans[index - 1][1] - start
            if shared > 0:
                ramp[:shared] = torch.minimum(ramp[:shared], torch.arange(1, shared + 1) / (shared + 1))
        if index + 1 < len(spans):  # overlap with the next window: fall toward its side
            shared = end - spans[index + 1][0]
            if shared > 0:
                ramp[-shared:] = torch.minimum(ramp[-shared:], torch.arange(shared, 0, -1) / (shared + 1))
        raw[index, start:end] = ramp
    total = raw.sum(0)
    if (total <= 0).any():
        raise ValueError(f"windows {spans} leave latent frames of a {latent_frames}-frame clip uncovered")
    return (raw / total).float()


def pixel_frames(latent_frames: int, *, temporal_factor: int = 4) -> int:
    """Pixel frames of a clip of `latent_frames` causal latent frames (Wan: the first latent frame is one frame)."""
    return (latent_frames - 1) * temporal_factor + 1


def pixel_span(start: int, end: int, *, temporal_factor: int = 4) -> tuple[int, int]:
    """The pixel frames [first, stop) that latent frames [start, end) of a causal clip cover: latent frame 0 is
    pixel frame 0, latent frame k > 0 is pixel frames 4k − 3 … 4k (Wan's VAE)."""
    if not 0 <= start < end:
        raise ValueError(f"a window of latent frames [start, end) needs 0 <= start < end, got [{start}, {end})")
    first = 0 if start == 0 else (start - 1) * temporal_factor + 1
    return first, pixel_frames(end, temporal_factor=temporal_factor)
