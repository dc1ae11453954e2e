"""Training nodes: USO / SFT / RWR fine-tuning inside ComfyUI, and saving the result."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from revise_core import jsonio
from revise_core.checkpoints import compute_dtype
from revise_core.connector import ContextConnector, save_connector
from revise_core.dit import save_dit
from revise_core.losses import OBJECTIVES
from revise_core.model_sets import EditModels
from revise_core.vlm import VisionLanguageModel

from . import comfy_bridge as bridge
from . import node_text
from .common import CATEGORY, CONNECTOR, DIT, T5, VAE, VLM, clip_memory, expect, expect_dit, safe_name, training_mode


class ReViSEUSOTrainer:
    CATEGORY = f"{CATEGORY}/training"
    FUNCTION = "train"
    DESCRIPTION = ("Fine-tunes the DiT (full or LoRA) and the visual adapter on a triplet manifest with flow "
                   "matching + λ·L_reason from the model's own VLM (USO); SFT and RWR as ablations. Checkpoints "
                   "go to output/revise_training/<name>; an interrupted run resumes with 'resume'.")
    RETURN_TYPES = (DIT, CONNECTOR, "STRING", "IMAGE")
    RETURN_NAMES = ("dit", "connector", "report", "curves")
    OUTPUT_TOOLTIPS = ("The trained DiT (LoRA merged).", "The connector with the trained visual adapter.",
                       "JSON summary of the run.", "Loss and reward curves.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": (DIT, {"tooltip": "DiT to fine-tune (copied; the loaded one is left untouched)."}),
            "vae": (VAE, {"tooltip": "Frozen VAE (decodes the one-step estimate for the critic)."}),
            "t5": (T5, {"tooltip": "Frozen umT5."}),
            "vlm": (VLM, {"tooltip": "Frozen VLM: encoder of u and the critic."}),
            "connector": (CONNECTOR, {"tooltip": "Connector; only its visual adapter trains."}),
            "manifest": ("STRING", {"default": "", "tooltip": "Path of the triplet manifest (JSONL, see docs/training.md)."}),
            "output_name": ("STRING", {"default": "uso_run", "tooltip": "Run folder under output/revise_training."}),
            "objective": (list(OBJECTIVES), {"default": "uso", "tooltip": "uso | sft | rwr."}),
            "steps": ("INT", {"default": 100, "min": 1, "max": 1_000_000, "tooltip": "Optimizer steps."}),
            "reason_weight": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip": "λ."}),
            "sigma_max": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                    "tooltip": "The critic runs when σ <= sigma_max (25 % of samples at 0.5)."}),
            "learning_rate": ("FLOAT", {"default": 3e-6, "min": 1e-8, "max": 1e-2, "step": 1e-7,
                                        "tooltip": "AdamW learning rate (paper 3e-6; LoRA usually 1e-4)."}),
            "train": (["lora", "full"], {"default": "lora", "tooltip": "LoRA (peft) or the full DiT."}),
            "lora_rank": ("INT", {"default": 32, "min": 1, "max": 512, "tooltip": "LoRA rank."}),
            "global_batch": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Samples per step (accumulated)."}),
            "num_frames": ("INT", {"default": 17, "min": 1, "max": 257, "tooltip": "Frames per clip, 4k+1."}),
            "width": ("INT", {"default": 640, "min": 32, "max": 2048, "step": 32, "tooltip": "Clip width."}),
            "height": ("INT", {"default": 352, "min": 32, "max": 2048, "step": 32, "tooltip": "Clip height."}),
            # Not named "seed": the frontend would add a randomize-after-run control to it.
            "training_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Seed of data order and noise."}),
            "resume": ("BOOLEAN", {"default": False, "tooltip": "Continue the run in output_name from its last checkpoint."}),
        }, "optional": {
            "critic_vlm": (VLM, {"tooltip": "A different VLM as the SelfCritic (e.g. a Qwen3-VL instruct from ReViSE "
                                            "Load VLM); unconnected: the encoder VLM judges, as in the paper."}),
        }}

    def train(self, dit, vae, t5, vlm, connector, manifest, output_name, objective, steps, reason_weight, sigma_max,
              learning_rate, train, lora_rank, global_batch, num_frames, width, height, training_seed, resume,
              critic_vlm=None):
        from trainer.config import USOConfig
        from trainer.loop import USOTrainer

        expect_dit(dit)
        expect(connector, ContextConnector, "connector", CONNECTOR)
        if critic_vlm is not None:
            expect(critic_vlm, VisionLanguageModel, "critic_vlm", VLM)
        if not manifest.strip():
            raise ValueError("manifest: give the path of a triplet manifest (JSONL); see docs/training.md")
        out = bridge.output_directory() / "revise_training" / safe_name(output_name, what="output_name")
        loaded_dtype = compute_dtype(dit)
        # The run computes in the precision the DiT was loaded in (autocast; fp16 with loss scaling) while the
        # trainer keeps fp32 master weights of what trains.
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(loaded_dtype, "fp32")
        config = USOConfig(manifest=manifest, output_dir=str(out), objective=objective, steps=steps,
                           reason_weight=reason_weight, sigma_max=sigma_max, lr=learning_rate, train=train,
                           lora_rank=lora_rank, global_batch=global_batch, num_frames=num_frames, width=width,
                           height=height, seed=training_seed, tensorboard=False, device=str(bridge.compute_device_of(dit)),
                           dtype=precision, checkpoint_every=max(1, min(100, steps)),
                           # recorded in the run's config (a resume with another critic is refused)
                           critic_vlm=(getattr(critic_vlm, "source", "") or "comfyui-critic") if critic_vlm else "")
        progress = bridge.progress(steps)

        def on_step(step, metrics):
            # Cancel becomes KeyboardInterrupt, which the trainer answers by saving the last completed step; the
            # progress bar itself raises ComfyUI's interruption exception, which would skip that save.
            if bridge.interrupt_requested():
                raise KeyboardInterrupt
            try:
                progress(None)  # one step done (no latent preview while training)
            except Exception as error:
                if bridge.is_interruption(error):
                    raise KeyboardInterrupt from error
                raise

        # The trainer places its models itself (trainer/loop.py moves the frozen ones to its device, umT5 off it
        # between samples, and the copies of the DiT and the connector): in ComfyUI these models leave its
        # registry for the run, and ComfyUI frees their memory, the copies' and one clip's activations.
        frozen = [getattr(m, "model", m) for m in (vae, t5, vlm, critic_vlm) if m is not None]
        run_memory = (sum(bridge.weight_bytes(m) for m in bridge.unique_modules([*frozen, dit, connector]))
                      + clip_memory(dit, vae, num_frames, height, width))
        with training_mode(), bridge.placed_by_caller(frozen, unloaded=[dit, connector], memory_required=run_memory,
                                                      device=bridge.compute_device_of(dit)):
            # Copies: the loaders' cached models must stay as loaded for the rest of the graph.
            models = EditModels(dit=copy.deepcopy(dit), vae=vae, text=t5, vlm=vlm, connector=copy.deepcopy(connector))
            trainer = USOTrainer(config, models=models, critic_vlm=critic_vlm)
            try:
                history, outputs = _train(trainer, resume=resume, output_name=output_name, on_step=on_step)
            finally:
                trainer.release()  # the run folder's lock, whatever happened (ComfyUI's process lives on)
        report = {"output_dir": str(out), "steps": len(history), "final": history[-1] if history else {},
                  "files": {k: str(v) for k, v in outputs.items()}}
        trained = trainer.generator
        connector_out = trained.connector.to(compute_dtype(connector))
        dit_out = _as_loaded(trained.dit, outputs["dit"], loaded_dtype, bridge.compute_device_of(dit))
        # New models: in ComfyUI each gets its own patcher, like a loader's (the copies have none)
        return (bridge.register(dit_out, "dit"), bridge.register(connector_out, "connector"),
                jsonio.dumps(report, indent=2), _png_as_image(outputs.get("curves")))


def _train(trainer, *, resume: bool, output_name: str, on_step) -> tuple[list[dict], dict]:
    """setup, train and cleanup, with the run-folder errors said in the node's words, and how the run ended
    said on the node (ComfyUI shows Cancel only as an interruption: the node says which step was saved, and how
    to continue)."""
    from trainer.state import ResumeError, RunExistsError

    try:
        trainer.setup(resume=resume)
    except RunExistsError as error:
        raise RunExistsError(f"output_name '{output_name}': {error}: turn the 'resume' input on to continue "
                             "it, or give another output_name") from error
    except ResumeError as error:
        raise ResumeError(f"'resume' is on but output_name '{output_name}' cannot be resumed: {error}. Turn "
                          "'resume' off to start a new run") from error
    first, total, out = trainer.start_step, trainer.config.steps, trainer.config.output_dir
    clock = node_text.cpu_clock(trainer.config.device, "training", total - first)
    finished = [first]  # the last finished step: what the trainer saves when it is stopped
    started = time.perf_counter()

    def step_done(step: int, metrics: dict) -> None:
        finished[0] = step
        if clock is not None:
            clock.step(step - first)
        on_step(step, metrics)

    try:
        history = trainer.train(on_step=step_done)
    except KeyboardInterrupt:
        node_text.show(stopped_text(finished[0], first, total, out), level=logging.WARNING)
        bridge.check_interrupted()
        raise
    outputs = trainer.cleanup()
    took = node_text.duration(time.perf_counter() - started)
    node_text.show(f"Finished: step {total} of {total} after {took}. Checkpoints and the exported model are "
                            f"in {out}.")
    return history, outputs


def stopped_text(finished: int, first: int, total: int, out: str) -> str:
    """What a stopped run kept: the trainer saves its last finished step (none when no step finished)."""
    if finished > first:
        return (f"Cancelled after step {finished} of {total}: step {finished} is saved in {out}. To continue, turn "
                "'resume' on and queue the workflow again.")
    kept = f" (the run stays at its step {first})" if first else ""
    return f"Cancelled before step {first + 1} of {total} finished: nothing new was saved{kept}."


def _as_loaded(dit: torch.nn.Module, exported: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The trained DiT as a plain module (LoRA merged) in the precision the input DiT was loaded in, read back
    from the exported file (which applies the loaders' fp32-kept-modules policy)."""
    from revise_core.dit import load_dit

    if dtype == torch.float32 and not any("lora_" in name for name, _ in dit.named_parameters()):
        dit.revise_compute_device = device
        return dit
    merged = load_dit(exported, dtype=dtype)
    merged.revise_compute_device = device
    return merged


