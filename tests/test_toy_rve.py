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


def test_negative_edits_are_what_their_kind_says():
    import random

    from bench.toy_rve.models import STAGE1_NEGATIVES, STAGE2_NEGATIVES, negative_edit

    sample = make_samples(4, "train", 3)[0]
    source, target = render(sample.scene), target_of(sample)
    rng = random.Random(0)
    assert torch.equal(negative_edit(sample, "unchanged", rng), source)
    partial = score(sample, negative_edit(sample, "partial", rng)).metrics["EA"]
    assert 0.5 < partial < 5.0  # 10-45 % of the change
    wrong = negative_edit(sample, "wrong rule", rng)
    assert not torch.allclose(wrong, target) and not torch.allclose(wrong, source)
    assert "wrong rule" not in STAGE1_NEGATIVES and "wrong rule" in STAGE2_NEGATIVES
    with pytest.raises(ValueError, match="unknown negative kind 'noise'"):
        negative_edit(sample, "noise", rng)


def test_toy_models_have_a_finer_latent_grid_and_trainable_init():
    from bench.toy_rve.models import toy_generator, toy_vae
    from revise_core import vae as vae_ops

    video = render(make_samples(1, "train", 0)[0].scene).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        latents = vae_ops.encode(toy_vae(0), video)
    assert tuple(latents.shape) == (1, 16, 3, 8, 8)  # 4x spatial, 2x temporal: the object spans 2x2 latents
    dit, connector = toy_generator(0)
    norms = [m.weight for m in dit.modules() if type(m).__name__ in ("RMSNorm", "LayerNorm") and m.weight is not None]
    assert norms and all(torch.equal(w, torch.ones_like(w)) for w in norms)  # library init, not the test kit's noise
    tokens = [b.flatten() for b in connector.boundary.buffers()]
    assert all(not torch.allclose(a, b) for i, a in enumerate(tokens) for b in tokens[i + 1:])


def test_gradient_alignment_reports_the_exact_direction_gain():
    from bench.toy_rve.models import gradient_alignment
    from bench.toy_rve.task import all_phrasings
    from revise_core.testing import tiny_vlm

    vlm = tiny_vlm(3, extra_text=tuple(all_phrasings()))
    samples = make_samples(2, "eval", 0)
    result = gradient_alignment(vlm, samples, lambda s, e: score(s, e).metrics["EA"])
    assert result["edits"] == 4 and -1.0 <= result["cosine_mean"] <= 1.0
    # half the way to the target from 0 % and from 50 % of the change: +5 and +2.5 EA
    assert result["ea_gain_of_exact_step"] == pytest.approx(3.75, abs=1e-3)


def test_graded_critic_stage_moves_the_weights_and_leaves_the_vlm_frozen():
    import math

    from bench.toy_rve.models import grade_critic
    from bench.toy_rve.task import all_phrasings
    from revise_core.testing import tiny_vlm

    vlm = tiny_vlm(3, extra_text=tuple(all_phrasings()))
    before = {n: p.clone() for n, p in vlm.model.named_parameters()}
    report = grade_critic(vlm, steps=2, seed=0, oracle_ea=lambda s, e: score(s, e).metrics["EA"])
    assert report["graded_steps"] == 2 and math.isfinite(report["graded_final_loss"])
    assert any(not torch.equal(before[n], p) for n, p in vlm.model.named_parameters())
    assert not any(p.requires_grad for p in vlm.model.parameters()) and not vlm.model.training
