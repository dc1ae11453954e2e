"""The Toy-RVE experiment: pre-train one tiny generator to reproduce videos (no rule), then in every condition
(what the fine-tuning targets look like) fine-tune it with sft / rwr / uso with the ideal critic / uso with each
learned critic (same steps, data order, noise and seeds), sweep λ and σ_max of the ideal critic over every seed,
measure the reward path's diagnostics, and score edits of held-out samples with the oracle.

Everything goes through the project's own pieces: the USO trainer (`trainer.loop.USOTrainer`, fed a manifest
of mp4 files and in-memory models), the editor (`ReviseEditor`) for evaluation, the SelfCritic as the reward
(the ideal critic is a SelfCritic too, set in the learned critic's place).

The work runs in stages whose products are files in the work folder (frozen VAE, critics, the pre-trained
generator, feature cache), so that independent stages run in parallel processes: the toy's models are too
small for a second thread to speed up one process, while two one-thread processes use both cores.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

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
from .conditions import Condition, flaw_counts, training_targets
from .config import CRITICS, IDEAL_CRITIC, RWR_CRITIC, Run, ToyConfig
from .ideal_critic import IdealCritic
from .oracle import score as oracle_score
from .records import Records
from .summary import sensitivity, summarize, summarize_condition
from .task import KEEP_PHRASINGS, Sample, all_phrasings, make_samples, render
from .workers import executor

logger = logging.getLogger(__name__)
PRETRAINING = "pre-training"  # the data folder of the pre-training task (every video reproduced unchanged)
RESERVED_DATA = ("critic-pool", "eval-bank", PRETRAINING)  # data folders of other stages


class Experiment:
    """The frozen parts, data and generators of one work folder; each stage reads what earlier ones wrote."""

    def __init__(self, config: ToyConfig, workdir: Path) -> None:
        self.config, self.workdir = config, Path(workdir)
        self.train = make_samples(config.train_samples, "train", 0)
        self.eval = make_samples(config.eval_samples, "eval", 0, phrasings=config.eval_phrasings)
        self.extra_text = tuple(all_phrasings())
        self.critics: dict[str, object] = {}
        self._frozen: dict | None = None
        self.records = Records(config, workdir)

    # --- files ----------------------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    @property
    def frozen(self) -> dict:
        """The generator's frozen encoders: the toy VAE, and the test kit's umT5 and VLM at their
        initial weights. The critics are copies of that VLM taught to judge; the generator conditions on the
        untaught one, so that critics and generators can be prepared side by side."""
        if self._frozen is None:
            stored = ckpt.read_state_dict(self.path("frozen", "vae.safetensors"))
            vae = toy_models.toy_vae()
            vae.register_to_config(**stored.embedded_config())  # the latent statistics measured on the data
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

    def generator(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The pre-trained generator every arm of every condition starts from."""
        dit, connector = toy_models.toy_generator(0, layers=self.config.generator_layers,
                                                  placed_source=self.config.placed_source)
        state = ckpt.read_state_dict(self.path("generators", "pretrained.safetensors")).tensors
        dit.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("dit.")})
        connector.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("connector.")})
        return dit.eval(), connector.eval()

    def manifest(self, condition: Condition | str) -> Path:
        slug = condition if isinstance(condition, str) else condition.slug
        return self.path("data", slug, "train.jsonl")

    # --- stage: the generator's side (VAE, data, pre-training) ---------------------------------------

    def prepare_generators(self) -> dict:
        """Build the VAE, pre-train the generator to reproduce videos, write every condition's data.

        Pre-training teaches the latent space and the copying of the source, never a rule: every target is the
        source itself, under instructions that ask for no change (task.KEEP_PHRASINGS). So the pre-trained
        model edits nothing (Overall 0, the unchanged source's) and fine-tuning is where the rules are learnt,
        as in the paper, where the base editor is fine-tuned on reasoning edits. Pre-training on the rules
        themselves (the previous design) left fine-tuning nothing to move: SFT gained 0.01 Overall."""
        recorded = self.records.load("generators")
        if recorded is not None and self.path("generators", "pretrained.safetensors").is_file():
            return {**recorded, "flaws": self._write_conditions()}
        cfg, started = self.config, time.perf_counter()
        vae = toy_models.toy_vae()
        # the training scenes plus scenes on the held-out background (not the evaluation samples themselves)
        vae_report = toy_models.fit_latent_statistics(vae, self.train + make_samples(cfg.train_samples, "eval", 100))
        ckpt.save_safetensors(vae.state_dict(), self.path("frozen", "vae.safetensors"), format_name="toy-rve.vae",
                              config={"latents_mean": list(vae.config.latents_mean),
                                      "latents_std": list(vae.config.latents_std)})
        vae_report["seconds"] = time.perf_counter() - started
        begun = time.perf_counter()
        rng = random.Random("pre-training")
        scenes = self.train + ([replace(s, id=f"background-{s.id}") for s in make_samples(cfg.train_samples, "eval", 200)]
                               if cfg.pretrain_all_backgrounds else [])
        unchanged = {s.id: (render(s.scene), "unchanged") for s in scenes}
        self._write_manifest(scenes, unchanged, self.manifest(PRETRAINING),
                             instructions={s.id: rng.choice(KEEP_PHRASINGS) for s in scenes})
        trainer = self._trainer(f"{PRETRAINING}/run", *toy_models.toy_generator(0, layers=cfg.generator_layers,
                                                                        placed_source=cfg.placed_source),
                                objective="sft",
                                steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, seed=1000, reason_weight=0.0,
                                sigma_max=cfg.sigma_max, manifest=self.manifest(PRETRAINING), critic=None)
        trainer.train()
        dit, connector = trainer.generator.dit, trainer.generator.connector
        state = {**{f"dit.{k}": v for k, v in dit.state_dict().items()},
                 **{f"connector.{k}": v for k, v in connector.state_dict().items()}}
        ckpt.save_safetensors(state, self.path("generators", "pretrained.safetensors"),
                              format_name="toy-rve.generator")
        pretrain_seconds = time.perf_counter() - begun
        result = {"vae": vae_report, "pretrain_seconds": pretrain_seconds,
                  "pretrained": self.evaluate(*self.generator()), "seconds": time.perf_counter() - started}
        self.records.save("generators", result)
        return {**result, "flaws": self._write_conditions()}

    def _write_conditions(self) -> dict[str, dict[str, int]]:
        """Every condition's training data (unless recorded): condition name -> its flaw counts."""
        flaws = {}
        for condition in self.config.conditions:
            fields = {"condition": asdict(condition)}
            counts = self.records.load("data", **fields) if self.manifest(condition).is_file() else None
            if counts is None:
                counts = self._write_manifest(self.train, training_targets(self.train, condition),
                                              self.manifest(condition))
                self.records.save("data", counts, **fields)
            flaws[condition.name] = counts
        return flaws

    def _write_manifest(self, samples: list[Sample], targets: dict[str, tuple[torch.Tensor, str]], manifest: Path,
                        *, instructions: dict[str, str] | None = None) -> dict[str, int]:
        """Source and target videos of `samples` (targets: id -> (frames, kind)) and their manifest; the
        samples' own instructions unless `instructions` gives others."""
        folder = manifest.parent
        (folder / "videos").mkdir(parents=True, exist_ok=True)
        lines = []
        for sample in samples:
            # crf 0: nearly lossless, so the features see the rendered pixels
            write_video(folder / "videos" / f"{sample.id}_src.mp4", render(sample.scene), 8, crf=0)
            write_video(folder / "videos" / f"{sample.id}_tgt.mp4", targets[sample.id][0], 8, crf=0)
            lines.append({"id": sample.id, "source": f"videos/{sample.id}_src.mp4",
                          "target": f"videos/{sample.id}_tgt.mp4",
                          "instruction": (instructions or {}).get(sample.id, sample.instruction),
                          "subset": "RAVE", "category": sample.category})
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return flaw_counts(targets)

    # --- stage: the critics ---------------------------------------------------------------------------

    def prepare_critics(self) -> dict:
        """Critic stages 1-3 on renders ("renders"), then a copy regularised to judge the edited region with a
        gradient along the way to the correct edit ("shaped")."""
        recorded = self.records.load("critics")
        if recorded is not None and all(self.path("frozen", f"critic-{n}.safetensors").is_file()
                                        for n in ("renders", "shaped")):
            return recorded
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
        result = {"renders": {**report, **self.critic_diagnostics(vlm)},
                  "shaped": {**shaped_report, **self.critic_diagnostics(shaped)},
                  "seconds": time.perf_counter() - started}
        self.records.save("critics", result)
        return result

    def critic_diagnostics(self, vlm) -> dict:
        report = toy_models.critic_correlation(vlm, self.eval, oracle_ea)
        report["gradient_alignment"] = toy_models.gradient_alignment(vlm, self.eval, oracle_ea)
        return report

    def prepare_estimate_critic(self) -> dict:
        """Stage 4: a copy of the render-trained critic, graded on decoded one-step estimates of the first
        condition's pre-trained generator (critic-pool scenes, correct and flawed targets), and the alignment
        of every critic on held-out estimates."""
        recorded = self.records.load("estimate-critic")
        if recorded is not None and self.path("frozen", "critic-estimates.safetensors").is_file():
            return recorded
        started = time.perf_counter()
        cfg = self.config
        dit, connector = self.generator()
        pool = make_samples(cfg.estimate_bank // 4, "train", 300) + make_samples(cfg.estimate_bank // 4, "eval", 300)
        bank = self.estimates(dit, connector, pool, count=cfg.estimate_bank, seed=11, name="critic-pool")
        held_out = self.estimates(dit, connector, self.eval, count=2 * len(self.eval), seed=12, name="eval-bank")
        vlm = copy.deepcopy(self.critic("renders"))
        report = toy_models.grade_on_estimates(vlm, bank, steps=cfg.critic_estimate_steps, seed=13)
        self.save_critic("estimates", vlm)
        report |= self.critic_diagnostics(vlm)
        report["seconds"] = time.perf_counter() - started
        on_estimates = {name: toy_models.estimate_alignment(self.critic(name), held_out, oracle_ea) for name in CRITICS}
        result = {"estimates": report, "alignment_on_estimates": on_estimates}
        self.records.save("estimate-critic", result)
        return result

    def estimates(self, dit, connector, samples: list[Sample], *, count: int, seed: int, name: str) -> list:
        """`count` decoded one-step estimates of the generator on `samples` (targets correct or flawed, half and
        half, so that the bank spans good and bad edits), at σ uniform in [0.02, 0.9]."""
        condition = Condition(name, flawed_fraction=0.5)
        manifest = self.manifest(condition)
        self._write_manifest(samples, training_targets(samples, condition), manifest)
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
                edited, _ = self._decoded_estimate(trainer, feats, sigma, noise)
                sample = by_id[triplet.id]
                bank.append(toy_models.Estimate(sample, triplet.instruction, edited, float(sigma),
                                                oracle_ea(sample, edited)))
        return bank

    def _decoded_estimate(self, trainer: USOTrainer, feats, sigma: torch.Tensor, noise: torch.Tensor):
        """The generator's one-step estimate x̂0 at σ from the target noised with `noise`, decoded as USO decodes
        it (trainer.step.decode_estimate): (frames [T, H, W, 3], their frame indices)."""
        z_t = losses.noisy_latents(feats.target_latents, noise, sigma)
        velocity = trainer.model(z_t, sigma, feats.source_latents, feats.vlm_states, feats.text_tokens, False,
                                 feats.vlm_tokens)
        return decode_estimate(self.frozen["vae"], z_t, sigma, velocity)

    # --- training -------------------------------------------------------------------------------------

    def _models(self, dit, connector) -> EditModels:
        return EditModels(dit=dit, vae=self.frozen["vae"], text=self.frozen["text"], vlm=self.frozen["vlm"],
                          connector=connector)

    def _trainer(self, name: str, dit, connector, *, objective: str, steps: int, lr: float, seed: int,
                 reason_weight: float, sigma_max: float, manifest: Path, critic: str | None,
                 schedule: str = "constant") -> USOTrainer:
        config = USOConfig(
            manifest=str(manifest), output_dir=str(self.path("runs", name)),
            feature_cache=str(self.path("features")), num_frames=5, height=32, width=32, max_text_len=32,
            vlm_frames=4, objective=objective, reason_weight=reason_weight, sigma_max=sigma_max, critic_frames=4,
            cfg_drop=0.1, lr=lr, lr_schedule=schedule, weight_decay=1e-4, grad_clip=self.config.grad_clip,
            global_batch=self.config.global_batch,
            steps=steps, seed=seed, device="cpu", checkpoint_every=steps, keep_checkpoints=1, tensorboard=False,
        )
        # SFT never calls the critic; the trainer then judges with the encoder VLM, which is never run
        learned = critic if critic and critic != IDEAL_CRITIC else None
        trainer = USOTrainer(config, models=self._models(dit, connector),
                             critic_vlm=self.critic(learned) if learned else None)
        # a run folder with no record behind it (records.py) holds an interrupted or outdated computation: scratch
        trainer.setup(overwrite=True)
        if critic == IDEAL_CRITIC:  # it judges in the learned critic's place, through the same step
            trainer.critic = IdealCritic([s.scene for s in self.train + self.eval])
        return trainer

    def reward_diagnostics(self, condition: Condition, *, critic: str) -> dict:
        """The reward path of `critic` (the ideal one or a learned one) on one-step estimates of the pre-trained
        generator, at the main λ and σ_max, on the condition's training samples:
        - the share of the trainer's σ draws at or below σ_max (the steps in which the reward acts at all);
        - at σ drawn as in training but at or below σ_max, the gradients on the generator's parameters of L_FM
          and of λ·L_reason (USO's loss minus SFT's, with the same σ and noise): norms, ratio, cosine (L_FM's
          gradient is the way to the training target, in parameters);
        - in pixels, the cosine of ∂Δ/∂x̂0 with (correct target − x̂0), and the oracle EA gained by a step along
          ∂Δ/∂x̂0 half the distance to the correct target long, beside the same step straight at it."""
        cfg = self.config
        fields = self.diagnostics_fields(condition, critic)
        recorded = self.records.load("diagnostics", **fields)
        if recorded is not None:
            return recorded
        trainer = self._trainer(f"{condition.slug}/diagnostics-{critic}", *self.generator(), objective="uso",
                                steps=1, lr=cfg.finetune_lr, seed=0, reason_weight=cfg.reason_weight,
                                sigma_max=cfg.sigma_max, manifest=self.manifest(condition), critic=critic)
        generator = torch.Generator().manual_seed(0)
        draws = losses.sample_sigmas(4096, trainer.config.timestep_shift, generator)
        acting = draws[draws <= cfg.sigma_max]
        parameters = [p for p in trainer.model.parameters() if p.requires_grad]
        by_id = {s.id: s for s in self.train}
        fm_norms, reward_norms, ratios, cosines, pixel_cosines, gains, straight_gains = ([] for _ in range(7))
        for index in range(cfg.diagnostic_samples):
            triplet = trainer.triplets[index % len(trainer.triplets)]
            feats = trainer.features.get(triplet)
            sigma = acting[index % len(acting)].view(1)
            noise = torch.randn(feats.target_latents.shape, generator=generator)
            flat = {}
            for objective in ("sft", "uso"):
                result = sample_loss(trainer.model, trainer.models.vae, trainer.critic, feats, triplet.instruction,
                                     sigma=sigma, noise=noise, drop=False,
                                     config=replace(trainer.config, objective=objective),
                                     device=torch.device("cpu"), autocast_dtype=None)
                flat[objective] = torch.cat([g.flatten() for g in torch.autograd.grad(result.loss, parameters)])
            reward = flat["uso"] - flat["sft"]
            fm_norms.append(flat["sft"].norm().item())
            reward_norms.append(reward.norm().item())
            ratios.append(reward_norms[-1] / max(fm_norms[-1], 1e-20))
            cosines.append(F.cosine_similarity(reward, flat["sft"], dim=0).item())
            with torch.no_grad():
                edited, frame_index = self._decoded_estimate(trainer, feats, sigma, noise)
            sample = by_id[triplet.id]
            target = render(sample.scene, category=sample.category)[frame_index]
            edited.requires_grad_(True)
            verdict = trainer.critic.verdict(feats.source_frames[frame_index].to(edited), edited, triplet.instruction)
            (pixel_gradient,) = torch.autograd.grad(verdict.delta, edited)
            wanted = target - edited.detach()
            pixel_cosines.append(F.cosine_similarity(pixel_gradient.flatten(), wanted.flatten(), dim=0).item())
            step = pixel_gradient / pixel_gradient.norm().clamp(min=1e-12) * wanted.norm() * 0.5
            before = oracle_ea(sample, edited.detach())
            gains.append(oracle_ea(sample, edited.detach() + step) - before)
            straight_gains.append(oracle_ea(sample, edited.detach() + wanted * 0.5) - before)
        mean = lambda values: sum(values) / len(values)  # noqa: E731 - a local one-liner
        result = {"critic": critic, "samples": cfg.diagnostic_samples, "sigma_max": cfg.sigma_max,
                "reason_weight": cfg.reason_weight, "share_of_steps_acting": float(len(acting) / len(draws)),
                "fm_gradient_norm": mean(fm_norms), "reward_gradient_norm": mean(reward_norms),
                "norm_ratio": mean(ratios), "cosine_with_fm": mean(cosines),
                "pixel_cosine_with_target": mean(pixel_cosines), "ea_gain_of_gradient_step": mean(gains),
                "ea_gain_of_straight_step": mean(straight_gains)}
        self.records.save("diagnostics", result, **fields)
        return result

    def run_fields(self, run: Run) -> dict:
        """What, besides the shared settings, decides a run's numbers (its record's key)."""
        condition = next(c for c in self.config.conditions if c.name == run.condition)
        return {"condition": asdict(condition), "objective": run.objective, "seed": run.seed, "critic": run.critic,
                "reason_weight": run.reason_weight, "sigma_max": run.sigma_max}

    def diagnostics_fields(self, condition: Condition, critic: str) -> dict:
        return {"condition": asdict(condition), "critic": critic, "reason_weight": self.config.reason_weight,
                "sigma_max": self.config.sigma_max}

    def missing_records(self) -> list[str]:
        """The stages, runs and diagnostics of this experiment its work folder has no record of."""
        cfg, load = self.config, self.records.load
        missing = [name for name in ("generators",) + (("critics", "estimate-critic") if cfg.needs_learned_critics
                                                        else ()) if load(name) is None]
        missing += [f"{run.condition}: {run.name}" for run in plan_runs(cfg) if load("run", **self.run_fields(run))
                    is None]
        missing += [f"{condition.name}: diagnostics of the {critic} critic" for condition in cfg.conditions
                    for critic in (IDEAL_CRITIC, *cfg.learned_critics)
                    if load("diagnostics", **self.diagnostics_fields(condition, critic)) is None]
        return missing

    def finetune(self, run: Run) -> Run:
        condition = next(c for c in self.config.conditions if c.name == run.condition)
        fields = self.run_fields(run)
        recorded = self.records.load("run", **fields)
        if recorded is not None:
            return replace(run, scores=recorded["scores"], triggered=recorded["triggered"],
                           seconds=recorded["seconds"], reused=True)
        started = time.perf_counter()
        trainer = self._trainer(f"{condition.slug}/{run.name}", *self.generator(), objective=run.objective,
                                steps=self.config.finetune_steps, lr=self.config.finetune_lr, seed=run.seed,
                                reason_weight=run.reason_weight, sigma_max=run.sigma_max,
                                manifest=self.manifest(condition), critic=run.critic,
                                schedule=self.config.finetune_lr_schedule)
        history = trainer.train()
        run.triggered = sum(r["triggered"] for r in history) / len(history)
        run.scores = self.evaluate(trainer.generator.dit, trainer.generator.connector)
        run.seconds = time.perf_counter() - started
        self.records.save("run", {"scores": run.scores, "triggered": run.triggered, "seconds": run.seconds}, **fields)
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


def run_experiment(config: ToyConfig, workdir: Path, *, workers: int = 2, records_only: bool = False) -> dict:
    """The learned critics (when the preset has arms that need them) and the generator's side are prepared
    side by side; then every fine-tuning run and the reward path's diagnostics are spread over `workers`
    one-thread processes (1: everything in this process), those needing no learned critic first. Each task
    reads the stages' files, so where it runs changes no number. `records_only`: compute nothing, report what the
    work folder's records hold (refused, naming what is missing, unless they hold all of it): a report of finished
    runs while another invocation computes the rest in the same folder."""
    started = time.perf_counter()
    workdir = Path(workdir)
    runs = plan_runs(config)
    if records_only:
        missing = Experiment(config, workdir).missing_records()
        if missing:
            raise ValueError(f"{workdir} has no record of {len(missing)} of this experiment's stages, runs and "
                             f"diagnostics, such as {'; '.join(missing[:3])}: run without records_only to compute them")
    with executor(workers) as pool:
        chunks, diagnostics = [], {}

        def submit(critics: tuple) -> None:  # every run and diagnostic that judges with one of `critics`
            chunks.extend(pool.submit(finetune_all, config, workdir, chunk)
                          for chunk in _chunks([r for r in runs if r.critic in critics], 3))
            diagnostics.update({(c.name, critic): pool.submit(_stage, config, workdir, "reward_diagnostics", c,
                                                              critic=critic)
                                for c in config.conditions for critic in critics
                                if critic == IDEAL_CRITIC or critic in config.learned_critics})

        critics = pool.submit(_stage, config, workdir, "prepare_critics") if config.needs_learned_critics else None
        generators = pool.submit(_stage, config, workdir, "prepare_generators").result()
        submit((None, IDEAL_CRITIC))  # SFT and the ideal critic need no learned critic
        estimate_stage = None
        if critics is not None:
            critics = critics.result()
            estimate_future = pool.submit(_stage, config, workdir, "prepare_estimate_critic")
            submit(("renders", "shaped"))
            estimate_stage = estimate_future.result()  # grades the "estimates" critic
            submit(("estimates",))
        done = [run for chunk in chunks for run in chunk.result()]
        diagnostics = {key: future.result() for key, future in diagnostics.items()}
    experiment = Experiment(config, workdir)
    sections = {c.name: summarize_condition(config, c, generators["flaws"][c.name],
                                            [r for r in done if r.condition == c.name],
                                            {critic: d for (name, critic), d in diagnostics.items() if name == c.name})
                for c in config.conditions}
    references = experiment.reference_rows()
    return {
        "config": asdict(config), "workers": workers,
        "prepare": {"vae": generators["vae"], "pretrain_seconds": generators["pretrain_seconds"],
                    "critics": critics, "estimate_stage": estimate_stage,
                    "generator_stage_seconds": generators["seconds"]},
        "references": references, "pretrained": generators["pretrained"],
        "sensitivity": sensitivity(references, generators["pretrained"], sections),
        "conditions": sections, "total_seconds": time.perf_counter() - started,
        "reused_runs": sum(run.reused for run in done), "runs": len(done),
    }


def plan_runs(config: ToyConfig) -> list[Run]:
    """Every fine-tuning run of the experiment, in a fixed order: per condition and seed SFT, RWR, USO with the
    ideal critic and with each learned critic, then the ideal critic's λ and σ_max sweeps over every seed."""
    unknown = set(config.learned_critics) - set(CRITICS)
    if unknown:
        raise ValueError(f"learned_critics must be among {CRITICS}, got {sorted(unknown)}")
    runs = []
    for condition in config.conditions:
        common = dict(condition=condition.name, reason_weight=config.reason_weight, sigma_max=config.sigma_max)
        for seed in config.seeds:
            runs.append(Run(f"sft-s{seed}", "sft", seed, **common))
            if config.rwr:
                runs.append(Run(f"rwr-s{seed}", "rwr", seed, critic=RWR_CRITIC, **common))
            runs += [Run(f"uso-{critic}-s{seed}", "uso", seed, critic=critic, **common)
                     for critic in (IDEAL_CRITIC, *config.learned_critics)]
        if condition.name == config.sweep_condition:
            for seed in config.seeds:
                runs += [Run(f"uso-ideal-lambda{lam}-s{seed}", "uso", seed, critic=IDEAL_CRITIC,
                             **{**common, "reason_weight": lam}) for lam in config.lambdas]
                runs += [Run(f"uso-ideal-sigma{sig}-s{seed}", "uso", seed, critic=IDEAL_CRITIC,
                             **{**common, "sigma_max": sig}) for sig in config.sigma_maxes]
    slugs = [c.slug for c in config.conditions]
    if len(set(slugs)) != len(slugs) or set(slugs) & set(RESERVED_DATA):
        raise ValueError(f"condition names must give distinct data folders, none of {RESERVED_DATA}; got {slugs}")
    if config.reason_weight in config.lambdas or config.sigma_max in config.sigma_maxes:
        raise ValueError(f"the sweeps must not repeat the main runs' values (λ {config.reason_weight}, "
                         f"σ_max {config.sigma_max}): those points come from the main runs")
    return runs


def _stage(config: ToyConfig, workdir: Path, method: str, *args, **kwargs):
    return getattr(Experiment(config, workdir), method)(*args, **kwargs)


def _chunks(runs: list[Run], size: int) -> list[list[Run]]:
    return [runs[i:i + size] for i in range(0, len(runs), size)]


def finetune_all(config: ToyConfig, workdir: Path, runs: list[Run]) -> list[Run]:
    experiment = Experiment(config, workdir)  # loads the frozen parts once for the whole chunk
    return [experiment.finetune(run) for run in runs]
