"""Host memory of long videos: reading a clip for a short edit, and editing whole clips of 101 to 1001 frames.

    python -m bench.video_memory [--frames 300] [--edit-frames 101 301 1001] [--height 720] [--width 1280]

Writes synthetic H.264 clips at 1280x720 and measures each case in a fresh process (growth of that process's RSS
during the case, sampled every 2 ms; imports and model loading are not counted):
- reads: the old path (decode every frame to float, then fit 5 frames of 64x64) and the current one
  (`read_video(max_frames=5, size=(64, 64))`);
- edits of every frame on the tiny models (64x96, 2 steps, windows of 5 latent frames overlapping by 1): the
  streamed path of the edit CLI with --window (revise_core/streamed_edit.py) and, at the shorter lengths, the
  in-memory path (read the clip, `ReviseEditor.edit`, write) for contrast: RSS growth (after a warm-up edit of
  a 25-frame clip in the same process) and seconds per frame.
Results: bench/results/video_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import write_results

PROBE = """
import json, sys, torch
from bench.common import PeakMemory
from revise_core import video
path, mode = sys.argv[1], sys.argv[2]
with PeakMemory(torch.device("cpu")) as peak:
    if mode == "whole":
        frames = video.conform(video.read_video(path).frames, num_frames=5, height=64, width=64)
    else:
        frames = video.conform(video.read_video(path, max_frames=5, size=(64, 64)).frames, num_frames=5,
                               height=64, width=64)
print(json.dumps({"peak_mib": peak.peak_bytes / 2**20, "shape": list(frames.shape)}))
"""


EDIT_PROBE = """
import json, sys, time, torch
from bench.common import PeakMemory
from revise_core import video
from revise_core.edit_inputs import StreamedSource, read_edit_source
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.sampler import SamplerConfig
from revise_core.streamed_edit import edit_streamed
from revise_core.windows import TemporalWindows
models, clip, out, mode, warmup = sys.argv[1:6]
editor = ReviseEditor(EditModels.load(models))
settings = EditSettings(sampler=SamplerConfig(steps=2, guidance_scale=3.0), height=64, width=96, vlm_frames=4,
                        window=TemporalWindows(5, 1))
torch.set_num_threads(1)

def edit(path):
    if mode == "streamed":
        source = StreamedSource.open(path, settings)
        settings.fps = float(source.fps)
        with video.VideoWriter(out, source.fps) as writer:
            return edit_streamed(editor, source, "make it snow", settings, writer.write).frames_written
    source = read_edit_source(path, settings)
    settings.fps = float(source.clip.fps)
    result = editor.edit(source.clip.frames, "make it snow", settings)
    video.write_video(out, result.frames, source.clip.fps)
    return result.frames.shape[0]

edit(warmup)  # one-time allocations (kernels, caches, codec) are not the clip's
with PeakMemory(torch.device("cpu")) as peak:
    start = time.perf_counter()
    frames = edit(clip)
    seconds = time.perf_counter() - start
print(json.dumps({"peak_mib": peak.peak_bytes / 2**20, "frames": frames, "seconds": seconds}))
"""
# glibc keeps freed large blocks (its mmap threshold rises after each free), so RSS would measure the allocator's
# history; a fixed threshold makes it hand them back, and RSS follows the memory in use
GLIBC_RETURNS_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
IN_MEMORY_LIMIT = 301  # the in-memory contrast runs up to this length (its growth is already plain there)


def write_clip(path: Path, frames: int, height: int, width: int) -> Path:
    import av
    import numpy as np

    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for t in range(frames):
            image = np.stack([(cols + 4 * t) % 256, (rows + 2 * t) % 256, np.full_like(rows, 128)], -1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.video_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames of the clip the reads measure")
    parser.add_argument("--edit-frames", type=int, nargs="*", default=[101, 301, 1001],
                        help="lengths of the clips edited whole (4k+1; none: skip the edits)")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    rows, payload = [], {"device": f"CPU ({platform.processor() or platform.machine()})", "command": "python -m bench.video_memory "
                         + " ".join(argv if argv is not None else sys.argv[1:]), "clip": vars(args), "results": {},
                         "edits": []}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", args.frames, args.height, args.width)
        for mode in ("whole", "needed"):
            out = subprocess.run([sys.executable, "-c", PROBE, str(clip), mode], capture_output=True, text=True,
                                 check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            payload["results"][mode] = result
            rows.append([f"read {args.frames} frames: {mode}", f"{result['peak_mib']:.0f}", result["shape"][0], ""])
        if args.edit_frames:
            from revise_core.testing import write_tiny_models

            models = Path(folder) / "models"
            write_tiny_models(models)
            warmup = write_clip(Path(folder) / "warm-up.mp4", 25, args.height, args.width)
        for frames in args.edit_frames:
            clip = write_clip(Path(folder) / f"clip-{frames}.mp4", frames, args.height, args.width)
            for mode in ("streamed", "in memory"):
                if mode == "in memory" and frames > IN_MEMORY_LIMIT:
                    continue
                out = subprocess.run([sys.executable, "-c", EDIT_PROBE, str(models), str(clip),
                                      str(Path(folder) / "edited.mp4"), mode.split()[0], str(warmup)],
                                     capture_output=True, text=True, check=True, env=os.environ | GLIBC_RETURNS_MEMORY)
                result = json.loads(out.stdout.strip().splitlines()[-1]) | {"mode": mode, "source_frames": frames}
                payload["edits"].append(result)
                rows.append([f"edit {frames} frames: {mode}", f"{result['peak_mib']:.0f}", result["frames"],
                             f"{result['seconds'] / result['frames']:.3f}"])
    notes = (f"Reads: clip of {args.frames} frames {args.width}x{args.height} H.264; edit: 5 frames 64x64. 'whole' "
             "decodes every frame to float and then fits 5 (what the edit CLI and the trainer did before); 'needed' "
             "decodes 5 frames and fits each as it is decoded.\n\nEdits: every frame of a "
             f"{args.width}x{args.height} clip on the tiny models at 64x96 (2 steps, guidance 3, windows of 5 latent "
             "frames overlapping by 1, one thread). 'streamed': the edit CLI's path with --window (frames read, "
             "encoded, decoded and written a chunk at a time); 'in memory': the clip read whole (fitted while "
             "decoded), edited with ReviseEditor.edit, then written. RSS growth above the process after loading the "
             "models and editing a 25-frame clip of the same size once (one-time allocations are not the clip's), with "
             "glibc's mmap and trim thresholds fixed at 128 KiB so that freed memory is returned and RSS follows the "
             "memory in use.")
    path = write_results("video_memory", payload, ["case", "peak RSS growth (MiB)", "frames", "seconds per frame"],
                         rows, notes)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
