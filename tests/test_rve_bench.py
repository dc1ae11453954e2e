"""RVE-Bench: the Overall formula, failure accounting, the judges (incl. a real local HTTP server), metrics, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import ChatServer as _ChatServer
from revise_core.evaluation import judge as judge_mod
from revise_core.evaluation.judge import Judge, OpenAIJudge, parse_answer
from revise_core.evaluation.protocol import evaluate, write_demo_benchmark, write_report
from revise_core.evaluation.quality import feature_consistency, motion_smoothness, temporal_flickering
from revise_core.evaluation.rve import main
from revise_core.evaluation.scores import SampleScore, summarize
from revise_core.manifest import read_manifest


def test_overall_reproduces_hand_computed_values():
    rave = SampleScore("a", "RAVE", "temporal", "m", {"EA": 8, "PC": 6, "GN": 9, "GR": 7})
    assert rave.derived() == {"SC": 6, "PQ": 7, "Overall": math.sqrt(42)}
    assert rave.derived("geometric")["Overall"] == pytest.approx((8 * 6 * 9 * 7) ** 0.25)
    icvg = SampleScore("b", "ICVG", "camera", "m", {"EA": 5, "GN": 9, "GR": 4})
    assert icvg.derived() == {"SC": 5, "PQ": 4, "Overall": math.sqrt(20)}
    rows = summarize([rave, icvg, SampleScore("c", "RAVE", "spatial", "m", {"EA": 2, "PC": 10, "GN": 4, "GR": 8})])
    rave_all = next(r for r in rows if r["subset"] == "RAVE" and r["category"] == "all")
    assert rave_all["Overall"] == pytest.approx((math.sqrt(42) + math.sqrt(8)) / 2)
    assert rave_all["EA"] == 5 and rave_all["samples"] == 2
    icvg_all = next(r for r in rows if r["subset"] == "ICVG" and r["category"] == "all")
    assert icvg_all["PC"] is None and icvg_all["Overall"] == pytest.approx(math.sqrt(20))


def test_failed_sub_metrics_leave_the_sample_out_and_are_counted():
    ok = SampleScore("a", "RAVE", "temporal", "m", {"EA": 8, "PC": 6, "GN": 9, "GR": 7})
    broken = SampleScore("b", "RAVE", "temporal", "m", {"EA": 8, "PC": None, "GN": 9, "GR": 7}, failures=["PC: bad"])
    assert broken.derived()["Overall"] is None
    row = next(r for r in summarize([ok, broken]) if r["category"] == "all")
    assert row["failed"] == 1 and row["Overall"] == pytest.approx(math.sqrt(42)) and row["EA"] == 8


@pytest.mark.parametrize("answer, score", [
    ('{"score": 7, "reason": "good"}', 7.0),
    ('Sure!\n```json\n{"score": "6.5", "reason": "ok"}\n```', 6.5),
    ('The edit is fine. {"reason": "x", "score": 10}', 10.0),
    ('{"note": 1} then {"score": 0}', 0.0),
])
def test_parse_accepts_json_scores(answer, score):
    assert parse_answer(answer)[0] == score


@pytest.mark.parametrize("answer, message", [
    ("", "empty"), ("I would give it a 7", "no JSON object"), ('{"score": 11}', "outside"),
    ('{"score": true}', "not a number"), ('{"score": "high"}', "not a number"), ('{"rating": 5}', "no JSON object"),
])
def test_parse_rejects_malformed_answers(answer, message):
    with pytest.raises(ValueError, match=message):
        parse_answer(answer)


class _Scripted(Judge):
    def __init__(self, answers):
        super().__init__(retries=1)
        self.answers = list(answers)

    def ask(self, metric, instruction, source, edited):
        return self.answers.pop(0)


def test_retries_then_records_failure_without_scoring():
    video = torch.rand(5, 16, 16, 3)
    assert _Scripted(["garbage", '{"score": 4}']).score("EA", "x", video, video).score == 4
    verdict = _Scripted(["garbage", "still garbage"]).score("EA", "x", video, video)
    assert verdict.failed and verdict.attempts == 2 and "no JSON object" in verdict.error


def test_openai_backend_against_a_real_local_server(chat_server):
    video = torch.rand(5, 16, 16, 3)
    _ChatServer.script = [("content", "no json here"), ("status", 503), ("raw", {"unexpected": True}),
                          ("content", '{"score": 8, "reason": "accurate"}')]
    judge = OpenAIJudge(base_url=chat_server, model="judge-model", api_key="secret", num_frames=2, retries=3,
                        backoff=0.0, timeout=5)
    verdict = judge.score("EA", "make it red", video, video)
    assert (verdict.score, verdict.reason, verdict.attempts) == (8.0, "accurate", 4)
    request = _ChatServer.requests[-1]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0
    images = [p for p in request["body"]["messages"][1]["content"] if p["type"] == "image_url"]
    assert len(images) == 4 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert "Edit accuracy" in request["body"]["messages"][1]["content"][-1]["text"]


def test_openai_backend_timeouts_become_a_recorded_failure(chat_server):
    video = torch.rand(5, 16, 16, 3)
    _ChatServer.script = [("sleep", 1.0), ("sleep", 1.0)]
    judge = OpenAIJudge(base_url=chat_server, model="m", api_key="k", retries=1, backoff=0.0, timeout=0.3)
    verdict = judge.score("GN", "x", video, video)
    assert verdict.failed and verdict.attempts == 2 and "no answer" in verdict.error


def test_identical_frames_have_no_flicker_and_full_consistency():
    frames = torch.rand(1, 16, 16, 3).expand(7, -1, -1, -1)
    assert temporal_flickering(frames) == {"flicker_mae": 0.0, "temporal_flickering": 1.0}
    assert motion_smoothness(frames) == 1.0
    assert feature_consistency(torch.randn(1, 8).expand(5, -1)) == pytest.approx(1.0)
    noisy = torch.rand(7, 16, 16, 3)
    assert temporal_flickering(noisy)["flicker_mae"] > 0.2 and motion_smoothness(noisy) < 0.9


def test_missing_predictions_are_failures_in_the_report(tmp_path):
    manifest = write_demo_benchmark(tmp_path / "data")
    triplets = read_manifest(manifest, min_frames=1, require_target=False)
    (tmp_path / "preds").mkdir()
    samples, records = evaluate(triplets, {"nothing": tmp_path / "preds"}, _Scripted([]))
    assert all(s.failures and s.derived()["Overall"] is None for s in samples)
    paths = write_report(samples, records, tmp_path / "report", mode="viescore", title="t")
    text = paths["report"].read_text()
    assert "4 of 4 samples have at least one failed sub-metric" in text and "not found" in text


def test_demo_writes_markdown_csv_and_png(tmp_path, capsys):
    assert main(["--demo", "--out", str(tmp_path / "report")]) == 0
    report = tmp_path / "report"
    for name in ("report.md", "summary.csv", "samples.csv", "samples.jsonl", "scores.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    text = (report / "report.md").read_text()
    assert "| revise | RAVE |" in text and "temporal_flickering" in text and "physical causality" in text
    records = [json.loads(line) for line in (report / "samples.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in records} == set(judge_mod.METRICS)
