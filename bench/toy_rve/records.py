"""The work folder's record of finished stages and runs, so that an experiment given the same --workdir resumes
where an interrupted one stopped (the full preset takes hours on 2 cores) instead of starting again.

A record is one JSON file keyed by a fingerprint of everything that decides its numbers: the toy's version, the
settings that every stage shares (`ToyConfig` less the fields that only choose which runs to make), and the
stage's or run's own fields. Every stage and run is deterministic (same seeds, one thread per process), so a
recorded result is the result a fresh computation gives. A record is written only after the files its stage
writes, so a record never points at a half-written stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from .config import ToyConfig

logger = logging.getLogger(__name__)

# Bump when a change to the toy (task, models, oracle, trainer path) changes any number, so that records of
# the earlier toy are never reused.
TOY_VERSION = 4
# ToyConfig fields that only choose which runs an experiment makes (or a run's own λ and σ_max, which enter the
# run's key): the stages and every run's other numbers do not depend on them.
SELECTION_FIELDS = ("seeds", "conditions", "learned_critics", "rwr", "sweep_condition", "lambdas", "sigma_maxes",
                    "reason_weight", "sigma_max")


class Records:
    def __init__(self, config: ToyConfig, workdir: Path) -> None:
        self.folder = Path(workdir) / "records"
        shared = {k: v for k, v in asdict(config).items() if k not in SELECTION_FIELDS}
        self._shared = {"toy_version": TOY_VERSION, **shared}

    def _path(self, name: str, fields: dict) -> Path:
        text = json.dumps({"shared": self._shared, "name": name, "fields": fields}, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self.folder / f"{name.replace('/', '_')}-{digest}.json"

    def load(self, name: str, **fields) -> dict | None:
        """The recorded result of `name` with these fields, or None where there is none."""
        path = self._path(name, fields)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:  # a record is written atomically; a broken one is someone's edit
            raise ValueError(f"{path}: not a Toy-RVE record ({error}); delete it to compute {name} again") from error
        logger.info("reusing %s from %s", name, path)
        return stored["result"]

    def save(self, name: str, result: dict, **fields) -> None:
        path = self._path(name, fields)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({"name": name, "fields": fields, "result": result}, indent=1, default=float),
                           encoding="utf-8")
        partial.replace(path)  # atomic: a reader sees the whole record or none
