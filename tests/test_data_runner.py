"""The sharded stage runner: resumable after a crash, bad input reported, process pool equivalent."""

from __future__ import annotations

import json

import pytest

from revise_core.data.runner import Kept, Rejected, run_stage

ITEMS = [{"id": f"i{n}", "value": n} for n in range(23)]


def square_unless_bad(item: dict):
    if item["value"] % 7 == 3:
        raise ValueError(f"unreadable video for {item['id']}")
    if item["value"] % 5 == 0:
        return Rejected("too short")
    return Kept({"id": item["id"], "square": item["value"] ** 2})


def test_interrupted_run_resumes_to_the_same_manifest(tmp_path):
    straight, _ = run_stage("square", ITEMS, square_unless_bad, tmp_path / "a", shard_size=5)

    def crash_in_third_shard(item):
        if item["value"] == 12:
            raise KeyboardInterrupt
        return square_unless_bad(item)

    with pytest.raises(KeyboardInterrupt):
        run_stage("square", ITEMS, crash_in_third_shard, tmp_path / "b", shard_size=5)
    assert sorted(p.name for p in (tmp_path / "b" / "square").glob("shard_*.jsonl")) == ["shard_00000.jsonl",
                                                                                     "shard_00001.jsonl"]
    resumed, report = run_stage("square", ITEMS, square_unless_bad, tmp_path / "b", shard_size=5)
    assert resumed == straight and report.shards_reused == 2 and report.shards_done == 3


def test_bad_input_is_reported_and_never_aborts(tmp_path):
    rows, report = run_stage("square", ITEMS, square_unless_bad, tmp_path, shard_size=4)
    assert report.items == 23 and report.kept == len(rows)
    errors = {k: v for k, v in report.rejected.items() if k.startswith("error: ValueError")}
    assert sum(errors.values()) == 3 and report.rejected["too short"] == 4  # 10 is an error first
    assert json.loads((tmp_path / "square" / "report.json").read_text())["kept"] == report.kept


def test_process_pool_gives_the_same_rows(tmp_path):
    serial, _ = run_stage("square", ITEMS, square_unless_bad, tmp_path / "serial", shard_size=6)
    pooled, _ = run_stage("square", ITEMS, square_unless_bad, tmp_path / "pooled", shard_size=6, workers=2)
    assert pooled == serial


def test_ray_backend_gives_the_same_rows(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import sys

    # Ray's workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    serial, _ = run_stage("square", ITEMS, square_unless_bad, tmp_path / "serial", shard_size=6)
    ray_rows, report = run_stage("square", ITEMS, square_unless_bad, tmp_path / "ray", shard_size=6, backend="ray")
    assert ray_rows == serial and report.shards_done == 4


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        run_stage("square", ITEMS, square_unless_bad, tmp_path, backend="dask")


def test_a_shard_is_reused_only_for_the_same_rows_shard_size_and_settings(tmp_path, caplog):
    straight, _ = run_stage("square", ITEMS, square_unless_bad, tmp_path / "ref", shard_size=4)
    run_stage("square", ITEMS, square_unless_bad, tmp_path, shard_size=5, settings={"threshold": 1})
    rows, report = run_stage("square", ITEMS, square_unless_bad, tmp_path, shard_size=4, settings={"threshold": 1})
    assert rows == straight and report.shards_reused == 0  # another shard size: nothing reused, nothing dropped
    assert len(list((tmp_path / "square").glob("shard_*.jsonl"))) == 6  # the 5-item shards' extra files are gone
    _, report = run_stage("square", ITEMS, square_unless_bad, tmp_path, shard_size=4, settings={"threshold": 2})
    assert report.shards_reused == 0  # other settings
    changed = [dict(item, value=item["value"] + 1) if item["id"] == "i9" else item for item in ITEMS]
    _, report = run_stage("square", changed, square_unless_bad, tmp_path, shard_size=4, settings={"threshold": 2})
    assert report.shards_reused == 5 and report.shards_done == 1  # only the shard whose rows changed


def test_connection_failures_are_retried_on_the_next_run_never_rejected(tmp_path):
    from revise_core.llm import LLMError

    def llm_down(item):
        if item["value"] >= 10:
            raise LLMError("no answer from http://127.0.0.1:9/v1: connection refused")
        return square_unless_bad(item)

    rows, report = run_stage("square", ITEMS, llm_down, tmp_path, shard_size=5)
    assert report.pending == 13 and report.shards_done == 2 and not any("LLMError" in r for r in report.rejected)
    assert len(rows) == report.kept and all(row["square"] < 100 for row in rows)
    rows, report = run_stage("square", ITEMS, square_unless_bad, tmp_path, shard_size=5)
    straight, _ = run_stage("square", ITEMS, square_unless_bad, tmp_path / "ref", shard_size=5)
    assert rows == straight and report.pending == 0 and report.shards_reused == 2 and report.shards_done == 3


def test_rave_cli_exits_3_when_the_llm_is_down_and_keeps_the_pairs(tmp_path, capsys):
    from revise_core.data.__main__ import EXIT_PENDING, main

    pairs = tmp_path / "literal.jsonl"
    pairs.write_text(json.dumps({"id": "a", "source": "a.mp4", "target": "b.mp4", "instruction": "make it red"}) + "\n")
    args = ["rave", "--pairs", str(pairs), "--out", str(tmp_path / "out"), "--llm-url", "http://127.0.0.1:9/v1",
            "--llm-key", "k", "--llm-model", "m", "--retries", "0", "--llm-timeout", "2"]
    assert main(args) == EXIT_PENDING
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pending"] == 1 and "run the same command again" in captured.err
    assert not list((tmp_path / "out" / "rave").glob("shard_*.jsonl"))
