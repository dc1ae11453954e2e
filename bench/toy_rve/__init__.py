"""Toy-RVE: a synthetic reasoning-edit task with an exact oracle, on which USO is compared with SFT and RWR
in three training-target conditions (exact, flawed, a rule the critic knows but no target carries out).

Run as `python -m bench.toy_rve --quick` (CPU, 2 worker processes) or `--full` (larger). See docs/results.md.
"""
