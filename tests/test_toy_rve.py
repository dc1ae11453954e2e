"""Toy-RVE task and oracle (the experiment's claim lives in bench/results/toy_rve.json, not in tests)."""

from __future__ import annotations

import pytest
import torch

from bench.toy_rve.oracle import score, target_of
from bench.toy_rve.task import CATEGORIES, PHRASINGS, background_of, make_samples, render


def test_splits_hold_out_phrasings_and_backgrounds():
    train, held_out = make_samples(40, "train", 0), make_samples(20, "eval", 0)
    assert {s.category for s in train} == set(CATEGORIES) and len(CATEGORIES) >= 4
    assert not {s.instruction for s in train} & {s.instruction for s in held_out}
    assert not {s.scene.background for s in train} & {s.scene.background for s in held_out}
    assert all(s.instruction in PHRASINGS[s.category][1] for s in held_out)


def test_evaluation_scenes_can_take_the_training_phrasings_without_changing_a_scene():
    held_out, reworded = make_samples(20, "eval", 0), make_samples(20, "eval", 0, phrasings="training")
    assert [s.scene for s in held_out] == [s.scene for s in reworded]
    assert all(s.instruction in PHRASINGS[s.category][0] for s in reworded)
    with pytest.raises(ValueError, match="phrasings must be one of"):
        make_samples(4, "eval", 0, phrasings="paraphrased")


def test_every_background_patch_of_a_row_differs_so_the_source_can_be_placed_by_content():
    background = background_of(make_samples(1, "train", 0)[0].scene)  # [H, W, 3]
    patches = background.unfold(0, 4, 4).unfold(1, 4, 4).mean((-1, -2))  # [8, 8, 3]: one colour per 4x4 patch
    along_a_row = (patches[:, 1:] - patches[:, :-1]).abs().amax(-1)
    assert along_a_row.min() > 0.02


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
        assert (out / "toy_rve.png").is_file() and "## Sensitivity checks" in (out / "toy_rve.md").read_text()
    results = outputs[1]
    assert set(results["conditions"]) == {"exact targets", "40% flawed targets", "unseen rule: semantic inference"}
    assert set(results["sensitivity"]) == {"oracle_through_vae", "sft_gain"}
    for name, section in results["conditions"].items():
        assert set(section["objectives"]) == {"sft", "rwr", "uso, ideal critic", "uso, renders critic",
                                              "uso, shaped critic", "uso, estimates critic"}
        for row, values in section["objectives"].items():
            for metric in ("EA", "PC", "GN", "GR", "Overall"):
                assert math.isfinite(values[metric]["mean"]), (name, row, metric)
        assert set(section["diagnostics"]) == {"ideal", "renders", "shaped", "estimates"}
        assert all(math.isfinite(d["norm_ratio"]) for d in section["diagnostics"].values())
        other = outputs[2]["conditions"][name]
        assert [(r["name"], r["scores"]) for r in section["runs"]] == [(r["name"], r["scores"]) for r in other["runs"]]
        assert section["diagnostics"] == other["diagnostics"]
    assert set(results["conditions"]["unseen rule: semantic inference"]["sweeps"]) == {"reason_weight", "sigma_max"}


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


def test_toy_vae_keeps_every_pixel_and_the_generator_has_trainable_init():
    from bench.toy_rve.models import fit_latent_statistics, toy_generator, toy_vae
    from revise_core import vae as vae_ops

    vae = toy_vae()
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae_ops.encode(vae, video)
        decoded = vae_ops.decode(vae, latents, clamp=False)
    assert tuple(latents.shape) == (1, 3, 5, 32, 32)  # no down-sampling: the latent is the pixels
    assert (latents - video).abs().max() < 1e-3
    assert (decoded - video).abs().max() < 2e-3
    report = fit_latent_statistics(vae, make_samples(4, "train", 0))
    assert report["max_error"] < 1e-3 and len(vae.config.latents_std) == 3
    dit, connector = toy_generator(0)
    norms = [m.weight for m in dit.modules() if type(m).__name__ in ("RMSNorm", "LayerNorm") and m.weight is not None]
    assert norms and all(torch.equal(w, torch.ones_like(w)) for w in norms)  # library init, not the test kit's noise
    tokens = [b.flatten() for b in connector.boundary.buffers()]
    assert all(not torch.allclose(a, b) for i, a in enumerate(tokens) for b in tokens[i + 1:])


