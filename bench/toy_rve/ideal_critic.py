"""An ideal critic for Toy-RVE: the positive control of the reward path.

It judges an edit the way a perfect VLM would, by the instruction's rule, without ever reading target
frames (a pixel distance to the target would be SFT in disguise). It knows the scene space: it recognises
the scene and the time of each source frame it is shown, and from the rule of the instruction's category
(`task.object_at`) it knows where the object must be, how big and of which colour. On the edited frames it
measures, differentiably, two rule-level features per frame through soft masks:
- coverage: how much of the box the rule puts the object in shows the object's colour (a colour-likeness
  mask, LIKENESS / (LIKENESS + mean |pixel − colour|)): the object's position, extent and colour at once;
- spill: how much differs from the scene's background outside that box (a hinge above decoding noise), in
  object areas: an object left behind, smeared or too large.
The rule error is (1 − coverage) + spill, averaged over frames; the verdict Δ falls linearly with it, and
Δ_base is the same measure on the source.

Moment features of a background-difference mask (area, centroid, second-moment extent, mean colour) were
tried first and trap gradient ascent: growing the object at the place the rule wants it first raises the
mask's second moment (a tall two-part object), so their gradient pushes the new pixels back, and from the
unedited video only the colour rule could be climbed. Coverage and spill have no such trap. Together they come
close to a (saturating) distance to what the rule paints, never to a training target: where the targets are
flawed or missing (the other conditions), this critic still knows the rule, which is what a positive control
of the reward path needs.

It is a `SelfCritic` whose `verdict` is replaced, so it enters USO through exactly the code the VLM critic
does: `trainer.step`'s one-step estimate, decode, frame sampling, `relative` (Δ − Δ_base, the baseline
cache) and λ.
"""

from __future__ import annotations

import torch

from revise_core.chat_text import check_instruction
from revise_core.critic import CriticConfig, CriticError, SelfCritic, Verdict

from .task import FRAMES, PHRASINGS, SIDE, SIZE, Scene, background_of, object_at, render

# Δ = DELTA_AT_ZERO − DELTA_PER_ERROR · rule_error: a perfect edit scores Δ = 4 (P(Yes) 0.98), and an error
# of 0.1 (e.g. an eighth of the object's box left at the background colour) lowers it by 2.
DELTA_AT_ZERO, DELTA_PER_ERROR = 4.0, 20.0
# Colour likeness of a pixel to the object's colour: LIKENESS / (LIKENESS + mean |pixel − colour|), 1 on the
# colour and 0.25 at the typical object-background difference of 0.3; its slope stays usable (~0.6) there.
LIKENESS = 0.1
# Spill: what differs from the background by more than SPILL_FLOOR (mean over RGB) outside the rule's box, in
# object areas (SIDE²); the floor keeps decoding noise (~0.02) out of it.
SPILL_FLOOR = 0.05


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
        """Mean over frames of (1 − coverage) + spill of `edited` against what the rule asks for; frames
        [T, H, W, 3] in ~0..1, `source` the source frames at the same times. Differentiable in `edited`."""
        category = category_of(instruction)
        errors = []
        for source_frame, frame in zip(source, edited, strict=True):
            scene, t = self.locate(source_frame)
            errors.append(_rule_error(frame, scene, t, category))
        return torch.stack(errors).mean()

    def verdict(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, dimension: str | None = None,
                preprocessing: str | None = None) -> Verdict:
        check_instruction(instruction)
        if source.shape != edited.shape:
            raise CriticError(f"edited frames {tuple(edited.shape)} differ from the source's {tuple(source.shape)}")
        delta = DELTA_AT_ZERO - DELTA_PER_ERROR * self.rule_error(source, edited, instruction)
        return Verdict(delta=delta, preprocessing=preprocessing or "differentiable")


def _rule_error(frame: torch.Tensor, scene: Scene, t: int, category: str) -> torch.Tensor:
    """(1 − coverage) + spill of one frame [H, W, 3]: coverage is the mean colour likeness to the rule's object
    colour over the box the rule puts the object in (1 when that box is out of the frame, as it is painted);
    spill what differs from the background outside the box, in object areas."""
    x, y, width, height, colour = object_at(scene, t, category)
    x0, x1, y0, y1 = max(0, x), min(SIZE, x + width), max(0, y), min(SIZE, y + height)
    outside = torch.ones(SIZE, SIZE, dtype=frame.dtype, device=frame.device)
    coverage = frame.new_ones(())
    if x0 < x1 and y0 < y1:
        distance = (frame[y0:y1, x0:x1] - colour.to(frame)).abs().mean(-1)
        coverage = (LIKENESS / (LIKENESS + distance)).mean()
        outside[y0:y1, x0:x1] = 0
    difference = ((frame - background_of(scene).to(frame)).abs().mean(-1) - SPILL_FLOOR).clamp(min=0)
    spill = (difference * outside).sum() / (SIDE * SIDE)
    return (1 - coverage) + spill
