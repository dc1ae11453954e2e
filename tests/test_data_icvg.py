"""ICVG construction on a synthetic film: real shots, tiny VLM captions, tiny SigLIP, a local chat server."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ChatServer
from revise_core.data.icvg import PairingConfig
from revise_core.data.icvg_build import TYPES, ICVGConfig, build_film
from revise_core.data.runner import Kept, run_stage
from revise_core.llm import OpenAIChat
from revise_core.video import synthetic_clip, write_video


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    from transformers import SiglipConfig, SiglipModel

    from revise_core.evaluation.quality import ImageEncoder
    from revise_core.testing import seeded, train_tokenizer

    folder = tmp_path_factory.mktemp("siglip")
    tokenizer = train_tokenizer("t5")
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8))
    with seeded(0):
        SiglipModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return ImageEncoder(folder)


def _film(path, looks=((1, 0, 0), (0, 0, 1), (1, 0, 0), (0, 0, 1)), length=10):
    clips = [synthetic_clip(num_frames=length, height=48, width=64, seed=i).frames * 0.5 + torch.tensor(t) * 0.5
             for i, t in enumerate(looks)]
    write_video(path, torch.cat(clips), 8)
    return path


def test_film_to_manifest_rows_through_the_runner(tmp_path, chat_server, tiny_models, siglip):
    ChatServer.script = [("content", json.dumps({"type": kind, "instruction": f"continue the scene ({kind})"}))
                         for kind in TYPES * 3]
    chat = OpenAIChat(base_url=chat_server, model="m", api_key="k", retries=0, timeout=5)
    config = ICVGConfig(pairing=PairingConfig(window=8, percentile=50, min_similarity=0.0, max_similarity=0.9999),
                        caption_tokens=6)
    films = [{"id": "f1", "path": str(_film(tmp_path / "f1.mp4"))},
             {"id": "short", "path": str(_film(tmp_path / "short.mp4", looks=((1, 0, 0),)))}]

    def stage(item):
        from pathlib import Path

        return Kept(build_film(Path(item["path"]), tmp_path / "out", vlm=tiny_models.vlm, encoder=siglip, chat=chat,
                               config=config, film_id=item["id"]))

    rows, report = run_stage("icvg", films, stage, tmp_path / "out", shard_size=1)
    assert rows, "the synthetic film yields at least one pair"
    assert any(reason.startswith("error: FilmTooShort") for reason in report.rejected)
    for row in rows:
        assert row["subset"] == "ICVG" and row["category"] in TYPES and row["film"] == "f1"
        source, target = (int(part) for part in row["id"].split("-")[1:])
        assert source < target
        assert (tmp_path / "out" / row["source"]).is_file() and (tmp_path / "out" / row["target"]).is_file()


def test_unreadable_film_is_reported_by_the_stage(tmp_path, siglip, tiny_models):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a film" * 20)

    def stage(item):
        from pathlib import Path

        return Kept(build_film(Path(item["path"]), tmp_path / "out", vlm=tiny_models.vlm, encoder=siglip,
                               chat=None, film_id=item["id"]))

    rows, report = run_stage("icvg", [{"id": "broken", "path": str(bad)}], stage, tmp_path / "out")
    assert rows == [] and any("VideoError" in r and "unreadable video" in r for r in report.rejected)


def test_local_causal_lm_backend(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from revise_core.llm import LocalChat
    from revise_core.testing import seeded, train_tokenizer

    tokenizer = train_tokenizer("vlm")
    with seeded(0):
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    chat = LocalChat(tmp_path)
    answer = chat.complete([{"role": "user", "content": "Describe the source video ."}], max_tokens=5)
    assert isinstance(answer, str) and len(answer.split()) <= 5
