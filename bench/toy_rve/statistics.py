"""Toy-RVE's statistics over seeds: mean and std, the paired comparison with SFT, and the bootstrap of the
learned critic's share of the ideal critic's gain."""

from __future__ import annotations

import math
import random

BOOTSTRAP_DRAWS = 2000


def mean_std(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


def paired_verdict(row: dict, sft: dict) -> dict:
    """`row` against SFT seed by seed (the same pre-trained model, seed, data order, σ and noise): does the
    mean paired difference of Overall exceed twice its std?"""
    if row["seeds"] != sft["seeds"]:
        raise ValueError(f"paired comparison needs the same seeds, got {row['seeds']} and {sft['seeds']}")
    differences = [a - b for a, b in zip(row["per_seed_overall"], sft["per_seed_overall"], strict=True)]
    paired = mean_std(differences)
    return {"paired_differences": differences, "mean": paired["mean"], "std": paired["std"],
            "beats_sft": paired["mean"] > 2 * paired["std"]}


def learned_share(sft: list[float], ideal: list[float], learned: list[float], *, draws: int = BOOTSTRAP_DRAWS,
                  seed: int = 0) -> dict:
    """(learned − sft) / (ideal − sft) of per-seed scores, with a 95 % percentile bootstrap interval over seeds
    (seeds resampled with replacement, the three arms kept paired)."""
    learned_gain = [a - b for a, b in zip(learned, sft, strict=True)]
    ideal_gain = [a - b for a, b in zip(ideal, sft, strict=True)]
    rng = random.Random(seed)
    shares = []
    for _ in range(draws):
        picks = [rng.randrange(len(sft)) for _ in sft]
        denominator = sum(ideal_gain[i] for i in picks)
        if denominator > 0:
            shares.append(sum(learned_gain[i] for i in picks) / denominator)
    shares.sort()
    interval = ([shares[int(0.025 * len(shares))], shares[min(len(shares) - 1, int(0.975 * len(shares)))]]
                if shares else [float("nan"), float("nan")])
    return {"share": sum(learned_gain) / sum(ideal_gain), "interval_95": interval,
            "bootstrap_draws": draws, "draws_with_a_positive_ideal_gain": len(shares)}
