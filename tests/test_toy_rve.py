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

    outputs = {}
    for workers in (1, 2):  # in this process, and spread over two spawned processes: the same numbers
        out = tmp_path / f"out{workers}"
        assert main(["--smoke", "--workers", str(workers), "--out", str(out),
                     "--workdir", str(tmp_path / f"work{workers}")]) == 0
        outputs[workers] = json.loads((out / "toy_rve.json").read_text())
        assert (out / "toy_rve.png").is_file() and "USO − SFT Overall" in (out / "toy_rve.md").read_text()
    results = outputs[1]
    assert set(results["conditions"]) == {"exact targets", "40% flawed targets", "unseen rule: semantic inference"}
    for name, section in results["conditions"].items():
        for objective in ("sft", "rwr", "uso"):
            for metric, value in section["objectives"][objective].items():
                if isinstance(value, dict) and "mean" in value:
                    assert math.isfinite(value["mean"]), (name, objective, metric)
        other = outputs[2]["conditions"][name]
        assert [(r["name"], r["scores"]) for r in section["runs"]] == [(r["name"], r["scores"]) for r in other["runs"]]
        assert section["reward_gradient_share"] == other["reward_gradient_share"]


def test_spearman_matches_the_definition():
    from bench.toy_rve.models import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894427, abs=1e-5)  # ties get average ranks


def test_negative_edits_are_what_their_kind_says():
    import random

    from bench.toy_rve.models import STAGE1_NEGATIVES, STAGE2_NEGATIVES
    from bench.toy_rve.task import negative_edit

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


def test_conditions_flaw_exactly_their_share_and_hide_the_unseen_rule():
    from bench.toy_rve.conditions import EXACT, FLAWED, UNSEEN, flaw_counts, training_targets

    samples = make_samples(40, "train", 0)
    exact = training_targets(samples, EXACT)
    assert flaw_counts(exact) == {"correct": 40}
    assert all(torch.equal(frames, target_of(s)) for s, (frames, _) in zip(samples, exact.values(), strict=True))
    flawed = training_targets(samples, FLAWED)
    assert sum(n for kind, n in flaw_counts(flawed).items() if kind != "correct") == 16  # 40 % of 40
    assert set(flaw_counts(flawed)) <= {"correct", "partial", "wrong rule", "unchanged"}
    for sample in samples:
        frames, kind = flawed[sample.id]
        assert torch.equal(frames, target_of(sample)) == (kind == "correct")
    again = training_targets(samples, FLAWED)  # deterministic: one dataset per condition
    assert all(torch.equal(again[i][0], flawed[i][0]) for i in flawed)
    unseen = training_targets(samples, UNSEEN)
    for sample in samples:
        frames, kind = unseen[sample.id]
        if sample.category == UNSEEN.unseen_category:
            assert kind == "unchanged" and torch.equal(frames, render(sample.scene))
        else:
            assert kind == "correct"


def test_condition_rejects_impossible_settings():
    from bench.toy_rve.conditions import Condition

    with pytest.raises(ValueError, match="'bad': flawed_fraction must be in \\[0, 1\\], got 1.5"):
        Condition("bad", flawed_fraction=1.5)
    with pytest.raises(ValueError, match="flaw_kinds must be a non-empty subset"):
        Condition("bad", flaw_kinds=("blurred",))
    with pytest.raises(ValueError, match="unseen_category must be one of"):
        Condition("bad", unseen_category="chemistry")


def test_verdict_needs_more_than_twice_the_larger_seed_std():
    from bench.toy_rve.experiment import verdict

    def row(mean, std):
        return {"Overall": {"mean": mean, "std": std}}

    assert verdict({"uso": row(4.2, 0.01), "sft": row(4.1, 0.04)})["uso_beats_sft"]  # +0.1 > 0.08
    assert not verdict({"uso": row(4.2, 0.06), "sft": row(4.1, 0.01)})["uso_beats_sft"]  # +0.1 < 0.12
    assert not verdict({"uso": row(4.0, 0.0), "sft": row(4.1, 0.0)})["uso_beats_sft"]


