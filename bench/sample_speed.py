"""Per-step time and peak memory of our sampler against diffusers.WanPipeline on the same weights.

    python -m bench.sample_speed            # GPU: random-init Wan2.1-1.3B in bf16 at real sizes
                                            # CPU: the tiny model set (timings only show overhead)

Both run the same UniPC schedule with classifier-free guidance (two DiT passes per step) on the same
context; each case is warmed up once, then timed over `--steps` steps.
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import PeakMemory, device_name, timed, write_results

GPU_CASES = ((33, 352, 640), (81, 480, 832))
CPU_CASES = ((9, 64, 64), (17, 64, 96))


def build(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    if device.type == "cuda":
        from revise_core.variants import get_variant

        with torch.device(device):
            dit = WanTransformer3DModel.from_config(
                {k: v for k, v in get_variant("wan2.1-t2v-1.3b").load_config().items() if not k.startswith("_")})
            vae = AutoencoderKLWan()
        return dit.to(dtype).eval(), vae.eval(), 512, 4096
    from revise_core.testing import TEXT_DIM, tiny_dit, tiny_vae

    return tiny_dit().eval(), tiny_vae().eval(), 64, TEXT_DIM


def run_case(dit, vae, context_len, text_dim, frames, height, width, steps, device, dtype):
    from diffusers import WanPipeline

    from revise_core.sampler import SamplerConfig, make_scheduler, sample

    generator = torch.Generator("cpu").manual_seed(0)
    cond = torch.randn(1, context_len, text_dim, generator=generator).to(device, dtype)
    uncond = torch.randn(1, context_len, text_dim, generator=generator).to(device, dtype)
    shape = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    config = SamplerConfig(steps=steps, guidance_scale=3.0, shift=5.0, scheduler="unipc", seed=0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=dit, scheduler=make_scheduler("unipc", 5.0))
    pipe.set_progress_bar_config(disable=True)

    def ours():
        return sample(dit, cond, uncond, latent_shape=shape, config=config)

    def theirs():
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=height, width=width, num_frames=frames,
                    num_inference_steps=steps, guidance_scale=3.0, generator=torch.Generator("cpu").manual_seed(0),
                    output_type="latent").frames

    results = {}
    with torch.no_grad():
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            fn()  # warm-up (kernels, allocator)
            with PeakMemory(device) as memory:
                out, seconds = timed(fn, device)
            results[name] = {"s_per_step": seconds / steps, "peak_mib": memory.peak_bytes / 2**20}
            results[name]["latents"] = out.float().cpu()
    difference = (results["ours"].pop("latents") - results["diffusers"].pop("latents")).abs().max().item()
    return {"frames": frames, "height": height, "width": width, "steps": steps, "tokens": shape[2] * shape[3] * shape[4] // 4,
            "max_abs_diff": difference, **{f"{k}_{m}": v[m] for k, v in results.items() for m in v}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sample_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 10 GPU, 4 CPU)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU tiny run even when a GPU is present")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    steps = args.steps or (10 if device.type == "cuda" else 4)
    dit, vae, context_len, text_dim = build(device, dtype)
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    rows, records = [], []
    for frames, height, width in cases:
        record = run_case(dit, vae, context_len, text_dim, frames, height, width, steps, device, dtype)
        records.append(record)
        rows.append([f"{frames}f {height}x{width}", record["tokens"], f"{record['ours_s_per_step']:.4f}",
                     f"{record['diffusers_s_per_step']:.4f}", f"{record['ours_peak_mib']:.0f}",
                     f"{record['diffusers_peak_mib']:.0f}", f"{record['max_abs_diff']:.1e}"])
        print(rows[-1], flush=True)
    size = "real-size random-init Wan2.1-1.3B, bf16" if device.type == "cuda" else "tiny models, fp32"
    name = "sample_speed_gpu" if device.type == "cuda" else "sample_speed_cpu"
    payload = {"device": device_name(device), "models": size, "command": "python -m bench.sample_speed"
               + (" --cpu" if args.cpu else ""), "guidance_scale": 3.0, "scheduler": "unipc", "cases": records}
    notes = (f"Models: {size}. Same weights, same context ({context_len} tokens), same noise; guidance on "
             "(two DiT passes per step). Peak memory: CUDA allocator peak on GPU; on CPU the growth of the "
             "process RSS during the timed run (sampled every 2 ms). Reference measured on an H100 for a naive "
             "diffusers step with guidance: 0.18 s (33f 352x640), 1.24 s (81f 480x832).")
    path = write_results(name, payload, ["case", "video tokens", "ours s/step", "diffusers s/step", "ours peak MiB",
                                         "diffusers peak MiB", "max abs diff"], rows, notes)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
