"""USOTrainer: fine-tunes G_φ with flow matching plus the self-reflective reward (section 4.2).

Per sample: σ ~ shifted uniform, z_t = (1−σ)x0 + σε, v = G_φ(z_t, σ | f_C(v_src, t5, u)), L_FM = |v − (ε − x0)|².
When σ <= σ_max the one-step estimate x̂0 = z_t − σ·v is decoded by the frozen VAE (unclamped) and judged
by the frozen VLM: L_reason = −log σ(Δ − Δ_base). USO adds λ·L_reason, RWR weights L_FM by P(Yes) (no
gradient through the weight), SFT uses L_FM alone.

All randomness of a sample (σ, ε, the CFG drop) is drawn from a generator seeded by (seed, step,
global sample index), and the data order is a function of (seed, position): a resumed run, or a run on
more processes with the same global batch, sees exactly the same samples and noise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from revise_core import checkpoints as ckpt
from revise_core import losses
from revise_core.attention import resolve_backend
from revise_core.critic import CriticConfig, SelfCritic
from revise_core.lora import LoraChoice, fuse_loras, load_loras
from revise_core.model_sets import EditModels
from revise_core.output_paths import writable_output
from revise_core.placement import Placement, PlacementConfig, quantize_int8

from . import state as checkpoints
from .config import USOConfig
from .data import FeatureStore, Triplet, read_manifest, sample_index
from .model import Generator, configure_trainable, export
from .run_lock import RunLock
from .run_log import RunLog, plot_curves
from .step import MicroResult, autocast, sample_loss

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """A non-finite loss or gradient stopped the run; the last good checkpoint is kept."""


class TerminationRequested(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job): handled like Ctrl-C, the last completed step is saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _stop_on_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into TerminationRequested while training; returns the function that restores the
    previous handler. Signal handlers can only be set from the main thread (elsewhere: nothing changes)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise TerminationRequested(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


# Settings a resumed run may change: they decide when to stop, save and log, where and with which attention kernel
# the run computes (the same maths, rounding apart) or caches, and memory features with identical losses;
# everything else defines the run.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints", "tensorboard", "device", "attention",
                     "feature_cache",
                     "checkpointing_dit", "checkpointing_vlm", "checkpointing_vae", "offload_text_encoder",
                     "frozen_placement", "offload_connector_heads", "allow_dataset_change", "manifest")


def changed_settings(saved: dict, current: dict) -> list[str]:
    """'name: saved -> current' for every setting outside RESUMABLE_CHANGES that differs."""
    names = sorted((set(saved) | set(current)) - set(RESUMABLE_CHANGES))
    return [f"{name}: {saved.get(name)!r} -> {current.get(name)!r}" for name in names
            if saved.get(name) != current.get(name)]


def frozen_placement(cfg: USOConfig, device: torch.device, *, critic_is_encoder: bool) -> tuple[Placement, dict]:
    """The frozen models' placement plan, and the models it may not move: the VAE (the critic's decode passes
    gradients through it) and, when it is the critic of a USO / RWR run, the encoder VLM; with
    offload_text_encoder, umT5 waits off the device between feature passes."""
    fixed = {"vae": "resident"}
    if critic_is_encoder and cfg.objective != "sft":
        fixed["vlm"] = "resident"
    if cfg.frozen_placement == "resident" and cfg.offload_text_encoder:
        fixed["t5"] = "sequential"
    return Placement(PlacementConfig(placement=cfg.frozen_placement, encoders=cfg.encoders), device), fixed


def lr_factor(step: int, *, warmup: int, steps: int, schedule: str) -> float:
    """The learning rate's multiplier at optimizer step `step` (0-based): linear warm-up over `warmup` steps,
    then 1 (constant) or a half cosine from 1 at the first step after the warm-up toward 0 after the last of
    `steps` steps (cosine)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def make_optimizer(cfg: USOConfig, params: list) -> torch.optim.Optimizer:
    """AdamW with fp32 states, or torchao's AdamW8bit (8-bit block-quantised states; fp32 for small tensors)."""
    if cfg.optimizer == "adamw8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError as error:
            raise ValueError("optimizer=adamw8bit needs torchao (pip install torchao)") from error
        return AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class USOTrainer:
    """setup() -> train() -> cleanup(); `_loss_step` is one sample's forward (and the tests' hook)."""

    def __init__(self, config: USOConfig, *, models: EditModels | None = None,
                 triplets: list[Triplet] | None = None, critic_vlm=None) -> None:
        self.config = config
        self._models, self._triplets = models, triplets
        self._critic_vlm = critic_vlm  # an already loaded critic VLM (ComfyUI); else config.critic_vlm is loaded
        self.rank, self.world = 0, 1
        self.history: list[dict] = []

    # --- setup -----------------------------------------------------------------------------------

    def setup(self, resume: bool = False, overwrite: bool = False) -> None:
        """Build everything. A fresh run refuses a folder that holds another run unless `overwrite` (which
        deletes it); `resume` continues from the newest intact checkpoint and refuses changed settings
        outside RESUMABLE_CHANGES."""
        cfg = self.config
        self._setup_distributed()
        # One run per folder: rank 0 holds the OS lock from here to the end of train().
        self.lock = RunLock(cfg.output_dir).acquire() if self.rank == 0 else None
        try:
            self._setup(resume, overwrite)
        except BaseException:
            self.release()
            raise

    def _setup(self, resume: bool, overwrite: bool) -> None:
        cfg = self.config
        resume_from = self._check_run_folder(resume, overwrite)
        if cfg.global_batch % self.world:
            raise ValueError(f"global_batch={cfg.global_batch} must be a multiple of the {self.world} processes")
        self.accumulation = cfg.global_batch // self.world
        # The manifest is validated before any model is loaded (every problem listed at once).
        self.triplets = self._triplets or read_manifest(cfg.manifest, min_frames=1)
        self.dataset = checkpoints.dataset_fingerprint(self.triplets)
        if resume_from is not None:
            changes = checkpoints.dataset_changes(
                ckpt.read_json(resume_from / "state.json", what="trainer state").get("dataset"), self.dataset)
            if changes and not cfg.allow_dataset_change:
                raise checkpoints.ResumeError(
                    f"{resume_from}: the dataset changed since the run started ({'; '.join(changes)} rows of "
                    f"{cfg.manifest or 'the manifest'}); the data order and the epochs would no longer be the run's. "
                    "Resume with allow_dataset_change (--allow-dataset-change) to continue on the new data anyway")
            if changes:
                logger.warning("resuming on a changed dataset (allow_dataset_change): %s", "; ".join(changes))
        # "auto": the compute dtype, which autocast runs the frozen models' matmuls in anyway.
        frozen = frozen_dtype = (self.autocast_dtype or torch.float32) if cfg.frozen_dtype == "auto" \
            else ckpt.resolve_dtype(cfg.frozen_dtype)
        # What trains is loaded in fp32; the frozen models in `frozen` (a 7B VLM is 31 GiB in fp32, 15 in bf16).
        models = self._models or EditModels.load(cfg.models, dtype=frozen, device="cpu",
                                                 component_dtypes={"dit": torch.float32, "connector": torch.float32})
        models.check()
        # The trained modules keep fp32 master weights whatever precision they were loaded in (a ComfyUI graph
        # may hand over half-precision models); autocast gives the compute precision.
        models.dit.float()
        models.connector.float()
        if cfg.base_loras:
            if self._models is not None:  # fusing would change a DiT its owner (a ComfyUI graph) shares
                raise ValueError("base_loras are fused into a DiT the trainer loads itself (python -m trainer.uso); "
                                 "a DiT handed to it is its owner's: apply the LoRA there")
            fuse_loras(models.dit, load_loras([LoraChoice.parse(str(text)) for text in cfg.base_loras], models.dit))
        for frozen in (models.vae, models.text.model, models.vlm.model):
            frozen.eval().requires_grad_(False)
        self.models = models
        separate_critic = self._critic_vlm is not None or bool(cfg.critic_vlm)
        if self._models is not None and (cfg.encoders != "compute" or cfg.frozen_placement == "stream"):
            # int8 and streaming change the modules in place; models handed over (ComfyUI's) serve other nodes too
            raise ValueError("encoders=int8 and frozen_placement=stream apply to models the trainer loads itself "
                             "(python -m trainer.uso); models handed to it are placed by their owner")
        self.generator = Generator(models.dit, models.connector).to(self.device)
        self.generator.attention = resolve_backend(cfg.attention, self.device, training=True)
        self.trainable = configure_trainable(self.generator, mode=cfg.train, lora_rank=cfg.lora_rank,
                                             lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets)
        # The release's frozen VisionHead + DM_Adapter (2.1B parameters) are kept in bf16 when the frozen models
        # are: the release itself runs them with bf16 parameters, so nothing changes (an fp16 or fp32 setting
        # keeps them fp32: fp16 could overflow bf16 values). Everything else in the connector stays fp32.
        if frozen_dtype == torch.bfloat16:
            for module in self.generator.connector.frozen_storage_modules():
                for parameter in module.parameters():
                    if not parameter.requires_grad:
                        parameter.data = parameter.data.to(frozen_dtype)
            if cfg.train == "lora":  # the frozen base layers LoRA adapts: autocast computes them in bf16 anyway
                for module in self.generator.dit.modules():
                    if isinstance(module, torch.nn.Linear) and not any(p.requires_grad for p in module.parameters()):
                        module.to(frozen_dtype)
        self.generator.dit.train()
        if cfg.checkpointing_dit:
            self.generator.dit.enable_gradient_checkpointing()
        if cfg.checkpointing_vlm:
            models.vlm.set_gradient_checkpointing(True)
        critic_vlm = models.vlm
        if self._critic_vlm is not None or cfg.critic_vlm:  # a separate judge (the paper uses the encoder itself)
            from revise_core.vlm import load_vlm

            critic_vlm = self._critic_vlm or load_vlm(cfg.critic_vlm, dtype=frozen_dtype, device="cpu")
            if self._critic_vlm is None:  # loaded here; a given one is placed by its owner (ComfyUI's using())
                if cfg.encoders == "int8":
                    quantize_int8(critic_vlm.model)
                critic_vlm.model.to(device=self.device)
            critic_vlm.model.eval().requires_grad_(False)
            if cfg.checkpointing_vlm:
                critic_vlm.set_gradient_checkpointing(True)
            logger.info("critic: %s (%s), not the encoder VLM", cfg.critic_vlm, critic_vlm.family)
        self.critic = SelfCritic(critic_vlm, CriticConfig(num_frames=cfg.critic_frames, cot=cfg.cot))
        self.placement, fixed = frozen_placement(cfg, self.device, critic_is_encoder=not separate_critic)
        self.heads = self._offload_connector_heads() if cfg.offload_connector_heads else None
        self.features = FeatureStore(models, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                                     resize=cfg.resize, max_text_len=cfg.max_text_len, vlm_frames=cfg.vlm_frames,
                                     cache_dir=cfg.feature_cache or None, placement=self.placement,
                                     project=self._project_vlm if self.heads is not None else None)
        self.placement.apply({"vae": models.vae, "t5": models.text.model, "vlm": models.vlm.model},
                             fixed=fixed)
        self.model = self._wrap(self.generator)
        params = [p for p in self.generator.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(cfg, params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(lr_factor, warmup=max(cfg.warmup_steps, 0), steps=cfg.steps,
                                              schedule=cfg.lr_schedule))
        self.start_step = 0
        if resume_from is not None:
            path = resume_from
            self.start_step = checkpoints.load(path, model=self.model, optimizer=self.optimizer,
                                               scheduler=self.scheduler, trainable=self.trainable,
                                               scaler=self.scaler)["step"]
        self.log = RunLog(cfg.output_dir, tensorboard=cfg.tensorboard, resume_step=self.start_step,
                          enabled=self.rank == 0)
        self.history = self.log.read() if self.rank == 0 else []
        if self.rank == 0:
            logger.info("training %d parameter tensors (%s) on %s x%d; config: %s", len(self.trainable), cfg.train,
                        self.device, self.world, cfg.to_dict())

    def _offload_connector_heads(self) -> Placement:
        """The connector's frozen VLM projection (the ReViSE release's VisionHead + DM_Adapter, 2.1B parameters)
        only ever sees u, a cached feature: its output is computed with the features, under the step's autocast
        (the same numbers the step would compute), and its weights wait in host memory in between. The null
        branch's projection is computed once here."""
        if self.world > 1:
            raise ValueError("offload_connector_heads keeps part of the generator in host memory, which DDP and "
                             "FSDP do not allow: use it in single-process runs")
        heads = torch.nn.ModuleList(self.generator.connector.frozen_storage_modules())
        plan = Placement(PlacementConfig(placement="sequential"), self.device)
        plan.apply({"connector": heads}, fixed={"connector": "sequential"})
        states = self.generator.connector.null_vlm_states()
        if states is not None and states.numel():
            with torch.no_grad(), autocast(self.device, self.autocast_dtype), plan.use("connector"):
                projected = self.generator.connector.project_vlm(states.to(self.device))
            self.generator.null_vlm_tokens = projected.float()
        return plan

    def _project_vlm(self, source_latents: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.autocast_dtype), self.heads.use("connector"):
            return self.generator.project(source_latents.to(self.device), u.to(self.device))

    def _check_run_folder(self, resume: bool, overwrite: bool) -> Path | None:
        """The checkpoint to resume from (None for a fresh run), after the run-folder rules."""
        cfg = self.config
        if resume and overwrite:
            raise checkpoints.ResumeError("resume and overwrite exclude each other: resume continues the run in "
                                          f"{cfg.output_dir}, overwrite deletes it")
        writable_output(Path(cfg.output_dir) / "metrics.jsonl", what="output_dir")
        if not resume:
            existing = checkpoints.run_exists(cfg.output_dir)
            if existing and not overwrite:
                raise checkpoints.RunExistsError(
                    f"{cfg.output_dir} already holds a run ({', '.join(existing)}); resume it, choose another "
                    "output folder, or overwrite it (deletes that run)")
            if existing and self.rank == 0:
                checkpoints.remove_run(cfg.output_dir)
            if self.world > 1:
                dist.barrier()
            return None
        path = checkpoints.latest(cfg.output_dir)
        if path is None:
            raise checkpoints.ResumeError(f"nothing to resume: no checkpoint under "
                                          f"{checkpoints.checkpoint_root(cfg.output_dir)}")
        saved = ckpt.read_json(path / "state.json", what="trainer state")["config"]
        changed = changed_settings(saved, cfg.to_dict())
        if changed:
            raise checkpoints.ResumeError(
                f"{path}: the run was started with other settings ({'; '.join(changed)}). A resumed run must "
                f"keep them (only {', '.join(RESUMABLE_CHANGES)} may change); start a new run to change them")
        return path

    def _setup_distributed(self) -> None:
        import os

        cfg = self.config
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if cfg.device == "auto":
            if torch.cuda.is_available():
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            else:
                self.device = torch.device("cpu")
        else:
            self.device = torch.device(cfg.device)
        dtype = ckpt.resolve_dtype(ckpt.auto_dtype(cfg.dtype, self.device))
        self.autocast_dtype = None if dtype == torch.float32 else dtype
        # fp16 has too little range for small gradients: scale the loss, unscale before clipping, and skip
        # steps whose gradients overflowed (torch.amp.GradScaler). bf16 needs none of this.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)

    def _wrap(self, generator: Generator):
        if self.world == 1:
            return generator
        if self.config.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in generator.dit.blocks:
                fully_shard(block)
            return fully_shard(generator)
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(generator, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # --- one sample --------------------------------------------------------------------------------

    def sample_generator(self, step: int, micro: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step * 10_007 + micro)

    def _loss_step(self, step: int, micro: int) -> MicroResult:
        """Forward (with graph) for global sample `micro` of step `step`; the loss is not yet scaled."""
        cfg = self.config
        triplet = self.triplets[sample_index(step, micro, cfg.global_batch, len(self.triplets), cfg.seed)]
        feats = self.features.get(triplet)
        rng = self.sample_generator(step, micro)
        sigma = losses.sample_sigmas(1, cfg.timestep_shift, rng)
        noise = torch.randn(feats.target_latents.shape, generator=rng)
        drop = bool(torch.rand(1, generator=rng).item() < cfg.cfg_drop)
        return sample_loss(self.model, self.models.vae, self.critic, feats, triplet.instruction, sigma=sigma,
                           noise=noise, drop=drop, config=cfg, device=self.device, autocast_dtype=self.autocast_dtype)

    # --- the loop ---------------------------------------------------------------------------------

    def train(self, on_step: Callable[[int, dict], None] | None = None) -> list[dict]:
        """Run to `config.steps`. `on_step(step, metrics)` is called after each step (rank 0); raising
        KeyboardInterrupt from it stops the run like Ctrl-C (the last completed step is saved). The run folder
        is given back when it returns, however it ends (a stopped run can only be resumed)."""
        try:
            return self._train(on_step)
        finally:  # the folder's checkpoints and logs are written; what is left (export) writes into final/
            self.release()

    def _train(self, on_step: Callable[[int, dict], None] | None) -> list[dict]:
        cfg = self.config
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, initial=self.start_step, desc=f"{cfg.objective} training", unit="step",
                        disable=self.rank != 0)
        step = self.start_step
        restore_sigterm = _stop_on_sigterm()
        try:
            while step < cfg.steps:
                record = self._optimizer_step(step)
                step += 1
                record["step"] = step
                self.history.append(record)
                self.log.write(record)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}", trig=f"{record['triggered']:.2f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self._save(step, record)
                if on_step is not None:
                    on_step(step, record)
        except KeyboardInterrupt:
            # Parameters are only changed by the optimizer step at the end of a step, so the state of the
            # last completed step is what we save; the partial step is redone on resume.
            logger.warning("interrupted: saving step %d before exiting", step)
            self.optimizer.zero_grad(set_to_none=True)
            if step > self.start_step:
                self._save(step, self.history[-1] if self.history else {})
            raise
        finally:
            restore_sigterm()
            progress.close()
        return self.history

    def _optimizer_step(self, step: int) -> dict:
        cfg = self.config
        started = time.perf_counter()
        results = []
        for index in range(self.accumulation):
            micro = self.rank + index * self.world  # global sample index within the step
            sync = index == self.accumulation - 1 or self.world == 1
            context = contextlib.nullcontext() if sync or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with context:
                result = self._loss_step(step, micro)
                if not torch.isfinite(result.loss):
                    self._diverged(step, f"loss {float(result.loss.detach())} (L_FM={result.l_fm}, L_reason={result.l_reason})")
                self.scaler.scale(result.loss / self.accumulation).backward()
            results.append(result)
        params = [p for p in self.generator.parameters() if p.requires_grad]
        self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            grad_norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        if not torch.isfinite(grad_norm):
            if not self.scaler.is_enabled():
                self._diverged(step, f"gradient norm {float(grad_norm)}")
            # fp16 loss scaling: the scaler skips this update and lowers the scale (normal at the start).
            logger.warning("step %d: fp16 gradients overflowed at loss scale %g; update skipped", step + 1,
                           self.scaler.get_scale())
        lr = float(self.scheduler.get_last_lr()[0])  # a 0-d tensor with torchao's optimizers
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self._reduce(results, float(grad_norm), lr, time.perf_counter() - started)

    def _reduce(self, results: list[MicroResult], grad_norm: float, lr: float, seconds: float) -> dict:
        """Metrics of the global batch (summed over processes)."""
        triggered = [r for r in results if r.triggered]
        sums = torch.tensor([
            sum(float(r.loss.detach()) for r in results), sum(r.l_fm for r in results), len(results), len(triggered),
            sum(r.l_reason for r in triggered), sum(r.delta for r in triggered),
            sum(r.delta_base for r in triggered), sum(r.p_yes for r in triggered),
        ], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(sums)
        count, fired = sums[2].item(), sums[3].item()

        def mean_of(index: int) -> float:
            return sums[index].item() / fired if fired else float("nan")

        return {"loss": sums[0].item() / count, "l_fm": sums[1].item() / count, "triggered": fired / count,
                "l_reason": mean_of(4), "delta": mean_of(5), "delta_base": mean_of(6), "p_yes": mean_of(7),
                "relative_delta": mean_of(5) - mean_of(6) if fired else float("nan"),
                "grad_norm": grad_norm, "lr": lr, "s_per_it": seconds}

    def _diverged(self, step: int, what: str) -> None:
        try:
            last = checkpoints.latest(self.config.output_dir)
        except checkpoints.ResumeError:
            last = None
        raise TrainingDivergedError(
            f"non-finite {what} at step {step + 1}; stopped without saving this step. Last good checkpoint: "
            f"{last if last else 'none yet'}. Lower the learning rate or check the data of this step."
        )

    def _save(self, step: int, record: dict) -> None:
        model_state, optimizer_state = checkpoints.gather(self.model, self.optimizer)  # collective
        if self.rank == 0:
            checkpoints.save(self.config.output_dir, step, model_state=model_state, optimizer_state=optimizer_state,
                             trainable=self.trainable, scheduler=self.scheduler, config=self.config.to_dict(),
                             metrics=record, keep=self.config.keep_checkpoints, scaler=self.scaler,
                             dataset=self.dataset)
        if self.world > 1:
            dist.barrier()

    def release(self) -> None:
        """Give the run folder back (cleanup does; a caller abandoning the run after an error may)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

    def cleanup(self) -> dict[str, Path]:
        """Export the trained weights and the curves (rank 0); tear down the process group."""
        outputs: dict[str, Path] = {}
        model_state, _ = checkpoints.gather(self.model, self.optimizer)  # collective: full weights
        if self.rank == 0:
            outputs = export(self.generator, Path(self.config.output_dir) / "final", state=model_state)
            plot = plot_curves(self.history, Path(self.config.output_dir) / "curves.png")
            if plot:
                outputs["curves"] = plot
            self.log.close()
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        self.release()
        return outputs
