"""Keeping the best samples of a long stream by score: the top-fraction filter of generation.

Only a small payload per kept sample is held (its tokens or latent, not the decoded volume), and the state
goes through a weights-only checkpoint, so generation that is stopped can resume where it was.
"""

from __future__ import annotations

import heapq

import torch


class BestSamples:
    """Every score of a stream and the payloads of its ``n_keep`` highest; ties keep the earlier sample."""

    def __init__(self, n_keep: int):
        if n_keep < 0:
            raise ValueError(f"n_keep must be >= 0, got {n_keep}")
        self.n_keep = int(n_keep)
        self.scores: list[float] = []
        self._heap: list[tuple[float, int, torch.Tensor]] = []  # (score, -index, payload): the worst on top

    @property
    def count(self) -> int:
        """Samples seen so far."""
        return len(self.scores)

    def add(self, score: float, payload: torch.Tensor) -> None:
        index = len(self.scores)
        self.scores.append(float(score))
        item = (float(score), -index, payload)
        if len(self._heap) < self.n_keep:
            heapq.heappush(self._heap, item)
        elif self.n_keep and item[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, item)

    def kept(self) -> list[tuple[int, float, torch.Tensor]]:
        """(index, score, payload) of the kept samples, best first."""
        ranked = sorted(self._heap, key=lambda item: item[:2], reverse=True)
        return [(-neg_index, score, payload) for score, neg_index, payload in ranked]

    def state_dict(self) -> dict:
        kept = self.kept()
        return {
            "n_keep": self.n_keep,
            "scores": torch.tensor(self.scores, dtype=torch.float64),
            "kept_index": torch.tensor([i for i, _, _ in kept], dtype=torch.int64),
            "kept_payload": torch.stack([p for _, _, p in kept]) if kept else torch.empty(0),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> BestSamples:
        best = cls(int(state["n_keep"]))
        best.scores = [float(s) for s in state["scores"].tolist()]
        best._heap = [
            (best.scores[i], -i, payload)
            for i, payload in zip(state["kept_index"].tolist(), state["kept_payload"], strict=True)
        ]
        heapq.heapify(best._heap)
        return best
