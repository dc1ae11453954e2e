"""Toy-RVE task and oracle (the experiment's claim lives in bench/results/toy_rve.json, not in tests)."""

from __future__ import annotations

import pytest
import torch

from bench.toy_rve.oracle import score, target_of
from bench.toy_rve.task import CATEGORIES, PHRASINGS, make_samples, render


def test_splits_hold_out_phrasings_and_backgrounds():
    train, held_out = make_samples(40, "train", 0), make_samples(20, "eval", 0)
    assert {s.category for s in train} == set(CATEGORIES) and len(CATEGORIES) >= 4
    assert not {s.instruction for s in train} & {s.instruction for s in held_out}
    assert not {s.scene.background for s in train} & {s.scene.background for s in held_out}
    assert all(s.instruction in PHRASINGS[s.category][1] for s in held_out)


@pytest.mark.parametrize("index", range(4))
def test_oracle_scores_the_target_perfectly_and_the_unedited_source_low(index):
    sample = make_samples(4, "eval", 1)[index]
    perfect = score(sample, target_of(sample))
    assert perfect.metrics == {"EA": 10.0, "PC": 10.0, "GN": 10.0, "GR": 10.0}
    unchanged = score(sample, render(sample.scene))
    assert unchanged.metrics["EA"] == 0.0 and unchanged.metrics["PC"] == 10.0
    half = score(sample, (render(sample.scene) + target_of(sample)) / 2)
    assert 3.0 < half.metrics["EA"] < 7.0
    noisy = score(sample, target_of(sample) + torch.randn(5, 32, 32, 3, generator=torch.Generator().manual_seed(0)))
    assert noisy.metrics["GR"] < 5.0 and noisy.metrics["GN"] < 5.0


def test_rules_do_what_the_categories_say():
    samples = {s.category: s for s in make_samples(8, "train", 2)}
    frost = samples["semantic inference"]
    changed = (render(frost.scene) - target_of(frost)).abs().amax(-1) > 0.05
    assert 0 < changed.float().mean() < 0.2  # only the object changes
    spatial = target_of(samples["spatial"])
    object_rows = (spatial - render(samples["spatial"].scene)).abs().amax((-1, -2))[0] > 0.05
    assert object_rows[-1]  # the object reaches the bottom row


@pytest.mark.slow
def test_smoke_experiment_runs_and_reports_finite_numbers(tmp_path):
    import json
    import math

    from bench.toy_rve.__main__ import main

    assert main(["--smoke", "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")]) == 0
    results = json.loads((tmp_path / "out" / "toy_rve.json").read_text())
    for objective in ("sft", "rwr", "uso"):
        for metric, value in results["objectives"][objective].items():
            if isinstance(value, dict):
                assert math.isfinite(value["mean"]), (objective, metric)
    assert (tmp_path / "out" / "toy_rve.png").is_file()


def test_spearman_matches_the_definition():
    from bench.toy_rve.models import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894427, abs=1e-5)  # ties get average ranks
