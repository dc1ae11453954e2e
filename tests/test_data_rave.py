"""RAVE rewriting against a real chat-completions server on 127.0.0.1 (started by the test)."""

from __future__ import annotations

import json

from conftest import ChatServer as _ChatServer
from revise_core.data.rave import LiteralPair, Rules, check, load_fewshot, manifest_row, rewrite
from revise_core.llm import OpenAIChat

PAIR = LiteralPair("p1", "a.mp4", "b.mp4", "make the car red", object="car", result="red")


def _chat(url):
    return OpenAIChat(base_url=url, model="m", api_key="k", retries=0, timeout=0.5, backoff=0.0)


def test_fewshot_file_covers_the_four_types():
    assert set(load_fewshot()) == {"temporal", "spatial", "physical causality", "semantic inference"}


def test_good_rewrite_is_accepted_and_becomes_a_manifest_row(chat_server):
    answer = json.dumps({"type": "semantic inference", "instruction": "the car after a visit to the fire station's paint shop"})
    _ChatServer.script = [("content", answer)]
    outcome = rewrite(PAIR, _chat(chat_server), load_fewshot(), Rules())
    assert outcome.accepted, outcome.reasons
    row = manifest_row(outcome)
    assert row["subset"] == "RAVE" and row["category"] == "semantic inference" and row["literal_instruction"]
    sent = _ChatServer.requests[-1]["body"]["messages"]
    assert sent[0]["role"] == "system" and sent[-1]["content"].endswith("make the car red")


def test_leaky_and_target_losing_rewrites_are_rejected_with_reasons():
    rules = Rules()
    assert any("leaks the result ['red']" in r for r in check(PAIR, "temporal", "the car turns bright red soon", rules))
    assert any("operation" in r for r in check(PAIR, "temporal", "make it look like a fire truck soon", rules))
    assert any("loses the target" in r for r in check(PAIR, "temporal", "after the fire station visit", rules))
    assert any("not one of" in r for r in check(PAIR, "colour", "the car after the paint shop", rules))


def test_malformed_answers_and_timeouts_are_retried_then_recorded(chat_server):
    good = json.dumps({"type": "temporal", "instruction": "the car a year after the paint shop visit"})
    _ChatServer.script = [("content", "not json"), ("sleep", 1.0), ("content", good)]
    outcome = rewrite(PAIR, _chat(chat_server), load_fewshot(), Rules(), attempts=3)
    assert outcome.accepted and outcome.type == "temporal"
    _ChatServer.script = [("content", "nope"), ("content", "{}"), ("content", '{"type": 1}')]
    failed = rewrite(PAIR, _chat(chat_server), load_fewshot(), Rules(), attempts=3)
    assert not failed.accepted and "no usable answer after 3 attempts" in failed.reasons[0]


def test_empty_literal_instruction_is_reported_not_sent(chat_server):
    outcome = rewrite(LiteralPair("p2", "a", "b", "  "), _chat(chat_server), load_fewshot(), Rules())
    assert outcome.reasons == ["empty literal instruction"] and not _ChatServer.requests


def test_rave_cli_writes_manifest_and_report_and_resumes(chat_server, tmp_path, capsys):
    from revise_core.data.__main__ import main

    pairs = tmp_path / "literal.jsonl"
    pairs.write_text("\n".join(json.dumps(p) for p in [
        {"id": "a", "source": "a.mp4", "target": "a2.mp4", "instruction": "make the car red", "object": "car",
         "result": "red"},
        {"id": "b", "source": "b.mp4", "target": "b2.mp4", "instruction": ""},
        {"id": "c", "source": "c.mp4", "target": "c2.mp4", "instruction": "make the car red", "object": "car",
         "result": "red"},
    ]) + "\n")
    good = json.dumps({"type": "temporal", "instruction": "the car a year after the paint shop visit"})
    leaky = json.dumps({"type": "temporal", "instruction": "the car is now red"})
    _ChatServer.script = [("content", good), ("content", leaky)]
    args = ["rave", "--pairs", str(pairs), "--out", str(tmp_path / "out"), "--llm-url", chat_server, "--llm-key", "k",
            "--llm-model", "m", "--retries", "0", "--shard-size", "2"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] == 1 and report["rejected"]["empty literal instruction"] == 1
    (leak,) = [reason for reason in report["rejected"] if reason != "empty literal instruction"]
    assert leak.startswith("leaks the result ['red']")
    rows = [json.loads(l) for l in (tmp_path / "out" / "rave.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a"] and rows[0]["category"] == "temporal"
    requests = len(_ChatServer.requests)
    assert main(args) == 0  # every shard done: nothing is asked again
    assert len(_ChatServer.requests) == requests


def test_split_and_shots_cli(tmp_path, capsys):
    from revise_core.data.__main__ import main
    from revise_core.video import synthetic_clip, write_video

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "source": f"film{i % 4}.mp4"}) + "\n" for i in range(20)))
    assert main(["split", "--manifest", str(manifest), "--out", str(tmp_path), "--benchmark-fraction", "0.25"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"train": 15, "benchmark": 5}
    clip = synthetic_clip(num_frames=12, height=48, width=64)
    write_video(tmp_path / "v.mp4", clip.frames, clip.fps)
    assert main(["shots", "--video", str(tmp_path / "v.mp4")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["start"] == 0