def _png_as_image(path: Path | None) -> torch.Tensor:
    """The curves as an IMAGE; a blank one without a PNG (no matplotlib: the curves are a CSV, named in the report)."""
    if path is None or Path(path).suffix != ".png" or not Path(path).is_file():
        return torch.zeros(1, 64, 64, 3)
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


class ReViSESaveCheckpoint:
    CATEGORY = f"{CATEGORY}/training"
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = ("Saves a DiT as original-Wan-key safetensors (loads in ReViSE and in ComfyUI's native Wan "
                   "loaders) and optionally the connector.")
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": (DIT, {"tooltip": "DiT to save (e.g. from the ReViSE USO Trainer)."}),
            "filename_prefix": ("STRING", {"default": "revise/edit_model",
                                           "tooltip": "Path under the target folder, without extension."}),
            "save_to": (["output", "diffusion_models"], {"default": "output",
                        "tooltip": "ComfyUI's output folder, or models/diffusion_models so the loaders list it."}),
        }, "optional": {
            "connector": (CONNECTOR, {"tooltip": "Also save this connector (<prefix>_connector.safetensors)."}),
        }}

    def save(self, dit, filename_prefix, save_to, connector=None):
        expect_dit(dit)
        root = bridge.output_directory() if save_to == "output" else bridge.diffusion_models_directory()
        base = (root / filename_prefix).resolve()
        if root.resolve() not in base.parents:
            raise ValueError(f"filename_prefix '{filename_prefix}' leaves the {save_to} folder")
        written = [str(save_dit(dit, base.with_name(base.name + "_dit.safetensors")))]
        if connector is not None:
            expect(connector, ContextConnector, "connector", CONNECTOR)
            written.append(str(save_connector(connector, base.with_name(base.name + "_connector.safetensors"))))
        return {"ui": {"text": written}, "result": ()}


NODES = {cls.__name__: cls for cls in (ReViSEUSOTrainer, ReViSESaveCheckpoint)}
DISPLAY_NAMES = {"ReViSEUSOTrainer": "ReViSE USO Trainer", "ReViSESaveCheckpoint": "ReViSE Save Checkpoint"}
