"""Command line of the SelfCritic: `python -m revise_core.critic`.

    python -m revise_core.critic --models DIR --source A.mp4 --edited B.mp4 --instruction TEXT [--cot] [--json]
    python -m revise_core.critic --demo --json            # tiny random Qwen2.5-VL
    python -m revise_core.critic --demo revise --json     # tiny random VILA in the ReViSE release's format
    python -m revise_core.critic --demo qwen3 --json      # tiny random Qwen3-VL in a Hugging Face folder
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import jsonio
from ..chat_text import check_instruction
from ..checkpoints import DTYPE_CHOICES, auto_dtype, default_device
from ..cli import add_debug_flag
from . import CriticConfig, CriticError, SelfCritic

DEMOS = ("qwen2", "revise", "qwen3")


def _demo_vlm(kind: str, dtype: str, device: str):
    """The tiny VLM of a demo, written to disk in its release's folder format and loaded back like a user's."""
    import tempfile

    from ..testing import tiny_vila, tiny_vlm
    from ..testing.omnivideo2 import tiny_qwen3_vl, write_qwen3_vl_folder
    from ..vlm import load_vlm, vila

    with tempfile.TemporaryDirectory() as folder:
        if kind == "qwen2":
            tiny = tiny_vlm()
            tiny.model.save_pretrained(folder)
            tiny.tokenizer.save_pretrained(folder)
            (Path(folder) / "preprocessor_config.json").write_text(json.dumps(tiny.preprocess.to_processor_config()))
        elif kind == "qwen3":
            write_qwen3_vl_folder(tiny_qwen3_vl(), folder)
        else:
            vila.save(tiny_vila(), folder)
        return load_vlm(folder, dtype=dtype, device=device)


def main(argv: list[str] | None = None) -> int:
    """python -m revise_core.critic --models DIR --source A --edited B --instruction TEXT [--cot] [--json]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m revise_core.critic",
                                     description="Judge an edit with the model's own VLM: P(Yes), Δ, relative Δ.")
    parser.add_argument("--models", type=Path, help="a model set: a folder with models.json (only its 'vlm' entry is used) or a release folder")
    parser.add_argument("--source", type=Path, help="source video file")
    parser.add_argument("--edited", type=Path, help="edited video file (same frame count and size as the source)")
    parser.add_argument("--instruction", help="the edit instruction")
    parser.add_argument("--cot", action="store_true", help="let the VLM write a concise reasoning before the verdict")
    parser.add_argument("--frames", type=int, default=4, help="frames sampled uniformly from each video (default 4)")
    parser.add_argument("--no-per-dimension", action="store_true", help="skip the four per-dimension questions")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="VLM dtype; auto = bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_debug_flag(parser)
    parser.add_argument("--demo", nargs="?", const="qwen2", choices=DEMOS,
                        help="tiny random VLM + synthetic videos (random weights: the numbers mean nothing): 'qwen2' "
                             "(the default) a Qwen2.5-VL, 'revise' a VILA written and loaded in the ReViSE release's "
                             "folder format, 'qwen3' a Qwen3-VL folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..model_sets import vlm_folder
    from ..video import conform, read_video, synthetic_clip
    from ..vlm import load_vlm

    device = default_device(args.device)
    dtype = auto_dtype(args.dtype, device)
    if args.demo:
        vlm = _demo_vlm(args.demo, dtype, device)
        source = synthetic_clip(9, 64, 64, seed=0).frames
        edited = synthetic_clip(9, 64, 64, seed=1).frames
        instruction = args.instruction or "make the square red"
    else:
        missing = [n for n in ("models", "source", "edited", "instruction") if getattr(args, n) is None]
        if missing:
            parser.error("missing " + ", ".join(f"--{m}" for m in missing) + " (or use --demo)")
        # The inputs are checked before the VLM is loaded.
        check_instruction(args.instruction, what="--instruction")
        source = read_video(args.source).frames
        edited = read_video(args.edited).frames
        if edited.shape[1:] != source.shape[1:]:
            raise CriticError(
                f"{args.edited}: frames are {tuple(edited.shape[1:3])} (HxW) but the source {args.source} has "
                f"{tuple(source.shape[1:3])}"
            )
        count = min(source.shape[0], edited.shape[0])
        source, edited = conform(source[:count], min_frames=1), conform(edited[:count], min_frames=1)
        instruction = args.instruction
        vlm = load_vlm(vlm_folder(args.models), dtype=dtype, device=device)
    critic = SelfCritic(vlm, CriticConfig(num_frames=args.frames, cot=args.cot))
    report = critic.report(source, edited, instruction, per_dimension=not args.no_per_dimension)
    if args.json:
        print(jsonio.dumps(report.to_dict(), indent=2))
    else:
        print(f"P(Yes) = {report.p_yes:.4f}   Δ = {report.delta:+.4f}   Δ − Δ_base = {report.relative_delta:+.4f}")
        for name, values in report.per_dimension.items():
            print(f"  {name:<26} P(Yes) = {values['p_yes']:.4f}")
        if report.reasoning:
            print(f"reasoning: {report.reasoning}")
    return 0


if __name__ == "__main__":
    import sys

    from ..cli import run

    sys.exit(run(main))
