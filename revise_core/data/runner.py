"""Resumable, sharded stages with per-stage reports: how the dataset pipeline runs at scale on one machine.

A stage maps items (dicts) through a function that returns `Kept(row)` or `Rejected(reason)`. Items are cut
into fixed shards; each finished shard is written atomically to `<out>/<stage>/shard_NNNNN.jsonl` with a
fingerprint of its input rows, the shard size and the stage settings in its first line. A rerun reuses a
shard only when that fingerprint matches (new rows, another `--shard-size` or other settings recompute it),
so a crash loses at most the shards in progress and a restarted run produces the same output as an
uninterrupted one. An item whose function raises is recorded as rejected with the error (type and message,
also logged) and the rest of the shard goes on: bad input never aborts the run. A connection failure
(an unreachable LLM) is not the item's fault: its shard is not written, the report counts the item as
pending, and the next run retries it. `workers > 1` runs shards in a process pool (the function must then be a top-level function).
For clusters, `backend="ray"` maps shards with Ray Data (an optional extra); no scheduler is written here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..llm import LLMError

logger = logging.getLogger(__name__)

# Failures of the environment, not of the item: retried on the next run, never stored as rejections.
TRANSIENT = (LLMError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class Kept:
    row: dict | list[dict]  # one output row, or several (e.g. all the pairs of one film)


@dataclass(frozen=True)
class Rejected:
    reason: str


@dataclass
class StageReport:
    stage: str
    items: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    shards_done: int = 0
    shards_reused: int = 0
    pending: int = 0  # items that hit a connection failure; their shards are retried on the next run
    pending_errors: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "items": self.items, "kept": self.kept, "rejected": dict(self.rejected),
                "shards_done": self.shards_done, "shards_reused": self.shards_reused, "pending": self.pending,
                "pending_errors": dict(self.pending_errors)}


BACKENDS = ("local", "ray")


def run_stage(stage: str, items: list[dict], function: Callable[[dict], Kept | Rejected], out_dir: str | os.PathLike,
              *, shard_size: int = 100, workers: int = 1, backend: str = "local",
              settings: dict | None = None) -> tuple[list[dict], StageReport]:
    """Run (or resume) a stage; returns the kept rows (of the written shards) in input order and the report.

    `settings`: everything besides the rows that decides a shard's output (models, thresholds, prompts);
    it is part of each shard's fingerprint.

    backend="ray" maps the unfinished shards with Ray Data (`pip install "comfyui-revise[ray]"`; connects to
    RAY_ADDRESS when set, else starts a local Ray); each shard is written as soon as it comes back.
    """
    from tqdm import tqdm

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    folder = Path(out_dir) / stage
    folder.mkdir(parents=True, exist_ok=True)
    shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
    paths = [folder / f"shard_{index:05d}.jsonl" for index in range(len(shards))]
    prints = [_fingerprint(stage, shard_size, settings, shard) for shard in shards]
    for stale in folder.glob("shard_*.jsonl"):
        if stale not in paths:
            logger.info("%s: not part of this run (fewer or other shards): removed", stale)
            stale.unlink()
    todo = [index for index, path in enumerate(paths) if _header(path) != prints[index]]
    for index in todo:
        if paths[index].is_file():
            logger.info("%s: made from other rows or settings: recomputed", paths[index])
    report = StageReport(stage, items=len(items), shards_reused=len(shards) - len(todo))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'")
    with tqdm(total=len(shards), initial=report.shards_reused, desc=stage, unit="shard") as bar:
        if backend == "ray" and todo:
            for index, records in _ray_shards(function, {index: shards[index] for index in todo}):
                _finish(paths[index], prints[index], records, report)
                bar.update(1)
        elif workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {index: pool.submit(_run_shard, function, shards[index]) for index in todo}
                for index, future in futures.items():
                    _finish(paths[index], prints[index], future.result(), report)
                    bar.update(1)
        else:
            for index in todo:
                _finish(paths[index], prints[index], _run_shard(function, shards[index]), report)
                bar.update(1)
    rows = []
    for path in paths:
        if not path.is_file():
            continue  # pending: retried on the next run
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            record = json.loads(line)
            if record["kept"]:
                rows.extend(record["rows"])
                report.kept += len(record["rows"])
            else:
                report.rejected[record["reason"]] += 1
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if report.pending:
        logger.warning("%s: %d item(s) hit connection failures (%s); rerun to retry them, finished shards are kept",
                       stage, report.pending, "; ".join(report.pending_errors)[:300])
    return rows, report


def _fingerprint(stage: str, shard_size: int, settings: dict | None, shard: list[dict]) -> str:
    data = json.dumps({"stage": stage, "shard_size": shard_size, "settings": settings or {}, "rows": shard},
                      sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def _header(path: Path) -> str | None:
    """The fingerprint a shard file was made with (None: no such file, or one without a valid header)."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            return json.loads(handle.readline()).get("fingerprint")
        except (json.JSONDecodeError, AttributeError):
            return None


def _finish(path: Path, fingerprint: str, records: list[dict], report: StageReport) -> None:
    """Write a finished shard, unless an item hit a connection failure: then the whole shard is retried."""
    pending = [r for r in records if r.get("pending")]
    if pending:
        report.pending += len(pending)
        report.pending_errors.update(r["reason"] for r in pending)
        return
    _write(path, [{"fingerprint": fingerprint}] + records)
    report.shards_done += 1


def _ray_shards(function: Callable[[dict], Kept | Rejected], shards: dict[int, list[dict]]):
    """(shard index, records) pairs from Ray Data, streamed as they finish. JSON strings cross the boundary so
    that Arrow never has to infer a schema for arbitrary item dicts."""
    try:
        import ray
    except ImportError as error:
        raise ImportError('the Ray backend needs Ray Data: pip install "comfyui-revise[ray]"') from error

    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)

    def work(row: dict) -> dict:
        return {"index": row["index"], "records": json.dumps(_run_shard(function, json.loads(row["items"])))}

    dataset = ray.data.from_items([{"index": i, "items": json.dumps(items)} for i, items in shards.items()])
    for row in dataset.map(work).iter_rows():
        yield int(row["index"]), json.loads(row["records"])


def _run_shard(function: Callable[[dict], Kept | Rejected], items: list[dict]) -> list[dict]:
    records = []
    for item in items:
        try:
            result = function(item)
        except TRANSIENT as error:
            logger.warning("%s: connection failure, kept for the next run: %s", item.get("id", "?"), error)
            records.append({"id": item.get("id"), "pending": True, "reason": f"{type(error).__name__}: {error}"[:300]})
            continue
        except Exception as error:  # noqa: BLE001 - reported per item (stage report + log), never silent
            logger.warning("%s: %s: %s", item.get("id", "?"), type(error).__name__, error)
            result = Rejected(f"error: {type(error).__name__}: {error}")
        if isinstance(result, Kept):
            rows = result.row if isinstance(result.row, list) else [result.row]
            records.append({"id": item.get("id"), "kept": True, "rows": rows})
        elif isinstance(result, Rejected):
            records.append({"id": item.get("id"), "kept": False, "reason": result.reason})
        else:
            raise TypeError(f"stage function returned {type(result).__name__}; expected Kept or Rejected")
    return records


def _write(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)
