"""Writes toy_rve.json, toy_rve.md and toy_rve.png."""

from __future__ import annotations

import json
from pathlib import Path

from .experiment import METRICS


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "toy_rve.json"
    json_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    lines = [f"# Toy-RVE ({results['preset']})", "", f"Device: {results['device']}. Command: `{results['command']}`. "
             f"Total {results['total_seconds'] / 60:.1f} min.", "",
             "Held-out instructions and scenes; oracle scores 0-10, mean ± std over seeds "
             f"{results['config']['seeds']}.", "",
             "| model | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, row in results["references"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    for name, row in results["objectives"].items():
        lines.append(f"| fine-tuned: {name} | " + " | ".join(
            f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS) + " |")
    critic = results["prepare"]["critic"]
    lines += ["", f"Critic on held-out edits ({critic['pairs']} pairs): Spearman ρ of P(Yes) with oracle EA "
              f"{critic['spearman_p_yes']:.3f}, of the hard-decoded verdict {critic['spearman_hard']:.3f}. "
              f"VAE reconstruction MAE {results['prepare']['vae']['reconstruction_mae']:.4f}.", "",
              *_alignment(critic), *_gradient_share(results.get("reward_gradient_share")),
              "## λ sweep (USO, seed 0)", "", "| λ | Overall | EA | triggered |", "|---|---|---|---|"]
    lines += [f"| {r['reason_weight']} | {r['scores']['Overall']:.3f} | {r['scores']['EA']:.3f} | {r['triggered']:.3f} |"
              for r in results["lambda_sweep"]]
    lines += ["", "## σ_max sweep (USO, seed 0)", "", "| σ_max | Overall | EA | triggered |", "|---|---|---|---|"]
    lines += [f"| {r['sigma_max']} | {r['scores']['Overall']:.3f} | {r['scores']['EA']:.3f} | {r['triggered']:.3f} |"
              for r in results["sigma_sweep"]]
    md_path = out / "toy_rve.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path, _plot(results, out / "toy_rve.png")]


def _alignment(critic: dict) -> list[str]:
    alignment = critic.get("gradient_alignment")
    if not alignment:
        return []
    return [f"Critic gradient on {alignment['edits']} held-out edits: cosine of ∂Δ/∂pixels with (target − edit) "
            f"{alignment['cosine_mean']:.4f} (positive for {alignment['cosine_positive_share']:.0%}); a pixel step "
            "along it, half the distance to the target long, changes EA by "
            f"{alignment['ea_gain_of_gradient_step']:+.3f} "
            f"(the same step straight at the target: {alignment['ea_gain_of_exact_step']:+.3f}).", ""]


def _gradient_share(share: dict | None) -> list[str]:
    if not share:
        return []
    return [f"Reward's share of USO's update (pre-trained generator, {share['samples']} training samples at "
            f"σ = {share['sigma']}, λ = {share['reason_weight']}): ‖∇λ·L_reason‖ / ‖∇L_FM‖ = "
            f"{share['norm_ratio_mean']:.2e}, cosine between the two {share['cosine_with_fm_mean']:+.3f}.", ""]


def _plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = list(results["objectives"])
    for offset, metric in enumerate(METRICS):
        means = [results["objectives"][n][metric]["mean"] for n in names]
        stds = [results["objectives"][n][metric]["std"] for n in names]
        axes[0].bar([i + offset * 0.16 for i in range(len(names))], means, 0.16, yerr=stds, label=metric)
    axes[0].set_xticks([i + 0.32 for i in range(len(names))], names)
    axes[0].set_title("held-out oracle scores by objective")
    axes[0].legend(fontsize=7)
    sweep = results["lambda_sweep"]
    axes[1].plot([r["reason_weight"] for r in sweep], [r["scores"]["Overall"] for r in sweep], marker="o")
    axes[1].set_title("λ sweep (Overall)")
    sweep = results["sigma_sweep"]
    axes[2].plot([r["sigma_max"] for r in sweep], [r["scores"]["Overall"] for r in sweep], marker="o")
    axes[2].set_title("σ_max sweep (Overall)")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
