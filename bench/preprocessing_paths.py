"""How far the differentiable pixel path is from the exact one (video.PREPROCESSING), and what that does to an edit.

    python -m bench.preprocessing_paths [--video FILE]

Data frames take the releases' own arithmetic ("exact": PIL on 8-bit frames); only frames that carry a gradient
(the critic's view of a one-step estimate in training) take torch's ("differentiable"). This measures, on the
frames of FILE (default: a synthetic 720p clip with edges and texture):
- the VAE's input: the ReViSE release's centre crop and bilinear resize to 352x640;
- SigLIP's pixels: VILA's bicubic resize of a native frame to 384x384, then the processor;
in 8-bit levels: the largest difference, the mean, and the share of values more than half a level apart;
- the end-to-end effect: the tiny parity edit of tests/test_release_parity.py with every data frame sent
  down the differentiable path instead (what earlier versions did), against the official reference.
Results: bench/results/preprocessing_paths.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.common import device_name, write_results

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "parity" / "revise_official.safetensors"


def synthetic_frames(count: int = 4, height: int = 720, width: int = 1280) -> torch.Tensor:
    """8-bit frames with smooth gradients, hard edges and fine texture (what resizing filters disagree on)."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    frames = []
    for t in range(count):
        red = (rows * 255 // height + t * 7) % 256
        green = ((np.sin(cols / 9.0 + t) + 1) * 100 + (rows // 40 % 2) * 50).astype(np.int64)
        blue = ((rows * 7919 + cols * 104729 + t) % 97) + ((cols // 64 + rows // 64) % 2) * 120
        frames.append(np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(frames)).float() / 255


def levels(a: torch.Tensor, b: torch.Tensor, scale: float) -> dict:
    """Differences in 8-bit levels (`scale`: one level in the tensors' units)."""
    diff = (a.double() - b.double()).abs() / scale
    return {"max_levels": round(diff.max().item(), 3), "mean_levels": round(diff.mean().item(), 4),
            "share_over_half_level": round((diff > 0.5).double().mean().item(), 4)}


def vae_frames(frames: torch.Tensor) -> dict:
    from revise_core import video

    exact = video.resize_frames(frames, 352, 640, "official")
    differentiable = video.resize_frames(frames, 352, 640, "official", preprocessing="differentiable")
    return levels(differentiable, exact, 1 / 255)


def siglip_pixels(frames: torch.Tensor) -> dict:
    from revise_core.vlm import vila

    config = vila.SiglipPreprocess()  # 384 x 384, bicubic, mean = std = 0.5, aspect "resize"
    images = frames.permute(0, 3, 1, 2)
    exact = vila.preprocess_images(images, config)
    differentiable = vila.preprocess_images(images, config, preprocessing="differentiable")
    return levels(differentiable, exact, 2 / 255)  # normalised to [-1, 1]: a level is 2 / 255


def end_to_end() -> dict:
    """The parity edit, exact (the default) and with every frame forced down the differentiable path."""
    import tempfile

    from safetensors.torch import load_file

    from revise_core import presets, video
    from revise_core.editor import ReviseEditor
    from revise_core.model_sets import EditModels
    from revise_core.testing import parity
    from revise_core.vlm import vila

    ref = load_file(str(REFERENCE))
    official = (ref["decoded"].permute(1, 2, 3, 0) + 1) / 2
    scale = official.abs().max().item()
    with tempfile.TemporaryDirectory() as tmp:
        editor = ReviseEditor(EditModels.load(parity.write_parity_release(Path(tmp) / "revise_ckpt")))
        frames = parity.parity_source_frames().float() / 255
        settings = presets.edit_settings("revise-official", height=parity.CLIP_SIZE[0], width=parity.CLIP_SIZE[1],
                                         steps=parity.STEPS)
        out = {}
        for name in ("exact", "differentiable"):
            with mock.patch.object(video, "preprocessing_for", lambda *f, name=name: name), \
                    mock.patch.object(vila, "preprocessing_for", lambda *f, name=name: name):
                edited = editor.edit(frames, parity.INSTRUCTION, settings, noise=ref["noise"]).frames
            out[name] = (edited - official).abs().max().item() / scale
    return {"decoded_frames_relative_error": {k: float(f"{v:.3g}") for k, v in out.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocessing_paths", description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, default=None, help="a video file to measure on (default: synthetic)")
    parser.add_argument("--frames", type=int, default=4, help="frames of it to use (default 4)")
    args = parser.parse_args(argv)
    from revise_core import video

    if args.video:
        frames, source = video.read_video(args.video, max_frames=args.frames).frames, args.video.name
    else:
        frames, source = synthetic_frames(args.frames), "synthetic 720x1280"
    rows = {"VAE input (crop + bilinear to 352x640)": vae_frames(frames),
            "SigLIP pixels (bicubic to 384x384)": siglip_pixels(frames)}
    effect = end_to_end()
    command = "python -m bench.preprocessing_paths" + (f" --video {args.video.name}" if args.video else "")
    payload = {"device": device_name(torch.device("cpu")), "command": command, "frames": source,
               "shape": list(frames.shape), "differentiable_vs_exact": rows, **effect}
    table = [[name, r["max_levels"], r["mean_levels"], r["share_over_half_level"]] for name, r in rows.items()]
    errors = effect["decoded_frames_relative_error"]
    notes = (f"Frames: {source}, {frames.shape[0]} of {frames.shape[1]}x{frames.shape[2]}. Differences of the "
             "differentiable path from the exact one (PIL on 8-bit frames, the releases' arithmetic), in 8-bit "
             "levels.\n\nEnd to end, the tiny parity edit (tests/test_release_parity.py) against the official "
             f"reference: decoded frames {errors['exact']:.2g} of their scale with exact preprocessing (the "
             f"default), {errors['differentiable']:.2g} with every data frame sent down the differentiable path.")
    path = write_results("preprocessing_paths", payload, ["path", "max (levels)", "mean (levels)",
                                                          "share > 0.5 level"], table, notes)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
