"""The placement plan: what each placement moves (recorded and asserted), outputs that do not change with
placement, precision options within a stated tolerance, and backward passes through moving weights refused."""

from __future__ import annotations

import pytest
import torch

from revise_core import edit as edit_cli
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.placement import (
    GIB,
    Placement,
    PlacementConfig,
    PlacementError,
    module_bytes,
    resolve_modes,
)
from revise_core.sampler import SamplerConfig
from revise_core.video import synthetic_clip

INSTRUCTION = "make the ice cube melt"
STEPS = 1


def _edit(folder, config: PlacementConfig | None, frames: torch.Tensor):
    models = EditModels.load(folder)
    sizes = {name: module_bytes(module) for name, module in models.components().items()}
    placement = Placement(config or PlacementConfig(placement="resident"))
    editor = ReviseEditor.placed(models, placement)
    settings = EditSettings(sampler=SamplerConfig(steps=STEPS, seed=3), caption_tokens=8)
    return editor.edit(frames, INSTRUCTION, settings), placement, sizes


@pytest.fixture(scope="module")
def frames():
    return synthetic_clip(num_frames=5, height=32, width=64).frames


@pytest.fixture(scope="module")
def resident_edit(tiny_dir, frames):
    return _edit(tiny_dir / "revise_ckpt", None, frames)


def test_resident_moves_nothing(resident_edit):
    _, placement, _ = resident_edit
    assert set(placement.modes.values()) == {"resident"}
    assert placement.transfers.total_bytes == 0


def test_sequential_moves_each_model_once_per_stage_and_changes_no_bit(tiny_dir, frames, resident_edit):
    expected, _, _ = resident_edit
    result, placement, sizes = _edit(tiny_dir / "revise_ckpt", PlacementConfig(placement="sequential"), frames)
    assert torch.equal(result.frames, expected.frames)
    # the VAE encodes, then decodes; every other model runs in one stage (the DiT for all steps)
    assert dict(placement.transfers.onloads) == {"vae": 2, "vlm": 1, "t5": 1, "connector": 1, "dit": 1}
    assert dict(placement.transfers.onloaded) == {name: size * (2 if name == "vae" else 1)
                                                  for name, size in sizes.items()}


def test_stream_onloads_the_encoders_layer_by_layer_and_keeps_the_dit_whole(tiny_dir, frames, resident_edit):
    expected, _, _ = resident_edit
    result, placement, sizes = _edit(tiny_dir / "revise_ckpt", PlacementConfig(placement="stream"), frames)
    assert torch.equal(result.frames, expected.frames)
    assert placement.modes == {"dit": "sequential", "vlm": "stream", "t5": "stream", "connector": "sequential",
                               "vae": "sequential"}
    onloads, onloaded = placement.transfers.onloads, placement.transfers.onloaded
    for name in ("vlm", "t5"):  # one onload per layer, each layer once: never more than the model
        assert onloads[name] > 10
        assert 0.9 * sizes[name] <= onloaded[name] <= sizes[name]
    assert onloaded["dit"] == sizes["dit"] and onloads["dit"] == 1


def test_a_dit_that_does_not_fit_streams_block_by_block_at_every_call(tiny_dir, frames, resident_edit):
    expected, _, _ = resident_edit
    config = PlacementConfig(placement="stream", device_budget_gib=1e-6, activation_reserve_gib=0)
    result, placement, sizes = _edit(tiny_dir / "revise_ckpt", config, frames)
    assert torch.equal(result.frames, expected.frames)
    assert placement.modes["dit"] == "stream"
    calls = 2 * STEPS  # guided: a conditional and an unconditional call per step
    assert placement.transfers.onloaded["dit"] == calls * sizes["dit"]


def test_disk_host_reads_the_weights_back_from_files(tiny_dir, frames, resident_edit, tmp_path):
    """The case that really moves weights on a CPU: every onload reads a safetensors file."""
    expected, _, _ = resident_edit
    config = PlacementConfig(placement="stream", host="disk", offload_dir=str(tmp_path), device_budget_gib=1e-6,
                             activation_reserve_gib=0)
    result, placement, sizes = _edit(tiny_dir / "revise_ckpt", config, frames)
    files = {name: sorted((tmp_path / name).glob("*.safetensors")) for name in ("vlm", "t5", "dit")}
    assert all(files.values()), files
    assert sum(f.stat().st_size for f in files["dit"]) >= sizes["dit"]
    assert placement.transfers.onloaded["dit"] == 2 * STEPS * sizes["dit"]
    assert torch.equal(result.frames, expected.frames)  # read back realigned: the same bits