def _estimate_bank(count=2):
    from bench.toy_rve.models import Estimate

    bank = []
    for sample in make_samples(count, "eval", 0):
        edited = render(sample.scene) * 0.5 + target_of(sample) * 0.5
        bank.append(Estimate(sample, sample.instruction, edited, 0.3, score(sample, edited).metrics["EA"]))
    return bank


def test_estimate_alignment_reports_the_exact_direction_gain_on_estimates():
    from bench.toy_rve.models import estimate_alignment
    from bench.toy_rve.task import all_phrasings
    from revise_core.testing import tiny_vlm

    result = estimate_alignment(tiny_vlm(3, extra_text=tuple(all_phrasings())), _estimate_bank(),
                                lambda s, e: score(s, e).metrics["EA"])
    assert result["edits"] == 2 and -1.0 <= result["cosine_mean"] <= 1.0
    assert result["ea_gain_of_exact_step"] == pytest.approx(2.5, abs=1e-3)  # from half-way, half the rest


def test_estimate_stage_moves_the_critic_and_leaves_it_frozen():
    import math

    from bench.toy_rve.models import grade_on_estimates
    from bench.toy_rve.task import all_phrasings
    from revise_core.testing import tiny_vlm

    vlm = tiny_vlm(3, extra_text=tuple(all_phrasings()))
    before = {n: p.clone() for n, p in vlm.model.named_parameters()}
    report = grade_on_estimates(vlm, _estimate_bank(), steps=2, seed=0)
    assert report["estimate_steps"] == 2 and report["estimate_bank"] == 2
    assert math.isfinite(report["estimate_final_loss"])
    assert any(not torch.equal(before[n], p) for n, p in vlm.model.named_parameters())
    assert not any(p.requires_grad for p in vlm.model.parameters()) and not vlm.model.training
    with pytest.raises(ValueError, match="non-empty bank"):
        grade_on_estimates(vlm, [], steps=1, seed=0)


@pytest.mark.parametrize("preset", ["QUICK", "FULL"])
def test_plan_runs_covers_every_condition_and_refuses_repeated_sweep_points(preset):
    from dataclasses import replace

    from bench.toy_rve import experiment
    from bench.toy_rve.experiment import plan_runs

    config = getattr(experiment, preset)
    runs = plan_runs(config)
    seeds = len(config.seeds)
    for condition in config.conditions:
        mine = [r for r in runs if r.condition == condition.name]
        for objective in ("sft", "rwr", "uso"):
            main = [r for r in mine if r.objective == objective and r.critic == "shaped"
                    and r.reason_weight == config.reason_weight and r.sigma_max == 0.5]
            assert sorted(r.seed for r in main) == sorted(config.seeds)
        swept = condition.name == config.sweep_condition
        assert len([r for r in mine if r.critic == "renders"]) == (seeds if swept else 0)
        assert len([r for r in mine if r.reason_weight != config.reason_weight]) == (len(config.lambdas) if swept else 0)
        assert len([r for r in mine if r.sigma_max != 0.5]) == (len(config.sigma_maxes) if swept else 0)
    assert seeds >= 5  # sft / rwr / uso over at least five seeds
    with pytest.raises(ValueError, match="must not repeat the main runs' values"):
        plan_runs(replace(config, lambdas=(config.reason_weight,)))


def test_executor_runs_in_process_at_one_thread_and_refuses_zero():
    from bench.toy_rve.experiment import executor

    before = torch.get_num_threads()
    with executor(1) as pool:
        assert pool.submit(lambda a, b=0: (a + b, torch.get_num_threads()), 2, b=3).result() == (5, 1)
    assert torch.get_num_threads() == before  # a worker's thread count, then the caller's again
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        executor(0)


