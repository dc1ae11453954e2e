"""Toy-RVE's frozen parts, prepared once per run: a VAE trained on the toy videos, and the critic VLM.

The random tiny VAE of the test kit cannot reconstruct anything, so the critic would judge noise; here it is
trained for reconstruction first and its per-channel latent statistics are measured (the normalisation the
DiT works in). The VLM is taught (plain next-token cross-entropy on the answer) to say "Yes" to correct edits
and "No" to unchanged, partial, wrong-rule and noisy ones; it plays the VLM "that understands more than the
generator": it sees every phrasing and background, but never the evaluation samples themselves.
"""

from __future__ import annotations

import logging
import random

import torch
import torch.nn.functional as F

from revise_core import vae as vae_ops
from revise_core import vlm as vlm_ops
from revise_core.critic import ALL_QUESTION, SelfCritic

from .task import CATEGORIES, FRAMES, PHRASINGS, SIZE, Sample, make_samples, render

logger = logging.getLogger(__name__)


def train_vae(vae: torch.nn.Module, samples: list[Sample], *, steps: int, seed: int, lr: float = 2e-3) -> dict:
    """Reconstruction training on sources and targets; sets the latent statistics in the VAE's config."""
    clips = torch.stack([render(s.scene, category=c) for s in samples for c in (None, s.category)])
    pixels = clips.permute(0, 4, 1, 2, 3) * 2 - 1  # [N, 3, T, H, W] in -1..1
    generator = torch.Generator().manual_seed(seed)
    vae.train().requires_grad_(True)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = pixels[torch.randint(0, pixels.shape[0], (4,), generator=generator)]
        latents = vae.encode(batch).latent_dist.mode()
        loss = F.mse_loss(vae_ops.decode(vae, latents, clamp=False), batch) + 1e-4 * latents.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(pixels[i:i + 16]).latent_dist.mode() for i in range(0, len(pixels), 16)])
        reconstruction = torch.cat([vae_ops.decode(vae, latents[i:i + 16]) for i in range(0, len(latents), 16)])
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    error = (reconstruction - pixels).abs().mean().item() / 2  # in 0..1 pixel units
    logger.info("VAE trained: loss %.4f, reconstruction MAE %.4f", loss.item(), error)
    return {"final_loss": loss.item(), "reconstruction_mae": error}


def _candidates(sample: Sample, rng: random.Random) -> list[tuple[torch.Tensor, str]]:
    """(edited frames, correct answer) pairs for one sample."""
    source, target = render(sample.scene), render(sample.scene, category=sample.category)
    wrong = rng.choice([c for c in CATEGORIES if c != sample.category])
    alpha = rng.uniform(0.1, 0.45)
    noise = torch.randn(FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(rng.randrange(10**6))) * 0.2
    return [(target, "Yes"), (target + noise * 0.1, "Yes"), (source, "No"),
            (render(sample.scene, category=wrong), "No"), (source * (1 - alpha) + target * alpha, "No"),
            ((target + noise).clamp(0, 1), "No")]


def train_critic(vlm, *, steps: int, seed: int, lr: float = 2e-3, frames: int = 4) -> dict:
    """Teach the VLM the verdicts; its weights change here and are frozen afterwards."""
    rng = random.Random(seed)
    pool = make_samples(64, "train", seed + 100) + make_samples(64, "eval", seed + 100)  # not the eval samples
    critic = SelfCritic(vlm)
    vlm.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(vlm.model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        sample = rng.choice(pool)
        # any phrasing of the category: the critic stands for a VLM that understands all of them
        instruction = rng.choice(PHRASINGS[sample.category][0] + PHRASINGS[sample.category][1])
        candidates = _candidates(sample, rng)
        wanted = "Yes" if step % 2 == 0 else "No"  # balanced: otherwise "always No" is a good-enough answer
        edited, answer = rng.choice([c for c in candidates if c[1] == wanted])
        messages = critic._messages(instruction, ALL_QUESTION)
        videos = [vlm_ops.to_vlm_frames(v.clamp(0, 1), frames) for v in (render(sample.scene), edited)]
        inputs = vlm_ops.build_inputs(vlm, messages, videos, assistant_prefix=answer)
        vlm_ops._reset_rope_cache(vlm)
        logits = vlm.model(**inputs.kwargs).logits[0, -2]  # the position that predicts the answer
        loss = F.cross_entropy(logits[None].float(), inputs.kwargs["input_ids"][0, -1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    vlm.model.eval().requires_grad_(False)
    tail = losses[-50:]
    logger.info("critic trained: mean loss of the last %d steps %.4f", len(tail), sum(tail) / len(tail))
    return {"final_loss": sum(tail) / len(tail)}


def critic_correlation(vlm, samples: list[Sample], oracle_ea) -> dict:
    """Spearman ρ of P(Yes), and of the hard verdict, with the oracle's EA on held-out edits."""
    critic = SelfCritic(vlm)
    p_yes, hard, truth = [], [], []
    rng = random.Random(7)
    for sample in samples:
        source, target = render(sample.scene), render(sample.scene, category=sample.category)
        wrong = render(sample.scene, category=rng.choice([c for c in CATEGORIES if c != sample.category]))
        for edited in [source * (1 - a) + target * a for a in (0.0, 0.25, 0.5, 0.75, 1.0)] + [wrong]:
            with torch.no_grad():
                probability = float(critic.verdict(source, edited, sample.instruction).p_yes)
            p_yes.append(probability)
            hard.append(1.0 if probability > 0.5 else 0.0)
            truth.append(oracle_ea(sample, edited))
    return {"spearman_p_yes": spearman(p_yes, truth), "spearman_hard": spearman(hard, truth), "pairs": len(truth)}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation with average ranks for ties (hand-written: scipy is not a dependency)."""
    ra, rb = _ranks(torch.tensor(a, dtype=torch.float64)), _ranks(torch.tensor(b, dtype=torch.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum().item() / denominator) if denominator > 0 else 0.0


def _ranks(values: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    for value in torch.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
