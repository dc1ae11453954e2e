"""matplotlib and tensorboard are optional (the `plots` and `tensorboard` extras): without them every chart is
written as a CSV of its values with a one-line notice, and training logs to metrics.jsonl only; nothing crashes.
The missing module is simulated: `sys.modules[name] = None` makes `import name` raise ImportError."""

from __future__ import annotations

import ast
import csv
import logging
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _notice(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "matplotlib is not installed" in r.getMessage()]


def test_training_curves_without_matplotlib_are_a_csv(no_matplotlib, tmp_path, caplog):
    from trainer.run_log import PLOTTED, plot_curves

    records = [{"step": 1, "loss": 1.5, "l_fm": 1.5, "l_reason": math.nan, "p_yes": math.nan},
               {"step": 2, "loss": 1.25, "l_fm": 1.0, "l_reason": 0.25, "p_yes": 0.75, "relative_delta": -0.5}]
    with caplog.at_level(logging.WARNING):
        written = plot_curves(records, tmp_path / "curves.png")
    assert written == tmp_path / "curves.csv" and not (tmp_path / "curves.png").exists()
    assert _rows(written) == [["step", *(key for key, _ in PLOTTED)],
                              ["1", "1.5", "1.5", "", "", ""],
                              ["2", "1.25", "1.0", "0.25", "0.75", "-0.5"]]
    assert len(_notice(caplog)) == 1 and str(written) in _notice(caplog)[0]
    assert plot_curves([], tmp_path / "curves.png") is None


def test_rve_bench_chart_without_matplotlib_is_a_csv(no_matplotlib, tmp_path, caplog):
    from revise_core.evaluation.scores import bar_chart

    rows = [{"method": "revise", "subset": "RAVE", "category": "all", "samples": 2, "EA": 7.5, "PC": 8.0,
             "GN": 6.0, "GR": 6.5, "Overall": 6.2},
            {"method": "revise", "subset": "ICVG", "category": "all", "samples": 1, "EA": 5.0, "PC": None,
             "GN": 4.0, "GR": 4.5, "Overall": None},
            {"method": "revise", "subset": "RAVE", "category": "temporal", "EA": 1.0}]
    with caplog.at_level(logging.WARNING):
        written = bar_chart(rows, tmp_path / "scores.png")
    assert written == tmp_path / "scores.csv" and not (tmp_path / "scores.png").exists()
    assert _rows(written) == [["method", "subset", "EA", "PC", "GN", "GR", "Overall"],
                              ["revise", "RAVE", "7.5", "8.0", "6.0", "6.5", "6.2"],
                              ["revise", "ICVG", "5.0", "", "4.0", "4.5", ""]]
    assert len(_notice(caplog)) == 1


def test_toy_rve_chart_without_matplotlib_is_a_csv(no_matplotlib, tmp_path, caplog):
    from bench.toy_rve.report import _plot

    def paired(mean, std):
        return {"mean": mean, "std": std}

    results = {"conditions": {"exact targets": {
        "comparisons": {"uso, ideal critic": paired(1.5, 0.25)},
        "sweeps": {"reason_weight": [{"value": 0.1, "vs_sft": paired(1.0, 0.5)}]},
    }}}
    with caplog.at_level(logging.WARNING):
        written = _plot(results, tmp_path / "toy_rve.png")
    assert written == tmp_path / "toy_rve.csv" and not (tmp_path / "toy_rve.png").exists()
    assert _rows(written) == [["panel", "condition", "series", "x", "value", "std"],
                              ["overall_minus_sft", "exact targets", "uso, ideal critic", "", "1.5", "0.25"],
                              ["reason_weight_sweep", "exact targets", "uso, ideal critic", "0.1", "1.0", "0.5"]]
    assert len(_notice(caplog)) == 1


def test_training_log_without_tensorboard_writes_jsonl_only(monkeypatch, tmp_path, caplog):
    from trainer.run_log import RunLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with caplog.at_level(logging.WARNING):
        log = RunLog(tmp_path, tensorboard=True)
    assert log.writer is None and any("tensorboard is not installed" in r.getMessage() for r in caplog.records)
    log.write({"step": 1, "loss": 0.5})
    log.close()
    assert log.read() == [{"step": 1, "loss": 0.5}] and not (tmp_path / "tensorboard").exists()


def test_charts_with_matplotlib_are_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from revise_core.evaluation.scores import bar_chart
    from trainer.run_log import plot_curves

    records = [{"step": 1, "loss": 1.0, "p_yes": 0.5}, {"step": 2, "loss": 0.5, "p_yes": 0.75}]
    assert plot_curves(records, tmp_path / "c.png") == tmp_path / "c.png"
    rows = [{"method": "m", "subset": "RAVE", "category": "all", "EA": 1.0, "PC": 2.0, "GN": 3.0, "GR": 4.0,
             "Overall": 2.0}]
    assert bar_chart(rows, tmp_path / "s.png") == tmp_path / "s.png"
    for name in ("c.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The first import of each (`import matplotlib.pyplot` follows a guarded `import matplotlib`).
OPTIONAL = {"matplotlib", "tensorboard", "torch.utils.tensorboard"}


def test_optional_modules_are_imported_only_where_their_absence_is_handled():
    """Every import of matplotlib / tensorboard sits in a `try` whose handler catches ImportError."""
    found, unguarded = [], []
    for path in sorted([*ROOT.glob("revise_core/**/*.py"), *ROOT.glob("trainer/**/*.py"), *ROOT.glob("bench/**/*.py"),
                        *ROOT.glob("nodes/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                    for h in node.handlers):
                guarded |= {id(n) for statement in node.body for n in ast.walk(statement)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if set(names) & OPTIONAL:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if id(node) not in guarded:
                    unguarded.append(found[-1])
    assert len(found) >= 4 and not unguarded, (found, unguarded)  # run_log (2), scores, toy_rve's report
