"""ICVG pairing (paper section 3.1.2): from the shots of a long video to (earlier clip, later clip) pairs.

Given per-clip image embeddings (e.g. SigLIP) and caption embeddings, in film order:
1. consecutive clips are grouped into scene windows of `window` clips;
2. inside a window, clips whose visual cosine similarity passes a data-driven threshold (the
   `percentile`-th percentile of that window's pairwise similarities, never below `min_similarity`) are
   connected, and the connected components are the sub-clusters;
3. inside a sub-cluster, every (earlier, later) pair is scored by caption similarity × visual diversity
   (1 − visual similarity), and the best `pairs_per_cluster` survive a visual-consistency filter
   (visual similarity within [min_similarity, max_similarity]: related, but not a near-duplicate).
Pairs therefore never cross a sub-cluster, and the source always precedes the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PairingConfig:
    window: int = 8  # clips per scene window
    percentile: float = 75.0  # connect clips above this percentile of the window's similarities
    min_similarity: float = 0.3  # ... and never below this cosine (visual consistency, lower bound)
    max_similarity: float = 0.97  # near-duplicates are not edits
    pairs_per_cluster: int = 1


@dataclass(frozen=True)
class ClipPair:
    source: int  # clip index in the film (earlier)
    target: int  # later
    cluster: tuple[int, ...]  # the sub-cluster both belong to
    score: float
    visual_similarity: float
    caption_similarity: float


def sub_clusters(visual: torch.Tensor, config: PairingConfig) -> list[tuple[int, ...]]:
    """Connected components of the thresholded similarity graph, window by window (global clip indices)."""
    clusters = []
    for start in range(0, visual.shape[0], config.window):
        members = list(range(start, min(start + config.window, visual.shape[0])))
        if len(members) < 2:
            clusters.append(tuple(members))
            continue
        similarity = _cosine(visual[members])
        upper = similarity[torch.triu(torch.ones_like(similarity, dtype=torch.bool), diagonal=1)]
        threshold = max(config.min_similarity, torch.quantile(upper, config.percentile / 100).item())
        adjacency = similarity >= threshold
        clusters.extend(tuple(members[i] for i in component) for component in _components(adjacency))
    return clusters


def select_pairs(visual: torch.Tensor, captions: torch.Tensor, config: PairingConfig | None = None) -> list[ClipPair]:
    """The best (earlier, later) pairs of every sub-cluster; see the module docstring."""
    config = config or PairingConfig()
    if visual.shape[0] != captions.shape[0]:
        raise ValueError(f"{visual.shape[0]} visual embeddings but {captions.shape[0]} caption embeddings")
    visual_sim, caption_sim = _cosine(visual), _cosine(captions)
    pairs = []
    for cluster in sub_clusters(visual, config):
        candidates = []
        for position, source in enumerate(cluster):
            for target in cluster[position + 1:]:
                v, c = visual_sim[source, target].item(), caption_sim[source, target].item()
                if config.min_similarity <= v <= config.max_similarity:
                    candidates.append(ClipPair(source, target, cluster, c * (1 - v), v, c))
        candidates.sort(key=lambda pair: pair.score, reverse=True)
        pairs.extend(candidates[: config.pairs_per_cluster])
    return pairs


def _cosine(embeddings: torch.Tensor) -> torch.Tensor:
    normed = F.normalize(embeddings.float(), dim=-1)
    return normed @ normed.T


def _components(adjacency: torch.Tensor) -> list[list[int]]:
    """Connected components (sorted members) of an undirected graph given as a boolean matrix."""
    seen, components = set(), []
    for start in range(adjacency.shape[0]):
        if start in seen:
            continue
        stack, component = [start], []
        seen.add(start)
        while stack:
            node = stack.pop()
            component.append(node)
            for neighbour in torch.nonzero(adjacency[node]).flatten().tolist():
                if neighbour not in seen:
                    seen.add(neighbour)
                    stack.append(neighbour)
        components.append(sorted(component))
    return components
