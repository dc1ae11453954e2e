"""The Toy-RVE experiment: in every condition (what the generator's training targets look like), pre-train a
tiny generator with SFT, fine-tune it with sft / rwr / uso (same steps, data order, noise and seeds), sweep λ
and σ_max where the reward has something to add, and score edits of held-out samples with the oracle.

Everything goes through the project's own pieces: the USO trainer (`trainer.loop.USOTrainer`, fed a manifest
of mp4 files and in-memory models), the editor (`ReviseEditor`) for evaluation, the SelfCritic as the reward.

The work runs in stages whose products are files in the work folder (frozen VAE, critics, pre-trained
generators, feature cache), so that independent stages run in parallel processes: the toy's models are too
small for a second thread to speed up one process, while two one-thread processes use both cores.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from revise_core import checkpoints as ckpt
from revise_core import losses
from revise_core import vae as vae_ops
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.sampler import SamplerConfig
from revise_core.testing import tiny_text_encoder, tiny_vlm
from revise_core.video import from_model_space, to_model_space, write_video
from trainer.config import USOConfig
from trainer.loop import USOTrainer
from trainer.step import decode_estimate, sample_loss

from . import models as toy_models
from .conditions import EXACT, FLAWED, FLAWED_20, UNSEEN, Condition, flaw_counts, training_targets
from .ideal_critic import IdealCritic
from .oracle import score as oracle_score
from .task import CATEGORIES, Sample, all_phrasings, make_samples, render

logger = logging.getLogger(__name__)
METRICS = ("EA", "PC", "GN", "GR", "Overall")
OBJECTIVES = ("sft", "rwr", "uso")
CRITICS = ("renders", "shaped", "estimates")
MAIN_CRITIC = "shaped"
RENDER_CRITIC_ROW = "uso, render-trained critic"
# The positive control (ideal_critic.py): a rule-level judge that never reads target frames, in every condition.
IDEAL_CRITIC = "ideal"
IDEAL_CRITIC_ROW = "uso, ideal critic"
RESERVED_DATA = ("critic-pool", "eval-bank")  # data folders of the estimate stage


@dataclass
class ToyConfig:
    train_samples: int = 48
    eval_samples: int = 12
    vae_steps: int = 150
    critic_steps: int = 10000
    critic_stage1_fraction: float = 0.45  # the Yes/No curriculum breaks symmetry after about 4,500 steps
    critic_graded_steps: int = 2000
    critic_shaped_steps: int = 600
    critic_region_weight: float = 0.0
    critic_direction_weight: float = 1.0
    critic_estimate_steps: int = 300
    estimate_bank: int = 64
    pretrain_steps: int = 800
    finetune_steps: int = 60
    global_batch: int = 4
    pretrain_lr: float = 1e-3
    finetune_lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    conditions: tuple[Condition, ...] = (EXACT, FLAWED, UNSEEN)
    sweep_condition: str = UNSEEN.name  # the λ and σ_max sweeps run where the reward has something to add
    lambdas: tuple[float, ...] = (0.25, 4.0)  # besides reason_weight, which the main runs use
    sigma_maxes: tuple[float, ...] = (0.1, 0.9)  # besides 0.5
    # λ: the paper's 0.25 weighs its L_reason against its L_FM; the toy's losses have other scales (the
    # reward's gradient is about 0.05-0.08 of flow matching's at 0.25), and a probe on seeds 0-1 of the
    # unseen-rule condition (before the 5-seed runs) found 1 and 4 alike; the λ sweep shows the rest
    reason_weight: float = 1.0
    sample_steps: int = 8
    guidance: float = 2.0


QUICK = ToyConfig()
FULL = ToyConfig(train_samples=256, eval_samples=64, vae_steps=1500, critic_steps=20000, critic_stage1_fraction=0.36,
                 critic_graded_steps=8000, critic_shaped_steps=3000, critic_estimate_steps=3000, estimate_bank=1024,
                 pretrain_steps=5000, finetune_steps=400, global_batch=8,
                 conditions=(EXACT, FLAWED_20, FLAWED, UNSEEN), lambdas=(0.1, 0.25, 0.5, 2.0, 4.0),
                 sigma_maxes=(0.1, 0.3, 0.7, 0.9), sample_steps=25)
SMOKE = ToyConfig(train_samples=8, eval_samples=4, vae_steps=2, critic_steps=2, critic_graded_steps=2,
                  critic_shaped_steps=2, critic_estimate_steps=2, estimate_bank=4, pretrain_steps=2, finetune_steps=2,
                  global_batch=2, seeds=(0, 1), lambdas=(0.25,), sigma_maxes=(0.9,), sample_steps=2)


@dataclass
class Run:
    name: str
    objective: str
    seed: int
    condition: str = EXACT.name
    critic: str = MAIN_CRITIC  # which critic judges (uso) or weighs (rwr); see CRITICS
    reason_weight: float = 1.0
    sigma_max: float = 0.5
    scores: dict = field(default_factory=dict)
    triggered: float = float("nan")
    seconds: float = 0.0


class Experiment:
    """The frozen parts, data and generators of one work folder; each stage reads what earlier ones wrote."""

    def __init__(self, config: ToyConfig, workdir: Path) -> None:
        self.config, self.workdir = config, Path(workdir)
        self.train = make_samples(config.train_samples, "train", 0)
        self.eval = make_samples(config.eval_samples, "eval", 0)
        self.extra_text = tuple(all_phrasings())
        self.critics: dict[str, object] = {}
        self._frozen: dict | None = None

    # --- files ----------------------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    @property
    def frozen(self) -> dict:
        """The generator's frozen encoders: the trained toy VAE, and the test kit's umT5 and VLM at their
        initial weights. The critics are copies of that VLM taught to judge; the generator conditions on the
        untaught one, so that critics and generators can be prepared side by side."""
        if self._frozen is None:
            stored = ckpt.read_state_dict(self.path("frozen", "vae.safetensors"))
            vae = toy_models.toy_vae(1)
            vae.register_to_config(**stored.embedded_config())  # the latent statistics measured in training
            vae.load_state_dict(stored.tensors)
            self._frozen = {"vae": vae.eval().requires_grad_(False),
                            "text": tiny_text_encoder(2, extra_text=self.extra_text),
                            "vlm": tiny_vlm(3, extra_text=self.extra_text)}
        return self._frozen

    def critic(self, name: str):
        if name not in self.critics:
            vlm = tiny_vlm(3, extra_text=self.extra_text)
            vlm.model.load_state_dict(ckpt.read_state_dict(self.path("frozen", f"critic-{name}.safetensors")).tensors)
            self.critics[name] = vlm
        return self.critics[name]

    def save_critic(self, name: str, vlm) -> None:
        ckpt.save_safetensors(vlm.model.state_dict(), self.path("frozen", f"critic-{name}.safetensors"),
                              format_name="toy-rve.critic")
        self.critics[name] = vlm

    def generator(self, condition: Condition) -> tuple[torch.nn.Module, torch.nn.Module]:
        dit, connector = toy_models.toy_generator(0)
        state = ckpt.read_state_dict(self.path("generators", f"{condition.slug}.safetensors")).tensors
        dit.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("dit.")})
        connector.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("connector.")})
        return dit.eval(), connector.eval()

    def manifest(self, condition: Condition) -> Path:
        return self.path("data", condition.slug, "train.jsonl")

    # --- stage: the generator's side (VAE, data, pre-training) ---------------------------------------

    def prepare_generators(self) -> dict:
        """Train the VAE, write every condition's data, pre-train a generator per condition with SFT."""
        cfg, started = self.config, time.perf_counter()
        vae = toy_models.toy_vae(1)
        # the training scenes plus scenes on the held-out background (not the evaluation samples themselves)
        vae_pool = self.train + make_samples(cfg.train_samples, "eval", 100)
        vae_report = toy_models.train_vae(vae, vae_pool, steps=cfg.vae_steps, seed=0)
        ckpt.save_safetensors(vae.state_dict(), self.path("frozen", "vae.safetensors"), format_name="toy-rve.vae",
                              config={"latents_mean": list(vae.config.latents_mean),
                                      "latents_std": list(vae.config.latents_std)})
        report = {"vae": vae_report, "conditions": {}}
        for condition in cfg.conditions:
            flaws = self._write_manifest(condition, self.train, self.manifest(condition))
            begun = time.perf_counter()
            trainer = self._trainer(f"{condition.slug}/pretrain", *toy_models.toy_generator(0), objective="sft",
                                    steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, seed=1000, reason_weight=0.0,
                                    sigma_max=0.5, manifest=self.manifest(condition), critic=None)
            trainer.train()
            dit, connector = trainer.generator.dit, trainer.generator.connector
            state = {**{f"dit.{k}": v for k, v in dit.state_dict().items()},
                     **{f"connector.{k}": v for k, v in connector.state_dict().items()}}
            ckpt.save_safetensors(state, self.path("generators", f"{condition.slug}.safetensors"),
                                  format_name="toy-rve.generator")
            report["conditions"][condition.name] = {
                "flaws": flaws, "pretrain_seconds": time.perf_counter() - begun,
                "pretrained": self.evaluate(*self.generator(condition))}
        report["seconds"] = time.perf_counter() - started
        return report

    def _write_manifest(self, condition: Condition, samples: list[Sample], manifest: Path) -> dict[str, int]:
        folder = manifest.parent
        (folder / "videos").mkdir(parents=True, exist_ok=True)
        targets = training_targets(samples, condition)
        lines = []
        for sample in samples:
            # crf 0: nearly lossless, so the features see the rendered pixels
            write_video(folder / "videos" / f"{sample.id}_src.mp4", render(sample.scene), 8, crf=0)
            write_video(folder / "videos" / f"{sample.id}_tgt.mp4", targets[sample.id][0], 8, crf=0)
            lines.append({"id": sample.id, "source": f"videos/{sample.id}_src.mp4",
                          "target": f"videos/{sample.id}_tgt.mp4", "instruction": sample.instruction,
                          "subset": "RAVE", "category": sample.category})
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return flaw_counts(targets)

    # --- stage: the critics ---------------------------------------------------------------------------

    def prepare_critics(self) -> dict:
        """Critic stages 1-3 on renders ("renders"), then a copy regularised to judge the edited region with a
        gradient along the way to the correct edit ("shaped")."""
        cfg, started = self.config, time.perf_counter()
        vlm = tiny_vlm(3, extra_text=self.extra_text)  # the encoder VLM's architecture and initial weights
        report = toy_models.train_critic(vlm, steps=cfg.critic_steps, seed=0, stage1_fraction=cfg.critic_stage1_fraction)
        if cfg.critic_graded_steps:
            report |= toy_models.grade_critic(vlm, steps=cfg.critic_graded_steps, seed=5, oracle_ea=oracle_ea)
        self.save_critic("renders", vlm)
        shaped = copy.deepcopy(vlm)
        shaped_report = toy_models.grade_critic(shaped, steps=cfg.critic_shaped_steps, seed=21, oracle_ea=oracle_ea,
                                                region_weight=cfg.critic_region_weight,
                                                direction_weight=cfg.critic_direction_weight)
        self.save_critic("shaped", shaped)
        return {"renders": {**report, **self.critic_diagnostics(vlm)},
                "shaped": {**shaped_report, **self.critic_diagnostics(shaped)},
                "seconds": time.perf_counter() - started}

    def critic_diagnostics(self, vlm) -> dict:
        report = toy_models.critic_correlation(vlm, self.eval, oracle_ea)
        report["gradient_alignment"] = toy_models.gradient_alignment(vlm, self.eval, oracle_ea)
        return report

    def prepare_estimate_critic(self) -> dict:
        """Stage 4: a copy of the render-trained critic, graded on decoded one-step estimates of the first
        condition's pre-trained generator (critic-pool scenes, correct and flawed targets), and the alignment
        of every critic on held-out estimates."""
        started = time.perf_counter()
        cfg = self.config
        dit, connector = self.generator(cfg.conditions[0])
        pool = make_samples(cfg.estimate_bank // 4, "train", 300) + make_samples(cfg.estimate_bank // 4, "eval", 300)
        bank = self.estimates(dit, connector, pool, count=cfg.estimate_bank, seed=11, name="critic-pool")
        held_out = self.estimates(dit, connector, self.eval, count=2 * len(self.eval), seed=12, name="eval-bank")
        vlm = copy.deepcopy(self.critic("renders"))
        report = toy_models.grade_on_estimates(vlm, bank, steps=cfg.critic_estimate_steps, seed=13)
        self.save_critic("estimates", vlm)
        report |= self.critic_diagnostics(vlm)
        report["seconds"] = time.perf_counter() - started
        on_estimates = {name: toy_models.estimate_alignment(self.critic(name), held_out, oracle_ea) for name in CRITICS}
        return {"estimates": report, "alignment_on_estimates": on_estimates}

    def estimates(self, dit, connector, samples: list[Sample], *, count: int, seed: int, name: str) -> list:
        """`count` decoded one-step estimates of the generator on `samples` (targets correct or flawed, half and
        half, so that the bank spans good and bad edits), at σ uniform in [0.02, 0.9]."""
        condition = Condition(name, flawed_fraction=0.5)
        manifest = self.path("data", condition.slug, "train.jsonl")
        self._write_manifest(condition, samples, manifest)
        trainer = self._trainer(f"{name}-features", dit, connector, objective="sft", steps=1, lr=1e-3, seed=0,
                                reason_weight=0.0, sigma_max=0.5, manifest=manifest, critic=None)
        by_id = {s.id: s for s in samples}
        generator = torch.Generator().manual_seed(seed)
        bank = []
        with torch.no_grad():
            for index in range(count):
                triplet = trainer.triplets[index % len(trainer.triplets)]
                feats = trainer.features.get(triplet)
                sigma = torch.rand(1, generator=generator) * 0.88 + 0.02
                noise = torch.randn(feats.target_latents.shape, generator=generator)
                z_t = losses.noisy_latents(feats.target_latents, noise, sigma)
                velocity = trainer.model(z_t, sigma, feats.source_latents, feats.vlm_states, feats.text_tokens, False)
                edited, _ = decode_estimate(self.frozen["vae"], z_t, sigma, velocity)
                sample = by_id[triplet.id]
                bank.append(toy_models.Estimate(sample, triplet.instruction, edited, float(sigma),
                                                oracle_ea(sample, edited)))
        return bank

    # --- training -------------------------------------------------------------------------------------

    def _models(self, dit, connector) -> EditModels:
        return EditModels(dit=dit, vae=self.frozen["vae"], text=self.frozen["text"], vlm=self.frozen["vlm"],
                          connector=connector)

    def _trainer(self, name: str, dit, connector, *, objective: str, steps: int, lr: float, seed: int,
                 reason_weight: float, sigma_max: float, manifest: Path, critic: str | None) -> USOTrainer:
        config = USOConfig(
            manifest=str(manifest), output_dir=str(self.path("runs", name)),
            feature_cache=str(self.path("features")), num_frames=5, height=32, width=32, max_text_len=32,
            vlm_frames=4, objective=objective, reason_weight=reason_weight, sigma_max=sigma_max, critic_frames=4,
            cfg_drop=0.1, lr=lr, weight_decay=1e-4, grad_clip=1.0, global_batch=self.config.global_batch,
            steps=steps, seed=seed, device="cpu", checkpoint_every=steps, keep_checkpoints=1, tensorboard=False,
        )
        # SFT never calls the critic; the trainer then judges with the encoder VLM, which is never run
        learned = critic if critic and critic != IDEAL_CRITIC else None
        trainer = USOTrainer(config, models=self._models(dit, connector),
                             critic_vlm=self.critic(learned) if learned else None)
        trainer.setup()
        if critic == IDEAL_CRITIC:  # it judges in the learned critic's place, through the same step
            trainer.critic = IdealCritic([s.scene for s in self.train + self.eval])
        return trainer

    def reward_gradient_share(self, condition: Condition, *, critic: str, samples: int = 16, sigma: float = 0.3,
                              reason_weight: float = 0.25) -> dict:
        """How much of USO's update is the reward? On training samples at σ = `sigma` (<= σ_max), the gradient
        of λ·L_reason on the pre-trained generator's parameters against that of L_FM: norm ratio and cosine."""
        trainer = self._trainer(f"{condition.slug}/gradient-share-{critic}", *self.generator(condition),
                                objective="uso", steps=1, lr=1e-3, seed=0, reason_weight=reason_weight,
                                sigma_max=0.5, manifest=self.manifest(condition), critic=critic)
        parameters = [p for p in trainer.model.parameters() if p.requires_grad]
        ratios, cosines = [], []
        for index in range(samples):
            triplet = trainer.triplets[index % len(trainer.triplets)]
            feats = trainer.features.get(triplet)
            noise = torch.randn(feats.target_latents.shape, generator=torch.Generator().manual_seed(index))
            flat = {}
            for objective in ("sft", "uso"):  # uso − sft = the reward's share, with identical noise and σ
                result = sample_loss(trainer.model, trainer.models.vae, trainer.critic, feats, triplet.instruction,
                                     sigma=torch.tensor([sigma]), noise=noise, drop=False,
                                     config=replace(trainer.config, objective=objective),
                                     device=torch.device("cpu"), autocast_dtype=None)
                flat[objective] = torch.cat([g.flatten() for g in torch.autograd.grad(result.loss, parameters)])
            reward = flat["uso"] - flat["sft"]
            ratios.append((reward.norm() / flat["sft"].norm()).item())
            cosines.append(torch.nn.functional.cosine_similarity(reward, flat["sft"], dim=0).item())
        return {"sigma": sigma, "reason_weight": reason_weight, "samples": samples, "critic": critic,
                "norm_ratio_mean": sum(ratios) / samples, "cosine_with_fm_mean": sum(cosines) / samples}

    def finetune(self, run: Run) -> Run:
        started = time.perf_counter()
        condition = next(c for c in self.config.conditions if c.name == run.condition)
        trainer = self._trainer(f"{condition.slug}/{run.name}", *self.generator(condition), objective=run.objective,
                                steps=self.config.finetune_steps, lr=self.config.finetune_lr, seed=run.seed,
                                reason_weight=run.reason_weight, sigma_max=run.sigma_max,
                                manifest=self.manifest(condition), critic=run.critic if run.objective != "sft" else None)
        history = trainer.train()
        run.triggered = sum(r["triggered"] for r in history) / len(history)
        run.scores = self.evaluate(trainer.generator.dit, trainer.generator.connector)
        run.seconds = time.perf_counter() - started
        return run

    # --- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, dit, connector) -> dict:
        """Oracle scores of the held-out edits. Every model is sampled with the same noise (common random
        numbers): the seeds measure the spread of training, not of the evaluation's sampling."""
        dit.eval()
        editor = ReviseEditor(self._models(dit, connector))
        per_sample = []
        for index, sample in enumerate(self.eval):
            settings = EditSettings(
                sampler=SamplerConfig(steps=self.config.sample_steps, guidance_scale=self.config.guidance, shift=3.0,
                                      scheduler="euler", seed=index),
                max_text_len=32, vlm_frames=4)
            edited = editor.edit(render(sample.scene), sample.instruction, settings).frames
            per_sample.append(oracle_score(sample, edited))
        return summarize(per_sample)

    def reference_rows(self) -> dict:
        """Bounds: leaving the source unchanged, the exact target, and the exact target encoded and decoded by
        the frozen VAE (the best any generator working in this latent space can score)."""
        unchanged = summarize([oracle_score(s, render(s.scene)) for s in self.eval])
        exact = summarize([oracle_score(s, render(s.scene, category=s.category)) for s in self.eval])
        through_vae = summarize([oracle_score(s, self._through_vae(render(s.scene, category=s.category)))
                                 for s in self.eval])
        return {"unchanged source": unchanged, "oracle target": exact, "oracle target through the VAE": through_vae}

    def _through_vae(self, frames: torch.Tensor) -> torch.Tensor:
        vae = self.frozen["vae"]
        with torch.no_grad():
            return from_model_space(vae_ops.decode(vae, vae_ops.encode(vae, to_model_space(frames))))


def oracle_ea(sample: Sample, edited: torch.Tensor) -> float:
    return oracle_score(sample, edited).metrics["EA"]


def summarize(scores) -> dict:
    out = {}
    for metric in METRICS:
        values = [s.derived()["Overall"] if metric == "Overall" else s.metrics[metric] for s in scores]
        out[metric] = sum(values) / len(values)
    out["per_category"] = {c: sum(s.derived()["Overall"] for s in scores if s.category == c)
                           / max(1, sum(1 for s in scores if s.category == c)) for c in CATEGORIES}
    return out


def mean_std(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


def _aggregate(members: list[Run]) -> dict:
    row = {m: mean_std([r.scores[m] for r in members]) for m in METRICS}
    row["per_category"] = {c: mean_std([r.scores["per_category"][c] for r in members]) for c in CATEGORIES}
    row["per_seed_overall"] = [r.scores["Overall"] for r in members]
    row["seconds_per_run"] = sum(r.seconds for r in members) / len(members)
    return row


def verdict(objectives: dict) -> dict:
    """The issue's test: does USO's held-out Overall exceed SFT's by more than twice the larger seed std?"""
    uso, sft = objectives["uso"]["Overall"], objectives["sft"]["Overall"]
    margin = uso["mean"] - sft["mean"]
    bar = 2 * max(uso["std"], sft["std"])
    return {"uso_minus_sft": margin, "twice_larger_std": bar, "uso_beats_sft": margin > bar}


def paired_verdict(objectives: dict, row: str) -> dict:
    """`row` against SFT seed by seed (the same pre-trained model, seed and data order): does the mean paired
    difference of Overall exceed twice its std?"""
    differences = [a - b for a, b in zip(objectives[row]["per_seed_overall"], objectives["sft"]["per_seed_overall"],
                                         strict=True)]
    paired = mean_std(differences)
    return {"row": row, "paired_differences": differences, "mean": paired["mean"], "std": paired["std"],
            "beats_sft": paired["mean"] > 2 * paired["std"]}


def run_experiment(config: ToyConfig, workdir: Path, *, workers: int = 2) -> dict:
    """Critics and generators are prepared side by side; then every condition's runs (sft / rwr / uso over
    the seeds, uso with the render-trained critic, and the sweeps), the reward's share of the update and the
    estimate-stage critic are spread over `workers` one-thread processes (1: everything in this process).
    Each task reads the stages' files, so where it runs changes no number."""
    started = time.perf_counter()
    workdir = Path(workdir)
    runs = plan_runs(config)
    share_critics = ("renders", MAIN_CRITIC)
    with executor(workers) as pool:
        critics = pool.submit(_stage, config, workdir, "prepare_critics")
        generators = pool.submit(_stage, config, workdir, "prepare_generators")
        generators = generators.result()
        # SFT never calls a critic: its runs fill the generator stage's process while the critics still train
        chunks = [pool.submit(finetune_all, config, workdir, chunk)
                  for chunk in _chunks([r for r in runs if r.objective == "sft"], 5)]
        critics = critics.result()
        estimate_stage = pool.submit(_stage, config, workdir, "prepare_estimate_critic")
        shares = {(c.name, critic): pool.submit(_stage, config, workdir, "reward_gradient_share", c, critic=critic,
                                                reason_weight=config.reason_weight)
                  for c in config.conditions for critic in share_critics
                  if critic == MAIN_CRITIC or c.name == config.sweep_condition}
        chunks += [pool.submit(finetune_all, config, workdir, chunk)
                   for chunk in _chunks([r for r in runs if r.objective != "sft"], 6)]
        done = [run for chunk in chunks for run in chunk.result()]
        estimate_stage = estimate_stage.result()
        shares = {key: future.result() for key, future in shares.items()}
    experiment = Experiment(config, workdir)
    sections = {c.name: summarize_condition(config, c, generators["conditions"][c.name],
                                            [r for r in done if r.condition == c.name],
                                            {critic: shares[(c.name, critic)] for critic in share_critics
                                             if (c.name, critic) in shares})
                for c in config.conditions}
    return {
        "config": asdict(config), "workers": workers,
        "prepare": {"vae": generators["vae"], "critics": critics, "estimate_stage": estimate_stage,
                    "generator_stage_seconds": generators["seconds"]},
        "references": experiment.reference_rows(), "conditions": sections,
        "total_seconds": time.perf_counter() - started,
    }


def plan_runs(config: ToyConfig) -> list[Run]:
    """Every fine-tuning run of the experiment, in a fixed order."""
    runs = []
    for condition in config.conditions:
        common = dict(condition=condition.name, reason_weight=config.reason_weight)
        runs += [Run(f"{objective}-s{seed}", objective, seed, **common)
                 for objective in OBJECTIVES for seed in config.seeds]
        runs += [Run(f"uso-ideal-s{seed}", "uso", seed, critic=IDEAL_CRITIC, **common) for seed in config.seeds]
        if condition.name == config.sweep_condition:
            runs += [Run(f"uso-renders-s{seed}", "uso", seed, critic="renders", **common) for seed in config.seeds]
            seed = config.seeds[0]
            runs += [Run(f"uso-lambda{lam}", "uso", seed, condition=condition.name, reason_weight=lam)
                     for lam in config.lambdas]
            runs += [Run(f"uso-sigma{sig}", "uso", seed, sigma_max=sig, **common) for sig in config.sigma_maxes]
    slugs = [c.slug for c in config.conditions]
    if len(set(slugs)) != len(slugs) or set(slugs) & set(RESERVED_DATA):
        raise ValueError(f"condition names must give distinct data folders, none of {RESERVED_DATA}; got {slugs}")
    if config.reason_weight in config.lambdas or 0.5 in config.sigma_maxes:
        raise ValueError(f"the sweeps must not repeat the main runs' values (λ {config.reason_weight}, "
                         "σ_max 0.5): those points come from the main runs")
    return runs


def summarize_condition(config: ToyConfig, condition: Condition, prepared: dict, runs: list[Run],
                        shares: dict) -> dict:
    main = [r for r in runs if r.sigma_max == 0.5 and r.reason_weight == config.reason_weight]
    objectives = {o: _aggregate([r for r in main if r.objective == o and r.critic == MAIN_CRITIC])
                  for o in OBJECTIVES}
    ablation = [r for r in main if r.critic == "renders"]
    if ablation:
        objectives[RENDER_CRITIC_ROW] = _aggregate(ablation)
    ideal = [r for r in main if r.critic == IDEAL_CRITIC]
    if ideal:
        objectives[IDEAL_CRITIC_ROW] = _aggregate(ideal)
    lambda_runs, sigma_runs = [], []
    if condition.name == config.sweep_condition:  # the main seed's uso run is the sweeps' default point
        point = [r for r in main if r.objective == "uso" and r.critic == MAIN_CRITIC and r.seed == config.seeds[0]]
        lambda_runs = sorted([r for r in runs if r.reason_weight != config.reason_weight] + point,
                             key=lambda r: r.reason_weight)
        sigma_runs = sorted([r for r in runs if r.sigma_max != 0.5] + point, key=lambda r: r.sigma_max)
    return {
        "condition": asdict(condition), "flaws": prepared["flaws"], "pretrain_seconds": prepared["pretrain_seconds"],
        "pretrained": prepared["pretrained"], "reward_gradient_share": shares,
        "objectives": objectives, "verdict": verdict(objectives),
        "ideal_verdict": paired_verdict(objectives, IDEAL_CRITIC_ROW) if ideal else None,
        "runs": [asdict(r) for r in runs],
        "lambda_sweep": [asdict(r) for r in lambda_runs], "sigma_sweep": [asdict(r) for r in sigma_runs],
    }


def _stage(config: ToyConfig, workdir: Path, method: str, *args, **kwargs):
    return getattr(Experiment(config, workdir), method)(*args, **kwargs)


def finetune_all(config: ToyConfig, workdir: Path, runs: list[Run]) -> list[Run]:
    experiment = Experiment(config, workdir)  # loads the frozen parts once for the whole chunk
    return [experiment.finetune(run) for run in runs]


def _chunks(runs: list[Run], size: int) -> list[list[Run]]:
    return [runs[i:i + size] for i in range(0, len(runs), size)]


class _InProcess:
    """The executor interface, each task run at once in this process (workers=1)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args, **kwargs) -> Future:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a worker: one thread count, so where a task runs changes no number
        try:
            result = fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
        future: Future = Future()
        future.set_result(result)
        return future


def executor(workers: int):
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return _InProcess()
    # spawn, not fork: a forked child of a process that has already run OpenMP threads can hang in them
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


def _init_worker() -> None:
    torch.set_num_threads(1)  # the toy's tensors are too small for a second thread to help; a second process does
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
