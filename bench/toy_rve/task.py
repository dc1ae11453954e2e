"""Scenes, reasoning rules and instructions of Toy-RVE.

A scene is a small video (5 frames of 32x32): a background graded both vertically and horizontally, and one
square object of a given colour moving horizontally. An instruction never states the operation; the target follows from a
rule of one of four reasoning categories:
- physical causality ("ice cube in the sun"): the object melts into a wide, flat puddle on its bottom line;
- semantic inference ("a deep frost settles"): the object takes an icy cyan tint (60 % frost), background untouched;
- temporal ("two seconds later"): the object is where its motion takes it three frames later;
- spatial ("the floor gives way under it"): the object drops to the bottom of the frame.
Evaluation uses held-out scene combinations (a background never used in fine-tuning); the experiment words them
with the training phrasings (`ToyConfig.eval_phrasings`; the held-out phrasings are an option).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

FRAMES, SIZE, SIDE = 5, 32, 8
BACKGROUNDS = (((0.15, 0.2, 0.35), (0.35, 0.45, 0.6)), ((0.3, 0.25, 0.15), (0.6, 0.5, 0.35)),
               ((0.15, 0.3, 0.2), (0.35, 0.6, 0.4)))
# No white object, and a strong frost: every colour changes by 0.19 or more (mean over RGB) under the frost
# rule. With a white object and a pale frost, that rule changed a white object by 0.04: EA, which measures
# each pixel's share of the change it needed, turned any decoding error there into a missed edit.
COLOURS = {"red": (0.9, 0.15, 0.1), "yellow": (0.95, 0.85, 0.15), "blue": (0.15, 0.3, 0.9), "green": (0.2, 0.8, 0.3)}
FROST, FROST_SHARE = torch.tensor((0.45, 0.85, 1.0)), 0.6
TRAIN_BACKGROUNDS, EVAL_BACKGROUNDS = (0, 1), (2,)
HORIZONTAL_TILT = torch.tensor((0.3, -0.15, 0.0))  # the background's colour change from left edge to right edge

PHRASINGS = {
    "physical causality": (["what will the ice cube look like after an hour in the sun ?",
                            "the block is left next to a hot stove for a long time",
                            "imagine the midday heat working on the cube"],
                           ["how does the cube end up once the sun has done its work ?",
                            "leave it out on a scorching summer afternoon"]),
    "semantic inference": (["a deep frost settles", "the night turns bitterly cold around the block",
                            "winter arrives overnight"],
                           ["an icy chill covers everything that sits in the scene",
                            "show it after a freezing polar night"]),
    "temporal": (["two seconds later", "show the moment a little while afterwards", "skip ahead in time"],
                 ["what happens a short time from now ?", "fast forward a bit"]),
    "spatial": (["the floor gives way under it", "the support beneath the block disappears",
                 "it is no longer held up"],
                ["what if nothing kept it in the air ?", "let gravity take over"]),
}
CATEGORIES = tuple(PHRASINGS)
PHRASING_SETS = ("training", "held-out")
# The pre-training task's instructions: the generator learns to reproduce a video before it learns any rule.
KEEP_PHRASINGS = ("keep the video as it is", "leave everything as it is", "change nothing")


@dataclass(frozen=True)
class Scene:
    background: int
    colour: str
    x: int  # left edge in frame 0
    y: int  # top edge
    velocity: int  # pixels per frame (horizontal)


@dataclass(frozen=True)
class Sample:
    id: str
    scene: Scene
    category: str
    instruction: str
    split: str  # train | eval


def render(scene: Scene, *, category: str | None = None) -> torch.Tensor:
    """Frames [T, H, W, 3] in 0..1 of the scene, or of its target under `category`'s rule."""
    background = background_of(scene)
    frames = []
    for t in range(FRAMES):
        frame = background.clone()
        x, y, width, height, fill = object_at(scene, t, category)
        _paint(frame, x, y, width, height, fill)
        frames.append(frame)
    return torch.stack(frames)


