"""Per-step metrics: JSONL (always), TensorBoard (when installed), and a PNG of the curves at the end."""

from __future__ import annotations

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
                logger.warning("tensorboard is not installed: logging to %s only (pip install tensorboard)", self.path)
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
    """Loss and reward curves as a PNG (matplotlib, headless)."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in PLOTTED[:3]:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float) and math.isfinite(r[key])]
        if points:
            # L_reason exists only on steps where the critic ran: markers show where.
            axes[0].plot(*zip(*points), marker="." if key == "l_reason" else None, label=label)
    axes[0].set_title("losses")
    for key, label in PLOTTED[3:]:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float) and math.isfinite(r[key])]
        if points:
            axes[1].plot(*zip(*points), marker=".", label=label)
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
