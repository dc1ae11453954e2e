"""Toy-RVE's numbers from its runs: oracle scores of held-out edits summarised per model, each condition's rows,
paired comparisons with SFT, the learned critics' share and the sweeps, and the instrument's sensitivity checks."""

from __future__ import annotations

from dataclasses import asdict

from .conditions import EXACT, Condition
from .config import IDEAL_CRITIC, IDEAL_ROW, Run, ToyConfig, row_name
from .statistics import learned_share, mean_std, paired_verdict
from .task import CATEGORIES

METRICS = ("EA", "PC", "GN", "GR", "Overall")
# The sensitivity checks the instrument must pass before any comparison means something.
ORACLE_THROUGH_VAE_MIN = 8.5  # Overall of the exact target, encoded and decoded
SFT_GAIN_MIN, SFT_GAIN_STD_RATIO = 0.5, 10.0  # SFT on exact targets over the pre-trained model


def summarize(scores) -> dict:
    out = {}
    for metric in METRICS:
        values = [s.derived()["Overall"] if metric == "Overall" else s.metrics[metric] for s in scores]
        out[metric] = sum(values) / len(values)
    out["per_category"] = {c: sum(s.derived()["Overall"] for s in scores if s.category == c)
                           / max(1, sum(1 for s in scores if s.category == c)) for c in CATEGORIES}
    return out


def _aggregate(members: list[Run]) -> dict:
    members = sorted(members, key=lambda r: r.seed)
    row = {m: mean_std([r.scores[m] for r in members]) for m in METRICS}
    row["per_category"] = {c: mean_std([r.scores["per_category"][c] for r in members]) for c in CATEGORIES}
    row["seeds"] = [r.seed for r in members]
    row["per_seed_overall"] = [r.scores["Overall"] for r in members]
    row["triggered"] = mean_std([r.triggered for r in members]) if members[0].objective != "sft" else None
    row["seconds_per_run"] = sum(r.seconds for r in members) / len(members)
    return row


def sensitivity(references: dict, pretrained: dict, sections: dict) -> dict:
    """The instrument's two checks: the VAE leaves room for a good edit, and supervised training on exact
    targets moves the score by much more than the seeds' spread."""
    through_vae = references["oracle target through the VAE"]["Overall"]
    checks = {"oracle_through_vae": {"overall": through_vae, "required": ORACLE_THROUGH_VAE_MIN,
                                     "passes": through_vae >= ORACLE_THROUGH_VAE_MIN}}
    if EXACT.name in sections:
        sft = sections[EXACT.name]["objectives"]["sft"]["Overall"]
        gain = sft["mean"] - pretrained["Overall"]
        checks["sft_gain"] = {"condition": EXACT.name, "pretrained": pretrained["Overall"], "sft": sft["mean"],
                              "gain": gain, "seed_std": sft["std"], "required_gain": SFT_GAIN_MIN,
                              "required_std_ratio": SFT_GAIN_STD_RATIO,
                              "passes": gain >= SFT_GAIN_MIN and gain >= SFT_GAIN_STD_RATIO * sft["std"]}
    return checks


def summarize_condition(config: ToyConfig, condition: Condition, flaws: dict, runs: list[Run],
                        diagnostics: dict) -> dict:
    main = [r for r in runs if r.sigma_max == config.sigma_max and r.reason_weight == config.reason_weight]
    rows: dict[str, list[Run]] = {}
    for run in main:
        rows.setdefault(run.row, []).append(run)
    objectives = {name: _aggregate(members) for name, members in rows.items()}
    comparisons = {name: paired_verdict(row, objectives["sft"]) for name, row in objectives.items() if name != "sft"}
    per_seed = {name: row["per_seed_overall"] for name, row in objectives.items()}
    # the learned critic's share of the ideal critic's gain is defined only where that gain is real
    shares = {critic: None for critic in config.learned_critics}
    if comparisons[IDEAL_ROW]["beats_sft"]:
        for critic in config.learned_critics:
            row = row_name("uso", critic)
            shares[critic] = {"row": row, **learned_share(per_seed["sft"], per_seed[IDEAL_ROW], per_seed[row])}
    sweeps = {}
    if condition.name == config.sweep_condition:
        ideal_runs = [r for r in runs if r.critic == IDEAL_CRITIC]
        for key, values, other, fixed in (("reason_weight", config.lambdas, "sigma_max", config.sigma_max),
                                          ("sigma_max", config.sigma_maxes, "reason_weight", config.reason_weight)):
            if not values:  # no sweep: the main point alone is in the comparisons already
                continue
            points = []
            for value in sorted({*values, getattr(config, key)}):
                point = _aggregate([r for r in ideal_runs if getattr(r, key) == value and getattr(r, other) == fixed])
                points.append({"value": value, "Overall": point["Overall"], "EA": point["EA"],
                               "triggered": point["triggered"], "per_seed_overall": point["per_seed_overall"],
                               "vs_sft": paired_verdict(point, objectives["sft"])})
            sweeps[key] = points
    return {
        "condition": asdict(condition), "flaws": flaws, "objectives": objectives, "comparisons": comparisons,
        "learned_share": shares, "diagnostics": diagnostics, "sweeps": sweeps, "runs": [asdict(r) for r in runs],
    }
