"""USO trainer: objectives, gradients, trigger rates, resume, interruption, divergence, config, data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from revise_core import losses
from revise_core.model_sets import EditModels
from trainer import state as checkpoints
from trainer.config import USOConfig, build_config, parse_override, read_config_file
from trainer.data import FeatureStore, ManifestError, read_manifest, sample_index
from trainer.demo import write_demo_data
from trainer.loop import TrainingDivergedError, USOTrainer


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("uso-data"), count=3)


def make_trainer(tiny_dir, manifest, out, **overrides) -> USOTrainer:
    settings = dict(models=str(tiny_dir), manifest=str(manifest), output_dir=str(out), num_frames=5, height=64,
                    width=64, global_batch=2, steps=4, checkpoint_every=2, lr=1e-4, critic_frames=2, vlm_frames=4,
                    max_text_len=32, tensorboard=False)
    settings.update(overrides)
    return USOTrainer(USOConfig(**settings))


def run(tiny_dir, manifest, out, resume=False, **overrides) -> list[dict]:
    trainer = make_trainer(tiny_dir, manifest, out, **overrides)
    trainer.setup(resume=resume)
    return trainer.train()


# --- formulas ------------------------------------------------------------------------------------

TABLE_6 = {0.1: 3.5, 0.3: 12.5, 0.5: 25.0, 0.7: 43.7, 0.9: 75.0}


def test_trigger_rates_of_the_trainers_timesteps_match_table_6(tiny_dir, manifest, tmp_path):
    trainer = make_trainer(tiny_dir, manifest, tmp_path)
    sigmas = torch.cat([losses.sample_sigmas(1, 3.0, trainer.sample_generator(step, micro))
                        for step in range(5000) for micro in range(2)])
    assert sigmas.numel() == 10_000 and sigmas.min() > 0 and sigmas.max() <= 1
    for sigma_max, percent in TABLE_6.items():
        rate = (sigmas <= sigma_max).float().mean().item() * 100
        assert abs(rate - percent) <= 1.0, (sigma_max, rate)


def test_each_objective_is_its_formula():
    fm = torch.tensor([1.0, 2.0], requires_grad=True)
    reason = torch.tensor([0.5, float("nan")])
    assert torch.allclose(losses.combine("sft", fm, reason=reason), torch.tensor(1.5))
    assert torch.allclose(losses.combine("uso", fm, reason=reason, weight=0.25), torch.tensor((1.0 + 0.125 + 2.0) / 2))
    p_yes = torch.tensor([0.2, float("nan")], requires_grad=True)
    rwr = losses.combine("rwr", fm, p_yes=p_yes)
    assert torch.allclose(rwr, torch.tensor((0.2 * 1.0 + 2.0) / 2))
    rwr.backward()
    assert p_yes.grad is None and torch.allclose(fm.grad, torch.tensor([0.1, 0.5]))
    relative = torch.tensor([0.3, -2.0])
    assert torch.allclose(losses.reason_loss(relative), -torch.log(torch.sigmoid(relative)))
    with pytest.raises(ValueError, match="objective must be one of"):
        losses.combine("ppo", fm)


def _grad_report(trainer):
    trainable = set(trainer.trainable)
    with_grad = {n for n, p in trainer.generator.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen_with_grad = [n for n, p in trainer.generator.named_parameters() if n not in trainable and p.grad is not None]
    for module in (trainer.models.vae, trainer.models.text.model, trainer.models.vlm.model):
        frozen_with_grad += [n for n, p in module.named_parameters() if p.grad is not None]
    return trainable, with_grad, frozen_with_grad


@pytest.mark.parametrize("mode, family", [("full", "qwen2"), ("lora", "qwen2"), ("full", "vila"), ("full", "revise"),
                                          ("lora", "revise")])
def test_gradients_reach_exactly_the_trainable_parameters(tiny_dir, manifest, tmp_path, mode, family):
    """With either VLM family as encoder and critic, and on the ReViSE release folder (VILA, VisionHead and
    DM_Adapter frozen), only the DiT (or its LoRA) and the visual adapter learn."""
    trainer = make_trainer(tiny_dir, manifest, tmp_path, models="", sigma_max=1.0, cfg_drop=0.0, train=mode,
                           lora_rank=4)
    trainer._models = EditModels.load(tiny_dir / "revise_ckpt" if family == "revise" else tiny_dir)
    if family == "vila":
        from revise_core.testing import VILA_CHECKPOINT
        from revise_core.vlm import load_vlm

        trainer._models.vlm = load_vlm(tiny_dir / VILA_CHECKPOINT, dtype="fp32")
    trainer.setup()
    if mode == "lora":  # LoRA starts with B = 0, which leaves A's first gradient exactly zero
        with torch.no_grad():
            for name, parameter in trainer.generator.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=0.01)
    result = trainer._loss_step(0, 0)
    assert result.triggered
    result.loss.backward()
    trainable, with_grad, frozen_with_grad = _grad_report(trainer)
    assert with_grad == trainable and not frozen_with_grad
    adapter = {n for n in trainable if n.startswith("connector.visual_context_adapter.")}
    assert adapter == {f"connector.visual_context_adapter.{p}.{k}" for p in ("patch_embedding", "projection")
                       for k in ("weight", "bias")}
    if mode == "lora":
        assert all("lora_" in n for n in trainable - adapter)
    else:
        assert len(trainable - adapter) == len(list(trainer.generator.dit.parameters()))
    # L_reason recomputed by hand from the logged logits, and USO's total.
    by_hand = -math.log(1.0 / (1.0 + math.exp(-(result.delta - result.delta_base))))
    assert result.l_reason == pytest.approx(by_hand, abs=1e-5)
    assert float(result.loss.detach()) == pytest.approx(result.l_fm + 0.25 * result.l_reason, abs=1e-5)


def test_sft_never_calls_the_critic_and_rwr_weights_by_p_yes(tiny_dir, manifest, tmp_path):
    sft = make_trainer(tiny_dir, manifest, tmp_path / "sft", objective="sft", sigma_max=1.0)
    sft.setup()
    result = sft._loss_step(0, 0)
    assert not result.triggered and float(result.loss.detach()) == pytest.approx(result.l_fm, abs=1e-6)
    rwr = make_trainer(tiny_dir, manifest, tmp_path / "rwr", objective="rwr", sigma_max=1.0)
    rwr.setup()
    result = rwr._loss_step(0, 0)
    assert result.triggered and float(result.loss.detach()) == pytest.approx(result.p_yes * result.l_fm, rel=1e-5)


# --- runs ----------------------------------------------------------------------------------------

def test_interrupted_and_resumed_run_gives_the_same_losses(tiny_dir, manifest, tmp_path):
    straight = run(tiny_dir, manifest, tmp_path / "a")
    first = run(tiny_dir, manifest, tmp_path / "b", steps=2)
    resumed = run(tiny_dir, manifest, tmp_path / "b", resume=True)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, first + resumed[2:], strict=True):
        assert a["loss"] == b["loss"] and a["l_fm"] == b["l_fm"], (a, b)
    logged = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert {"loss", "l_fm", "l_reason", "triggered", "delta", "delta_base", "p_yes", "grad_norm", "lr",
            "s_per_it"} <= logged[0].keys()


# cosine checks the schedule across the resume too; constant (the paper's) is the same path, run with -m slow
@pytest.mark.parametrize("schedule", [pytest.param("constant", marks=pytest.mark.slow), "cosine"])
def test_ctrl_c_saves_the_last_completed_step(tiny_dir, manifest, tmp_path, schedule):
    trainer = make_trainer(tiny_dir, manifest, tmp_path, checkpoint_every=100, lr_schedule=schedule, warmup_steps=1)
    trainer.setup()
    original = trainer._loss_step
    calls = []

    def interrupt_in_step_three(step, micro):
        calls.append(step)
        if step == 2:
            raise KeyboardInterrupt
        return original(step, micro)

    trainer._loss_step = interrupt_in_step_three
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert checkpoints.latest(tmp_path).name == "step_000002"
    resumed = run(tiny_dir, manifest, tmp_path, resume=True, checkpoint_every=100, lr_schedule=schedule,
                  warmup_steps=1)
    straight = run(tiny_dir, manifest, tmp_path / "straight", lr_schedule=schedule, warmup_steps=1)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    # one warm-up step, then constant, or a half cosine over the 3 steps after it: 1, cos²(π/6), cos²(π/3)
    factors = [1.0, 1.0, 1.0, 1.0] if schedule == "constant" else [1.0, 1.0, 0.75, 0.25]
    assert [r["lr"] for r in straight] == pytest.approx([1e-4 * f for f in factors])
    assert [r["lr"] for r in resumed][-2:] == pytest.approx([1e-4 * f for f in factors][-2:])


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tiny_dir, manifest, tmp_path):
    trainer = make_trainer(tiny_dir, manifest, tmp_path, checkpoint_every=1)
    trainer.setup()
    dit_forward = trainer.generator.dit.forward

    def poisoned(*args, **kwargs):
        out = dit_forward(*args, **kwargs)
        return (out[0] * float("nan"),) if len(trainer.history) >= 1 else out

    trainer.generator.dit.forward = poisoned
    with pytest.raises(TrainingDivergedError, match="non-finite loss .* at step 2; .*step_000001"):
        trainer.train()
    assert checkpoints.latest(tmp_path).name == "step_000001"


def test_cli_demo_trains_resumes_and_exports(tmp_path, capsys):
    from revise_core.dit import load_dit
    from trainer import uso

    assert uso.main(["--demo", "--out", str(tmp_path), "--steps", "2", "--objective", "uso"]) == 0
    assert uso.main(["--demo", "--out", str(tmp_path), "--steps", "3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "final" in out and (tmp_path / "run" / "curves.png").is_file()
    assert load_dit(tmp_path / "run" / "final" / "dit.safetensors").config.num_layers == 2


def test_cli_demo_trains_the_release_folder(tmp_path, capsys):
    from trainer import uso

    assert uso.main(["--demo", "revise", "--out", str(tmp_path), "--steps", "2"]) == 0
    assert "release_transformer" in capsys.readouterr().out
    assert (tmp_path / "run-revise" / "final" / "transformer" / "model.pt").is_file()


# two processes: 22 s on 2 cores, the longest test of the suite
@pytest.mark.parametrize("strategy", [pytest.param("ddp", marks=pytest.mark.slow),
                                      pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one_process(tmp_path, strategy):
    """DDP and FSDP2 on 2 CPU processes (gloo), same global batch: the same losses as one process. Each run is a
    few fresh processes (about 25 s on 2 cores), so the default run keeps DDP and `-m slow` adds FSDP2."""
    import os
    import shutil
    import subprocess
    import sys

    from trainer import uso

    common = ["--demo", "--steps", "2", "device=cpu", "checkpoint_every=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert uso.main(["--out", str(tmp_path / "one"), *common]) == 0  # the reference, in this process

    def losses_of(folder):
        return [json.loads(l)["loss"] for l in (folder / "run" / "metrics.jsonl").read_text().splitlines()]

    one = losses_of(tmp_path / "one")
    assert len(one) == 2
    for part in ("models", "data"):  # the demo reuses what is there: the models are written once
        shutil.copytree(tmp_path / "one" / part, tmp_path / strategy / part)
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             "2", "-m", "trainer.uso", "--out", str(tmp_path / strategy), *common,
                             f"strategy={strategy}"], capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    assert losses_of(tmp_path / strategy) == pytest.approx(one, abs=1e-5), strategy
    assert (tmp_path / strategy / "run" / "final" / "dit.safetensors").is_file()


# --- config and data -----------------------------------------------------------------------------

def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("objective: rwr\nlr: 1.0e-5\nlora_targets: [to_q, to_k]\n")
    assert read_config_file(path)["objective"] == "rwr"
    config = build_config(path, dict([parse_override("steps=7"), parse_override("cot=true")]))
    assert (config.objective, config.lr, config.steps, config.cot, config.lora_targets) == ("rwr", 1e-5, 7, True,
                                                                                            ["to_q", "to_k"])
    assert USOConfig().reason_weight == 0.25 and USOConfig().sigma_max == 0.5 and USOConfig().grad_clip == 0.1
    (tmp_path / "bad.yaml").write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown settings \\['learning_rate'\\]"):
        read_config_file(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="num_frames must be 4k\\+1"):
        USOConfig(num_frames=16)
    with pytest.raises(ValueError, match="key=value"):
        parse_override("steps")


def test_help_documents_every_setting():
    from dataclasses import fields

    from trainer.uso import build_parser

    text = build_parser().format_help()
    for f in fields(USOConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name


def test_manifest_problems_are_all_reported(manifest, tmp_path):
    lines = [line for line in manifest.read_text().splitlines()]
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"garbage")
    entries = [json.loads(lines[0]), {"source": "nope.mp4", "target": "nope.mp4", "instruction": "x"},
               {"source": str(bad_video), "target": str(bad_video), "instruction": "x"},
               {"source": "a.mp4", "target": "b.mp4"}, {"source": "a", "target": "b", "instruction": "x", "subset": "X"}]
    entries[0]["source"] = str(manifest.parent / entries[0]["source"])
    entries[0]["target"] = str(manifest.parent / entries[0]["target"])
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n{not json\n")
    with pytest.raises(ManifestError) as error:
        read_manifest(path, min_frames=9)
    message = str(error.value)
    for expected in ("line 1 (source)", "at least 9 needed", "line 2 (source): file not found", "line 3 (source)",
                     "unreadable video", "line 4: missing or empty field(s) ['instruction']",
                     "line 5: subset must be one of", "line 6: not JSON"):
        assert expected in message, expected
    assert len(read_manifest(manifest, min_frames=5)) == 3


def test_feature_cache_is_reused_from_disk(tiny_dir, manifest, tmp_path):
    models = EditModels.load(tiny_dir)
    triplet = read_manifest(manifest)[0]
    kwargs = dict(num_frames=5, height=64, width=64, resize="crop", max_text_len=32, vlm_frames=4,
                  cache_dir=tmp_path / "cache")
    first = FeatureStore(models, **kwargs).get(triplet)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    store = FeatureStore(models, **kwargs)
    store._compute = lambda t: (_ for _ in ()).throw(AssertionError("encoders ran again"))
    again = store.get(triplet)
    for name, tensor in first.to_tensors().items():
        assert torch.equal(tensor, getattr(again, name)), name


def test_data_order_depends_only_on_seed_and_position():
    order = [sample_index(step, micro, 2, 5, seed=3) for step in range(5) for micro in range(2)]
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:]) == list(range(5))
    assert order == [sample_index(step, micro, 2, 5, seed=3) for step in range(5) for micro in range(2)]


def test_shipped_training_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs" / "train"
    objectives = {build_config(path, {}).objective for path in root.glob("*.yaml")}
    assert objectives == {"uso", "sft", "rwr"}


def test_feature_cache_key_follows_the_vlm_family_and_its_conditioning(tiny_dir, manifest):
    """Cached u must never be reused for another VLM family or another VILA conditioning option."""
    import dataclasses

    from revise_core.testing import VILA_CHECKPOINT
    from revise_core.vlm import load_vlm

    models = EditModels.load(tiny_dir)
    triplet = read_manifest(manifest)[0]
    kwargs = dict(num_frames=5, height=64, width=64, resize="crop", max_text_len=32, vlm_frames=4)
    vila = load_vlm(tiny_dir / VILA_CHECKPOINT, dtype="fp32")
    keys = {FeatureStore(dataclasses.replace(models, vlm=vlm), **kwargs)._key(triplet)
            for vlm in (models.vlm, vila, dataclasses.replace(vila, condition_on_all_frames=True))}
    assert len(keys) == 3


def test_offload_text_encoder_gives_identical_losses(tiny_dir, manifest, tmp_path):
    """umT5 rests off the compute device between feature passes: a memory switch, the losses are identical."""
    on = run(tiny_dir, manifest, tmp_path / "on", steps=2, offload_text_encoder=True)
    off = run(tiny_dir, manifest, tmp_path / "off", steps=2, offload_text_encoder=False)
    assert [r["loss"] for r in on] == [r["loss"] for r in off]


def test_text_encoder_visits_the_compute_device_only_while_encoding():
    from revise_core.placement import Placement, PlacementConfig
    from trainer.loop import frozen_placement

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.moves = []

        def to(self, device):
            self.moves.append(str(device))
            return self

    config = USOConfig(offload_text_encoder=True)
    plan, fixed = frozen_placement(config, torch.device("meta"), critic_is_encoder=True)
    assert fixed == {"vae": "resident", "vlm": "resident", "t5": "sequential"}  # the critic's path stays put
    module = Module()
    plan.apply({"t5": module}, fixed=fixed)
    assert module.moves == ["cpu"]
    with torch.no_grad(), plan.use("t5"):
        assert module.moves == ["cpu", "meta"]
    assert module.moves == ["cpu", "meta", "cpu"]
    assert plan.transfers.onloaded["t5"] == 4  # one fp32 weight, once
    resident = Placement(PlacementConfig(placement="resident"), torch.device("cpu")).apply({"t5": Module()})
    with torch.no_grad(), resident.use("t5"):  # resident: nothing moves
        pass
    assert resident.transfers.total_bytes == 0
    assert frozen_placement(USOConfig(objective="sft", frozen_placement="stream"), torch.device("cpu"),
                            critic_is_encoder=True)[1] == {"vae": "resident"}


def test_frozen_dtype_sets_the_storage_of_the_frozen_models(tiny_dir, manifest, tmp_path):
    # 32 x 32 clips: half-precision convolutions are slow on the CPU, and the dtypes are what is checked here.
    auto = make_trainer(tiny_dir, manifest, tmp_path / "auto", steps=1, height=32, width=32)
    auto.setup()
    assert {p.dtype for p in auto.models.vlm.model.parameters()} == {torch.float32}  # CPU: fp32 compute
    half = make_trainer(tiny_dir, manifest, tmp_path / "bf16", steps=1, frozen_dtype="bf16", height=32, width=32)
    half.setup()
    for module in (half.models.vae, half.models.text.model, half.models.vlm.model):
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    trained = {n for n, p in half.generator.named_parameters() if p.requires_grad}
    assert {p.dtype for n, p in half.generator.named_parameters() if n in trained} == {torch.float32}  # fp32 masters
    frozen_connector = [p for p in half.generator.connector.parameters() if not p.requires_grad]
    assert frozen_connector and {p.dtype for p in frozen_connector} == {torch.float32}  # Omni-Video 2 layout: fp32
    reference, result = auto._loss_step(0, 0), half._loss_step(0, 0)
    loss, expected = float(result.loss.detach()), float(reference.loss.detach())
    assert math.isfinite(loss) and loss == pytest.approx(expected, rel=0.05)


def test_memory_switches_give_identical_losses_and_gradients(tiny_dir, manifest, tmp_path):
    """What the cost model switches on to fit (DiT, VLM and per-frame VAE checkpointing, umT5 offload) changes
    memory, not results: the loss and every gradient of a critic-triggered sample are unchanged."""
    results = {}
    for name, switches in (("off", {}), ("on", dict(checkpointing_dit=True, checkpointing_vlm=True,
                                                     checkpointing_vae=True, offload_text_encoder=True))):
        trainer = make_trainer(tiny_dir, manifest, tmp_path / name, sigma_max=1.0, cfg_drop=0.0,
                               decode_latent_frames=1, **switches)
        trainer.setup()
        result = trainer._loss_step(0, 0)
        assert result.triggered
        result.loss.backward()
        results[name] = (float(result.loss.detach()), {n: p.grad.clone() for n, p in trainer.generator.named_parameters()
                                                      if p.grad is not None})
    (loss_off, grads_off), (loss_on, grads_on) = results["off"], results["on"]
    assert loss_on == pytest.approx(loss_off, abs=1e-6) and grads_on.keys() == grads_off.keys()
    for name, grad in grads_off.items():
        assert torch.allclose(grads_on[name], grad, atol=1e-6), name


def test_critic_decode_frames_judges_sampled_latent_frames_against_the_matching_source_frames(
        tiny_dir, manifest, tmp_path, monkeypatch):
    """critic_decode=frames (the paper's section 3.2): critic_frames latent frames spread over the clip are
    decoded one at a time and paired with the source frames at the same times; gradients reach the DiT."""
    from revise_core import critic as critic_module

    seen = []
    original = critic_module.SelfCritic.relative

    def recording(self, source, edited, instruction, **kwargs):
        seen.append((source.detach().clone(), edited.shape))
        return original(self, source, edited, instruction, **kwargs)

    monkeypatch.setattr(critic_module.SelfCritic, "relative", recording)
    trainer = make_trainer(tiny_dir, manifest, tmp_path / "frames", sigma_max=1.0, cfg_drop=0.0, num_frames=9,
                           critic_decode="frames", critic_frames=2, checkpointing_vae=True)
    trainer.setup()
    result = trainer._loss_step(0, 0)
    assert result.triggered
    result.loss.backward()
    (source, edited_shape), = seen
    assert edited_shape[0] == 2  # 9 frames = 3 latent frames; latent frames 0 and 2 are decoded
    all_source = [trainer.features.get(t).source_frames for t in trainer.triplets]
    assert any(torch.equal(source, frames[[0, 8]].to(source)) for frames in all_source)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.generator.dit.parameters())
    with pytest.raises(ValueError, match="critic_decode must be 'video' or 'frames'"):
        USOConfig(critic_decode="sampled")


def test_the_release_heads_are_stored_in_bf16_with_bf16_frozen_models(tiny_dir, manifest, tmp_path):
    trainer = make_trainer(tiny_dir, manifest, tmp_path, models=str(tiny_dir / "revise_ckpt"), steps=1,
                           frozen_dtype="bf16", height=32, width=32)
    trainer.setup()
    connector = trainer.generator.connector
    assert {p.dtype for m in (connector.vision_head, connector.dm_adapter) for p in m.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in connector.visual_context_adapter.parameters()} == {torch.float32}  # it trains
    result = trainer._loss_step(0, 0)
    assert math.isfinite(float(result.loss.detach()))


def test_a_trained_release_exports_into_the_release_layout_and_as_one_file(tiny_dir, manifest, tmp_path):
    """Export after training on a release folder: transformer/model.pt replaces the release's own file (the
    folder then loads the trained DiT and adapter), and dit.safetensors loads on its own."""
    import shutil

    from revise_core.dit import load_dit
    from trainer.model import export

    trainer = make_trainer(tiny_dir, manifest, tmp_path / "run", models=str(tiny_dir / "revise_ckpt"), steps=1)
    trainer.setup()
    with torch.no_grad():
        for parameter in trainer.generator.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)  # "trained": differs from the release's weights
    outputs = export(trainer.generator, tmp_path / "export")
    folder = tmp_path / "revise_ckpt"
    shutil.copytree(tiny_dir / "revise_ckpt", folder)
    shutil.copy(outputs["release_transformer"], folder / "transformer" / "model.pt")
    reloaded = EditModels.load(folder)
    for module, trained in ((reloaded.dit, trainer.generator.dit), (reloaded.connector, trainer.generator.connector)):
        expected = trained.state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, expected[key].to(value.dtype)), key
    single = load_dit(outputs["dit"])
    for key, value in single.state_dict().items():
        assert torch.equal(value, trainer.generator.dit.state_dict()[key]), key


def test_demo_flag_takes_a_name_or_leaves_an_override_alone():
    from trainer import uso

    parser = uso.build_parser()
    args = uso.parse_args(parser, ["--demo", "lr=1e-3", "steps=2"])
    assert args.demo == "tiny" and args.overrides == ["lr=1e-3", "steps=2"]
    assert uso.parse_args(parser, ["--demo", "revise"]).demo == "revise"
    assert uso.parse_args(parser, ["--demo"]).demo == "tiny"
    with pytest.raises(SystemExit):
        uso.parse_args(parser, ["--demo", "bogus"])


def test_a_critic_that_differs_from_the_encoder_vlm_judges_and_receives_no_gradient(tiny_dir, manifest, tmp_path):
    """critic_vlm: the SelfCritic runs on another VLM folder (here a Qwen3-VL, the encoder a Qwen2.5-VL); the
    reward's gradient reaches the DiT through it, never its weights; the default is the encoder itself."""
    from revise_core.testing.omnivideo2 import tiny_qwen3_vl, write_qwen3_vl_folder

    folder = write_qwen3_vl_folder(tiny_qwen3_vl(seed=5), tmp_path / "critic-qwen3")
    trainer = make_trainer(tiny_dir, manifest, tmp_path / "run", sigma_max=1.0, cfg_drop=0.0, critic_vlm=str(folder))
    trainer.setup()
    assert trainer.critic.vlm.family == "qwen3_vl" and trainer.models.vlm.family == "qwen2_vl"
    result = trainer._loss_step(0, 0)
    assert result.triggered
    result.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.generator.dit.parameters())
    assert all(p.grad is None for p in trainer.critic.vlm.model.parameters())
    default = make_trainer(tiny_dir, manifest, tmp_path / "default")
    default.setup()
    assert default.critic.vlm is default.models.vlm


