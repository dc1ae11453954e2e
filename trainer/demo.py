"""Synthetic triplets and a tiny model set for `python -m trainer.uso --demo`.

Each triplet is a moving square (source) and the same clip with the square recoloured (target), with an
instruction that names the new colour indirectly; random tiny weights make this a plumbing check, not a
quality claim.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from revise_core.testing import write_tiny_models
from revise_core.video import synthetic_clip, write_video

RECOLOURS = (
    ((0.9, 0.1, 0.1), "what colour will the square be once it turns as hot as a stove ?"),
    ((0.1, 0.2, 0.9), "a deep frost settles on the square"),
    ((0.1, 0.8, 0.2), "the square becomes the colour of fresh grass"),
)


def write_demo_data(folder: str | Path, count: int = 4, num_frames: int = 5, size: int = 64) -> Path:
    """Write `count` (source, target) mp4 pairs and a manifest; returns the manifest path."""
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        clip = synthetic_clip(num_frames=num_frames, height=size, width=size, seed=index)
        colour, instruction = RECOLOURS[index % len(RECOLOURS)]
        target = clip.frames.clone()
        square = (clip.frames - clip.frames[:, :1, :1]).abs().sum(-1) > 0.3  # pixels that differ from the corner
        target[square] = torch.tensor(colour)
        write_video(folder / "videos" / f"{index:03d}_src.mp4", clip.frames, clip.fps)
        write_video(folder / "videos" / f"{index:03d}_tgt.mp4", target, clip.fps)
        lines.append({"id": f"demo-{index:03d}", "source": f"videos/{index:03d}_src.mp4",
                      "target": f"videos/{index:03d}_tgt.mp4", "instruction": instruction, "subset": "RAVE",
                      "category": "physical causality"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


DEMOS = ("tiny", "revise")  # tiny: the models.json set (Qwen2.5-VL); revise: the kit's ReViSE release folder


def prepare(out_dir: str | Path, kind: str = "tiny") -> dict:
    """Tiny models + synthetic data under out_dir (reused when already there); returns config overrides.

    `kind` "revise" trains the test kit's ReViSE release folder (VILA, VisionHead + DM_Adapter)."""
    if kind not in DEMOS:
        raise ValueError(f"demo must be one of {DEMOS}, got '{kind}'")
    out = Path(out_dir)
    if not (out / "models" / "models.json").is_file():
        write_tiny_models(out / "models")
    manifest = out / "data" / "manifest.jsonl"
    if not manifest.is_file():
        write_demo_data(out / "data")
    models = out / "models" / "revise_ckpt" if kind == "revise" else out / "models"
    return {"models": str(models), "manifest": str(manifest), "output_dir": str(out / ("run" if kind == "tiny" else f"run-{kind}")),
            "num_frames": 5, "height": 64, "width": 64, "global_batch": 2, "checkpoint_every": 2,
            "lr": 1e-4, "critic_frames": 2, "vlm_frames": 4, "max_text_len": 32, "tensorboard": False,
            "sigma_max": 0.5}
