"""RVE-Bench scores: per-sample SC / PQ / Overall, benchmark means per subset and category, tables, chart.

Per sample (VIEScore style, the default `overall="viescore"`):
    SC = min(EA, PC)   (ICVG: SC = EA; PC does not apply)
    PQ = min(GN, GR)
    Overall = sqrt(SC · PQ)
`overall="geometric"` instead takes the geometric mean of all applicable sub-metrics (one reading of the
paper's "geometric mean of the SC and PQ sub-metrics"). A sample whose applicable sub-metrics did not all
parse has no Overall: it is counted as failed and left out of every mean, never scored as 0.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

OVERALL_MODES = ("viescore", "geometric")
COLUMNS = ("EA", "PC", "GN", "GR", "SC", "PQ", "Overall")


def applicable(subset: str) -> tuple[str, ...]:
    return ("EA", "GN", "GR") if subset == "ICVG" else ("EA", "PC", "GN", "GR")


@dataclass
class SampleScore:
    id: str
    subset: str
    category: str
    method: str
    metrics: dict[str, float | None]  # EA/PC/GN/GR; None = failed parse or missing prediction
    failures: list[str] = field(default_factory=list)
    quality: dict[str, float] = field(default_factory=dict)

    def derived(self, mode: str = "viescore") -> dict[str, float | None]:
        """SC, PQ and Overall (None when an applicable sub-metric is missing)."""
        if mode not in OVERALL_MODES:
            raise ValueError(f"overall mode must be one of {OVERALL_MODES}, got '{mode}'")
        needed = applicable(self.subset)
        values = {m: self.metrics.get(m) for m in needed}
        if any(v is None for v in values.values()):
            return {"SC": None, "PQ": None, "Overall": None}
        sc = values["EA"] if self.subset == "ICVG" else min(values["EA"], values["PC"])
        pq = min(values["GN"], values["GR"])
        if mode == "viescore":
            overall = math.sqrt(sc * pq)
        else:
            overall = math.prod(values.values()) ** (1.0 / len(values))
        return {"SC": sc, "PQ": pq, "Overall": overall}

    def row(self, mode: str = "viescore") -> dict:
        return {"id": self.id, "method": self.method, "subset": self.subset, "category": self.category,
                **{m: self.metrics.get(m) for m in ("EA", "PC", "GN", "GR")}, **self.derived(mode),
                **self.quality, "failures": "; ".join(self.failures)}


def summarize(samples: Iterable[SampleScore], mode: str = "viescore") -> list[dict]:
    """Mean of every column per (method, subset) and per (method, subset, category), plus failure counts."""
    groups: dict[tuple, list[SampleScore]] = {}
    for sample in samples:
        groups.setdefault((sample.method, sample.subset, "all"), []).append(sample)
        if sample.category:
            groups.setdefault((sample.method, sample.subset, sample.category), []).append(sample)
    rows = []
    for (method, subset, category), members in sorted(groups.items()):
        row = {"method": method, "subset": subset, "category": category, "samples": len(members),
               "failed": sum(1 for s in members if s.derived(mode)["Overall"] is None)}
        for column in COLUMNS:
            if column == "PC" and subset == "ICVG":
                row[column] = None
                continue
            values = [v for s in members for v in [_value(s, column, mode)] if v is not None]
            row[column] = sum(values) / len(values) if values else None
        quality_keys = sorted({k for s in members for k in s.quality})
        for key in quality_keys:
            values = [s.quality[key] for s in members if key in s.quality and math.isfinite(s.quality[key])]
            row[key] = sum(values) / len(values) if values else None
        rows.append(row)
    return rows


def _value(sample: SampleScore, column: str, mode: str) -> float | None:
    if column in ("SC", "PQ", "Overall"):
        return sample.derived(mode)[column]
    return sample.metrics.get(column)


def write_csv(rows: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"
    return str(value)


def bar_chart(rows: list[dict], path: Path) -> Path:
    """EA/PC/GN/GR/Overall per method and subset, like the columns of Table 1, as a PNG. Without matplotlib (an
    optional dependency) the chart's values go to a CSV of the same name instead (`scores.csv`), with a notice."""
    overall = [r for r in rows if r["category"] == "all"]
    subsets = sorted({r["subset"] for r in overall})
    metrics = ["EA", "PC", "GN", "GR", "Overall"]
    try:
        import matplotlib
    except ImportError:
        import logging

        table = write_csv([{key: row.get(key) for key in ("method", "subset", *metrics)} for row in overall],
                          Path(path).with_suffix(".csv"))
        logging.getLogger(__name__).warning("matplotlib is not installed: the RVE-Bench chart's values are written "
                                            "as %s, not drawn (pip install matplotlib, or the `plots` extra)", table)
        return table

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(subsets), figsize=(6 * len(subsets), 4), squeeze=False)
    for axis, subset in zip(axes[0], subsets, strict=True):
        members = [r for r in overall if r["subset"] == subset]
        width = 0.8 / max(1, len(members))
        for index, row in enumerate(members):
            values = [row.get(m) if row.get(m) is not None else 0.0 for m in metrics]
            axis.bar([i + index * width for i in range(len(metrics))], values, width, label=row["method"])
        axis.set_xticks([i + width * (len(members) - 1) / 2 for i in range(len(metrics))], metrics)
        axis.set_ylim(0, 10)
        axis.set_title(f"RVE-Bench {subset}")
        axis.legend()
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
