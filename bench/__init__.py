"""Benchmarks (speed, memory, quality). Results go to bench/results/ as JSON + markdown."""