def background_of(scene: Scene) -> torch.Tensor:
    """The scene's background [H, W, 3]: a vertical gradient between its two colours, tilted horizontally.

    Both directions vary so that every 4x4 patch of a row differs: the source video reaches the DiT as context
    tokens without positions (the release's VisualContextAdapter has none, and Wan's RoPE is relative), so the
    background's own look tells where a source patch belongs (models.PlacedConnector adds a computed one)."""
    top, bottom = (torch.tensor(c) for c in BACKGROUNDS[scene.background])
    ramp = torch.linspace(0, 1, SIZE)
    vertical = top * (1 - ramp.view(SIZE, 1, 1)) + bottom * ramp.view(SIZE, 1, 1)
    return (vertical + HORIZONTAL_TILT * (ramp.view(1, SIZE, 1) - 0.5)).expand(SIZE, SIZE, 3).clamp(0, 1)


def object_at(scene: Scene, t: int, category: str | None = None) -> tuple[int, int, int, int, torch.Tensor]:
    """(x, y, width, height, colour) of the object in frame `t` of the scene, or of its target under `category`'s
    rule: the one statement of the four rules (render paints it; the ideal critic measures against it)."""
    colour = torch.tensor(COLOURS[scene.colour])
    x, y, width, height, fill = scene.x + scene.velocity * t, scene.y, SIDE, SIDE, colour
    if category == "physical causality":  # melted: wide and flat on the same bottom line
        width, height = SIDE * 2, 3
        x, y = x - SIDE // 2, scene.y + SIDE - height
    elif category == "semantic inference":
        fill = colour * (1 - FROST_SHARE) + FROST * FROST_SHARE
    elif category == "temporal":
        x = scene.x + scene.velocity * (t + 3)
    elif category == "spatial":
        y = SIZE - height
    return x, y, width, height, fill


def _paint(frame: torch.Tensor, x: int, y: int, width: int, height: int, colour: torch.Tensor) -> None:
    x0, x1 = max(0, x), min(SIZE, x + width)
    y0, y1 = max(0, y), min(SIZE, y + height)
    if x0 < x1 and y0 < y1:
        frame[y0:y1, x0:x1] = colour


def make_samples(count: int, split: str, seed: int, *, phrasings: str | None = None) -> list[Sample]:
    """Samples of a split: train uses training backgrounds, eval the held-out one; the instructions come from
    the split's own phrasings (train: training, eval: held-out) unless `phrasings` names one of PHRASING_SETS."""
    if phrasings is not None and phrasings not in PHRASING_SETS:
        raise ValueError(f"phrasings must be one of {PHRASING_SETS}, got '{phrasings}'")
    rng = random.Random(f"{split}-{seed}")
    wording = random.Random(f"{split}-{seed}-wording")  # apart, so that the scenes never depend on the phrasings
    backgrounds = TRAIN_BACKGROUNDS if split == "train" else EVAL_BACKGROUNDS
    held_out = phrasings == "held-out" if phrasings is not None else split != "train"
    samples = []
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        phrasings_of_rule = PHRASINGS[category][1 if held_out else 0]
        velocity = rng.choice((-2, 2))
        x = rng.randint(10, 14) if velocity < 0 else rng.randint(4, 8)
        scene = Scene(rng.choice(backgrounds), rng.choice(sorted(COLOURS)), x, rng.randint(4, 14), velocity)
        samples.append(Sample(f"{split}-{index:04d}", scene, category, wording.choice(phrasings_of_rule), split))
    return samples


def all_phrasings() -> list[str]:
    """Every instruction text of the toy (the tokenizers' vocabulary): the rules' phrasings, then pre-training's."""
    return [p for train, held_out in PHRASINGS.values() for p in train + held_out] + list(KEEP_PHRASINGS)


def negative_edit(sample: Sample, kind: str, rng: random.Random) -> torch.Tensor:
    """An incorrect edit of `sample`: the source unchanged, the target blended in partly, or another rule."""
    source, target = render(sample.scene), render(sample.scene, category=sample.category)
    if kind == "unchanged":
        return source
    if kind == "partial":
        alpha = rng.uniform(0.1, 0.45)
        return source * (1 - alpha) + target * alpha
    if kind == "wrong rule":
        return render(sample.scene, category=rng.choice([c for c in CATEGORIES if c != sample.category]))
    raise ValueError(f"unknown negative kind '{kind}'")
