"""Command line: edit a video with ReViSE.

    python -m revise_core.edit --models DIR --video IN.mp4 --instruction "..." --out OUT.mp4
    python -m revise_core.edit --demo            # tiny random models + a synthetic video, on CPU
    python -m revise_core.edit --demo revise     # the tiny ReViSE release folder, --preset revise-official
    python -m revise_core.edit --demo qwen3      # the tiny set with a Qwen3-VL as its VLM

DIR holds a models.json naming the five components, or is a ReViSE release folder (revise_ckpt/) as
downloaded (see docs/models.md). `--preset revise-official` reproduces the release's own settings;
flags given next to a preset override it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from . import jsonio, presets
from . import video as video_ops
from .attention import BACKENDS
from .chat_text import check_instruction
from .checkpoints import DTYPE_CHOICES, auto_dtype, default_device
from .cli import add_debug_flag, add_placement_flags, placement_config
from .cli import run as run_cli
from .dit import check_compile_beside, check_compiler, compile_repeated_blocks
from .edit_inputs import StreamedSource, read_edit_source
from .editor import REASONING_MODES, ReviseEditor, fit_source
from .lora import LoraChoice, fuse_loras, load_loras
from .model_sets import EditModels
from .output_paths import refuse_overwriting_inputs, writable_output
from .placement import Placement
from .presets import PRESETS
from .sampler import GUIDANCE_MODES, SCHEDULERS, SIGMA_SCHEDULES
from .step_cache import CACHES, StepCache, parse_mag_ratios
from .streamed_edit import edit_streamed
from .video import FRAME_POLICIES, RESIZE_POLICIES
from .windows import AUTO, WINDOW_SCHEDULES, TemporalWindows

logger = logging.getLogger(__name__)

DEMO_INSTRUCTION = "what will the ice cube look like after an hour in the sun ?"
# Without a preset: the settings these flags take when not given.
DEFAULTS = dict(steps=40, guidance_scale=3.0, guidance_mode="standard", sigma_schedule="diffusers", shift=5.0,
                scheduler="unipc", seed=0,
                resize="crop", frame_policy="trim", reasoning="none")
# flag -> EditSettings / SamplerConfig field
FLAG_FIELDS = dict(steps="steps", guidance="guidance_scale", guidance_mode="guidance_mode",
                   sigma_schedule="sigma_schedule", shift="shift",
                   scheduler="scheduler", seed="seed", frames="num_frames", height="height", width="width",
                   resize="resize", frame_policy="frame_policy", reasoning="reasoning",
                   caption_tokens="caption_tokens", attention="attention")


def _window_length(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of latent frames or 'auto', got '{value}'") from None


def _lora_choice(value: str) -> LoraChoice:
    try:
        return LoraChoice.parse(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _mag_ratios(value: str) -> tuple[float, ...] | None:
    try:
        return parse_mag_ratios(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revise_core.edit", description=__doc__.split("\n")[0])
    # --- inputs ---
    parser.add_argument("--models", type=Path,
                        help="folder with models.json describing the model set, or a ReViSE release folder")
    parser.add_argument("--vlm", type=Path, default=None,
                        help="the VLM folder of an Omni-Video 2 release folder given as --models, when it is not "
                             "inside it (its Qwen3-VL-30B-A3B-Instruct)")
    parser.add_argument("--video", type=Path, help="source video file (any container FFmpeg reads)")
    parser.add_argument("--instruction", help="the edit instruction (may need reasoning)")
    parser.add_argument("--out", type=Path, help="output .mp4 (default with --demo: a temporary folder)")
    parser.add_argument("--demo", nargs="?", const="tiny", choices=("tiny", "revise", "qwen3"),
                        help="write tiny random models and a synthetic video to a temporary folder and edit it "
                             "on CPU; random weights produce noise: this checks the pipeline, not quality. "
                             "'--demo revise': the kit's tiny ReViSE release folder with --preset revise-official; "
                             "'--demo qwen3': the tiny set with a Qwen3-VL (dense) as its VLM")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="named settings reproducing a release (revise-official: the ReViSE release's "
                             "inference.sh; omnivideo2-official: the Omni-Video 2 1.3B release's v2v script, with a "
                             "Qwen3-VL-30B-A3B and its connector); explicit flags override it")
    # --- sampling (defaults: DEFAULTS below, or the preset's) ---
    parser.add_argument("--steps", type=int, help="denoising steps (default 40)")
    parser.add_argument("--guidance", type=float, help="guidance scale; 1 disables it (default 3)")
    parser.add_argument("--guidance-mode", choices=GUIDANCE_MODES,
                        help="standard: uncond + g(cond - uncond) (default); official (the ReViSE release): cond + g(cond - uncond)")
    parser.add_argument("--shift", type=float, help="flow shift of the sigma schedule (default 5)")
    parser.add_argument("--sigma-schedule", choices=SIGMA_SCHEDULES,
                        help="diffusers: the scheduler's own flow sigmas (default); official: linspace(0.999, 0) "
                             "shifted, as the ReViSE / Wan2.1 releases")
    parser.add_argument("--scheduler", choices=SCHEDULERS, help="sampler (default unipc)")
    parser.add_argument("--few-step", action="store_true",
                        help="sampling for a step-distilled LoRA (--lora): " + ", ".join(
                            f"{k} {v}" for k, v in presets.FEW_STEP.items()) + "; flags given beside it win")
    parser.add_argument("--lora", type=_lora_choice, action="append", default=[], metavar="PATH[:STRENGTH]",
                        help="a Wan2.1 LoRA (.safetensors: ComfyUI, kohya/musubi or diffusers keys, step-distill "
                             "diff/diff_b) fused into the DiT at this strength (default 1); repeat to stack")
    parser.add_argument("--seed", type=int, help="noise seed (default 0)")
    parser.add_argument("--attention", choices=BACKENDS,
                        help="the DiT's attention backend: native (torch SDPA, default) | auto (the fastest installed "
                             "that agrees with native, named in the log) | flash | sage | xformers (their packages, "
                             "CUDA) | flex | math; the VLM and umT5 keep their own")
    # --- clip shape ---
    parser.add_argument("--frames", type=int, default=None,
                        help="frames to edit, 4k+1 (default: the source's count made 4k+1)")
    parser.add_argument("--height", type=int, default=None, help="output height, multiple of 32 (default: source)")
    parser.add_argument("--width", type=int, default=None, help="output width, multiple of 32 (default: source)")
    parser.add_argument("--resize", choices=RESIZE_POLICIES,
                        help="how the source is fitted to the size: centre crop (default), letterbox pad, stretch, "
                             "official (centre crop to the aspect, then bilinear, as the ReViSE release)")
    parser.add_argument("--frame-policy", choices=FRAME_POLICIES,
                        help="make the frame count 4k+1 by trimming (default) or by repeating the last frame")
    # --- long clips ---
    parser.add_argument("--window", type=_window_length, nargs="?", const="auto", default=None,
                        help="denoise in overlapping temporal windows of this many latent frames (a latent frame is "
                             "4 video frames with Wan's VAE), or 'auto' (the flag alone): the most the model's "
                             "context holds beside the instruction; each window sees its own slice of the source, the "
                             "instruction and VLM rows are shared, and the video is read, encoded, decoded and "
                             "written a few frames at a time (default: one pass over the clip)")
    parser.add_argument("--window-overlap", type=int, default=1,
                        help="latent frames neighbouring windows share; blended linearly (default 1)")
    parser.add_argument("--window-schedule", choices=WINDOW_SCHEDULES, default="static",
                        help="static: the same windows at every step")
    parser.add_argument("--window-vlm", action="store_true",
                        help="with --window: a VLM pass per window over its own frames (each window's VLM rows see "
                             "what happens in it; one VLM pass per window, the clip read once more) instead of one "
                             "pass shared by every window")
    parser.add_argument("--allow-context-cut", action="store_true",
                        help="edit even when the source video's tokens leave no room for the whole instruction and "
                             "VLM rows (the connector then cuts them as its release does); refused otherwise")
    # --- reasoning and runtime ---
    parser.add_argument("--caption-tokens", type=int, default=None,
                        help="bound on each caption the VLM writes with --reasoning caption (default 128; the "
                             "omnivideo2-official preset: 512)")
    parser.add_argument("--reasoning", choices=REASONING_MODES,
                        help="'caption': the VLM writes source and target captions first (Omni-Video 2)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="compute dtype; auto = bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--tiled-decode", action="store_true", help="decode with spatial tiles (less memory)")
    parser.add_argument("--cache", choices=CACHES, default="none",
                        help="a step cache (diffusers' hooks; approximate): first-block (reuse the later blocks while "
                             "the first block's output barely changes), taylorseer (predict attention between full "
                             "steps), magcache (needs --mag-ratios, measured with --cache-calibrate); the log reports "
                             "the DiT calls skipped (default none)")
    parser.add_argument("--cache-threshold", type=float, default=None,
                        help="first-block: relative change below which the blocks are reused (default 0.05; 0.1-0.3 "
                             "skips more); magcache: accumulated error allowed (default 0.06)")
    parser.add_argument("--cache-interval", type=int, default=5, help="taylorseer: a full step every N (default 5)")
    parser.add_argument("--mag-ratios", type=_mag_ratios, default=None,
                        help="magcache: the model's magnitude ratios, comma-separated (steps values)")
    parser.add_argument("--cache-calibrate", action="store_true",
                        help="magcache: measure the ratios on this edit (nothing skipped) and print them")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the DiT's repeated blocks (regional compile): faster steps after a first "
                             "step that compiles (minutes at real size); outputs agree with eager within rounding")
    parser.add_argument("--best-of", type=int, default=1,
                        help="sample N seeds and keep the edit the model's own VLM critic scores highest (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result summary as JSON")
    add_placement_flags(parser)
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    device = default_device(args.device)
    dtype = auto_dtype(args.dtype, device)
    given = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) is not None}
    if args.demo == "revise" and not args.preset:
        args.preset = "revise-official"
    if args.few_step:  # under the flags given beside it
        given = {**presets.FEW_STEP, **given}
    if args.demo:  # tiny models on the CPU: few steps, a small frame, short captions
        given["steps"] = min(given.get("steps", 4), 4)
        given.setdefault("caption_tokens", 8)
        if args.preset:
            given.setdefault("height", 64)
            given.setdefault("width", 96)
    preset = presets.get_preset(args.preset) if args.preset else presets.NO_PRESET
    base = {} if args.preset else DEFAULTS
    window = None
    if args.window is not None:
        window = TemporalWindows(AUTO if args.window == "auto" else args.window, args.window_overlap,
                                 args.window_schedule)
    if args.cache != "none" or args.cache_calibrate:
        given["cache"] = StepCache("magcache" if args.cache_calibrate else args.cache, threshold=args.cache_threshold,
                                   interval=args.cache_interval, mag_ratios=args.mag_ratios,
                                   calibrate=args.cache_calibrate)
    settings = presets.edit_settings(preset, **{**base, **given}, tiled_decode=args.tiled_decode, window=window,
                                     allow_context_cut=args.allow_context_cut, window_vlm=args.window_vlm)
    workdir = None
    if args.demo:
        from .testing import write_tiny_models
        from .testing.omnivideo2 import write_qwen3_model_set

        workdir = Path(tempfile.mkdtemp(prefix="revise-demo-"))
        write_tiny_models(workdir / "models")
        models_dir = workdir / {"revise": "models/revise_ckpt", "qwen3": "models/qwen3"}.get(args.demo, "models")
        if args.demo == "qwen3":
            write_qwen3_model_set(workdir / "models")
        clip = video_ops.synthetic_clip(num_frames=(settings.num_frames or 9) + settings.skip_frames, height=64, width=64)
        instruction = args.instruction or DEMO_INSTRUCTION
        out = args.out or workdir / "edited.mp4"
        video_path = video_ops.write_video(workdir / "source.mp4", clip.frames, clip.fps)
    else:
        missing = [name for name in ("models", "video", "instruction", "out") if getattr(args, name) is None]
        if missing:
            build_parser().error("missing " + ", ".join(f"--{m}" for m in missing) + " (or use --demo)")
        check_instruction(args.instruction, what="--instruction")
        models_dir, instruction, out, video_path = args.models, args.instruction, args.out, args.video

    # Everything the user gave is checked before any model is loaded (which takes minutes at real size).
    placement_config(args)
    if args.best_of < 1:
        raise ValueError(f"--best-of must be >= 1, got {args.best_of}")
    streamed = window is not None
    if streamed and args.best_of > 1:
        raise ValueError("--best-of scores whole edits held in memory; a windowed edit (--window) streams its "
                         "frames: use one or the other")
    if streamed and args.tiled_decode:
        raise ValueError("--tiled-decode decodes the whole clip at once; a windowed edit (--window) decodes one "
                         "latent frame at a time already")
    if args.compile:
        check_compiler(device)
        check_compile_beside(device, cache="magcache" if args.cache_calibrate else args.cache,
                             dit_storage=args.dit_storage, dit_placement=args.placement)
    missing_loras = [str(choice.path) for choice in args.lora if not choice.path.is_file()]
    if missing_loras:
        raise FileNotFoundError(f"--lora: no such file: {', '.join(missing_loras)}")
    refuse_overwriting_inputs(out, [None if args.demo else args.video, models_dir, args.vlm,
                                    *(choice.path for choice in args.lora)])
    writable_output(out, what="--out")
    if streamed:  # counts the frames and plans the clip: a video that cannot fit fails here
        source = StreamedSource.open(video_path, settings, preset)
        source_fps = source.fps
    else:
        source = read_edit_source(video_path, settings, preset)
        source_fps = source.clip.fps
        # Fitting the clip here reports a bad frame count or size before loading (the editor fits it the same way).
        fit_source(source.clip.frames, settings)
    settings.fps = float(source_fps)
    output_fps = preset.output_fps or source_fps
    # Loaded on the host; the placement plan then decides what goes to the device, and when.
    placement = Placement(placement_config(args), device)
    models = EditModels.load(models_dir, dtype=dtype, device="cpu", vlm=args.vlm)
    lora_report = fuse_loras(models.dit, load_loras(args.lora, models.dit)) if args.lora else None
    editor = ReviseEditor.placed(models, placement)  # after the LoRAs: fp8 storage and offload see fused weights
    if args.compile:
        check_compile_beside(device, dit_placement=placement.modes.get("dit"))  # what "auto" chose
        compile_repeated_blocks(editor.models.dit)
    if streamed:
        result, frames = _edit_streamed(editor, source, instruction, settings, out, output_fps,
                                        preset.output_quantization)
        scores = []
    else:
        with tqdm(total=settings.sampler.steps * args.best_of, desc="sampling", unit="step") as bar:
            result = editor.edit(source.clip.frames, instruction, settings, callback=lambda info: bar.update(1),
                                 best_of=args.best_of, vlm_source=source.vlm_source)
        video_ops.write_video(out, result.frames, output_fps, quantization=preset.output_quantization)
        frames, scores = list(result.frames.shape), result.scores
    summary = {
        "output": str(out), "frames": frames, "instruction": instruction,
        "reasoning": result.reasoning, "seed": result.seed,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()}, "device": device, "dtype": dtype,
    }
    summary["placement"] = placement.summary()
    if lora_report is not None:
        summary["loras"] = lora_report.summary()
    if scores:
        summary["best_of"] = scores
    if args.demo:
        summary["note"] = "tiny random weights: the output is noise by design; see docs/models.md for real models"
    print(jsonio.dumps(summary, indent=2) if args.json else
          f"wrote {out} ({frames[0]} frames, {result.timings['total']:.2f} s)")
    return 0


def _edit_streamed(editor: ReviseEditor, source: StreamedSource, instruction: str, settings, out: Path, fps,
                   quantization: str):
    """The windowed edit: read, encode, decode and write a chunk at a time; bars of frames read, windows x steps
    sampled and frames written."""
    steps = settings.sampler.steps
    bars = {"encode": tqdm(total=source.num_frames, desc="encoding", unit="frame"),
            "sample": tqdm(total=steps, desc="sampling", unit="window"),
            "decode": tqdm(total=source.num_frames, desc="decoding", unit="frame")}
    if settings.window_vlm:  # one VLM pass per window, before sampling; the count is known with the windows
        bars["vlm"] = tqdm(desc="VLM per window", unit="window")

    def progress(stage: str, count: int) -> None:
        if stage == "windows":  # known once the context is built (an automatic window comes from its budget)
            bars["sample"].total = steps * count
            bars["sample"].refresh()
        else:
            bars[stage].update(count)

    try:
        with video_ops.VideoWriter(out, fps, quantization=quantization) as writer:
            result = edit_streamed(editor, source, instruction, settings, writer.write, progress=progress,
                                   on_window=lambda step, window: bars["sample"].update(1))
    finally:
        for bar in bars.values():
            bar.close()
    height, width = source.size
    return result, [result.frames_written, height, width, 3]


if __name__ == "__main__":
    sys.exit(run_cli(main))
