"""Toy-RVE's ideal critic: the positive control of the reward path, entering USO through the trainer's own step.

It never reads target frames: it recognises the scene and time of each source frame and measures the edited
frames (coverage of the rule's box by the object's colour, spill outside it) against what the rule asks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from test_golden_losses import SEED, _write_lossless, frozen_models

from bench.toy_rve.ideal_critic import IdealCritic, category_of
from bench.toy_rve.task import make_samples, negative_edit, render


def _quantised(frames: torch.Tensor) -> torch.Tensor:
    return (frames * 255).round() / 255  # what a video file gives back


def test_the_ideal_critic_ranks_the_rule_above_every_wrong_edit_and_an_unedited_video_at_zero():
    samples = make_samples(8, "train", 0)
    critic = IdealCritic([s.scene for s in samples])
    rng = random.Random(0)
    for sample in samples:
        source, target = _quantised(render(sample.scene)), render(sample.scene, category=sample.category)
        with torch.no_grad():
            scores = {kind: float(critic.relative(source, edit, sample.instruction)[0])
                      for kind, edit in [("target", target), ("partial", negative_edit(sample, "partial", rng)),
                                         ("wrong rule", negative_edit(sample, "wrong rule", rng)),
                                         ("unchanged", source)]}
        assert scores["unchanged"] == 0.0
        # Δ_base is the source's own rule error, so a source that half satisfies the rule leaves less to gain
        assert scores["target"] > 2 and scores["target"] > max(scores["partial"], scores["wrong rule"]) + 5, scores
        assert float(critic.rule_error(source, target, sample.instruction)) < 0.01
    with pytest.raises(ValueError, match="not a Toy-RVE instruction"):
        category_of("make it red")


@pytest.mark.parametrize("category", ["physical causality", "semantic inference", "temporal", "spatial"])
def test_gradient_ascent_on_its_verdict_carries_out_every_rule_from_the_unedited_video(category):
    """Climbing Δ from the source reaches the rule's edit: the object recoloured, moved or melted. A critic
    whose gradient leads nowhere from an unedited video (moment features of a background mask did, for every
    rule that moves the object) could not be USO's positive control."""
    sample = next(s for s in make_samples(8, "train", 0) if s.category == category)
    critic = IdealCritic([sample.scene])
    source = _quantised(render(sample.scene))
    edited = source.clone().requires_grad_(True)
    for _ in range(300):
        (grad,) = torch.autograd.grad(critic.verdict(source, edited, sample.instruction).delta, edited)
        with torch.no_grad():
            edited += 0.01 * grad.sign()
            edited.clamp_(0, 1)
    target = render(sample.scene, category=sample.category)
    assert float(critic.rule_error(source, edited.detach(), sample.instruction)) < 0.1 * float(
        critic.rule_error(source, source, sample.instruction))
    assert (edited.detach() - target).abs().mean() < 0.3 * (source - target).abs().mean()


# --- inside USO ----------------------------------------------------------------------------------------

def _toy_data(folder: Path):
    sample = next(s for s in make_samples(8, "train", 0) if s.category == "spatial")
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    _write_lossless(folder / "videos" / "src.avi", render(sample.scene))
    _write_lossless(folder / "videos" / "tgt.avi", render(sample.scene, category=sample.category))
    manifest = folder / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "toy-0", "source": "videos/src.avi", "target": "videos/tgt.avi",
                                    "instruction": sample.instruction}) + "\n", encoding="utf-8")
    return manifest, sample


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    manifest, sample = _toy_data(tmp_path_factory.mktemp("toy-data"))
    return {"manifest": manifest, "sample": sample, "frozen": frozen_models()}


def _trainer(toy, out: Path, *, objective: str, weight: float, steps: int):
    """A USOTrainer on the kit's tiny models whose critic is the ideal one (set after setup, as a judge)."""
    from revise_core.model_sets import EditModels
    from revise_core.testing import tiny_connector, tiny_dit
    from trainer.config import USOConfig
    from trainer.loop import USOTrainer

    models = EditModels(dit=tiny_dit(SEED), connector=tiny_connector(SEED + 4), **toy["frozen"])
    config = USOConfig(manifest=str(toy["manifest"]), output_dir=str(out), objective=objective, num_frames=5,
                       height=32, width=32, global_batch=1, steps=steps, checkpoint_every=100, lr=1e-3,
                       decode_latent_frames=1, vlm_frames=4, max_text_len=32, sigma_max=1.0, reason_weight=weight,
                       tensorboard=False, device="cpu", dtype="fp32", frozen_dtype="fp32", seed=SEED)
    trainer = USOTrainer(config, models=models)
    trainer.setup()
    trainer.critic = IdealCritic([toy["sample"].scene])
    return trainer


def _parameters(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.generator.named_parameters()}


def test_at_lambda_zero_uso_with_the_ideal_critic_is_sft_bit_for_bit(toy, tmp_path):
    sft = _trainer(toy, tmp_path / "sft", objective="sft", weight=0.0, steps=2)
    uso = _trainer(toy, tmp_path / "uso", objective="uso", weight=0.0, steps=2)
    records = {"sft": sft.train(), "uso": uso.train()}
    assert all(r["triggered"] for r in records["uso"])  # the critic ran at every step, and changed nothing
    assert [r["loss"] for r in records["sft"]] == [r["loss"] for r in records["uso"]]
    after_sft, after_uso = _parameters(sft), _parameters(uso)
    assert all(torch.equal(after_sft[name], after_uso[name]) for name in after_sft)


def _rule_error_on_the_first_batch(trainer) -> float:
    """The ideal critic's rule error on the decoded one-step estimate of step 0's sample (its σ and noise)."""
    from revise_core import losses
    from trainer.step import decode_estimate

    cfg = trainer.config
    triplet = trainer.triplets[0]
    feats = trainer.features.get(triplet)
    rng = trainer.sample_generator(0, 0)
    sigma = losses.sample_sigmas(1, cfg.timestep_shift, rng)
    noise = torch.randn(feats.target_latents.shape, generator=rng)
    with torch.no_grad():
        z_t = losses.noisy_latents(feats.target_latents, noise, sigma)
        velocity = trainer.model(z_t, sigma, feats.source_latents, feats.vlm_states, feats.text_tokens, False,
                                 feats.vlm_tokens)
        frames, index = decode_estimate(trainer.models.vae, z_t, sigma, velocity,
                                        latent_frames=cfg.decode_latent_frames)
        return float(trainer.critic.rule_error(feats.source_frames[index], frames, triplet.instruction))


def test_one_step_with_the_reward_lowers_the_rule_error_more_than_one_without(toy, tmp_path):
    errors = {}
    for weight in (0.0, 10.0):
        trainer = _trainer(toy, tmp_path / f"w{weight}", objective="uso", weight=weight, steps=1)
        before = _rule_error_on_the_first_batch(trainer)
        trainer.train()
        errors[weight] = (before, _rule_error_on_the_first_batch(trainer))
    assert errors[0.0][0] == errors[10.0][0]  # the same start
    assert errors[10.0][1] < errors[0.0][1], errors
