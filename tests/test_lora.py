"""External Wan LoRAs: every layout users download, applied with strengths, stacked, scoped, refused clearly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from revise_core.lora import LoraChoice, LoraError, fuse_loras, load_loras, patched_loras, read_lora
from revise_core.testing import tiny_dit
from revise_core.testing.loras import LAYOUTS, write_tiny_lora


@pytest.fixture(scope="module")
def base():
    return tiny_dit(0)


@pytest.fixture
def dit(base):
    return copy.deepcopy(base)


def _expected_deltas(path, layout: str) -> dict[str, torch.Tensor]:
    """The deltas a LoRA file asks for, read from its raw keys (independently of the loader)."""
    raw = load_file(str(path))
    to_ours = {"self_attn": "attn1", "cross_attn": "attn2", "q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
    deltas = {}
    for key, down in raw.items():
        if not key.endswith((".lora_down.weight", ".lora_A.weight")):
            continue
        stem = key.rsplit(".", 2)[0]
        up = raw[stem + (".lora_up.weight" if "lora_down" in key else ".lora_B.weight")]
        scale = float(raw[stem + ".alpha"]) / down.shape[0] if stem + ".alpha" in raw else 1.0
        if layout == "diffusers":  # peft's names; alpha 1 over rank 2 in the adapter metadata
            module, scale = stem.removeprefix("transformer."), 0.5
        else:
            parts = stem.removeprefix("diffusion_model.").removeprefix("lora_unet_").replace("_", ".").split(".")
            parts = [p for p in parts if p]
            block, rest = parts[1], parts[2:]
            if rest[0] == "ffn":
                module = f"blocks.{block}.ffn.{'net.0.proj' if rest[1] == '0' else 'net.2'}"
            elif rest[0] in ("self", "cross"):  # kohya: self_attn_q -> self, attn, q
                module = f"blocks.{block}.{to_ours[rest[0] + '_attn']}.{to_ours[rest[2]]}"
            else:
                module = f"blocks.{block}.{to_ours[rest[0]]}.{to_ours[rest[1]]}"
        deltas[f"{module}.weight"] = scale * up @ down
        if stem + ".diff_b" in raw:
            deltas[f"{module}.bias"] = raw[stem + ".diff_b"]
    if layout == "step-distill":
        for key, value in raw.items():
            if key.endswith(".norm_q.diff") or key.endswith(".norm_k.diff"):
                block, norm = key.split(".")[2], key.split(".")[4]
                deltas[f"blocks.{block}.attn1.{norm}.weight"] = value
        deltas["condition_embedder.time_proj.bias"] = raw["diffusion_model.time_projection.1.diff_b"]
        deltas["proj_out.weight"] = raw["diffusion_model.head.head.diff"]
    return deltas


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_fuses_the_deltas_its_keys_ask_for(dit, base, tmp_path, layout):
    path = write_tiny_lora(tmp_path / f"{layout}.safetensors", dit, layout)
    expected = _expected_deltas(path, layout)
    assert len(expected) >= 20  # 2 blocks x 10 layers at least: nothing left out
    report = fuse_loras(dit, load_loras([LoraChoice(path, 0.8)], dit))
    assert report.parameters == len(expected)
    before, after = dict(base.named_parameters()), dict(dit.named_parameters())
    for name, parameter in after.items():
        delta = 0.8 * expected[name] if name in expected else torch.zeros(())
        torch.testing.assert_close(parameter - before[name], delta.expand_as(parameter), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_fused_dit_computes_what_diffusers_peft_adapter_computes(dit, base, tmp_path):
    """Parity with diffusers' own path: its conversion, peft's LoRA layers at a strength, unfused."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    path = write_tiny_lora(tmp_path / "comfyui.safetensors", dit, "comfyui")
    with_adapter = copy.deepcopy(base)
    with_adapter.load_lora_adapter(WanLoraLoaderMixin.lora_state_dict(str(path)), prefix="transformer",
                                   adapter_name="tiny")
    with_adapter.set_adapters(["tiny"], weights=[0.7])
    fuse_loras(dit, load_loras([LoraChoice(path, 0.7)], dit))
    generator = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=generator), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 7, base.config.text_dim, generator=generator), return_dict=False)
    with torch.no_grad():
        ours, theirs, plain = dit(**inputs)[0], with_adapter(**inputs)[0], base(**inputs)[0]
    assert (ours - plain).abs().max() > 1e-3  # the LoRA changes the output
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_loras_stack_with_their_strengths_and_a_scoped_patch_restores_the_exact_weights(dit, base, tmp_path):
    first = write_tiny_lora(tmp_path / "a.safetensors", dit, "comfyui", seed=1)
    second = write_tiny_lora(tmp_path / "b.safetensors", dit, "kohya", seed=2)
    deltas = [_expected_deltas(first, "comfyui"), _expected_deltas(second, "kohya")]
    loras = load_loras([LoraChoice(first, 0.5), LoraChoice(second, -1.0)], dit)
    original = {name: p.detach().clone() for name, p in dit.named_parameters()}
    with patched_loras(dit, loras) as report:
        assert report.parameters == 20
        weight = dict(dit.named_parameters())["blocks.1.ffn.net.2.weight"]
        wanted = original["blocks.1.ffn.net.2.weight"] + 0.5 * deltas[0]["blocks.1.ffn.net.2.weight"] \
            - deltas[1]["blocks.1.ffn.net.2.weight"]
        torch.testing.assert_close(weight, wanted, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(p, original[name]) for name, p in dit.named_parameters())
    with pytest.raises(RuntimeError, match="interrupted"), patched_loras(dit, loras):
        raise RuntimeError("interrupted")
    assert all(torch.equal(p, original[name]) for name, p in dit.named_parameters())
    assert LoraChoice.parse("x.safetensors:0.5") == LoraChoice(Path("x.safetensors"), 0.5)
    assert LoraChoice.parse("x.safetensors") == LoraChoice(Path("x.safetensors"), 1.0)
    assert LoraChoice.parse(r"C:\loras\x.safetensors").strength == 1.0
    with pytest.raises(ValueError, match=r"strength must be a number in \[-10.0, 10.0\], got 50"):
        LoraChoice.parse("x.safetensors:50")


