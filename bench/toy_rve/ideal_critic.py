"""An ideal critic for Toy-RVE: the positive control of the reward path.

It judges an edit the way a perfect VLM would, by the instruction's rule, without ever reading target
frames (a pixel distance to the target would be SFT in disguise). It knows the scene space: it recognises
the scene and the time of each source frame it is shown, and from the rule of the instruction's category
(`task.object_at`) it knows where the object must be, how big and of which colour. On the edited frames it
measures the same rule-level features, differentiably, through a soft mask of what differs from the
scene's background: the object's area, centroid, extent (from its second moments) and mean colour. The
verdict Δ falls linearly with the summed feature error (`rule_error`); Δ_base is the same measure on the
source.

It is a `SelfCritic` whose `verdict` is replaced, so it enters USO through exactly the code the VLM critic
does: `trainer.step`'s one-step estimate, decode, frame sampling, `relative` (Δ − Δ_base, the baseline
cache) and λ.
"""

from __future__ import annotations

import torch

from revise_core.chat_text import check_instruction
from revise_core.critic import CriticConfig, CriticError, SelfCritic, Verdict

from .task import FRAMES, PHRASINGS, SIZE, Scene, background_of, object_at, render

# Δ = DELTA_AT_ZERO − DELTA_PER_ERROR · rule_error: a perfect edit scores Δ = 4 (P(Yes) 0.98), and an error
# of 0.1 (e.g. the object 3 pixels off and 10 % too wide) lowers it by 2.
DELTA_AT_ZERO, DELTA_PER_ERROR = 4.0, 20.0
# Soft mask: sigmoid((|edit − background|₁ − THRESHOLD) / SOFTNESS); the toy's objects differ from the
# background by 0.3 or more (L1 over RGB), decoding noise by much less.
THRESHOLD, SOFTNESS = 0.15, 0.015


def category_of(instruction: str) -> str:
    """The rule an instruction asks for: every Toy-RVE phrasing belongs to one category."""
    for category, (train, held_out) in PHRASINGS.items():
        if instruction in train or instruction in held_out:
            return category
    raise CriticError(f"not a Toy-RVE instruction: {instruction!r}")


class IdealCritic(SelfCritic):
    """Rule-level judge of the scenes it is given (`scenes`: every scene the run may show it)."""

    def __init__(self, scenes: list[Scene], config: CriticConfig | None = None) -> None:
        # No VLM: SelfCritic's own __init__ tokenizes Yes / No with one; the parts this critic uses are set here.
        self.config = config or CriticConfig()
        self._baseline_cache: dict = {}
        self._scenes = list(dict.fromkeys(scenes))
        # Every source frame of every scene, to recognise (scene, time) of a frame shown; 8-bit like a video file.
        frames = torch.stack([render(scene) for scene in self._scenes])  # [S, T, H, W, 3]
        self._frames = (frames * 255).round() / 255

    def locate(self, frame: torch.Tensor) -> tuple[Scene, int]:
        """The (scene, time) whose source frame is closest to `frame` [H, W, 3]."""
        distance = (self._frames - frame.detach().float().cpu()).abs().flatten(2).mean(-1)  # [S, T]
        index = int(distance.argmin())
        return self._scenes[index // FRAMES], index % FRAMES

    def rule_error(self, source: torch.Tensor, edited: torch.Tensor, instruction: str) -> torch.Tensor:
        """Mean over frames of the object's feature error in `edited` against what the rule asks for; frames
        [T, H, W, 3] in ~0..1, `source` the source frames at the same times. Differentiable in `edited`."""
        category = category_of(instruction)
        errors = []
        for source_frame, frame in zip(source, edited, strict=True):
            scene, t = self.locate(source_frame)
            errors.append(_feature_error(frame, scene, t, category))
        return torch.stack(errors).mean()

    def verdict(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, dimension: str | None = None,
                preprocessing: str | None = None) -> Verdict:
        check_instruction(instruction)
        if source.shape != edited.shape:
            raise CriticError(f"edited frames {tuple(edited.shape)} differ from the source's {tuple(source.shape)}")
        delta = DELTA_AT_ZERO - DELTA_PER_ERROR * self.rule_error(source, edited, instruction)
        return Verdict(delta=delta, preprocessing=preprocessing or "differentiable")


def _features(frame: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(area, centre x, centre y, width, height, r, g, b) of what differs from `background`, in pixels and 0..1,
    through a soft mask (differentiable in `frame`)."""
    mask = torch.sigmoid(((frame - background).abs().sum(-1) - THRESHOLD) / SOFTNESS)  # [H, W]
    area = mask.sum().clamp(min=1e-3)
    coords = torch.arange(SIZE, dtype=frame.dtype, device=frame.device) + 0.5
    x_mass, y_mass = mask.sum(0), mask.sum(1)
    cx, cy = (x_mass * coords).sum() / area, (y_mass * coords).sum() / area
    # a uniform box of width w has variance w² / 12 about its centre
    width = (12 * (x_mass * (coords - cx) ** 2).sum() / area).clamp(min=1e-6).sqrt()
    height = (12 * (y_mass * (coords - cy) ** 2).sum() / area).clamp(min=1e-6).sqrt()
    colour = (mask[..., None] * frame).sum((0, 1)) / area
    return torch.cat([torch.stack([area, cx, cy, width, height]), colour])


def _expected(scene: Scene, t: int, category: str) -> torch.Tensor:
    """The same features of the object the rule asks for (clipped to the frame, as it is painted)."""
    x, y, width, height, colour = object_at(scene, t, category)
    x0, x1, y0, y1 = max(0, x), min(SIZE, x + width), max(0, y), min(SIZE, y + height)
    visible_w, visible_h = max(0, x1 - x0), max(0, y1 - y0)
    return torch.cat([torch.tensor([visible_w * visible_h, (x0 + x1) / 2, (y0 + y1) / 2, visible_w, visible_h],
                                   dtype=torch.float32), colour.float()])


# Each feature's error is divided by its scale: positions and extents by the frame side, the area by the
# object's own area, colours as they are (0..1).
_SCALES = torch.tensor([64.0, SIZE, SIZE, SIZE, SIZE, 1.0, 1.0, 1.0])


def _feature_error(frame: torch.Tensor, scene: Scene, t: int, category: str) -> torch.Tensor:
    background = background_of(scene).to(frame)
    measured = _features(frame, background)
    expected = _expected(scene, t, category).to(measured)
    return ((measured - expected).abs() / _SCALES.to(measured)).sum()

