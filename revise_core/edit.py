"""Command line: edit a video with ReViSE.

    python -m revise_core.edit --models DIR --video IN.mp4 --instruction "..." --out OUT.mp4
    python -m revise_core.edit --demo            # tiny random models + a synthetic video, on CPU

DIR holds a models.json naming the five components (see docs/models.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

from . import jsonio
from .checkpoints import DTYPE_CHOICES, auto_dtype
from .cli import add_debug_flag, writable_output
from .cli import run as run_cli

logger = logging.getLogger(__name__)

DEMO_INSTRUCTION = "what will the ice cube look like after an hour in the sun ?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revise_core.edit", description=__doc__.split("\n")[0])
    # --- inputs ---
    parser.add_argument("--models", type=Path, help="folder with models.json describing the model set")
    parser.add_argument("--video", type=Path, help="source video file (any container FFmpeg reads)")
    parser.add_argument("--instruction", help="the edit instruction (may need reasoning)")
    parser.add_argument("--out", type=Path, help="output .mp4 (default with --demo: a temporary folder)")
    parser.add_argument("--demo", action="store_true",
                        help="write tiny random models and a synthetic video to a temporary folder and edit it "
                             "on CPU; random weights produce noise: this checks the pipeline, not quality")
    # --- sampling ---
    parser.add_argument("--steps", type=int, default=40, help="denoising steps (default 40)")
    parser.add_argument("--guidance", type=float, default=3.0, help="guidance scale; 1 disables it (default 3)")
    parser.add_argument("--shift", type=float, default=5.0, help="flow shift of the sigma schedule (default 5)")
    parser.add_argument("--scheduler", choices=("unipc", "euler"), default="unipc", help="sampler (default unipc)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    # --- clip shape ---
    parser.add_argument("--frames", type=int, default=None,
                        help="frames to edit, 4k+1 (default: the source's count made 4k+1)")
    parser.add_argument("--height", type=int, default=None, help="output height, multiple of 32 (default: source)")
    parser.add_argument("--width", type=int, default=None, help="output width, multiple of 32 (default: source)")
    parser.add_argument("--resize", choices=("crop", "pad", "stretch"), default="crop",
                        help="how the source is fitted to the size: centre crop (default), letterbox pad, stretch")
    parser.add_argument("--frame-policy", choices=("trim", "pad"), default="trim",
                        help="make the frame count 4k+1 by trimming (default) or by repeating the last frame")
    # --- reasoning and runtime ---
    parser.add_argument("--reasoning", choices=("none", "caption"), default="none",
                        help="'caption': the VLM writes source and target captions first (Omni-Video 2)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="compute dtype; auto = bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--tiled-decode", action="store_true", help="decode with spatial tiles (less memory)")
    parser.add_argument("--best-of", type=int, default=1,
                        help="sample N seeds and keep the edit the model's own VLM critic scores highest (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result summary as JSON")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .editor import EditModels, EditSettings, ReviseEditor
    from .sampler import SamplerConfig
    from .video import conform, read_video, synthetic_clip, write_video

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = auto_dtype(args.dtype, device)
    workdir = None
    if args.demo:
        from .testing import write_tiny_models

        workdir = Path(tempfile.mkdtemp(prefix="revise-demo-"))
        write_tiny_models(workdir / "models")
        models_dir, clip = workdir / "models", synthetic_clip(num_frames=9, height=64, width=64)
        instruction = args.instruction or DEMO_INSTRUCTION
        out = args.out or workdir / "edited.mp4"
        steps = min(args.steps, 4)
        write_video(workdir / "source.mp4", clip.frames, clip.fps)
    else:
        missing = [name for name in ("models", "video", "instruction", "out") if getattr(args, name) is None]
        if missing:
            build_parser().error("missing " + ", ".join(f"--{m}" for m in missing) + " (or use --demo)")
        if not args.instruction.strip():
            raise ValueError("--instruction is empty: give the edit instruction")
        # Decode only what the edit uses: at most --frames frames, each fitted to --height x --width on the fly.
        size = (args.height, args.width) if args.height and args.width else None
        clip = read_video(args.video, max_frames=args.frames, size=size, resize=args.resize)
        models_dir, instruction, out, steps = args.models, args.instruction, args.out, args.steps

    # Everything the user gave is checked before any model is loaded (which takes minutes at real size).
    if args.best_of < 1:
        raise ValueError(f"--best-of must be >= 1, got {args.best_of}")
    writable_output(out, what="--out")
    settings = EditSettings(
        sampler=SamplerConfig(steps=steps, guidance_scale=args.guidance, shift=args.shift, scheduler=args.scheduler,
                              seed=args.seed),
        num_frames=args.frames, height=args.height, width=args.width, resize=args.resize,
        frame_policy=args.frame_policy, reasoning=args.reasoning, fps=float(clip.fps), tiled_decode=args.tiled_decode,
    )
    # Fitting the clip here reports a bad frame count or size before loading; the editor's own fit is then a no-op.
    source = conform(clip.frames, num_frames=settings.num_frames, frame_policy=settings.frame_policy,
                     height=settings.height, width=settings.width, resize=settings.resize)
    editor = ReviseEditor(EditModels.load(models_dir, dtype=dtype, device=device))
    from tqdm import tqdm

    with tqdm(total=steps * args.best_of, desc="sampling", unit="step") as bar:
        result = editor.edit(source, instruction, settings, callback=lambda info: bar.update(1),
                             best_of=args.best_of)
    write_video(out, result.frames, clip.fps)
    summary = {
        "output": str(out), "frames": list(result.frames.shape), "instruction": instruction,
        "reasoning": result.reasoning, "seed": result.seed,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()}, "device": device, "dtype": dtype,
    }
    if result.scores:
        summary["best_of"] = result.scores
    if args.demo:
        summary["note"] = "tiny random weights: the output is noise by design; see docs/models.md for real models"
    print(jsonio.dumps(summary, indent=2) if args.json else
          f"wrote {out} ({result.frames.shape[0]} frames, {result.timings['total']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