@pytest.mark.parametrize(("layout", "prefix"), [("comfyui", "diffusion_model."), ("diffusers", "transformer.")])
def test_keys_without_their_layouts_prefix_read_as_with_it(dit, tmp_path, layout, prefix):
    path = write_tiny_lora(tmp_path / "full.safetensors", dit, layout)
    from safetensors import safe_open

    raw = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()  # diffusers' adapter metadata (alpha, rank) stays with the tensors
    bare = tmp_path / "bare.safetensors"
    save_file({key.removeprefix(prefix): value for key, value in raw.items()}, str(bare), metadata=metadata)
    with_prefix, without = read_lora(path, dit), read_lora(bare, dit)
    assert with_prefix.parameters == without.parameters and len(without.factors) == 20
    assert all(torch.equal(with_prefix.delta(name), without.delta(name)) for name in without.parameters)


def test_a_lora_for_another_model_is_refused_naming_three_of_its_keys(dit, tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({f"lora_te_text_model_encoder_layers_{i}_mlp_fc1.lora_down.weight": torch.zeros(2, 4)
               for i in range(5)}, str(other))
    with pytest.raises(LoraError, match=r"not a Wan LoRA layout .*'lora_te_text_model_encoder_layers_0_mlp_fc1"
                                        r"\.lora_down\.weight', '.*', '.*' \(expected"):
        read_lora(other, dit)
    bigger = tmp_path / "bigger.safetensors"  # a 40-block model's LoRA: blocks the tiny DiT does not have
    save_file({f"transformer.blocks.{i}.attn1.to_q.lora_A.weight": torch.zeros(2, 32) for i in range(30, 34)}
              | {f"transformer.blocks.{i}.attn1.to_q.lora_B.weight": torch.zeros(32, 2) for i in range(30, 34)},
              str(bigger))
    with pytest.raises(LoraError, match=r"none of its keys matches this DiT .* such as "
                                        r"'blocks\.30\.attn1\.to_q\.weight', 'blocks\.31\.attn1\.to_q\.weight', "
                                        r"'blocks\.32\.attn1\.to_q\.weight'$"):
        read_lora(bigger, dit)
    wide = tmp_path / "wide.safetensors"  # the 14B model's width on the right names
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 5120),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(5120, 2)}, str(wide))
    with pytest.raises(LoraError, match=r"'blocks\.0\.attn1\.to_q' factors \(5120, 2\) x \(2, 5120\) do not make"):
        read_lora(wide, dit)
    pickled = tmp_path / "lora.pt"
    torch.save({}, pickled)
    with pytest.raises(LoraError, match="lora.pt: a LoRA is read from a .safetensors file"):
        read_lora(pickled, dit)