def test_a_loaded_critic_vlm_is_used_as_given(tiny_dir, manifest, tmp_path):
    """ComfyUI's trainer node hands an already loaded VLM (its optional critic_vlm socket)."""
    from revise_core.testing.omnivideo2 import tiny_qwen3_vl

    critic = tiny_qwen3_vl(seed=6)
    trainer = USOTrainer(USOConfig(models=str(tiny_dir), manifest=str(manifest), output_dir=str(tmp_path), num_frames=5,
                                   height=64, width=64, global_batch=2, steps=1, critic_vlm="comfyui-critic",
                                   tensorboard=False), critic_vlm=critic)
    trainer.setup()
    assert trainer.critic.vlm is critic and not any(p.requires_grad for p in critic.model.parameters())


def test_feature_cache_key_is_the_same_in_every_process():
    """The encoders' fingerprint must not depend on the hash seed: diffusers keeps `_use_default_values`, a
    list made from a set, in its configs, and a key built on it missed the cache in every new process."""
    import os
    import subprocess
    import sys

    script = ("from revise_core.model_sets import EditModels\n"
              "from revise_core.testing import tiny_text_encoder, tiny_vae, tiny_vlm\n"
              "from trainer.data import _encoder_fingerprint\n"
              "print(_encoder_fingerprint(EditModels(dit=None, vae=tiny_vae(0), text=tiny_text_encoder(0), "
              "vlm=tiny_vlm(0), connector=None)))\n")
    # this process hashes with a random seed (or the one it was given), the other with another fixed one
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "2" else "2"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
    from revise_core.model_sets import EditModels
    from revise_core.testing import tiny_text_encoder, tiny_vae, tiny_vlm
    from trainer.data import _encoder_fingerprint

    here = _encoder_fingerprint(EditModels(dit=None, vae=tiny_vae(0), text=tiny_text_encoder(0), vlm=tiny_vlm(0),
                                           connector=None))
    assert done.stdout.strip().splitlines()[-1] == here
