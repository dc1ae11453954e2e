"""The ReViSE release reproduced exactly: every stage of an edit and the critic's forward against the numbers
the official code computes.

`tests/parity/revise_official.safetensors` holds what the official ReViSE inference computes on the kit's
parity folder (`revise_core.testing.parity`: the release's layout and formats, its Wan config.json as the
official `save_pretrained` writes it, weights and tokenizers that every machine writes identically), made by
`tests/parity/make_revise_reference.py` from the official sources. Here the folder is written again and run
through the public API (`EditModels.load`, `ReviseEditor`, `SelfCritic`) on the same uint8 frames and the
injected noise, fp32 on the CPU; each stage must agree within 1e-5 of the reference's scale (its largest
magnitude), token ids exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from revise_core import presets
from revise_core import vae as vae_ops
from revise_core import video as video_ops
from revise_core.critic import ALL_QUESTION, SelfCritic
from revise_core.editor import ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.testing import parity

REFERENCE = Path(__file__).resolve().parent / "parity" / "revise_official.safetensors"
TOLERANCE = 1e-5  # of each reference's largest magnitude


def assert_matches(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    assert tuple(ours.shape) == tuple(reference.shape), f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    scale = reference.double().abs().max().item()
    error = (ours.double() - reference.double()).abs().max().item()
    assert error <= TOLERANCE * scale, f"{what}: max |ours - official| {error:.3e} > {TOLERANCE:g} x {scale:.3e}"


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(REFERENCE))


@pytest.fixture(scope="module")
def run(tmp_path_factory, ref):
    """The folder written again by the kit, loaded with no options, one edit with the release's noise."""
    folder = parity.write_parity_release(tmp_path_factory.mktemp("parity") / "revise_ckpt")
    models = EditModels.load(folder)
    frames = parity.parity_source_frames().float() / 255
    settings = presets.edit_settings("revise-official", height=parity.CLIP_SIZE[0], width=parity.CLIP_SIZE[1],
                                     steps=parity.STEPS)
    editor = ReviseEditor(models)
    result = editor.edit(frames, parity.INSTRUCTION, settings, noise=ref["noise"])
    with torch.no_grad():
        condition = editor.condition(result.source_frames, parity.INSTRUCTION, settings, vlm_source=frames)
        u = models.vlm.encode(frames, parity.INSTRUCTION)
    return {"folder": folder, "models": models, "frames": frames, "settings": settings, "result": result,
            "condition": condition, "u": u}


def test_the_folder_is_the_official_layout_with_the_official_wan_config(run):
    config = json.loads((run["folder"] / "wan" / "wanxiang1_3b" / "config.json").read_text())
    assert "text_dim" not in config and "patch_size" not in config  # ignore_for_config: read from the tensors
    assert run["models"].dit.config.text_dim == parity.TEXT_DIM != 4096  # WanModel's default would not load


def test_vila_token_ids_pixels_and_hidden_states(run, ref):
    vlm = run["models"].vlm
    inputs = vlm.conditioning_inputs(run["frames"], parity.INSTRUCTION)
    assert torch.equal(inputs.token_ids, ref["vila_input_ids"])  # double BOS, pad positions deleted
    assert_matches(inputs.kwargs["pixels"][0], ref["vila_pixels_frame0"], "SigLIP pixels of frame 0")
    assert_matches(run["u"], ref["vila_hidden_states"], "VILA hidden_states[-1]")


def test_vision_head_and_dm_adapter(run, ref):
    connector = run["models"].connector
    with torch.no_grad():
        head = connector.vision_head(run["u"][None])
        adapted = connector.dm_adapter(head.reshape(-1, 1, head.shape[-1]))
    assert_matches(head[0], ref["vision_head"], "VisionHead")
    assert_matches(adapted, ref["dm_adapter"], "DM_Adapter")


def test_vae_input_frames_and_source_latents(run, ref):
    """generative.py's crop and PIL resize of 8-bit frames, bit for bit, then WanVAE.encode's normalised mean."""
    pixels = video_ops.quantize(run["result"].source_frames)
    assert torch.equal(pixels, ref["vae_input_uint8"])
    assert torch.equal(run["result"].source_frames, ref["vae_input_uint8"].float() / 255)
    assert_matches(run["condition"].source_latents, ref["source_latents"], "source latents")


