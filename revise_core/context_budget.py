"""The context budget of an edit: whether the source video's tokens leave room for the VLM rows and the
instruction within the connector's `max_context_len`, and the longest clip or window that fits.

The connectors cut an overlong context as their releases do (the ReViSE release keeps the first rows, so the
instruction's end goes first; Omni-Video 2 drops the text, then u), which silently gives an edit that never saw
its instruction. The editor refuses such an edit unless asked to cut (`EditSettings.allow_context_cut`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .connector import ContextConnector
from .windows import pixel_frames


class ContextOverflowError(ValueError):
    """The source video leaves no room for the whole instruction and VLM rows in the context."""


@dataclass(frozen=True)
class ContextBudget:
    """Rows of one conditional context of an edit, and how many latent frames the connector can hold."""

    max_rows: int  # the connector's max_context_len
    fixed_rows: int  # VLM rows + instruction rows + boundary tokens
    rows_per_latent_frame: int  # source-video tokens of one latent frame
    vlm_rows: int
    text_rows: int

    @classmethod
    def measure(cls, connector: ContextConnector, *, vlm_rows: int, text_rows: int, video_rows: int,
                latent_frames: int) -> ContextBudget:
        if latent_frames < 1 or video_rows % latent_frames:
            raise ValueError(f"{video_rows} video tokens do not split into {latent_frames} latent frames")
        return cls(connector.config.max_context_len, connector.uncut_length(vlm_rows, text_rows, 0),
                   video_rows // latent_frames, vlm_rows, text_rows)

    @property
    def max_latent_frames(self) -> int:
        """The most latent frames whose tokens fit beside the VLM rows and the instruction (0: not even one)."""
        return max(0, (self.max_rows - self.fixed_rows) // self.rows_per_latent_frame)

    def needed(self, latent_frames: int) -> int:
        return self.fixed_rows + latent_frames * self.rows_per_latent_frame

    def check(self, latent_frames: int, *, windowed: bool) -> None:
        """Raise ContextOverflowError, in one sentence that says what fits, when `latent_frames` do not."""
        needed = self.needed(latent_frames)
        if needed <= self.max_rows:
            return
        most = self.max_latent_frames
        span = f"a window of {latent_frames} latent frames" if windowed else \
            f"{pixel_frames(latent_frames)} frames ({latent_frames} latent)"
        head = (f"the context of {span} needs {needed} rows ({latent_frames * self.rows_per_latent_frame} source-"
                f"video, {self.vlm_rows} VLM, {self.text_rows} instruction, the rest boundary tokens), more than "
                f"the connector's max_context_len of {self.max_rows}: the instruction and then the VLM rows would "
                "be cut")
        if most < 1:
            raise ContextOverflowError(f"{head}; not even one latent frame fits at this size, so lower the "
                                       "resolution, or allow the cut (--allow-context-cut)")
        fits = f"windows of at most {most} latent frames" if windowed else \
            f"at most {pixel_frames(most)} frames, or edit in windows (--window {most})"
        raise ContextOverflowError(f"{head}; at this size use {fits}, or allow the cut (--allow-context-cut)")
