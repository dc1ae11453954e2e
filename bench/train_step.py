"""Time and peak memory of one training sample: SFT, USO with the critic triggered, and the amortised step.

    python -m bench.train_step          # GPU: random-init Wan2.1-1.3B + Qwen2.5-VL-7B config, bf16, real sizes
                                        # CPU: the tiny model set (timings only show overhead)

Each case runs the trainer's own `sample_loss` + backward. "naive" is the plain composition (no
gradient checkpointing, every latent frame decoded for the critic); "ours" turns on DiT, VLM and VAE-decoder
gradient checkpointing and decodes a prefix of `--latent-frames` latent frames for the critic. The
amortised step is (1 − r)·SFT + r·USO at the trigger rate r of σ_max = 0.5 with shift 3 (25 %).
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import PeakMemory, device_name, timed, write_results

GPU_CASES = ((33, 352, 640), (81, 480, 832))
CPU_CASES = ((9, 64, 64),)
TRIGGER_RATE = 0.25


def build(device: torch.device):
    """Generator, VAE and critic at bench size, all random-init."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from bench.critic_speed import build_vlm
    from revise_core.connector import Connector, ConnectorConfig
    from revise_core.critic import CriticConfig, SelfCritic
    from revise_core.testing import tiny_connector, tiny_dit, tiny_vae
    from revise_core.variants import get_variant
    from trainer.model import Generator, configure_trainable

    vlm, _ = build_vlm(device)
    if device.type == "cuda":
        def config(name):
            return {k: v for k, v in get_variant(name).load_config().items() if not k.startswith("_")}

        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                dit = WanTransformer3DModel.from_config(config("wan2.1-t2v-1.3b"))
                vae = AutoencoderKLWan.from_config(config("wan2.1-vae"))
                connector_config = ConnectorConfig.from_dict(get_variant("omnivideo2-1.3b").load_config())
                connector_config.vlm_dim = vlm.hidden_size
                connector = Connector(connector_config)
        finally:
            torch.set_default_dtype(previous)
    else:
        dit, vae, connector = tiny_dit(), tiny_vae(), tiny_connector()
    generator = Generator(dit, connector).to(device)
    configure_trainable(generator, mode="full")
    vae.requires_grad_(False)
    critic = SelfCritic(vlm, CriticConfig(num_frames=4))
    return generator, vae.eval(), critic


def features(generator, vae, frames: int, height: int, width: int, device: torch.device):
    from trainer.data import Features

    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    g = torch.Generator("cpu").manual_seed(0)
    width_u = generator.connector.config.vlm_dim
    # Typical lengths of an instruction's umT5 tokens and of u at real size; short ones for the tiny set.
    text_len, u_len = (120, 300) if device.type == "cuda" else (16, 32)
    return Features(source_frames=torch.rand(frames, height, width, 3, generator=g).half(),
                    source_latents=torch.randn(latent, generator=g), target_latents=torch.randn(latent, generator=g),
                    text_tokens=torch.randn(text_len, generator.connector.config.context_dim, generator=g),
                    vlm_states=torch.randn(u_len, width_u, generator=g))


def measure(generator, vae, critic, feats, device, *, objective: str, checkpointing: bool, latent_frames: int,
            repeats: int) -> dict:
    from trainer.config import USOConfig
    from trainer.step import sample_loss

    config = USOConfig(objective=objective, sigma_max=0.5, decode_latent_frames=latent_frames, num_frames=5,
                       height=64, width=64, checkpointing_vae=checkpointing)
    dit = generator.dit
    (dit.enable_gradient_checkpointing if checkpointing else dit.disable_gradient_checkpointing)()
    critic.vlm.set_gradient_checkpointing(checkpointing)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    sigma = torch.tensor([0.3])  # inside σ_max: the critic runs for USO
    noise = torch.randn(feats.target_latents.shape, generator=torch.Generator("cpu").manual_seed(1))

    def step():
        result = sample_loss(generator, vae, critic, feats, "make the square red", sigma=sigma, noise=noise,
                             drop=False, config=config, device=device, autocast_dtype=dtype)
        result.loss.backward()
        generator.zero_grad(set_to_none=True)
        return result

    step()  # warm-up, and Δ_base gets cached as in training
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            _, seconds = timed(step, device)
            times.append(seconds)
    return {"s": min(times), "peak_mib": memory.peak_bytes / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latent-frames", type=int, default=2, help="latent frames decoded for the critic (ours)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU tiny run")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    generator, vae, critic = build(device)
    records, rows = [], []
    for frames, height, width in (GPU_CASES if device.type == "cuda" else CPU_CASES):
        feats = features(generator, vae, frames, height, width, device)
        latent_total = (frames - 1) // 4 + 1
        for variant, checkpointing, latent_frames in (("naive", False, latent_total), ("ours", True, args.latent_frames)):
            record = {"case": f"{frames}f {height}x{width}", "variant": variant}
            for objective in ("sft", "uso"):
                try:
                    record[objective] = measure(generator, vae, critic, feats, device, objective=objective,
                                                checkpointing=checkpointing, latent_frames=latent_frames,
                                                repeats=args.repeats)
                except torch.OutOfMemoryError:
                    record[objective] = {"s": float("nan"), "peak_mib": float("nan"), "oom": True}
                    torch.cuda.empty_cache()
            record["amortised_s"] = (1 - TRIGGER_RATE) * record["sft"]["s"] + TRIGGER_RATE * record["uso"]["s"]
            records.append(record)
            rows.append([record["case"], variant, f"{record['sft']['s']:.3f}", f"{record['sft']['peak_mib']:.0f}",
                         f"{record['uso']['s']:.3f}", f"{record['uso']['peak_mib']:.0f}", f"{record['amortised_s']:.3f}"])
            print(rows[-1], flush=True)
    size = ("random-init Wan2.1-1.3B + Qwen2.5-VL-7B config, bf16" if device.type == "cuda"
            else "tiny models, fp32")
    name = "train_step_gpu" if device.type == "cuda" else "train_step_cpu"
    payload = {"device": device_name(device), "models": size, "trigger_rate": TRIGGER_RATE,
               "command": "python -m bench.train_step" + (" --cpu" if args.cpu else ""), "cases": records}
    notes = (f"Models: {size}. One sample (micro-batch 1) forward + backward. naive: no checkpointing, all latent "
             f"frames decoded; ours: DiT + VLM + VAE-decoder gradient checkpointing, {args.latent_frames} latent frames decoded. "
             "Reference (H100, naive): SFT 0.316 s / 49 GiB, USO with critic 1.39 s / 74 GiB at 33f 352x640; "
             "81f 480x832 SFT ran out of memory. Goals: USO step with critic <= 0.7 s and <= 40 GiB at 33f 352x640.")
    path = write_results(name, payload, ["case", "variant", "SFT s", "SFT MiB", "USO s", "USO MiB", "amortised s"],
                         rows, notes)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
