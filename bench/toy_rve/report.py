"""Writes toy_rve.json, toy_rve.md and toy_rve.png (toy_rve.csv, the chart's values, where matplotlib is missing)."""

from __future__ import annotations

import json
from pathlib import Path

from .summary import METRICS

V1 = "toy_rve_v1.json"  # the first Toy-RVE bench's results (exact targets, its own critic), kept beside these


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if (out / V1).is_file():
        first = json.loads((out / V1).read_text())
        results["v1"] = {"file": V1, "command": first["command"], "seeds": first["config"]["seeds"],
                         "references": first["references"], "objectives": first["objectives"]}
    json_path = out / "toy_rve.json"
    json_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    seeds = results["config"]["seeds"]
    lines = [f"# Toy-RVE ({results['preset']})", "", f"Device: {results['device']}, {results['workers']} worker "
             f"process(es). Command: `{results['command']}`. Total {results['total_seconds'] / 60:.1f} min"
             f"{_reused(results)}.", "",
             "Held-out instructions and scenes, scored against their correct targets; oracle scores 0-10, "
             f"mean ± std over seeds {tuple(seeds)}. Every arm starts from the same pre-trained generator, which "
             "reproduces videos and knows no rule.", "", *_sensitivity(results["sensitivity"]), "## Bounds", "",
             "| model | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, row in [*results["references"].items(), ("pre-trained generator", results["pretrained"])]:
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    lines += ["", f"VAE reconstruction MAE {results['prepare']['vae']['reconstruction_mae']:.1e}.", ""]
    if results["prepare"]["critics"]:
        lines += _critics(results)
    for name, section in results["conditions"].items():
        lines += _condition(name, section)
    lines += _v1(results.get("v1"))
    md_path = out / "toy_rve.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path, _plot(results, out / "toy_rve.png")]


def _sensitivity(checks: dict) -> list[str]:
    vae = checks["oracle_through_vae"]
    lines = ["## Sensitivity checks", "", "| check | measured | required | passes |", "|---|---|---|---|",
             f"| the exact target through the VAE, Overall | {vae['overall']:.3f} | ≥ {vae['required']} | "
             f"{_yes(vae['passes'])} |"]
    gain = checks.get("sft_gain")
    if gain:
        ratio = gain["gain"] / gain["seed_std"] if gain["seed_std"] > 0 else float("inf")
        lines.append(f"| SFT on exact targets over the pre-trained model, Overall | {gain['pretrained']:.3f} → "
                     f"{gain['sft']:.3f}: {gain['gain']:+.3f}, {ratio:.0f} × its seed std {gain['seed_std']:.3f} | "
                     f"≥ {gain['required_gain']} and ≥ {gain['required_std_ratio']:.0f} × std | "
                     f"{_yes(gain['passes'])} |")
    return lines + [""]


def _yes(flag: bool) -> str:
    return "**yes**" if flag else "**no**"


def _critics(results: dict) -> list[str]:
    prepared = results["prepare"]
    reports = {name: report for name, report in prepared["critics"].items() if isinstance(report, dict)}
    reports["estimates"] = prepared["estimate_stage"]["estimates"]
    on_estimates = prepared["estimate_stage"]["alignment_on_estimates"]
    lines = ["## Learned critics", "",
             "`renders`: Yes/No curriculum, then graded renders. `shaped`: a copy of it graded further with "
             "input-gradient regularisation (1 − the cosine of its gradient with the direction to the correct "
             "edit). `estimates`: a copy graded on decoded one-step estimates x̂0 of the pre-trained generator. "
             "Alignment: cosine of ∂Δ/∂pixels with (correct target − edit) on held-out edits, and the EA change "
             "of a pixel step along that gradient half the distance to the target long (a step straight at the "
             "target gains the last column).", "",
             "| critic | ρ(P(Yes), EA) | alignment on renders | EA gain | ρ on estimates | alignment on estimates "
             "| EA gain | straight step |", "|---|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        clean, estimate = report["gradient_alignment"], on_estimates[name]
        lines.append(f"| {name} | {report['spearman_p_yes']:.3f} | {clean['cosine_mean']:.4f} | "
                     f"{clean['ea_gain_of_gradient_step']:+.3f} | {estimate['spearman_p_yes']:.3f} | "
                     f"{estimate['cosine_mean']:.4f} | {estimate['ea_gain_of_gradient_step']:+.3f} | "
                     f"{estimate['ea_gain_of_exact_step']:+.3f} |")
    return lines + [""]


def _condition(name: str, section: dict) -> list[str]:
    flaws = ", ".join(f"{kind} {count}" for kind, count in section["flaws"].items())
    unseen = section["condition"]["unseen_category"]
    header = "| model | " + " | ".join(METRICS) + (f" | {unseen} |" if unseen else " |") + " steps with σ ≤ σ_max |"
    lines = [f"## Condition: {name}", "", f"Training targets: {flaws}.", "", header,
             "|" + "---|" * (len(METRICS) + 2 + bool(unseen))]
    for row_name, row in section["objectives"].items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS]
        if unseen:
            category = row["per_category"][unseen]
            cells.append(f"{category['mean']:.3f} ± {category['std']:.3f}")
        cells.append(f"{row['triggered']['mean']:.2f}" if row["triggered"] else "-")
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    lines += ["", "Against SFT, paired by seed (Overall): a win is a mean paired difference above 2 × its std.", "",
              "| arm | mean ± std | per seed | verdict |", "|---|---|---|---|"]
    for row_name, check in section["comparisons"].items():
        lines.append(f"| {row_name} | {check['mean']:+.3f} ± {check['std']:.3f} | "
                     f"{', '.join(f'{d:+.3f}' for d in check['paired_differences'])} | "
                     f"{'**beats SFT**' if check['beats_sft'] else 'no win'} |")
    lines.append("")
    if section["learned_share"]:
        lines += ["Learned critic's share of the ideal critic's gain, (USO_learned − SFT) / (USO_ideal − SFT), "
                  "with a 95 % bootstrap interval over seeds:", ""]
        for critic, share in section["learned_share"].items():
            lines.append(f"- {critic}: " + (f"{share['share']:+.2f} [{share['interval_95'][0]:+.2f}, "
                                             f"{share['interval_95'][1]:+.2f}]" if share else
                                             "not defined here: the ideal critic does not beat SFT"))
        lines.append("")
    if section["diagnostics"]:
        lines += ["Reward path on one-step estimates of the pre-trained generator (training samples, σ ≤ σ_max): "
                  "gradient norms on the generator's parameters, their cosine (∇L_FM points to the training "
                  "target), and in pixels the cosine of ∂Δ/∂x̂0 with (correct target − x̂0) and the EA gained by a "
                  "step along it (straight at the target: last column).", "",
                  "| critic | steps acting | ‖∇L_FM‖ | ‖∇λ·L_reason‖ | ratio | cosine with ∇L_FM | pixel cosine "
                  "| EA gain | straight step |", "|---|---|---|---|---|---|---|---|---|"]
        for critic, d in section["diagnostics"].items():
            lines.append(f"| {critic} | {d['share_of_steps_acting']:.2f} | {d['fm_gradient_norm']:.3e} | "
                         f"{d['reward_gradient_norm']:.3e} | {d['norm_ratio']:.3f} | {d['cosine_with_fm']:+.3f} | "
                         f"{d['pixel_cosine_with_target']:+.3f} | {d['ea_gain_of_gradient_step']:+.3f} | "
                         f"{d['ea_gain_of_straight_step']:+.3f} |")
        lines.append("")
    for key, title in (("reason_weight", "λ"), ("sigma_max", "σ_max")):
        points = section["sweeps"].get(key)
        if points:
            lines += [f"### Ideal critic, {title} sweep (every seed)", "",
                      f"| {title} | Overall | EA | − SFT, paired | verdict | steps with σ ≤ σ_max |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {p['value']} | {p['Overall']['mean']:.3f} ± {p['Overall']['std']:.3f} | "
                      f"{p['EA']['mean']:.3f} | {p['vs_sft']['mean']:+.3f} ± {p['vs_sft']['std']:.3f} | "
                      f"{'**beats SFT**' if p['vs_sft']['beats_sft'] else 'no win'} | {p['triggered']['mean']:.2f} |"
                      for p in points]
            lines.append("")
    return lines


def _v1(first: dict | None) -> list[str]:
    if not first:
        return []
    lines = [f"## Kept: the first bench (`{first['file']}`, exact targets, seeds {tuple(first['seeds'])})", "",
             "Its own critic (the encoder VLM itself, trained on renders), λ 0.25, 16 held-out samples at 10 "
             "sampling steps, different evaluation noise per seed: its numbers do not compare one to one with "
             "the conditions above.", "",
             "| model | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, row in first["references"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    for name, row in first["objectives"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS) + " |")
    return lines + [""]


def _values(row: dict) -> str:
    return ", ".join(f"{v:.3f}" for v in row["per_seed_overall"])


def _plot(results: dict, path: Path) -> Path:
    try:
        import matplotlib
    except ImportError:  # an optional dependency (the `plots` extra): the chart's values as a CSV instead
        return _chart_csv(results, path.with_suffix(".csv"))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    conditions = list(results["conditions"])
    rows = list(dict.fromkeys(row for c in conditions for row in results["conditions"][c]["comparisons"]))
    width = 0.8 / max(1, len(rows))
    for offset, row in enumerate(rows):
        present = [(i, results["conditions"][c]["comparisons"][row]) for i, c in enumerate(conditions)
                   if row in results["conditions"][c]["comparisons"]]
        axes[0].bar([i + offset * width for i, _ in present], [p["mean"] for _, p in present], width,
                    yerr=[p["std"] for _, p in present], label=row)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))], conditions, fontsize=7)
    axes[0].set_title("held-out Overall minus SFT's, paired by seed (error bars: std)")
    axes[0].legend(fontsize=7)
    for axis, key, title in ((axes[1], "reason_weight", "ideal critic: λ sweep"),
                             (axes[2], "sigma_max", "ideal critic: σ_max sweep")):
        swept = [(name, section["sweeps"][key]) for name, section in results["conditions"].items()
                 if section["sweeps"].get(key)]
        for name, points in swept:
            axis.errorbar([p["value"] for p in points], [p["vs_sft"]["mean"] for p in points],
                          yerr=[p["vs_sft"]["std"] for p in points], marker="o", capsize=3, label=name)
        axis.axhline(0, color="grey", linestyle="--", linewidth=0.8)
        axis.set_title(f"{title} (Overall − SFT, paired)")
        if not swept:
            axis.text(0.5, 0.5, "not swept in this preset", ha="center", va="center", transform=axis.transAxes)
            continue
        if key == "reason_weight":
            axis.set_xscale("log")
        axis.legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _chart_csv(results: dict, path: Path) -> Path:
    """The three panels of the chart as rows: each arm's Overall minus SFT's (paired, ± std), and both sweeps."""
    import csv
    import logging

    rows = []
    for name, section in results["conditions"].items():
        for arm, check in section["comparisons"].items():
            rows.append(["overall_minus_sft", name, arm, "", check["mean"], check["std"]])
        for key, points in section["sweeps"].items():
            rows += [[f"{key}_sweep", name, "uso, ideal critic", p["value"], p["vs_sft"]["mean"], p["vs_sft"]["std"]]
                     for p in points]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["panel", "condition", "series", "x", "value", "std"])
        writer.writerows(rows)
    logging.getLogger(__name__).warning("matplotlib is not installed: the Toy-RVE chart's values are written as %s, "
                                        "not drawn (pip install matplotlib, or the `plots` extra)", path)
    return path


def _reused(results: dict) -> str:
    reused = results.get("reused_runs", 0)
    if not reused:
        return ""
    return (f" ({reused} of {results['runs']} fine-tuning runs taken from the work folder's records, computed by an "
            "earlier invocation; each run's seconds are those of the invocation that computed it)")
