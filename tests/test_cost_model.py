"""The fake-tensor cost model: the same peak memory and split as real tensors on small models (with and
without activation checkpointing), GPU-like RMSNorm and attention accounting, FLOPs of the CPU flash kernel,
a loud failure when an attention matrix is materialised, and the shape of the result rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench import fake_measure
from bench.fake_measure import measure


def _small_dit_setup(checkpointing: bool):
    def setup() -> dict:
        from diffusers import WanTransformer3DModel

        with fake_measure.default_dtype(torch.float32):
            dit = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=3,
                                        text_dim=32, freq_dim=32)
        dit.train()
        if checkpointing:
            dit.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(dit.parameters(), lr=1e-4)
        x0, text = torch.randn(1, 16, 3, 16, 32), torch.randn(1, 24, 32)
        return dict(dit=dit, optimizer=optimizer, x0=x0, text=text, tracked=[dit, optimizer, x0, text])
    return setup


def _train_step(state: dict) -> None:
    velocity = state["dit"](state["x0"], torch.tensor([500.0]), state["text"], return_dict=False)[0]
    velocity.float().square().mean().backward()
    state["optimizer"].step()
    state["optimizer"].zero_grad(set_to_none=True)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fake_tensors_give_the_real_peak_and_split(checkpointing):
    """The whole point of the tool: shapes and lifetimes alone give exactly what real tensors give."""
    real = measure(_small_dit_setup(checkpointing), _train_step, fake=False)
    fake = measure(_small_dit_setup(checkpointing), _train_step)
    assert fake.peak_bytes == real.peak_bytes and fake.split == real.split
    # 3 blocks x (self + cross attention), recomputed once more in backward under checkpointing
    assert fake.flops == real.flops > 0 and fake.attention_calls == real.attention_calls == 6 * (1 + checkpointing)


def test_checkpointing_lowers_the_peak_in_the_model_too():
    plain = measure(_small_dit_setup(False), _train_step)
    checkpointed = measure(_small_dit_setup(True), _train_step)
    assert checkpointed.split["Activation"] < plain.split["Activation"] / 2


def test_gpu_like_rms_norm_matches_torch():
    x = torch.randn(3, 7, 16, requires_grad=True)
    weight = torch.randn(16, requires_grad=True)
    with fake_measure.gpu_rms_norm():
        ours = F.rms_norm(x, [16], weight, 1e-6)
        grads = torch.autograd.grad(ours.square().sum(), (x, weight))
    reference = torch.rms_norm(x, [16], weight, 1e-6)
    expected = torch.autograd.grad(reference.square().sum(), (x, weight))
    assert torch.allclose(ours, reference, atol=1e-6)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-5)
    assert F.rms_norm is not fake_measure._gpu_like_rms_norm  # restored


def test_flops_of_the_cpu_flash_kernel_are_counted():
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    shape = (1, 2, 1024, 32)

    def setup() -> dict:
        q = torch.randn(shape, requires_grad=True)
        return dict(q=q, tracked=[q])

    def step(state: dict) -> None:
        q = state["q"]
        F.scaled_dot_product_attention(q, q, q).sum().backward()

    result = measure(setup, step)
    assert result.attention_calls == 1
    assert result.flops == sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(shape, shape, shape, shape)


def test_a_materialised_attention_matrix_fails_loudly():
    def setup() -> dict:
        q = torch.randn(1, 1024, 16, requires_grad=True)
        return dict(q=q, tracked=[q])

    def step(state: dict) -> None:
        q = state["q"]
        (torch.softmax(q @ q.transpose(1, 2), dim=-1) @ q).sum().backward()  # the L x L matrix a GPU never keeps

    with pytest.raises(AssertionError, match="attention score matrix was materialised"):
        measure(setup, step)


def test_plan_ladders_accumulate_switches_and_rows_render():
    from bench import cost_model

    plan = cost_model.plan(quick=True)
    naive = [case for case in plan if case[0] == "naive"]
    assert {(case[1], case[2]) for case in naive} == {("edit", "33f"), ("sft", "33f"), ("uso", "33f"), ("edit", "81f"),
                                                      ("sft", "81f")}
    ladder = [case[5] for case in plan if case[0] == "project"]
    assert ladder[0] == {} and all(ladder[i].keys() <= ladder[i + 1].keys() for i in range(len(ladder) - 1))
    changed = {key for i in range(len(ladder) - 1) for key, value in ladder[i].items() if ladder[i + 1][key] != value}
    assert changed == {"decode_latent_frames"}  # the sampled-frame decode replaces the latent prefix
    assert ladder[-1]["critic_frames"] == 2 and ladder[-1]["checkpointing_dit"] and ladder[-1]["critic_decode"] == "frames"
    row = cost_model.Row("uso", 33, 352, 640, "qwen2.5-vl-7b", "naive (H100 anchor)", 74.3, {"Activation": 49.9},
                         2.04e14, 0.2063, 74.1, 0.0027)
    table = cost_model.markdown([row], "python -m bench.cost_model")
    assert "| uso | 33 (352x640) | qwen2.5-vl-7b | naive (H100 anchor) | 74.30 | 74.1 | +0.3% | 204.0 |" in table


def test_an_interrupted_run_continues_from_its_printed_rows(tmp_path):
    import dataclasses
    import json

    from bench import cost_model

    cases = cost_model.plan(quick=True)[:2]
    rows = [cost_model.Row(case[1], cost_model.SIZES[case[2]][0], 352, 640, case[3], case[4], 1.0 + i, {}, 1e12,
                           1.0, switches=case[5]) for i, case in enumerate(cases)]
    log = tmp_path / "printed.log"
    log.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in rows) + '{"step": "uso", "fra')  # torn
    reuse = cost_model.reused_rows(str(log))
    assert len(reuse) == 2
    measured = list(cost_model.measure_all(cases, jobs=1, reuse=reuse))  # nothing left to measure: no fake run
    assert [r.peak_gib for r in measured] == [1.0, 2.0]
