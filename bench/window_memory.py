"""Device peak of a windowed ReViSE edit at the release's size, per clip length, on fake tensors (no GPU needed).

    python -m bench.window_memory [--frames 101 301 1001] [--window 5] [--overlap 1]

For each clip length, one sampling step of `sampler.sample`'s windowed loop at the release's setting (Wan2.1-1.3B
in bf16, 352x640, official guidance: two DiT passes per window) runs on fake tensors (bench/placement_sim.py:
fake 'cpu' plays the accelerator, fake 'meta' the host; nothing is allocated). As the sampler does, the latent
video and its velocity stay on the host; each window's latents move to the device and its contexts are built there
(by the connector, when the window is denoised) for its two passes, and its blended velocity goes back. Reported:
the device peak (weights + one window) and the host bytes of the latent video and its velocity, which grow with
the clip's latents only. Results:
bench/results/window_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from bench.common import write_results

GIB = 2**30
SIZE = (352, 640)  # the release's edit size
CONTEXT_ROWS = 2560  # the release connector's max_context_len (revise_core/connector/revise.py)
GUIDANCE = 3.0


def measure(frames: int, window: int, overlap: int) -> dict:
    """Device and host peaks (bytes) of one windowed sampling step over a clip of `frames` pixel frames."""
    from diffusers import WanTransformer3DModel

    from bench import project_composition as project
    from bench.fake_measure import default_dtype
    from bench.placement_sim import DEVICE, HOST, DeviceMemory
    from bench.whole_edit import fake_context
    from revise_core.video import latent_frames
    from revise_core.windows import TemporalWindows

    bf16 = torch.bfloat16
    height, width = SIZE
    latent_count = latent_frames(frames)
    spans = TemporalWindows(window, overlap).spans(latent_count)
    with fake_context(), torch.no_grad():
        with default_dtype(bf16):
            dit = WanTransformer3DModel.from_config(project._config("wan2.1-t2v-1.3b")).eval().requires_grad_(False)
        memory = DeviceMemory()
        with memory:
            memory.track(dit)
            text_dim = dit.config.text_dim
            latents = torch.randn(1, 16, latent_count, height // 8, width // 8, device=HOST)
            memory.reset_peak()
            timestep = torch.tensor([500.0], device=DEVICE)
            velocity = torch.zeros_like(latents)
            for start, end in spans:
                part = latents[:, :, start:end].to(device=DEVICE, dtype=bf16)
                # the window's contexts, built by the connector when the window is denoised (WindowContext.build)
                cond, uncond = (torch.empty(1, CONTEXT_ROWS, text_dim, dtype=bf16, device=DEVICE) for _ in range(2))
                conditional = dit(hidden_states=part, timestep=timestep, encoder_hidden_states=cond,
                                  return_dict=False)[0].float()
                unconditional = dit(hidden_states=part, timestep=timestep, encoder_hidden_states=uncond,
                                    return_dict=False)[0].float()
                guided = conditional + GUIDANCE * (conditional - unconditional)  # sampler: official guidance
                blend = torch.empty(1, 1, end - start, 1, 1, device=HOST)  # windows.blend_weights' row (values
                # do not change memory)
                velocity[:, :, start:end] += guided.to(HOST) * blend
                del part, cond, uncond, conditional, unconditional, guided
            latents = latents - 0.025 * velocity  # the scheduler's update, on the host
    return {"frames": frames, "latent_frames": latent_count, "windows": len(spans),
            "device_peak_bytes": memory.peak[DEVICE], "host_peak_bytes": memory.peak[HOST],
            "weights_bytes": sum(p.numel() * p.element_size() for p in dit.parameters())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.window_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[101, 301, 1001], help="clip lengths, 4k+1")
    parser.add_argument("--window", type=int, default=5, help="window length in latent frames (default 5)")
    parser.add_argument("--overlap", type=int, default=1, help="window overlap in latent frames (default 1)")
    args = parser.parse_args(argv)
    payload = {"device": f"fake tensors on CPU ({platform.processor() or platform.machine()})",
               "command": "python -m bench.window_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
               "setting": {"size": list(SIZE), "window": args.window, "overlap": args.overlap, "dit": "wan2.1-t2v-1.3b bf16",
                           "context_rows": CONTEXT_ROWS}, "results": []}
    rows = []
    for frames in args.frames:
        started = time.perf_counter()
        result = measure(frames, args.window, args.overlap)
        result["fake_run_s"] = round(time.perf_counter() - started, 1)
        payload["results"].append(result)
        rows.append([frames, result["latent_frames"], result["windows"], f"{result['device_peak_bytes'] / GIB:.3f}",
                     f"{(result['device_peak_bytes'] - result['weights_bytes']) / GIB:.3f}",
                     f"{result['host_peak_bytes'] / GIB:.3f}"])
    notes = (f"One sampling step of a windowed edit at {SIZE[0]}x{SIZE[1]}, windows of {args.window} latent frames "
             f"overlapping by {args.overlap}, official guidance (2 DiT passes per window), on fake tensors. Device: the "
             "DiT's weights plus one window's latents, its two contexts (2 x 2560 rows of 4096 bf16, built when the "
             "window is denoised) and activations; host: the latent video and its velocity. The other stages stream "
             "as well: "
             "the VAE encodes 4 frames and decodes one latent frame at a time (their causal caches have a fixed size).")
    path = write_results("window_memory", payload,
                         ["frames", "latent frames", "windows", "device peak (GiB)", "device above weights (GiB)",
                          "host: latent video + velocity (GiB)"], rows, notes)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