def test_a_lora_is_refused_on_fp8_stored_weights(dit, tmp_path):
    path = write_tiny_lora(tmp_path / "a.safetensors", dit, "comfyui")
    loras = load_loras([LoraChoice(path)], dit)
    dit.blocks[0].attn1.to_q.weight.data = dit.blocks[0].attn1.to_q.weight.data.to(torch.float8_e4m3fn)
    with pytest.raises(LoraError, match="stores its weights as torch.float8_e4m3fn"):
        fuse_loras(dit, loras)


def test_the_lora_nodes_stack_on_the_samplers_dit_and_leave_it_as_loaded(tiny_model_dirs, tiny_dir):
    from conftest import ROOT_PACKAGE
    from revise_core.editor import EditSettings, ReviseEditor
    from revise_core.model_sets import EditModels

    nodes = ROOT_PACKAGE.NODE_CLASS_MAPPINGS
    assert "wan_tiny_step_distill_lora.safetensors" in nodes["ReViSELoRA"].INPUT_TYPES()["required"]["lora_name"][0]
    (first,) = nodes["ReViSELoRA"]().load("wan_tiny_step_distill_lora.safetensors", 1.0)
    (both,) = nodes["ReViSELoRA"]().load("wan_tiny_comfyui_lora.safetensors", -0.5, loras=first)
    assert [(c.path.name, c.strength) for c in both] == [("wan_tiny_step_distill_lora.safetensors", 1.0),
                                                          ("wan_tiny_comfyui_lora.safetensors", -0.5)]
    models = EditModels.load(tiny_dir)
    cond = ReviseEditor(models).condition(torch.rand(5, 32, 32, 3), "make it snow",
                                          EditSettings(num_frames=5, height=32, width=32, max_text_len=16,
                                                       vlm_frames=2))
    loaded = {name: p.detach().clone() for name, p in models.dit.named_parameters()}
    sampler = nodes["ReViSESampler"]()
    few_step = dict(steps=2, guidance=1.0, shift=5.0, scheduler="euler", seed=0, attention="native")
    (plain,) = sampler.sample(models.dit, cond, **few_step)
    (with_loras,) = sampler.sample(models.dit, cond, **few_step, loras=both)
    assert (with_loras["samples"] - plain["samples"]).abs().max() > 1e-4
    assert all(torch.equal(p, loaded[name]) for name, p in models.dit.named_parameters())
    (again,) = sampler.sample(models.dit, cond, **few_step)
    assert torch.equal(again["samples"], plain["samples"])
    with pytest.raises(TypeError, match="expected the output of a ReViSE LoRA node"):
        sampler.sample(models.dit, cond, **few_step, loras=("not a lora",))


