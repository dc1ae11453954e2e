"""The training objectives of section 4: flow matching, the reason loss, USO and RWR; timestep sampling.

Kept free of models: each function takes tensors, so the trainer, the tests and the Toy-RVE experiment
share one definition of every formula.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = ("uso", "sft", "rwr")


def sample_sigmas(count: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training noise levels: u ~ U(0, 1], then shifted, σ = k·u / (1 + (k − 1)·u).

    With k = 3 a fraction s / (3 − 2s) of the samples lands at σ <= s: 25 % at σ_max = 0.5 (Table 6).
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    u = 1.0 - torch.rand(count, generator=generator, dtype=torch.float64)  # (0, 1]
    return (shift * u / (1.0 + (shift - 1.0) * u)).float()


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """z_t = (1 − σ)·x0 + σ·ε (σ broadcast over all but the batch dimension)."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1.0 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model learns: ε − x0."""
    return noise - x0


def one_step_estimate(z_t: torch.Tensor, sigma: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """x̂0 = z_t − σ·v (eq. 3): a clean estimate without a denoising rollout."""
    s = sigma.view(-1, *([1] * (z_t.ndim - 1))).to(velocity)
    return z_t.to(velocity) - s * velocity


def flow_matching_loss(velocity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error [B] (eq. 2), computed in fp32."""
    return (velocity.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def reason_loss(relative_delta: torch.Tensor) -> torch.Tensor:
    """L_reason = −log σ(Δ − Δ_base) (eq. 4 with the relative logit difference), via logsigmoid."""
    return -F.logsigmoid(relative_delta)


def combine(objective: str, fm_per_sample: torch.Tensor, *, reason: torch.Tensor | None = None,
            p_yes: torch.Tensor | None = None, weight: float = 0.25) -> torch.Tensor:
    """The scalar loss of one objective.

    - sft: mean L_FM.
    - uso: mean L_FM + λ·L_reason over the samples whose reason loss was computed (eq. 5).
    - rwr: mean of P(Yes)·L_FM, P(Yes) without gradient (reward-weighted regression).
    `reason` / `p_yes` hold one entry per sample; samples the critic did not see carry NaN and fall
    back to plain flow matching.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got '{objective}'")
    if objective == "sft":
        return fm_per_sample.mean()
    if objective == "uso":
        if reason is None:
            return fm_per_sample.mean()
        seen = ~torch.isnan(reason)
        extra = torch.where(seen, reason, torch.zeros_like(reason))
        return (fm_per_sample + weight * extra).mean()
    if p_yes is None:
        return fm_per_sample.mean()
    weights = torch.where(torch.isnan(p_yes), torch.ones_like(p_yes), p_yes).detach()
    return (weights * fm_per_sample).mean()
