"""Half precision end to end: the compute dtype is the one the models were loaded in (never the dtype of an
fp32-kept module), and every command-line demo runs in bf16 and fp16 on the CPU.

Half precision on the CPU has no fast conv3d kernels, so the demos here use 5 frames at 32 x 32."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_close
from revise_core import checkpoints as ckpt
from revise_core.dit import load_dit
from revise_core.sampler import SamplerConfig, sample

HALF = ["bf16", "fp16"]
SMALL = ["--frames", "5", "--height", "32", "--width", "32"]


def test_compute_dtype_skips_fp32_kept_modules(tiny_dir):
    dit = load_dit(tiny_dir / "dit" / "wan_tiny_comfyui.safetensors", dtype="bf16")
    first = next(dit.parameters())
    assert first.dtype == torch.float32  # scale_shift_table: kept in fp32 by diffusers' policy
    assert ckpt.compute_dtype(dit) == torch.bfloat16
    mixed = torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 64)).to(torch.float16)
    mixed[0].float()  # a small fp32 norm first, the bulk in fp16
    assert ckpt.compute_dtype(mixed) == torch.float16
    assert ckpt.auto_dtype("auto", "cpu") == "fp32" and ckpt.auto_dtype("auto", "cuda:0") == "bf16"
    assert ckpt.auto_dtype("fp16", "cpu") == "fp16"


@pytest.mark.parametrize("dtype", HALF)
def test_sampler_runs_a_half_precision_dit(tiny_dir, dtype):
    """The sampler used to cast its inputs to the DiT's first parameter (fp32) and crash in the bf16 conv."""
    path = tiny_dir / "dit" / "wan_tiny_comfyui.safetensors"
    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 16, 32, generator=generator)
    config = SamplerConfig(steps=3, seed=1)
    with torch.no_grad():
        reference = sample(load_dit(path, dtype="fp32"), cond[None], uncond[None], latent_shape=(1, 16, 2, 4, 4),
                           config=config)
        half = sample(load_dit(path, dtype=dtype), cond[None], uncond[None], latent_shape=(1, 16, 2, 4, 4),
                      config=config)
    assert half.dtype == torch.float32  # the scheduler state stays fp32
    assert_close(half, reference, atol=0.1, what=dtype)  # half-precision rounding, not a different result


@pytest.mark.parametrize("dtype", HALF)
def test_edit_and_best_of_demo(dtype, tmp_path, capsys):
    from revise_core import edit as edit_cli
    from revise_core.video import read_video

    out = tmp_path / "edited.mp4"
    assert edit_cli.main(["--demo", "--dtype", dtype, "--best-of", "2", "--out", str(out), "--json"] + SMALL) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype"] == dtype and len(report["best_of"]) == 2
    assert read_video(out).frames.shape[:3] == (5, 32, 32)


@pytest.mark.parametrize("demo", ["qwen2", "revise"])
@pytest.mark.parametrize("dtype", HALF)
def test_critic_demo(dtype, demo, capsys):
    from revise_core.critic import __main__ as critic_cli

    assert critic_cli.main(["--demo", demo, "--dtype", dtype, "--json", "--no-per-dimension"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 < report["p_yes"] < 1.0


# bf16 also trains in the USO fine-tune workflow's bf16 run (tests/test_workflows.py); its demo here is slow
@pytest.mark.parametrize("dtype", [pytest.param("bf16", marks=pytest.mark.slow), "fp16"])
def test_trainer_demo_and_fp16_loss_scale_resume(dtype, tmp_path, capsys):
    from trainer import uso

    args = ["--demo", "--dtype", dtype, "--out", str(tmp_path), "--height", "32", "--width", "32"]
    assert uso.main(args + ["--steps", "2"]) == 0
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_000002" / "state.json").read_text())
    assert state["config"]["dtype"] == dtype
    if dtype == "bf16":
        assert state["grad_scaler"] is None  # bf16 needs no loss scaling
        return
    assert state["grad_scaler"]["_growth_tracker"] == 2  # two unskipped fp16 steps so far
    assert uso.main(args + ["--steps", "3", "--resume"]) == 0
    resumed = json.loads((tmp_path / "run" / "checkpoints" / "step_000003" / "state.json").read_text())
    assert resumed["grad_scaler"]["_growth_tracker"] == 3  # the scaler's state came back with the checkpoint


# fp16's VAE convolutions are slow on a CPU (15 s of the demo); bf16 runs the same code path by default
@pytest.mark.parametrize("dtype", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_rve_bench_demo(dtype, tmp_path, capsys):
    from revise_core.evaluation import rve

    assert rve.main(["--demo", "--dtype", dtype, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    assert len(list((tmp_path / "report" / "predictions").glob("*.mp4"))) == 4


@pytest.mark.slow
@pytest.mark.parametrize("demo", ["revise", "qwen3"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_edit_demos_run_in_half_precision(demo, dtype, tmp_path, capsys):
    """`--demo revise` and `--demo qwen3` in the precisions GPU users run (1-3 minutes each on a CPU, whose
    half-precision convolutions are slow): a finite, non-constant video."""
    import json

    from revise_core import edit
    from revise_core.video import read_video

    out = tmp_path / "edit.mp4"
    assert edit.main(["--demo", demo, "--dtype", dtype, "--steps", "1", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == dtype
    frames = read_video(out).frames
    assert torch.isfinite(frames).all() and frames.std() > 0.01
