"""What the generator's training targets look like: the conditions Toy-RVE compares the objectives in.

The paper's training targets come from an automatic pipeline (Ditto-1M edits rewritten by an LLM), and such
a pipeline gets some edits wrong; its VLM also understands instructions that the generator never saw carried
out. The critic is always trained on correct labels; only the generator's targets change:
- exact: every target follows its rule (the first Toy-RVE experiment);
- flawed: a fixed share of the targets is what a pipeline gets wrong: the edit half-done (a blend of 10-45 %
  of the change), another rule's edit, or no edit at all;
- unseen rule: one rule is never carried out in any training target (the pipeline left those videos
  unchanged), while the critic knows it: the reasoning-transfer case.
Evaluation is always on held-out samples with their correct targets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .task import CATEGORIES, Sample, negative_edit, render

FLAW_KINDS = ("partial", "wrong rule", "unchanged")


@dataclass(frozen=True)
class Condition:
    name: str
    flawed_fraction: float = 0.0  # share of the training targets replaced by a flawed edit
    flaw_kinds: tuple[str, ...] = FLAW_KINDS
    unseen_category: str | None = None  # every training target of this rule is the unchanged source

    def __post_init__(self) -> None:
        if not 0.0 <= self.flawed_fraction <= 1.0:
            raise ValueError(f"condition '{self.name}': flawed_fraction must be in [0, 1], got {self.flawed_fraction}")
        unknown = set(self.flaw_kinds) - set(FLAW_KINDS)
        if unknown or not self.flaw_kinds:
            raise ValueError(f"condition '{self.name}': flaw_kinds must be a non-empty subset of {FLAW_KINDS}, "
                             f"got {self.flaw_kinds}")
        if self.unseen_category is not None and self.unseen_category not in CATEGORIES:
            raise ValueError(f"condition '{self.name}': unseen_category must be one of {CATEGORIES}, "
                             f"got '{self.unseen_category}'")

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower())


EXACT = Condition("exact targets")
FLAWED = Condition("40% flawed targets", flawed_fraction=0.4)
UNSEEN = Condition("unseen rule: semantic inference", unseen_category="semantic inference")


def training_targets(samples: list[Sample], condition: Condition) -> dict[str, tuple[torch.Tensor, str]]:
    """Sample id -> (target frames [T, H, W, 3], kind), kind "correct" or a flaw kind (the unseen rule's
    targets count as "unchanged").

    Deterministic per condition: exactly round(fraction · eligible) targets are flawed, where the eligible
    samples are those outside the unseen rule; the choice and the flaw kinds come from the condition's name.
    """
    rng = random.Random(f"flaws/{condition.name}")
    eligible = [s.id for s in samples if s.category != condition.unseen_category]
    flawed = set(rng.sample(eligible, round(condition.flawed_fraction * len(eligible))))
    targets = {}
    for sample in samples:
        if sample.category == condition.unseen_category:
            targets[sample.id] = (render(sample.scene), "unchanged")
        elif sample.id in flawed:
            kind = rng.choice(condition.flaw_kinds)
            targets[sample.id] = (negative_edit(sample, kind, rng), kind)
        else:
            targets[sample.id] = (render(sample.scene, category=sample.category), "correct")
    return targets


def flaw_counts(targets: dict[str, tuple[torch.Tensor, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, kind in targets.values():
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
