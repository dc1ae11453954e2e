"""The Toy-RVE experiment: pre-train a tiny generator with SFT, fine-tune it with sft / rwr / uso (same steps
and seeds), sweep λ and σ_max, and score edits of held-out samples with the oracle.

Everything goes through the project's own pieces: the USO trainer (`trainer.loop.USOTrainer`, fed a manifest
of mp4 files and in-memory models), the editor (`ReviseEditor`) for evaluation, the SelfCritic as the reward.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from revise_core import vae as vae_ops
from revise_core.editor import EditModels, EditSettings, ReviseEditor
from revise_core.sampler import SamplerConfig
from revise_core.testing import tiny_text_encoder, tiny_vlm
from revise_core.video import from_model_space, to_model_space, write_video
from trainer.config import USOConfig
from trainer.loop import USOTrainer
from trainer.step import sample_loss

from . import models as toy_models
from .oracle import score as oracle_score
from .task import CATEGORIES, all_phrasings, make_samples, render

logger = logging.getLogger(__name__)
METRICS = ("EA", "PC", "GN", "GR", "Overall")


@dataclass
class ToyConfig:
    train_samples: int = 48
    eval_samples: int = 16
    vae_steps: int = 400
    critic_steps: int = 12000
    critic_graded_steps: int = 4000
    pretrain_steps: int = 1500
    finetune_steps: int = 60
    global_batch: int = 4
    pretrain_lr: float = 1e-3
    finetune_lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    lambdas: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
    sigma_maxes: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    sample_steps: int = 10
    guidance: float = 2.0


QUICK = ToyConfig()
FULL = ToyConfig(train_samples=256, eval_samples=64, vae_steps=1500, critic_steps=20000, critic_graded_steps=8000,
                 pretrain_steps=5000, finetune_steps=400, global_batch=8, sample_steps=25)
SMOKE = ToyConfig(train_samples=8, eval_samples=4, vae_steps=2, critic_steps=2, critic_graded_steps=2, pretrain_steps=2,
                  finetune_steps=2, global_batch=2, seeds=(0,), lambdas=(0.25,), sigma_maxes=(0.5,), sample_steps=2)


@dataclass
class Run:
    name: str
    objective: str
    seed: int
    reason_weight: float = 0.25
    sigma_max: float = 0.5
    scores: dict = field(default_factory=dict)
    triggered: float = float("nan")
    seconds: float = 0.0


class Experiment:
    def __init__(self, config: ToyConfig, workdir: Path) -> None:
        self.config, self.workdir = config, Path(workdir)
        self.train = make_samples(config.train_samples, "train", 0)
        self.eval = make_samples(config.eval_samples, "eval", 0)

    # --- frozen models and data ---------------------------------------------------------------------

    def prepare(self) -> dict:
        cfg, started = self.config, time.perf_counter()
        extra = tuple(all_phrasings())
        vae = toy_models.toy_vae(1)
        # the training scenes plus scenes on the held-out background (not the evaluation samples themselves)
        vae_pool = self.train + make_samples(cfg.train_samples, "eval", 100)
        vae_report = toy_models.train_vae(vae, vae_pool, steps=cfg.vae_steps, seed=0)
        vlm = tiny_vlm(3, extra_text=extra)
        critic_report = toy_models.train_critic(vlm, steps=cfg.critic_steps, seed=0)
        oracle_ea = lambda s, e: oracle_score(s, e).metrics["EA"]  # noqa: E731 - a local one-liner
        if cfg.critic_graded_steps:
            critic_report |= toy_models.grade_critic(vlm, steps=cfg.critic_graded_steps, seed=5, oracle_ea=oracle_ea)
        correlation = toy_models.critic_correlation(vlm, self.eval, oracle_ea)
        correlation["gradient_alignment"] = toy_models.gradient_alignment(vlm, self.eval, oracle_ea)
        self.frozen = {"vae": vae, "text": tiny_text_encoder(2, extra_text=extra), "vlm": vlm}
        self.manifest = self._write_data()
        return {"vae": vae_report, "critic": {**critic_report, **correlation},
                "seconds": time.perf_counter() - started}

    def _write_data(self) -> Path:
        folder = self.workdir / "data"
        (folder / "videos").mkdir(parents=True, exist_ok=True)
        lines = []
        for sample in self.train:
            for role, category in (("src", None), ("tgt", sample.category)):
                # crf 0: nearly lossless, so the features see the rendered pixels
                write_video(folder / "videos" / f"{sample.id}_{role}.mp4", render(sample.scene, category=category), 8,
                            crf=0)
            lines.append({"id": sample.id, "source": f"videos/{sample.id}_src.mp4",
                          "target": f"videos/{sample.id}_tgt.mp4", "instruction": sample.instruction,
                          "subset": "RAVE", "category": _manifest_category(sample.category)})
        manifest = folder / "train.jsonl"
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return manifest

    # --- training -------------------------------------------------------------------------------------

    def _models(self, dit, connector) -> EditModels:
        return EditModels(dit=dit, vae=self.frozen["vae"], text=self.frozen["text"], vlm=self.frozen["vlm"],
                          connector=connector)

    def _train(self, name: str, dit, connector, *, objective: str, steps: int, lr: float, seed: int,
               reason_weight: float = 0.25, sigma_max: float = 0.5) -> tuple[USOTrainer, list[dict]]:
        trainer = self._trainer(name, dit, connector, objective=objective, steps=steps, lr=lr, seed=seed,
                                reason_weight=reason_weight, sigma_max=sigma_max)
        return trainer, trainer.train()

    def _trainer(self, name: str, dit, connector, *, objective: str, steps: int, lr: float, seed: int,
                 reason_weight: float, sigma_max: float) -> USOTrainer:
        config = USOConfig(
            manifest=str(self.manifest), output_dir=str(self.workdir / "runs" / name),
            feature_cache=str(self.workdir / "features"), num_frames=5, height=32, width=32, max_text_len=32,
            vlm_frames=4, objective=objective, reason_weight=reason_weight, sigma_max=sigma_max, critic_frames=4,
            cfg_drop=0.1, lr=lr, weight_decay=1e-4, grad_clip=1.0, global_batch=self.config.global_batch,
            steps=steps, seed=seed, device="cpu", checkpoint_every=steps, keep_checkpoints=1, tensorboard=False,
        )
        trainer = USOTrainer(config, models=self._models(dit, connector))
        trainer.setup()
        return trainer

    def reward_gradient_share(self, dit, connector, *, samples: int = 16, sigma: float = 0.3,
                              reason_weight: float = 0.25) -> dict:
        """How much of USO's update is the reward? On training samples at σ = `sigma` (<= σ_max), the gradient
        of λ·L_reason on the generator's trainable parameters against that of L_FM: norm ratio and cosine."""
        trainer = self._trainer("gradient-share", copy.deepcopy(dit), copy.deepcopy(connector), objective="uso",
                                steps=1, lr=1e-3, seed=0, reason_weight=reason_weight, sigma_max=0.5)
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
        return {"sigma": sigma, "reason_weight": reason_weight, "samples": samples,
                "norm_ratio_mean": sum(ratios) / samples, "cosine_with_fm_mean": sum(cosines) / samples}

    def pretrain(self) -> tuple[torch.nn.Module, torch.nn.Module, float]:
        started = time.perf_counter()
        trainer, _ = self._train("pretrain", *toy_models.toy_generator(0), objective="sft",
                                 steps=self.config.pretrain_steps, lr=self.config.pretrain_lr, seed=1000)
        return trainer.generator.dit, trainer.generator.connector, time.perf_counter() - started

    def finetune(self, base, run: Run) -> Run:
        started = time.perf_counter()
        dit, connector = copy.deepcopy(base[0]), copy.deepcopy(base[1])
        trainer, history = self._train(run.name, dit, connector, objective=run.objective,
                                       steps=self.config.finetune_steps, lr=self.config.finetune_lr, seed=run.seed,
                                       reason_weight=run.reason_weight, sigma_max=run.sigma_max)
        run.triggered = sum(r["triggered"] for r in history) / len(history)
        run.scores = self.evaluate(trainer.generator.dit, trainer.generator.connector, seed=run.seed)
        run.seconds = time.perf_counter() - started
        return run

    # --- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, dit, connector, *, seed: int = 0) -> dict:
        dit.eval()
        editor = ReviseEditor(self._models(dit, connector))
        per_sample = []
        for index, sample in enumerate(self.eval):
            settings = EditSettings(
                sampler=SamplerConfig(steps=self.config.sample_steps, guidance_scale=self.config.guidance, shift=3.0,
                                      scheduler="euler", seed=seed * 1000 + index),
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


def _manifest_category(category: str) -> str:
    return category  # the toy's categories are RAVE's four reasoning types


def run_experiment(config: ToyConfig, workdir: Path) -> dict:
    experiment = Experiment(config, workdir)
    started = time.perf_counter()
    prepared = experiment.prepare()
    dit, connector, pretrain_seconds = experiment.pretrain()
    base = (dit, connector)
    pretrained = experiment.evaluate(copy.deepcopy(dit), copy.deepcopy(connector))
    gradient_share = experiment.reward_gradient_share(dit, connector)
    runs = [experiment.finetune(base, Run(f"{objective}-s{seed}", objective, seed))
            for objective in ("sft", "rwr", "uso") for seed in config.seeds]
    lambda_runs = [experiment.finetune(base, Run(f"uso-lambda{lam}", "uso", config.seeds[0], reason_weight=lam))
                   for lam in config.lambdas]
    sigma_runs = [experiment.finetune(base, Run(f"uso-sigma{sig}", "uso", config.seeds[0], sigma_max=sig))
                  for sig in config.sigma_maxes]
    objectives = {}
    for objective in ("sft", "rwr", "uso"):
        members = [r for r in runs if r.objective == objective]
        objectives[objective] = {m: mean_std([r.scores[m] for r in members]) for m in METRICS}
        objectives[objective]["seconds_per_run"] = sum(r.seconds for r in members) / len(members)
    return {
        "config": asdict(config), "prepare": prepared, "pretrain_seconds": pretrain_seconds,
        "reward_gradient_share": gradient_share,
        "references": {**experiment.reference_rows(), "pretrained (before fine-tuning)": pretrained},
        "objectives": objectives,
        "runs": [asdict(r) for r in runs],
        "lambda_sweep": [asdict(r) for r in lambda_runs],
        "sigma_sweep": [asdict(r) for r in sigma_runs],
        "total_seconds": time.perf_counter() - started,
    }