def test_the_placed_connector_tells_equal_source_patches_apart_with_the_release_weights():
    from bench.toy_rve.models import toy_generator

    _, plain = toy_generator(0)
    _, placed = toy_generator(0, placed_source=True)
    assert plain.state_dict().keys() == placed.state_dict().keys()  # a computed code: no new weights
    uniform = torch.full((1, 3, 5, 32, 32), 0.3)  # every source patch looks the same
    with torch.no_grad():
        same, distinct = plain.adapt_video(uniform)[0], placed.adapt_video(uniform)[0]
    assert torch.allclose(same, same[:1].expand_as(same), atol=1e-5)
    gaps = (distinct[:, None] - distinct[None]).abs().sum(-1) + torch.eye(len(distinct)) * 1e9
    assert gaps.min() > 0.5  # 320 tokens, every one distinct


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


def test_paired_verdict_needs_more_than_twice_the_std_of_the_paired_difference():
    from bench.toy_rve.statistics import paired_verdict

    def row(values, seeds=(0, 1, 2)):
        return {"per_seed_overall": list(values), "seeds": list(seeds)}

    sft = row([4.0, 4.5, 5.0])  # a seed spread of 0.5: an unpaired test could not see a +0.1
    assert paired_verdict(row([4.1, 4.61, 5.09]), sft)["beats_sft"]  # +0.1 ± 0.01
    loose = paired_verdict(row([4.3, 4.4, 5.0]), sft)  # +0.067 ± 0.153
    assert not loose["beats_sft"] and loose["paired_differences"] == pytest.approx([0.3, -0.1, 0.0])
    with pytest.raises(ValueError, match="the same seeds"):
        paired_verdict(row([4.0, 4.0, 4.0], seeds=(0, 1, 3)), sft)


def test_learned_share_is_the_ratio_of_paired_gains_with_a_bootstrap_interval():
    from bench.toy_rve.statistics import learned_share

    share = learned_share([4.0, 4.2, 4.4, 4.1, 4.3], [5.0, 5.2, 5.4, 5.1, 5.3], [4.5, 4.6, 4.9, 4.6, 4.8], draws=500)
    assert share["share"] == pytest.approx(0.48)  # gains +0.5, +0.4, +0.5, +0.5, +0.5 of +1.0 each
    low, high = share["interval_95"]
    assert 0.4 <= low <= share["share"] <= high <= 0.5 and share["draws_with_a_positive_ideal_gain"] == 500


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
def test_plan_runs_covers_every_condition_arm_and_sweep_point_over_every_seed(preset):
    from dataclasses import replace

    from bench.toy_rve import config as presets
    from bench.toy_rve.config import IDEAL_CRITIC, RWR_CRITIC
    from bench.toy_rve.experiment import plan_runs

    config = getattr(presets, preset)
    runs = plan_runs(config)
    assert len(config.seeds) >= 5
    arms = [("sft", None), ("uso", IDEAL_CRITIC)] + [("uso", c) for c in config.learned_critics]
    arms += [("rwr", RWR_CRITIC)] if config.rwr else []
    for condition in config.conditions:
        mine = [r for r in runs if r.condition == condition.name]
        for objective, critic in arms:
            main = [r for r in mine if r.objective == objective and r.critic == critic
                    and r.reason_weight == config.reason_weight and r.sigma_max == config.sigma_max]
            assert sorted(r.seed for r in main) == sorted(config.seeds), (condition.name, objective, critic)
        swept = condition.name == config.sweep_condition
        for field, values in (("reason_weight", config.lambdas), ("sigma_max", config.sigma_maxes)):
            for value in values:  # every sweep point over every seed, all with the ideal critic
                point = [r for r in mine if getattr(r, field) == value]
                assert sorted(r.seed for r in point) == (sorted(config.seeds) if swept else [])
                assert all(r.critic == IDEAL_CRITIC for r in point)
    assert len({(r.condition, r.name) for r in runs}) == len(runs)
    with pytest.raises(ValueError, match="must not repeat the main runs' values"):
        plan_runs(replace(config, lambdas=(config.reason_weight,)))
    with pytest.raises(ValueError, match="learned_critics must be among"):
        plan_runs(replace(config, learned_critics=("oracle",)))


def test_executor_runs_in_process_at_one_thread_and_refuses_zero():
    from bench.toy_rve.workers import executor

    before = torch.get_num_threads()
    with executor(1) as pool:
        assert pool.submit(lambda a, b=0: (a + b, torch.get_num_threads()), 2, b=3).result() == (5, 1)
    assert torch.get_num_threads() == before  # a worker's thread count, then the caller's again
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        executor(0)


