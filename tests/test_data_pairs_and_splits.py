"""ICVG pairing stays inside sub-clusters with the earlier clip as source; splits never share a film."""

from __future__ import annotations

import torch

from revise_core.data.icvg import PairingConfig, select_pairs, sub_clusters
from revise_core.data.splits import group_of, split_rows


def _film_embeddings(seed: int = 0):
    """Three visual 'scenes' interleaved in one window, plus noise: clips of a scene look alike."""
    generator = torch.Generator().manual_seed(seed)
    scenes = torch.eye(16)[:3] * 3  # three distinct looks
    labels = [0, 1, 0, 2, 1, 0, 2, 1, 0, 2, 2, 1, 0, 1, 2, 0]
    visual = torch.stack([scenes[l] + 0.35 * torch.randn(16, generator=generator) for l in labels])
    captions = torch.stack([scenes[l] * 0.5 + torch.randn(16, generator=generator) for l in labels])
    return visual, captions, labels


def test_sub_clusters_follow_the_scenes_within_windows():
    visual, _, labels = _film_embeddings()
    config = PairingConfig(window=8, percentile=60)
    for cluster in sub_clusters(visual, config):
        assert len({labels[i] for i in cluster}) == 1, cluster  # one scene per sub-cluster
        assert len({i // config.window for i in cluster}) == 1  # never across windows


def test_pairs_come_from_one_sub_cluster_and_go_forward_in_time():
    visual, captions, labels = _film_embeddings(1)
    config = PairingConfig(window=8, percentile=60, pairs_per_cluster=2)
    pairs = select_pairs(visual, captions, config)
    assert pairs
    for pair in pairs:
        assert pair.source < pair.target
        assert pair.source in pair.cluster and pair.target in pair.cluster
        assert config.min_similarity <= pair.visual_similarity <= config.max_similarity
        assert labels[pair.source] == labels[pair.target]


def test_near_duplicates_are_filtered():
    base = torch.randn(1, 8)
    visual = torch.cat([base, base + 1e-4, base * -1])
    assert select_pairs(visual, torch.randn(3, 8), PairingConfig(window=3, percentile=0)) == []


def test_splits_are_disjoint_by_film_and_deterministic():
    rows = [{"id": f"{film}-{i}", "source": f"{film}/clip{i}.mp4", "film": film} for film in "abcdefghij"
            for i in range(5)]
    train, bench = split_rows(rows, benchmark_fraction=0.2, seed=3)
    assert len(bench) == 10 and len(train) == 40
    assert not {group_of(r) for r in train} & {group_of(r) for r in bench}
    assert split_rows(rows, benchmark_fraction=0.2, seed=3) == (train, bench)
    assert split_rows(rows, benchmark_fraction=0.2, seed=4)[1] != bench
    sources_only = [{"id": str(i), "source": f"v{i % 3}.mp4"} for i in range(9)]
    train, bench = split_rows(sources_only, benchmark_fraction=0.3)
    assert not {r["source"] for r in train} & {r["source"] for r in bench}
