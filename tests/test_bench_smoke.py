"""The benchmark scripts run (figures live in bench/results/, never in tests)."""

from __future__ import annotations

import torch

from bench import sample_speed


def test_sample_speed_case_runs_and_both_samplers_agree():
    dit, vae, context_len, text_dim = sample_speed.build(torch.device("cpu"), torch.float32)
    record = sample_speed.run_case(dit, vae, context_len, text_dim, 5, 32, 32, 2, torch.device("cpu"), torch.float32)
    assert record["max_abs_diff"] == 0.0
    assert record["ours_s_per_step"] > 0 and record["diffusers_s_per_step"] > 0


def test_critic_speed_runs_on_cpu():
    from bench import critic_speed

    record = critic_speed.run(torch.device("cpu"), repeats=1, gradient_checkpointing=False)
    assert record["fwd_bwd_s"] > 0 and record["height"] == 64


def test_train_step_bench_measures_sft_and_uso():
    from bench import train_step

    device = torch.device("cpu")
    generator, vae, critic = train_step.build(device)
    feats = train_step.features(generator, vae, 5, 32, 32, device)
    for objective in ("sft", "uso"):
        record = train_step.measure(generator, vae, critic, feats, device, objective=objective, checkpointing=True,
                                    latent_frames=1, repeats=1)
        assert record["s"] > 0
