"""The resumable epoch loop of the trainers that pass over a fixed set of examples (the transformer prior,
the masked prior, the diffusion model).

Each epoch visits the examples in an order derived from (seed, epoch) alone, in batches; each update draws
its randomness from generators derived from (seed, step), or from torch's global state, which the checkpoint
keeps when asked. So a run stopped by a signal mid-epoch resumes from ``checkpoints/last.pt`` and ends with
the weights, the loss table and the random state of an uninterrupted run. After every epoch the loop
validates, appends a row ``[epoch, step, mean training loss, validation]`` to ``loss.tsv`` and rewrites
``last.pt``; a checkpoint of another run is set aside by :class:`RunCheckpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from tqdm.auto import tqdm

from morphgen.models.engine.preemption import stop_requested
from morphgen.models.engine.resume import RunCheckpoint, random_state, set_random_state
from morphgen.tsv import write_tsv


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


@dataclass
class EpochLoop:
    """``parts``: what the checkpoint keeps by name (the network, the optimiser, a scheduler); modules among
    them are put in training mode at the start of every epoch. ``order(epoch)``: a permutation of the
    ``examples`` indices. ``update(indices, step)``: one optimiser step on those examples, returning their
    mean loss. ``validate()``: the epoch's validation figure. ``columns``: the four names of ``loss.tsv``."""

    run: RunCheckpoint
    parts: dict[str, Stateful]
    examples: int
    batch_size: int
    epochs: int
    order: Callable[[int], torch.Tensor]
    update: Callable[[torch.Tensor, int], torch.Tensor]
    validate: Callable[[], float]
    loss_table: Path
    columns: Sequence[str]
    description: str = "training steps"
    keep_random_state: bool = False
    device: torch.device | None = None

    def __post_init__(self) -> None:
        if len(self.columns) != 4:
            raise ValueError(
                f"loss.tsv takes four columns (epoch, step, training, validation), got {self.columns}"
            )
        self.epoch, self.step, self.history = 0, 0, []
        self._position: dict | None = None  # where in the epoch a stopped run got

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.examples // self.batch_size)

    def _state(self, position: dict | None) -> dict:
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "position": position,
            "history": self.history,
            "parts": {name: part.state_dict() for name, part in self.parts.items()},
        }
        if self.keep_random_state:
            state["random"] = random_state(self.device)
        return state

    def _resume(self) -> None:
        state = self.run.load()
        if state is None:
            return
        for name, part in self.parts.items():
            part.load_state_dict(state["parts"][name])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._position = state["position"]
        self.history = [list(row) for row in state["history"]]
        if self.keep_random_state:
            set_random_state(state["random"], self.device)

    def write_loss_table(self) -> None:
        write_tsv(pd.DataFrame(self.history, columns=list(self.columns)), self.loss_table)

    def fit(self, progress: bool = True) -> list[list]:
        """Train (or resume) to the last epoch; returns the rows of ``loss.tsv``. On a stop signal: checkpoint
        after the current step and raise :class:`TrainingInterrupted`."""
        self._resume()
        bar = tqdm(
            total=self.epochs * self.steps_per_epoch,
            initial=self.step,
            desc=self.description,
            disable=not progress,
        )
        with bar:
            while self.epoch < self.epochs:
                for part in self.parts.values():
                    if isinstance(part, torch.nn.Module):
                        part.train()
                order = self.order(self.epoch)
                position, self._position = self._position, None
                first, total = (
                    (0, 0.0) if position is None else (int(position["next"]), float(position["total"]))
                )
                for start in range(first, self.examples, self.batch_size):
                    index = order[start : start + self.batch_size]
                    loss = self.update(index, self.step)
                    self.step += 1
                    total += float(loss.detach()) * len(index)
                    bar.update(1)
                    signum = stop_requested()
                    if signum is not None:
                        where = {"next": start + self.batch_size, "total": total}
                        self.run.stop(self._state(where), self.epoch, self.step, signum)
                self.epoch += 1
                val = float(self.validate())
                self.history.append([self.epoch, self.step, total / self.examples, val])
                bar.set_postfix(epoch=self.epoch, train=f"{total / self.examples:.4f}", val=f"{val:.4f}")
                self.write_loss_table()
                self.run.save(self._state(None))
        return self.history