def test_plan_runs_refuses_conditions_that_share_a_data_folder():
    from dataclasses import replace

    from bench.toy_rve.conditions import Condition
    from bench.toy_rve.config import QUICK
    from bench.toy_rve.experiment import plan_runs

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


def test_summarize_condition_puts_each_run_in_its_row_and_sweep_point():
    from dataclasses import replace

    from bench.toy_rve.conditions import UNSEEN
    from bench.toy_rve.config import FULL, IDEAL_CRITIC, IDEAL_ROW, Run
    from bench.toy_rve.summary import METRICS, summarize_condition
    from bench.toy_rve.task import CATEGORIES

    config = replace(FULL, learned_critics=("renders",), lambdas=(4.0,), sigma_maxes=(0.9,), reason_weight=1.0)

    def run(objective, seed, overall, **kwargs):
        scores = {m: overall for m in METRICS} | {"per_category": {c: overall for c in CATEGORIES}}
        return Run(f"{objective}-{seed}-{overall}", objective, seed, condition=UNSEEN.name, scores=scores,
                   triggered=0.5, **kwargs)

    seeds = config.seeds
    runs = [run("sft", s, 4.0 + s / 100) for s in seeds] + [run("rwr", s, 3.0, critic="shaped") for s in seeds]
    runs += [run("uso", s, 5.0 + s / 100 + (s % 2) / 1000, critic=IDEAL_CRITIC) for s in seeds]
    runs += [run("uso", s, 4.5 + s / 100, critic="renders") for s in seeds]
    runs += [run("uso", s, 7.0, critic=IDEAL_CRITIC, reason_weight=4.0) for s in seeds]
    runs += [run("uso", s, 3.5, critic=IDEAL_CRITIC, sigma_max=0.9) for s in seeds]
    section = summarize_condition(config, UNSEEN, {}, runs, {})
    rows = section["objectives"]
    assert set(rows) == {"sft", "rwr", IDEAL_ROW, "uso, renders critic"}  # no sweep run inside a row
    assert rows["sft"]["Overall"]["mean"] == pytest.approx(4.02) and rows["rwr"]["Overall"]["mean"] == 3.0
    assert rows["sft"]["triggered"] is None and rows[IDEAL_ROW]["triggered"]["mean"] == 0.5
    assert section["comparisons"][IDEAL_ROW]["beats_sft"] and not section["comparisons"]["rwr"]["beats_sft"]
    assert section["learned_share"]["renders"]["share"] == pytest.approx(0.5, abs=1e-2)
    lam = section["sweeps"]["reason_weight"]
    assert [p["value"] for p in lam] == [1.0, 4.0] and lam[1]["vs_sft"]["mean"] == pytest.approx(2.98)
    sigma = section["sweeps"]["sigma_max"]
    assert [p["value"] for p in sigma] == [0.5, 0.9] and not sigma[1]["vs_sft"]["beats_sft"]
    no_win = [r for r in runs if not (r.critic == IDEAL_CRITIC and r.reason_weight == 1.0 and r.sigma_max == 0.5)]
    no_win += [run("uso", s, 4.0 + s / 100 + (0.01 if s % 2 else -0.01), critic=IDEAL_CRITIC) for s in seeds]
    assert summarize_condition(config, UNSEEN, {}, no_win, {})["learned_share"] == {"renders": None}


def test_command_line_refuses_a_main_point_that_a_sweep_repeats(capsys):
    from bench.toy_rve.__main__ import main

    assert main(["--full", "--reason-weight", "3"]) == 2  # λ 3 is a point of the full preset's sweep
    assert capsys.readouterr().err.strip() == ("error: the sweeps must not repeat the main runs' values (λ 3.0, "
                                               "σ_max 0.5): those points come from the main runs")


def test_command_line_conditions_replace_the_presets_and_keep_a_sweep_on_one_of_them(capsys, monkeypatch):
    import bench.toy_rve.__main__ as cli

    planned = {}

    def plan(config):  # stop after the plan: the chosen conditions and where the sweeps run
        planned.update(conditions=[c.name for c in config.conditions], sweep=config.sweep_condition,
                       critics=config.learned_critics, rwr=config.rwr)
        raise ValueError("planned")

    monkeypatch.setattr(cli, "plan_runs", plan)
    assert cli.main(["--full", "--conditions", "exact", "flawed", "exact"]) == 2
    assert planned == {"conditions": ["exact targets", "40% flawed targets"], "sweep": "exact targets",
                       "critics": ("renders", "shaped", "estimates"), "rwr": True}
    assert cli.main(["--quick", "--conditions", "unseen"]) == 2
    assert planned["conditions"] == ["unseen rule: semantic inference"] and planned["critics"] == ()
    assert cli.main(["--quick", "--conditions", "unseen", "--learned-critics", "estimates", "--rwr"]) == 2
    assert (planned["critics"], planned["rwr"]) == (("estimates",), True)
    assert capsys.readouterr().err.strip().endswith("error: planned")