def test_dit_contexts_and_one_call_of_each_branch(run, ref):
    models, condition = run["models"], run["condition"]
    for name, context in (("cond", condition.cond), ("uncond", condition.uncond)):
        official = ref[f"context_{name}"]
        rows = official.shape[0]
        assert context.shape == (1, 2560, parity.TEXT_DIM)  # zero-padded to max_context_len, as WanModel pads
        assert_matches(context[0, :rows], official, f"{name} context")
        assert not context[0, rows:].any()
        with torch.no_grad():
            velocity = models.dit(hidden_states=ref["noise"], timestep=ref["timesteps"][:1],
                                  encoder_hidden_states=context, return_dict=False)[0]
        assert_matches(velocity[0], ref[f"dit_{name}_step0"], f"DiT call ({name}) at t={int(ref['timesteps'][0])}")


def test_the_sample_and_the_decoded_frames(run, ref):
    result, models = run["result"], run["models"]
    assert_matches(vae_ops.normalize_latents(models.vae, result.latents), ref["latents"],
                   f"latents after {parity.STEPS} UniPC steps")
    official = (ref["decoded"].permute(1, 2, 3, 0) + 1) / 2  # cache_video's make_grid(normalize, range (-1, 1))
    assert_matches(result.frames, official, "decoded frames")


def test_the_written_pixels_are_the_releases_truncation(run, ref):
    ours = video_ops.quantize(run["result"].frames, presets.get_preset("revise-official").output_quantization)
    official = (ref["decoded"].permute(1, 2, 3, 0) + 1) / 2 * 255
    # values within the frames' tolerance (1e-5 of 255, doubled) of a level may truncate either way
    margin = 2 * TOLERANCE * 255
    fraction = official - official.floor()
    decided = ((fraction > margin) & (fraction < 1 - margin)) | (official == 0) | (official == 255)  # or clamped
    assert torch.equal(ours[decided], ref["output_uint8"][decided])
    assert decided.float().mean() > 0.99 and ((ours.int() - ref["output_uint8"].int()).abs() <= 1).all()


def test_the_critic_forward_equals_the_official_modules(run, ref):
    """The release ships no critic: our prompt and frame choice, then the official process_images, splice and
    LLM forward on the same ids; the source and the release's own 8-bit output as the two videos."""
    vlm = run["models"].vlm
    critic = SelfCritic(vlm)
    source, edited = ref["vae_input_uint8"].float() / 255, ref["output_uint8"].float() / 255
    messages = critic._messages(parity.INSTRUCTION, ALL_QUESTION)
    videos = [vlm.prepare_frames(v, critic.config.num_frames) for v in (source, edited)]
    assert torch.equal(vlm.build_inputs(messages, videos).token_ids, ref["critic_input_ids"])
    with torch.no_grad():
        logits = vlm.answer_logits(messages, [source, edited], num_frames=critic.config.num_frames)
        verdict = critic.verdict(source, edited, parity.INSTRUCTION)
    assert_matches(logits, ref["critic_logits"], "critic logits at the verdict position")
    official = ref["critic_logits"]
    delta = official[critic.yes_ids[False]] - official[critic.no_ids[False]]
    assert abs(verdict.delta.item() - delta.item()) <= TOLERANCE * official.abs().max().item()


def test_the_edit_cli_runs_the_folder_with_the_release_preset(run, tmp_path, capsys):
    from revise_core import edit as edit_cli

    video_ops.write_video(tmp_path / "source.mp4", run["frames"], 8)
    out = tmp_path / "edited.mp4"
    assert edit_cli.main(["--models", str(run["folder"]), "--video", str(tmp_path / "source.mp4"), "--instruction",
                          parity.INSTRUCTION, "--out", str(out), "--preset", "revise-official", "--steps", "2",
                          "--height", "32", "--width", "64", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == [17, 32, 64, 3] and out.is_file()