def test_int8_encoders_and_fp8_dit_stay_within_the_stated_tolerance(tiny_dir):
    """int8 weight-only VLM and umT5, fp8 DiT storage: measured against the same models in fp32."""
    from revise_core.text import encode_text

    reference, quantised = EditModels.load(tiny_dir / "revise_ckpt"), EditModels.load(tiny_dir / "revise_ckpt")
    Placement(PlacementConfig(placement="resident", encoders="int8", dit_storage="fp8")).apply(
        quantised.components())
    assert module_bytes(quantised.vlm.model) < 0.6 * module_bytes(reference.vlm.model)
    block_weights = [m.weight for m in quantised.dit.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert {w.dtype for w in block_weights} == {torch.float8_e4m3fn}  # Wan's embedders and norms stay as loaded
    assert module_bytes(quantised.dit) < 0.7 * module_bytes(reference.dit)
    clip = synthetic_clip(num_frames=5, height=64, width=64).frames

    def relative(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    with torch.no_grad():
        u = [m.vlm.encode(clip, INSTRUCTION) for m in (quantised, reference)]
        text = [encode_text(m.text, [INSTRUCTION])[0] for m in (quantised, reference)]
        torch.manual_seed(0)
        latents, context = torch.randn(1, 16, 2, 8, 8), torch.randn(1, 12, reference.dit.config.text_dim)
        out = [m.dit(latents, torch.tensor([500.0]), context, return_dict=False)[0] for m in (quantised, reference)]
    assert relative(*u) < 0.05  # measured 1-2 % on the tiny models (docs/performance.md)
    assert relative(*text) < 0.05
    assert 0 < relative(*out) < 0.08  # fp8 (3 mantissa bits): measured 3-5 %


def test_streamed_weights_refuse_a_backward_pass(tiny_dir, tmp_path):
    """Disk offload really moves the storage, and a backward pass would read garbage: it is refused."""
    models = EditModels.load(tiny_dir)
    clip = synthetic_clip(num_frames=5, height=64, width=64).frames
    Placement(PlacementConfig(placement="stream", host="disk", offload_dir=str(tmp_path))).apply(
        {"vlm": models.vlm.model})
    pixels = clip.clone().requires_grad_()
    with pytest.raises(PlacementError, match="backward"):
        models.vlm.encode(pixels, INSTRUCTION)
    with torch.no_grad():
        assert torch.isfinite(models.vlm.encode(clip, INSTRUCTION)).all()


def test_sequential_refuses_to_move_weights_gradients_may_pass_through(tiny_dir):
    models = EditModels.load(tiny_dir)
    placement = Placement(PlacementConfig(placement="sequential")).apply({"vlm": models.vlm.model})
    with pytest.raises(PlacementError, match="resident"), placement.use("vlm"):
        pass
    with torch.no_grad(), placement.use("vlm"):
        pass


@pytest.mark.parametrize("budget_gib, expected", [
    (None, "resident"), (100, "resident"), (20, "sequential"), (8, "stream")])
def test_auto_picks_resident_when_everything_fits(budget_gib, expected):
    sizes = {"vlm": 16 * GIB, "t5": 11 * GIB, "dit": int(2.6 * GIB), "vae": GIB // 4, "connector": 4 * GIB}
    modes = resolve_modes(PlacementConfig(placement="auto"), sizes, None if budget_gib is None else budget_gib * GIB)
    assert modes["vlm"] == expected
    if expected == "stream":  # the DiT (2.6 GiB) fits an 8 GiB budget: whole while it samples
        assert modes["dit"] == "sequential" and modes["vae"] == "sequential"


def test_bad_settings_are_refused_with_the_field_named():
    with pytest.raises(PlacementError, match="'placement'"):
        PlacementConfig(placement="everywhere")
    with pytest.raises(PlacementError, match="host=disk"):
        PlacementConfig(host="disk", encoders="int8")
    with pytest.raises(PlacementError, match="unknown model names"):
        Placement().apply({"unet": torch.nn.Linear(2, 2)})


def test_cli_reports_the_placement_and_its_transfers(tmp_path, capsys):
    import json

    assert edit_cli.main(["--demo", "revise", "--placement", "sequential", "--encoders", "int8", "--steps", "1",
                          "--out", str(tmp_path / "out.mp4"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    placement = summary["placement"]
    assert placement["modes"]["vlm"] == "sequential" and placement["config"]["encoders"] == "int8"
    assert placement["onloads"] == {"vae": 2, "vlm": 1, "t5": 1, "connector": 1, "dit": 1}


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--placement", "resident"], ["--placement", "sequential"],
                                   ["--placement", "stream"], ["--placement", "stream", "--host", "disk"],
                                   ["--placement", "auto", "--device-budget", "0.000001"],
                                   ["--placement", "sequential", "--encoders", "int8", "--dit-storage", "fp8"]])
def test_cli_demo_runs_every_placement(flags, tmp_path, capsys):
    import json

    assert edit_cli.main(["--demo", "revise", *flags, "--out", str(tmp_path / "out.mp4"), "--json"]) == 0
    placement = json.loads(capsys.readouterr().out)["placement"]
    moved = sum(placement["onloaded_bytes"].values())
    assert (moved == 0) == (set(placement["modes"].values()) == {"resident"})


def test_a_streamed_vlm_onloads_weights_its_layers_use_without_calling_them(tiny_dir, tmp_path):
    """SigLIP's pooling head passes its out_proj weight to F.multi_head_attention_forward without calling the
    layer: streamed from disk, it must still be read back (else it computes with an emptied buffer, and on a GPU
    with weights left on the host)."""
    reference, streamed = EditModels.load(tiny_dir / "revise_ckpt"), EditModels.load(tiny_dir / "revise_ckpt")
    placement = Placement(PlacementConfig(placement="stream", host="disk", offload_dir=str(tmp_path)))
    placement.apply({"vlm": streamed.vlm.model})
    size = reference.vlm.model.vision_tower.config.image_size
    pixels = torch.rand(2, 3, size, size)
    with torch.no_grad():
        expected = reference.vlm.model.vision_tower(pixels).pooler_output
        actual = streamed.vlm.model.vision_tower(pixels).pooler_output
    assert torch.equal(actual, expected)