def test_plan_runs_refuses_conditions_that_share_a_data_folder():
    from dataclasses import replace

    from bench.toy_rve.conditions import Condition
    from bench.toy_rve.experiment import QUICK, plan_runs

    with pytest.raises(ValueError, match="distinct data folders"):
        plan_runs(replace(QUICK, conditions=(Condition("a b"), Condition("a-b"))))
    with pytest.raises(ValueError, match="distinct data folders"):
        plan_runs(replace(QUICK, conditions=(Condition("critic pool"),)))


def test_flawed_share_counts_only_the_rules_the_generator_sees():
    from bench.toy_rve.conditions import Condition, flaw_counts, training_targets

    samples = make_samples(40, "train", 0)  # 10 per rule
    counts = flaw_counts(training_targets(samples, Condition("mixed", flawed_fraction=0.5,
                                                             unseen_category="temporal")))
    assert counts["correct"] == 15  # half of the 30 eligible targets flawed; the 10 unseen ones unchanged
    assert sum(counts.values()) == 40


def test_summarize_condition_puts_each_run_in_its_row():
    from bench.toy_rve.conditions import UNSEEN
    from bench.toy_rve.experiment import METRICS, QUICK, RENDER_CRITIC_ROW, Run, summarize_condition
    from bench.toy_rve.task import CATEGORIES

    def run(objective, seed, overall, **kwargs):
        scores = {m: overall for m in METRICS} | {"per_category": {c: overall for c in CATEGORIES}}
        return Run(f"{objective}-{seed}-{overall}", objective, seed, condition=UNSEEN.name, scores=scores, **kwargs)

    runs = [run("sft", s, 4.0 + s / 100) for s in QUICK.seeds] + [run("rwr", s, 3.0) for s in QUICK.seeds]
    runs += [run("uso", s, 5.0 + s / 100) for s in QUICK.seeds]
    runs += [run("uso", s, 6.0, critic="renders") for s in QUICK.seeds]
    runs += [run("uso", 0, 7.0, reason_weight=4.0), run("uso", 0, 8.0, sigma_max=0.9)]
    section = summarize_condition(QUICK, UNSEEN, {"flaws": {}, "pretrain_seconds": 0.0, "pretrained": {}}, runs, {})
    rows = section["objectives"]
    assert rows["sft"]["Overall"]["mean"] == pytest.approx(4.02) and rows["rwr"]["Overall"]["mean"] == 3.0
    assert rows["uso"]["per_seed_overall"] == [5.0, 5.01, 5.02, 5.03, 5.04]  # no sweep or ablation run inside
    assert rows[RENDER_CRITIC_ROW]["Overall"]["mean"] == 6.0
    assert [r["scores"]["Overall"] for r in section["lambda_sweep"]] == [5.0, 7.0]  # seed 0's main run, λ = 4
    assert [r["sigma_max"] for r in section["sigma_sweep"]] == [0.5, 0.9]
    assert section["verdict"]["uso_beats_sft"] and section["verdict"]["uso_minus_sft"] == pytest.approx(1.0)


def test_followup_refuses_what_it_cannot_pair(tmp_path, capsys):
    import json
    from dataclasses import asdict

    from bench.toy_rve.experiment import QUICK
    from bench.toy_rve.followup import main, run_followup

    results = {"preset": "quick", "config": json.loads(json.dumps(asdict(QUICK))), "conditions": {"exact targets": {}}}
    with pytest.raises(ValueError, match=r"unknown condition\(s\) \['nope'\]"):
        run_followup(results, tmp_path, sigma_max=0.9, reason_weight=1.0, conditions=["nope"], workers=1)
    changed = {**results, "config": {**results["config"], "seeds": [0]}}
    with pytest.raises(ValueError, match="preset has changed"):
        run_followup(changed, tmp_path, sigma_max=0.9, reason_weight=1.0, conditions=["exact targets"], workers=1)
    path = tmp_path / "toy_rve.json"
    path.write_text(json.dumps(results))
    assert main(["--workdir", str(tmp_path / "empty"), "--results", str(path)]) == 2
    assert capsys.readouterr().err.strip().endswith("holds no generators: give the --workdir of a finished "
                                                    "`python -m bench.toy_rve` run")
