"""Peak memory of reading a long video for a short edit: whole clip in float vs decoding only what is used.

    python -m bench.video_memory [--frames 300] [--height 720] [--width 1280]

Writes a synthetic H.264 clip, then measures each read in a fresh process (growth of that process's RSS
during the read, sampled every 2 ms; the imports are not counted): the old path (decode every frame to float, then fit 5 frames of 64x64) and the current
one (`read_video(max_frames=5, size=(64, 64))`). Results: bench/results/video_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    rows, payload = [], {"device": f"CPU ({platform.processor() or platform.machine()})", "command": "python -m bench.video_memory "
                         + " ".join(argv or sys.argv[1:]), "clip": vars(args), "results": {}}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", args.frames, args.height, args.width)
        for mode in ("whole", "needed"):
            out = subprocess.run([sys.executable, "-c", PROBE, str(clip), mode], capture_output=True, text=True,
                                 check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            payload["results"][mode] = result
            rows.append([mode, f"{result['peak_mib']:.0f}", result["shape"]])
    notes = (f"Clip: {args.frames} frames {args.width}x{args.height} H.264; edit: 5 frames 64x64. 'whole' decodes every "
             "frame to float and then fits 5 (what the edit CLI and the trainer did before); 'needed' decodes 5 frames "
             "and fits each as it is decoded.")
    path = write_results("video_memory", payload, ["read", "peak RSS growth (MiB)", "frames"], rows, notes)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