def test_a_four_step_edit_with_a_step_distill_lora_runs_from_the_cli_on_the_release_dit(tiny_dir, tmp_path, capsys,
                                                                                          monkeypatch):
    import json

    from revise_core import edit as edit_cli
    from revise_core import sampler as sampler_ops
    from revise_core.video import read_video, synthetic_clip, write_video

    source = write_video(tmp_path / "in.mp4", synthetic_clip(10, 64, 96).frames, 8)
    lora = tiny_dir / "loras" / "wan_tiny_step_distill_lora.safetensors"
    calls = []
    real_sample = sampler_ops.sample
    monkeypatch.setattr("revise_core.editor.sample", lambda *a, **k: calls.append(k["config"]) or real_sample(*a, **k))
    common = ["--models", str(tiny_dir / "revise_ckpt"), "--video", str(source), "--instruction", "make it snow",
              "--preset", "revise-official", "--frames", "9", "--height", "64", "--width", "96", "--json",
              "--few-step"]
    outputs = {}
    for name, extra in (("plain", []), ("lora", ["--lora", f"{lora}:0.8"])):
        outputs[name] = tmp_path / f"{name}.mp4"
        assert edit_cli.main([*common, "--out", str(outputs[name]), *extra]) == 0
        summary = json.loads(capsys.readouterr().out)
    assert summary["loras"].startswith("1 LoRA(s) (wan_tiny_step_distill_lora.safetensors at 0.8) on ")
    config = calls[-1]  # the few-step sampling, under the release preset's
    assert (config.steps, config.guidance_scale, config.guidance_mode, config.scheduler, config.shift) == (
        4, 1.0, "standard", "euler", 5.0)
    assert not torch.equal(read_video(outputs["plain"]).frames, read_video(outputs["lora"]).frames)
    with pytest.raises(FileNotFoundError, match="--lora: no such file: .*missing.safetensors"):
        edit_cli.main([*common, "--out", str(tmp_path / "x.mp4"), "--lora", str(tmp_path / "missing.safetensors")])


def test_the_trainer_fuses_base_loras_into_the_dit_before_what_trains_wraps_it(tiny_dir, tmp_path):
    from revise_core.model_sets import EditModels
    from trainer.config import USOConfig
    from trainer.demo import write_demo_data
    from trainer.loop import USOTrainer

    lora = tiny_dir / "loras" / "wan_tiny_kohya_lora.safetensors"
    settings = dict(models=str(tiny_dir), manifest=str(write_demo_data(tmp_path / "data", count=2)), num_frames=5,
                    height=64, width=64, global_batch=2, steps=1, vlm_frames=4, max_text_len=32, tensorboard=False,
                    train="lora", lora_rank=2, lora_alpha=2.0, base_loras=[f"{lora}:0.5"])
    trainer = USOTrainer(USOConfig(**settings, output_dir=str(tmp_path / "run")))
    trainer.setup()
    expected = EditModels.load(tiny_dir, device="cpu").dit.float()
    fuse_loras(expected, load_loras([LoraChoice(lora, 0.5)], expected))
    trained = trainer.generator.dit  # peft's LoRA layers around the fused base
    base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    fused = {name.replace(".base_layer", ""): p for name, p in base.named_parameters() if "lora_" not in name}
    for name, parameter in expected.named_parameters():
        torch.testing.assert_close(fused[name].float(), parameter, rtol=1e-5, atol=1e-6, msg=name)
    models = EditModels.load(tiny_dir, device="cpu")
    with pytest.raises(ValueError, match="base_loras are fused into a DiT the trainer loads itself"):
        USOTrainer(USOConfig(**settings, output_dir=str(tmp_path / "handed")), models=models).setup()
    with pytest.raises(ValueError, match=r"base_loras: LoRA x.safetensors: strength must be"):
        USOConfig(**{**settings, "base_loras": ["x.safetensors:40"]}, output_dir=str(tmp_path / "bad"))
