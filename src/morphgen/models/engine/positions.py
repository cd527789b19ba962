"""Token positions that hold one value in every training sequence (the background around the brain), left
out of what a prior learns and put back where it samples.

A prior fitted to such sequences gives those positions their one value with probability near 1 anyway, so
leaving them out changes what it can generate only where held-out subjects differ there, which
``heldout.tsv`` reports (``constant_mismatch``). It shortens every sequence: on the demo's grid about half of
a 12 x 16 x 12 token grid holds one token in every subject, and attention costs the square of the length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ConstantPositions:
    """``varying``: (L,) bool, the positions a prior learns; ``values``: (L,) int64, each other position's
    one value (0 where varying)."""

    varying: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, tokens: np.ndarray, multiple: int = 1) -> ConstantPositions:
        """The positions of ``tokens`` (N, L) that vary between sequences; constant ones are added back, first
        to last, until the count is a multiple of ``multiple`` (and at least one position is kept)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or not len(tokens):
            raise ValueError(f"token sequences (N, L) are needed, got shape {tokens.shape}")
        varying = np.any(tokens != tokens[:1], axis=0)
        constant = np.flatnonzero(~varying)
        short = (-int(varying.sum())) % multiple or (multiple if not varying.any() else 0)
        varying[constant[:short]] = True
        values = np.where(varying, 0, tokens[0]).astype(np.int64)
        return cls(varying, values)

    @classmethod
    def none(cls, length: int) -> ConstantPositions:
        """Every position learnt."""
        return cls(np.ones(length, dtype=bool), np.zeros(length, dtype=np.int64))

    @property
    def length(self) -> int:
        return len(self.varying)

    @property
    def kept(self) -> int:
        return int(self.varying.sum())

    def reduce(self, tokens: np.ndarray) -> np.ndarray:
        """(N, L) -> (N, kept): the sequences a prior learns."""
        tokens = np.asarray(tokens)
        if tokens.shape[-1] != self.length:
            raise ValueError(f"sequences of {tokens.shape[-1]} tokens, the positions are of {self.length}")
        return tokens[:, self.varying]

    def expand(self, reduced: np.ndarray) -> np.ndarray:
        """(N, kept) -> (N, L): sampled sequences with the constant positions put back."""
        reduced = np.asarray(reduced)
        if reduced.shape[-1] != self.kept:
            raise ValueError(f"sequences of {reduced.shape[-1]} tokens, the prior learnt {self.kept}")
        full = np.broadcast_to(self.values, (len(reduced), self.length)).astype(reduced.dtype, copy=True)
        full[:, self.varying] = reduced
        return full

    def mismatch(self, tokens: np.ndarray) -> float:
        """The share of (sequence, constant position) pairs of ``tokens`` that hold another value."""
        if self.kept == self.length:
            return 0.0
        tokens = np.asarray(tokens)[:, ~self.varying]
        return float(np.mean(tokens != self.values[~self.varying]))

    def state(self) -> dict:
        """What a prior's ``model.pt`` keeps (tensors: loadable with ``weights_only=True``)."""
        return {
            "varying": torch.from_numpy(self.varying.copy()),
            "values": torch.from_numpy(self.values.copy()),
        }

    @classmethod
    def from_state(cls, state: dict | None, length: int) -> ConstantPositions:
        """The positions a prior file kept; every position when it kept none (a prior learnt them all)."""
        if not state:
            return cls.none(length)
        varying = state["varying"].numpy().astype(bool)
        if len(varying) != length:
            raise ValueError(
                f"the prior's positions are of {len(varying)} tokens, the autoencoder's {length}"
            )
        return cls(varying, state["values"].numpy().astype(np.int64))
