"""Train / benchmark splits with strict separation: no source video, film or clip in both.

Rows are grouped by their `film` (ICVG: the long video a clip came from) or, failing that, their `source`
path; whole groups are assigned to one split, so a held-out film never leaks a clip into training. The
assignment is a deterministic function of the group name and the seed.
"""

from __future__ import annotations

import hashlib


def group_of(row: dict) -> str:
    return str(row.get("film") or row["source"])


def split_rows(rows: list[dict], *, benchmark_fraction: float = 0.1, benchmark_max: int | None = None,
               seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, benchmark); groups ordered by a seeded hash, the first ones filling the benchmark."""
    if not 0.0 <= benchmark_fraction <= 1.0:
        raise ValueError(f"benchmark_fraction must be in [0, 1], got {benchmark_fraction}")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    order = sorted(groups, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    wanted = round(len(rows) * benchmark_fraction)
    if benchmark_max is not None:
        wanted = min(wanted, benchmark_max)
    benchmark, train = [], []
    for name in order:
        (benchmark if len(benchmark) < wanted else train).extend(groups[name])
    return train, benchmark
