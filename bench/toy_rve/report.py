"""Writes toy_rve.json, toy_rve.md and toy_rve.png (toy_rve.csv, the chart's values, where matplotlib is missing)."""

from __future__ import annotations

import json
from pathlib import Path

from .experiment import METRICS

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
             f"process(es). Command: `{results['command']}`. Total {results['total_seconds'] / 60:.1f} min.", "",
             "Held-out instructions and scenes, scored against their correct targets; oracle scores 0-10, "
             f"mean ± std over seeds {tuple(seeds)}.", "", "## Bounds", "",
             "| model | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, row in results["references"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    lines += ["", *_critics(results)]
    for name, section in results["conditions"].items():
        lines += _condition(name, section)
    lines += _v1(results.get("v1"))
    md_path = out / "toy_rve.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path, _plot(results, out / "toy_rve.png")]


def _critics(results: dict) -> list[str]:
    prepared = results["prepare"]
    reports = {name: report for name, report in prepared["critics"].items() if isinstance(report, dict)}
    reports["estimates"] = prepared["estimate_stage"]["estimates"]
    on_estimates = prepared["estimate_stage"]["alignment_on_estimates"]
    lines = ["## Critics", "",
             "`renders`: Yes/No curriculum, then graded renders. `shaped`: a copy of it graded further with "
             "input-gradient regularisation (the gradient's energy outside the changed region, and 1 − its cosine "
             "with the direction to the correct edit). `estimates`: a copy graded on decoded one-step estimates x̂0 "
             "of the pre-trained generator. Alignment: cosine of ∂Δ/∂pixels with (correct target − edit) on "
             "held-out edits, and the EA change of a pixel step along that gradient half the distance to the "
             "target long (a step straight at the target gains the last column).", "",
             "| critic | ρ(P(Yes), EA) | alignment on renders | EA gain | ρ on estimates | alignment on estimates "
             "| EA gain | straight step |", "|---|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        clean, estimate = report["gradient_alignment"], on_estimates[name]
        lines.append(f"| {name} | {report['spearman_p_yes']:.3f} | {clean['cosine_mean']:.4f} | "
                     f"{clean['ea_gain_of_gradient_step']:+.3f} | {estimate['spearman_p_yes']:.3f} | "
                     f"{estimate['cosine_mean']:.4f} | {estimate['ea_gain_of_gradient_step']:+.3f} | "
                     f"{estimate['ea_gain_of_exact_step']:+.3f} |")
    return lines + ["", f"VAE reconstruction MAE {prepared['vae']['reconstruction_mae']:.4f}.", ""]


def _condition(name: str, section: dict) -> list[str]:
    flaws = ", ".join(f"{kind} {count}" for kind, count in section["flaws"].items())
    unseen = section["condition"]["unseen_category"]
    header = "| model | " + " | ".join(METRICS) + (f" | {unseen} |" if unseen else " |")
    lines = [f"## Condition: {name}", "", f"Training targets: {flaws}.", "", header,
             "|" + "---|" * (len(METRICS) + 1 + bool(unseen))]
    pretrained = section["pretrained"]
    lines.append("| pre-trained | " + " | ".join(f"{pretrained[m]:.3f}" for m in METRICS)
                 + (f" | {pretrained['per_category'][unseen]:.3f} |" if unseen else " |"))
    for row_name, row in section["objectives"].items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS]
        if unseen:
            category = row["per_category"][unseen]
            cells.append(f"{category['mean']:.3f} ± {category['std']:.3f}")
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    check = section["verdict"]
    lines += ["", f"Per-seed Overall, sft: {_values(section['objectives']['sft'])}; "
              f"uso: {_values(section['objectives']['uso'])}.", "", f"USO − SFT Overall {check['uso_minus_sft']:+.3f} against 2 × the larger std "
              f"{check['twice_larger_std']:.3f}: **{'USO beats SFT' if check['uso_beats_sft'] else 'no win'}**.", ""]
    ideal = section.get("ideal_verdict")
    if ideal:
        lines += [f"USO with the ideal critic − SFT, paired by seed: {ideal['mean']:+.3f} ± {ideal['std']:.3f} "
                  f"({', '.join(f'{d:+.3f}' for d in ideal['paired_differences'])}): "
                  f"**{'beats SFT by more than 2 paired std' if ideal['beats_sft'] else 'no win'}**.", ""]
    for critic, share in section["reward_gradient_share"].items():
        lines.append(f"- reward's share of USO's update ({critic} critic, σ = {share['sigma']}, "
                     f"λ = {share['reason_weight']}): ‖∇λ·L_reason‖ / ‖∇L_FM‖ = {share['norm_ratio_mean']:.2e}, "
                     f"cosine with ∇L_FM {share['cosine_with_fm_mean']:+.3f}")
    lines.append("")
    for title, key, field in (("λ sweep", "lambda_sweep", "reason_weight"), ("σ_max sweep", "sigma_sweep", "sigma_max")):
        if section[key]:
            lines += [f"### {title} (USO, seed {section[key][0]['seed']}; SFT on that seed: "
                      f"{section['objectives']['sft']['per_seed_overall'][0]:.3f})", "",
                      f"| {field} | Overall | EA | triggered |", "|---|---|---|---|"]
            lines += [f"| {r[field]} | {r['scores']['Overall']:.3f} | {r['scores']['EA']:.3f} | {r['triggered']:.3f} |"
                      for r in section[key]]
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
    rows = list(dict.fromkeys(row for c in conditions for row in results["conditions"][c]["objectives"]))
    width = 0.8 / len(rows)
    for offset, row in enumerate(rows):
        present = [(i, results["conditions"][c]["objectives"][row]["Overall"]) for i, c in enumerate(conditions)
                   if row in results["conditions"][c]["objectives"]]
        sft = [results["conditions"][conditions[i]]["objectives"]["sft"]["Overall"]["mean"] for i, _ in present]
        axes[0].bar([i + offset * width for i, _ in present], [v["mean"] - base for (_, v), base in zip(present, sft, strict=True)],
                    width, yerr=[v["std"] for _, v in present], label=row)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))], conditions, fontsize=7)
    axes[0].set_title("held-out Overall minus SFT's mean (error bars: seed std)")
    axes[0].legend(fontsize=7)
    sweeps = [s for s in results["conditions"].values() if s["lambda_sweep"] or s["sigma_sweep"]]
    for axis, key, field, title in ((axes[1], "lambda_sweep", "reason_weight", "λ sweep (Overall)"),
                                    (axes[2], "sigma_sweep", "sigma_max", "σ_max sweep (Overall)")):
        for section in sweeps:
            runs = section[key]
            axis.plot([r[field] for r in runs], [r["scores"]["Overall"] for r in runs], marker="o",
                      label=section["condition"]["name"])
            sft = section["objectives"]["sft"]["per_seed_overall"][0]  # the sweeps run on the first seed
            axis.axhline(sft, linestyle="--", color="grey", label="sft, same seed")
        axis.set_title(title)
        axis.legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _chart_csv(results: dict, path: Path) -> Path:
    """The three panels of the chart as rows: held-out Overall minus SFT's mean (± seed std), and both sweeps."""
    import csv
    import logging

    rows = []
    for name, section in results["conditions"].items():
        sft = section["objectives"]["sft"]["Overall"]["mean"]
        for objective, scores in section["objectives"].items():
            rows.append(["overall_minus_sft", name, objective, "", scores["Overall"]["mean"] - sft,
                         scores["Overall"]["std"]])
        for key, field in (("lambda_sweep", "reason_weight"), ("sigma_sweep", "sigma_max")):
            rows += [[key, section["condition"]["name"], "Overall", run[field], run["scores"]["Overall"], ""]
                     for run in section[key]]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["panel", "condition", "series", "x", "value", "std"])
        writer.writerows(rows)
    logging.getLogger(__name__).warning("matplotlib is not installed: the Toy-RVE chart's values are written as %s, "
                                        "not drawn (pip install matplotlib, or the `plots` extra)", path)
    return path
