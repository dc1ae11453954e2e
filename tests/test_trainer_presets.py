"""The consumer-card presets (configs/train/revise_24gib.yaml, revise_lora_16gib.yaml) and their memory
features: int8 encoders with an int8 critic, 8-bit AdamW checkpoints, LoRA's frozen base, the connector heads
in host memory."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import _grad_report

from trainer.config import build_config
from trainer.loop import USOTrainer


def _preset(name: str, out, **overrides):
    from pathlib import Path

    from trainer.demo import prepare

    root = Path(__file__).resolve().parent.parent
    settings = {**prepare(out, "revise"), "steps": 2, "sigma_max": 1.0, "cfg_drop": 0.0, **overrides}
    return build_config(root / "configs" / "train" / name, settings)


def test_the_24_gib_preset_keeps_the_critic_int8_and_resident_and_its_gradients_exact(tmp_path):
    """configs/train/revise_24gib.yaml on the demo's release folder (8-bit AdamW swapped for AdamW here: its
    first step compiles for a minute; the slow test runs it): VILA in int8 stays put as the critic, umT5 visits
    the device once per sample's features, and gradients reach exactly the trained parameters through the int8
    critic."""
    from torchao.quantization import Int8Tensor

    trainer = USOTrainer(_preset("revise_24gib.yaml", tmp_path, optimizer="adamw"))
    trainer.setup()
    vlm_weights = [m.weight for m in trainer.models.vlm.model.modules() if type(m) is torch.nn.Linear]
    assert vlm_weights and all(isinstance(w, Int8Tensor) for w in vlm_weights)
    assert trainer.placement.modes == {"vae": "resident", "t5": "sequential", "vlm": "resident"}
    result = trainer._loss_step(0, 0)
    assert result.triggered
    result.loss.backward()
    trainable, with_grad, frozen_with_grad = _grad_report(trainer)
    assert with_grad == trainable and not frozen_with_grad
    transfers = trainer.placement.transfers
    assert set(transfers.onloads) == {"t5"} and transfers.onloads["t5"] == len(trainer.features._memory)


def test_lora_preset_stores_the_frozen_base_in_the_compute_dtype(tmp_path):
    trainer = USOTrainer(_preset("revise_lora_16gib.yaml", tmp_path, frozen_dtype="bf16", optimizer="adamw",
                                 lora_rank=4))
    trainer.setup()
    base = {m.weight.dtype for m in trainer.generator.dit.modules()
            if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad}
    trained = {p.dtype for p in trainer.generator.parameters() if p.requires_grad}
    assert base == {torch.bfloat16} and trained == {torch.float32}


def test_8bit_adamw_states_survive_a_checkpoint_bit_for_bit(tmp_path):
    """The checkpoint format of torchao's quantised states (int8 codes, block scales, map) without a training
    step: rebuilt from their inner tensors by an allow-list, identical."""
    from torchao.optim.subclass_8bit import OptimState8bit

    from revise_core import checkpoints as ckpt
    from trainer.state import _flatten_optimizer, _unflatten_optimizer

    state = OptimState8bit.zeros((64, 128), signed=True, block_size=256)
    state.codes.copy_(torch.randint(0, 255, state.codes.shape, dtype=torch.uint8))
    state.scale.copy_(torch.rand_like(state.scale))
    saved = {"state": {"dit.w": {"step": torch.tensor(3.0), "exp_avg": state}},
             "param_groups": [{"lr": torch.tensor(3e-6), "betas": (0.9, 0.999), "params": ["dit.w"]}]}
    tensors, meta = _flatten_optimizer(saved)
    ckpt.save_safetensors(tensors, tmp_path / "optimizer.safetensors", format_name="revise.trainer.optimizer")
    loaded = _unflatten_optimizer(ckpt.read_state_dict(tmp_path / "optimizer.safetensors").tensors,
                                  json.loads(json.dumps(meta)))
    restored = loaded["state"]["dit.w"]["exp_avg"]
    assert type(restored) is OptimState8bit and restored.signed and restored.block_size == state.block_size
    for name in ("codes", "scale", "qmap"):
        assert torch.equal(getattr(restored, name), getattr(state, name))
    assert isinstance(loaded["param_groups"][0]["lr"], torch.Tensor)  # torchao refuses a float learning rate
    meta["subclasses"]["dit.w/exp_avg"]["type"] = "os.system"
    with pytest.raises(ValueError, match="unknown type"):
        _unflatten_optimizer(tensors, meta)


@pytest.mark.slow
def test_the_24_gib_preset_with_8bit_adamw_resumes_exactly(tmp_path):
    """The preset as shipped (torchao AdamW8bit; the first step compiles for about a minute on a CPU)."""
    def train(out, steps, resume=False):
        trainer = USOTrainer(_preset("revise_24gib.yaml", tmp_path, output_dir=str(out), steps=steps,
                                     checkpoint_every=1))
        trainer.setup(resume=resume)
        return trainer.train()

    straight = train(tmp_path / "a", 3)
    first = train(tmp_path / "b", 2)
    resumed = train(tmp_path / "b", 3, resume=True)
    assert [r["loss"] for r in straight] == [r["loss"] for r in first + resumed[2:]]


def test_connector_heads_off_the_device_give_identical_losses(tmp_path):
    """offload_connector_heads: the release's frozen VisionHead + DM_Adapter projection computed with the cached
    features (and the null branch's once), its weights in host memory between feature passes; CFG drops
    included, the losses are those of the heads on the device."""
    calls = []

    def train(out, **overrides):
        trainer = USOTrainer(_preset("revise_24gib.yaml", tmp_path, output_dir=str(out), optimizer="adamw",
                                     encoders="compute", cfg_drop=0.5, steps=3, **overrides))
        trainer.setup()
        trainer.generator.connector.dm_adapter.register_forward_hook(lambda *args: calls.append(out.name))
        return trainer, trainer.train()

    on, with_heads_off = train(tmp_path / "on", offload_connector_heads=True)
    _, with_heads_on = train(tmp_path / "off", offload_connector_heads=False)
    assert [r["loss"] for r in with_heads_off] == [r["loss"] for r in with_heads_on]
    assert on.generator.null_vlm_tokens is not None
    assert on.heads.modes == {"connector": "sequential"}
    samples = len(on.features._memory)
    assert on.heads.transfers.onloads["connector"] == samples + 1  # each sample's features, and the null branch
    assert calls.count("on") == samples  # the step never runs the heads (the null branch's ran in setup)
    assert calls.count("off") > samples
    assert all(f.vlm_tokens is not None for f in on.features._memory.values())


def test_a_shipped_preset_is_found_as_the_docs_name_it_from_any_folder(tmp_path, monkeypatch):
    """`--config configs/train/<preset>.yaml` also works outside a clone (an installed wheel)."""
    from pathlib import Path

    from trainer.config import read_config_file

    shipped = Path(__file__).resolve().parent.parent / "configs" / "train" / "revise_24gib.yaml"
    monkeypatch.chdir(tmp_path)
    assert read_config_file("configs/train/revise_24gib.yaml") == read_config_file(shipped)
    with pytest.raises(FileNotFoundError, match="configs/train/none.yaml"):
        read_config_file("configs/train/none.yaml")
