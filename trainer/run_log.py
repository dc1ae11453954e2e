"""Per-step metrics: JSONL (always), TensorBoard (when installed), and the curves at the end: a PNG (matplotlib,
the `plots` extra) or, without matplotlib, the same series as a CSV."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from revise_core import jsonio

logger = logging.getLogger(__name__)

PLOTTED = (("loss", "total loss"), ("l_fm", "L_FM"), ("l_reason", "L_reason"), ("p_yes", "P(Yes)"),
           ("relative_delta", "Δ − Δ_base"))


class RunLog:
    """Writes metrics of rank 0; a resumed run first drops lines past the resumed step."""

    def __init__(self, output_dir: str | Path, *, tensorboard: bool, resume_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [record for record in self.read() if record.get("step", 0) <= resume_step]
            self.path.write_text("".join(jsonio.dumps(record) + "\n" for record in kept), encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed: logging to %s only (pip install tensorboard, or the "
                               "`tensorboard` extra)", self.path)
            else:
                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=resume_step + 1)

    def write(self, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(jsonio.dumps(metrics) + "\n")  # NaN (no critic this step) is written as null
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"train/{key}", value, metrics["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def read(self) -> list[dict]:
        """The records so far. A torn last line (a crash while writing it) is dropped with a warning; damage
        anywhere else is an error that names the line."""
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(lines):
                    logger.warning("%s: dropping the torn last line %d (%s)", self.path, number, error)
                    break
                raise ValueError(f"{self.path}, line {number}: not JSON ({error}); the metrics log is damaged") from error
        return records


def plot_curves(records: list[dict], path: str | Path) -> Path | None:
    """Loss and reward curves as a PNG (matplotlib, headless). Without matplotlib, an optional dependency, the
    plotted series go to a CSV of the same name instead (`curves.csv`), with a one-line notice."""
    if not records:
        return None
    try:
        import matplotlib
    except ImportError:
        return _curves_csv(records, Path(path).with_suffix(".csv"))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in PLOTTED[:3]:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float) and math.isfinite(r[key])]
        if points:
            # L_reason exists only on steps where the critic ran: markers show where.
            axes[0].plot(*zip(*points, strict=True), marker="." if key == "l_reason" else None, label=label)
    axes[0].set_title("losses")
    for key, label in PLOTTED[3:]:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float) and math.isfinite(r[key])]
        if points:
            axes[1].plot(*zip(*points, strict=True), marker=".", label=label)
    axes[1].set_title("critic reward (triggered steps)")
    for axis in axes:
        axis.set_xlabel("step")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _curves_csv(records: list[dict], path: Path) -> Path:
    """The plotted series, one row per step; a cell is empty where the value is missing (no critic that step)."""
    keys = [key for key, _ in PLOTTED]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *keys])
        for record in records:
            writer.writerow([record.get("step"), *(_number(record.get(key)) for key in keys)])
    logger.warning("matplotlib is not installed: the training curves are written as %s, not drawn "
                   "(pip install matplotlib, or the `plots` extra)", path)
    return path


def _number(value) -> float | str:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else ""
