"""Toy-RVE: a synthetic reasoning-edit task with an exact oracle, on which USO is compared with SFT and RWR.

Run as `python -m bench.toy_rve --quick` (CPU, <= 15 min) or `--full` (GPU). See docs/results.md.
"""
