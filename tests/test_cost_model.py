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
    for got, want in zip(grads, expected, strict=True):
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


# --- whole-edit placements (bench/placement_sim.py, bench/whole_edit.py) -------------------------------------

def _simulate(modes: dict, *, root_call: bool = True, repeat: int = 3):
    """Two tiny frozen models on fake tensors: stage a, stage b (x repeat), stage a again."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.placement_sim import Stage, simulate

    with FakeTensorMode(), torch.no_grad():
        models = dict(a=torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64)),
                      b=torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)))
        for model in models.values():
            model.requires_grad_(False)
        state = dict(x=torch.randn(8, 64))

        def run_a(s):
            s["y"] = models["a"](s["x"])

        def run_b(s):
            b = models["b"]
            s["z"] = b(s["y"]) if root_call else b[1](b[0](s["y"]))  # VILA calls its parts, never its root

        stages = [Stage("a", ("a",), run_a), Stage("b", ("b",), run_b, repeat=repeat), Stage("a again", ("a",), run_a)]
        return simulate(models, modes, stages, state)


BYTES_A = (64 * 128 + 128 + 128 * 64 + 64) * 4
BYTES_B = (64 * 256 + 256 + 256 * 64 + 64) * 4
LEAVES_B = ((64 * 256 + 256) * 4, (256 * 64 + 64) * 4)


def test_resident_moves_nothing_and_holds_every_model():
    result = _simulate(dict(a="resident", b="resident"))
    assert result.onloaded == 0 and result.offloaded == 0 and result.host_peak == 0
    assert result.weights == {"a": BYTES_A, "b": BYTES_B}
    assert all(stage.device_peak > BYTES_A + BYTES_B for stage in result.stages)


def test_sequential_holds_one_model_per_stage_and_moves_it_once_per_stage():
    resident, sequential = _simulate(dict(a="resident", b="resident")), _simulate(dict(a="sequential", b="sequential"))
    # the same activations; only the stage's own model is on the device
    for res, seq, other in zip(resident.stages, sequential.stages, (BYTES_B, BYTES_A, BYTES_B), strict=True):
        assert seq.device_peak == res.device_peak - other
    assert sequential.device_peak == max(stage.device_peak for stage in sequential.stages)
    # a is used by two stages; b's move into its stage happens once however often its body repeats
    assert dict(sequential.transfers.onloaded) == {"a": 2 * BYTES_A, "b": BYTES_B}
    assert sequential.offloaded == sequential.onloaded  # Module.to copies back as well
    assert sequential.host_peak == sequential.host_at_rest == BYTES_A + BYTES_B
    assert sequential.flops == resident.flops > 0


def test_stream_onloads_each_group_at_every_call_and_prefetches_the_next():
    resident, stream = _simulate(dict(a="resident", b="resident")), _simulate(dict(a="stream", b="stream"))
    assert dict(stream.transfers.onloaded) == {"a": 2 * BYTES_A, "b": 3 * BYTES_B}  # b's body runs 3 times
    assert stream.offloaded == 0  # the pinned host copy stays: offloading is free
    assert stream.host_peak == BYTES_A + BYTES_B
    activations = resident.stages[1].device_peak - BYTES_A - BYTES_B
    # during b: both of its groups at once (the current one and the prefetched next), nothing of a
    assert BYTES_B <= stream.stages[1].device_peak < BYTES_B + activations
    unprefetched = _simulate(dict(a="stream", b="stream"), root_call=False)
    assert unprefetched.stages[1].device_peak <= max(LEAVES_B) + activations  # one group at a time
    assert any("no prefetch" in note for note in unprefetched.notes)


def test_disk_holds_no_host_copy_but_reads_each_group_twice_over():
    disk = _simulate(dict(a="sequential", b="disk"))
    assert disk.host_at_rest == BYTES_A  # a waits in RAM, b on disk
    assert disk.stages[1].host_peak == BYTES_A + 2 * max(LEAVES_B)  # the file read + its pinned copy
    assert disk.transfers.onloaded["b"] == 3 * BYTES_B


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode"):
        _simulate(dict(a="resident", b="offloaded"))


def test_int8_storage_and_forward_are_torchao_s():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from bench.int8_storage import int8_bytes, store_int8
    from revise_core.placement import module_bytes

    reference = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).to(torch.bfloat16)
    ours = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).to(torch.bfloat16)
    expected_bytes = int8_bytes(reference)
    quantize_(reference, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear))
    assert store_int8(ours) == 2
    for theirs, mine in ((reference[0], ours[0]), (reference[2], ours[2])):
        mine.weight.data.copy_(theirs.weight.qdata)
        mine.weight_scale.copy_(theirs.weight.scale)
        mine.bias.data.copy_(theirs.bias)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    assert torch.equal(ours(x), reference(x))
    stored = sum(t.numel() * t.element_size() for t in [*ours.parameters(), *ours.buffers()])
    assert stored == module_bytes(reference) == expected_bytes


def test_fp8_storage_follows_diffusers_layerwise_casting():
    from diffusers import WanTransformer3DModel

    from bench.whole_edit import fp8_cast_modules, store_fp8

    config = dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, text_dim=32, freq_dim=32)
    reference = WanTransformer3DModel(**config).to(torch.bfloat16)
    ours = WanTransformer3DModel(**config).to(torch.bfloat16)
    ours.load_state_dict(reference.state_dict())
    reference.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    names = fp8_cast_modules(dict(WanTransformer3DModel(**config).config))
    assert store_fp8(ours, names) == len(names) > 0
    assert not any(n.startswith(("patch_embedding", "condition_embedder")) or "norm" in n for n in names)
    dtypes = lambda model: {n: p.dtype for n, p in model.named_parameters()}  # noqa: E731
    assert dtypes(ours) == dtypes(reference)
    x, text = torch.randn(1, 16, 1, 8, 8, dtype=torch.bfloat16), torch.randn(1, 6, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(ours(x, torch.tensor([500]), text, return_dict=False)[0],
                           reference(x, torch.tensor([500]), text, return_dict=False)[0])
    assert dtypes(ours) == dtypes(reference)  # cast back after the forward


def test_lora_hook_matches_peft():
    from peft import LoraConfig, get_peft_model

    from bench.train_memory import add_lora, lora_parameter_count

    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))  # noqa: E731
    base = make()
    ours = make()
    ours.load_state_dict(base.state_dict())
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"], init_lora_weights=False))
    names = add_lora(ours, rank=4, alpha=8.0, targets=["0", "2"])
    for index in ("0", "2"):
        layer = peft.base_model.model[int(index)]
        ours[int(index)].lora_A.data.copy_(layer.lora_A["default"].weight)
        ours[int(index)].lora_B.data.copy_(layer.lora_B["default"].weight)
    x = torch.randn(3, 16)
    assert torch.allclose(ours(x), peft(x), atol=1e-6)
    peft_count = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    assert sum(dict(ours.named_parameters())[n].numel() for n in names) == peft_count
    assert lora_parameter_count(make(), rank=4, targets=["0", "2"]) == peft_count


def test_adamw8bit_model_holds_torchao_s_state():
    from torchao.optim import AdamW8bit

    from bench.train_memory import AdamW8bitModel, adamw8bit_state_bytes

    params = [torch.nn.Parameter(torch.randn(64, 128)), torch.nn.Parameter(torch.randn(100))]
    reference = AdamW8bit(params)
    for p in params:
        buffers = [reference._new_buffer(p, True), reference._new_buffer(p, False)]
        theirs = sum(sum(getattr(b, a).numel() * getattr(b, a).element_size() for a in ("codes", "scale", "qmap"))
                     if hasattr(b, "codes") else b.numel() * b.element_size() for b in buffers)
        assert adamw8bit_state_bytes(p.numel()) == theirs
    ours = AdamW8bitModel(params)
    for p in params:
        p.grad = torch.randn_like(p)
    ours.step()
    for p in params:
        state = [v for k, v in ours.state[p].items() if k != "step"]
        assert sum(t.numel() * t.element_size() for t in state) == adamw8bit_state_bytes(p.numel())


def test_stream_plan_matches_the_runtime_s():
    placement = pytest.importorskip("revise_core.placement")
    from bench.whole_edit import GIB, PLACEMENTS

    sizes = {"vae": int(0.24 * GIB), "vlm": int(15.8 * GIB), "t5": int(10.6 * GIB), "connector": int(3.8 * GIB),
             "dit": int(2.6 * GIB)}
    for key, choice, budget in (("stream", "stream", 6), ("sequential", "sequential", 17), ("resident", "resident", 0)):
        config = placement.PlacementConfig(placement=choice, device_budget_gib=budget)
        modes = placement.resolve_modes(config, sizes, int(budget * GIB) if budget else None)
        assert modes == PLACEMENTS[key].modes, key


def test_only_measures_the_chosen_groups_and_keeps_the_others(tmp_path):
    import json
    from unittest import mock

    from bench import cost_model
    from bench.whole_edit import EditRow

    out = tmp_path / "cost_model"
    ladder = cost_model.Row("edit", 33, 352, 640, "qwen2.5-vl-7b", "naive (H100 anchor)", 19.0, {}, 6e13, 0.06, 19.2,
                            -0.01)
    old_edit = EditRow("stream", "", 17, 352, 640, "revise-vila-8b", 9.0, 30.0, 33.0, 1.3, 8.8, 0.15, "t", False, "m",
                       key="stream")
    out.with_suffix(".json").write_text(json.dumps({"command": "earlier", "rows": [dataclasses_asdict(ladder)],
                                                    "edit_placements": [dataclasses_asdict(old_edit)]}))

    def fake_case(case):
        composition, step, size, vlm, setting, switches = case
        if composition in ("edit-placement", "omnivideo2-edit"):
            frames = cost_model.SIZES[size][0]
            return EditRow(setting, "", frames, 352, 640, vlm, 4.0, 35.0, 33.0, 1.4, 8.8, 0.16, "t", True, "m",
                           key=setting)
        return cost_model.to_row(fake_measurement(), step=step, size=size, vlm=vlm, setting=setting, switches=switches)

    with mock.patch.object(cost_model, "run_case", fake_case):
        assert cost_model.main(["--only", "edit-placements,training-24g", "--out", str(out)]) == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    assert [r["setting"] for r in payload["rows"]][0] == "naive (H100 anchor)"  # kept, first
    assert [r["group"] for r in payload["rows"]][1:] == ["training-24g"] * len(cost_model.TRAINING_24G)
    assert [r["key"] for r in payload["edit_placements"]] == [*cost_model.PLACEMENTS, "omnivideo2-stream"]
    assert all(r["device_gib"] == 4.0 for r in payload["edit_placements"])  # re-measured, not kept
    assert payload["commands"]["ladder"] == "earlier"
    table = out.with_suffix(".md").read_text()
    assert "## A whole edit per placement" in table and "## Targets: the consumer cards" in table
    with pytest.raises(SystemExit):
        cost_model.main(["--only", "everything", "--out", str(out)])


def dataclasses_asdict(row):
    import dataclasses

    return dataclasses.asdict(row)


def fake_measurement():
    return fake_measure.Measurement(peak_bytes=15 * 2**30, split={"Parameter": 15 * 2**30}, flops=10**14,
                                    flops_by_op={}, attention_calls=0, seconds=1.0)


@pytest.mark.slow
def test_whole_edit_sequential_at_real_size():
    """The release's edit, sequential: the VLM stage is the peak and every model moves in once per stage."""
    from bench.whole_edit import GIB, measure_placement

    row = measure_placement("sequential")
    peak = max(row.stages, key=lambda stage: stage["device_gib"])
    assert peak["stage"] == "VLM pass" and row.device_gib == round(peak["device_gib"], 2)
    expected = sum(row.weights_gib.values()) + row.weights_gib["vae"]  # the VAE encodes and decodes
    assert abs(row.transfer_gib - expected) < 0.02
    assert row.transfer_s == pytest.approx(row.transfer_gib * GIB / 25e9, rel=1e-2)