def test_an_experiment_given_its_work_folder_again_reuses_every_recorded_stage_and_run(tmp_path):
    """The full preset takes hours: an interrupted invocation resumes from the work folder's records, with the
    numbers a fresh computation gives; a changed setting computes again."""
    from dataclasses import replace

    from bench.toy_rve.conditions import EXACT
    from bench.toy_rve.config import SMOKE
    from bench.toy_rve.experiment import run_experiment

    config = replace(SMOKE, train_samples=4, eval_samples=2, sample_steps=1, diagnostic_samples=1, seeds=(0,),
                     conditions=(EXACT,), learned_critics=(), rwr=False, sweep_condition=EXACT.name,
                     lambdas=(0.25,), sigma_maxes=())
    first = run_experiment(config, tmp_path, workers=1)
    assert (first["reused_runs"], first["runs"]) == (0, 3)
    (tmp_path / "features").rename(tmp_path / "features-moved")  # a reused run computes nothing, not even features
    again = run_experiment(config, tmp_path, workers=1)
    assert (again["reused_runs"], again["runs"]) == (3, 3)
    assert not (tmp_path / "features").exists()
    section, recorded = first["conditions"]["exact targets"], again["conditions"]["exact targets"]
    assert [(r["name"], r["scores"]) for r in section["runs"]] == [(r["name"], r["scores"]) for r in recorded["runs"]]
    assert section["diagnostics"] == recorded["diagnostics"] and first["pretrained"] == again["pretrained"]


def test_records_are_found_again_under_the_settings_that_decide_them_only(tmp_path):
    from dataclasses import replace

    from bench.toy_rve.config import SMOKE
    from bench.toy_rve.records import Records

    records = Records(SMOKE, tmp_path)
    records.save("run", {"scores": {"EA": 1.5}}, seed=0)
    assert records.load("run", seed=0) == {"scores": {"EA": 1.5}} and records.load("run", seed=1) is None
    # which runs an experiment makes does not change a run's numbers: more seeds, other sweeps, fewer conditions
    chosen = replace(SMOKE, seeds=(0, 1, 2), lambdas=(), sigma_maxes=(3.0,), conditions=SMOKE.conditions[:1], rwr=False)
    assert Records(chosen, tmp_path).load("run", seed=0) == {"scores": {"EA": 1.5}}
    # every other setting does
    for changed in (replace(SMOKE, finetune_steps=3), replace(SMOKE, finetune_lr=0.5), replace(SMOKE, guidance=1.0)):
        assert Records(changed, tmp_path).load("run", seed=0) is None


def test_a_broken_record_is_refused_with_its_path(tmp_path):
    from bench.toy_rve.config import SMOKE
    from bench.toy_rve.records import Records

    records = Records(SMOKE, tmp_path)
    records.save("run", {"scores": {"EA": 1.5}}, seed=0)
    (path,) = (tmp_path / "records").iterdir()
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path.name}: not a Toy-RVE record"):
        records.load("run", seed=0)


def test_the_command_line_sets_sweeps_their_condition_and_reports_records_only(tmp_path, capsys):
    from bench.toy_rve.__main__ import main

    # the sweeps of the full preset in the unseen-rule condition, its other arms left out, from a folder with no
    # records: refused at once, naming what is missing
    argv = ["--quick", "--conditions", "exact", "unseen", "--sweep-condition", "unseen", "--lambdas", "1", "30",
            "--sigma-maxes", "0.9", "--records-only", "--workdir", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    # 1 stage, 2 conditions x 2 arms x 5 seeds, 3 sweep points x 5 seeds, 2 diagnostics
    assert "has no record of 38 of this experiment's stages, runs and diagnostics, such as generators;" in error
    assert main([*argv[:4], "--sweep-condition", "flawed", "--workdir", str(tmp_path)]) == 2
    assert "--sweep-condition flawed is not among the conditions run" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: records of which folder?
        main(["--quick", "--records-only"])
    assert "--records-only reports a work folder's records: give it with --workdir" in capsys.readouterr().err
