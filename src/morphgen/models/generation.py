"""Resuming a long generation: its scores, kept tokens and sampler state, saved atomically.

At UK Biobank scale one sub-population draws 100 samples per kept one for longer than a cluster's time
limit. The state is saved at batch boundaries every few minutes and when the cluster asks the job to stop;
the rerun restores the sampler's generator, so it draws exactly the samples the stopped run would have.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from morphgen.models.checkpoint import save_atomic
from morphgen.models.preemption import TrainingInterrupted, stop_requested
from morphgen.models.selection import BestSamples
from morphgen.weights import load_weights_only

LOG = logging.getLogger(__name__)


class GenerationCheckpoint:
    """Where a generation saves itself, and whether a saved state is this run's (same models, settings)."""

    def __init__(self, path: str | Path, settings: dict, minutes: float = 10.0):
        self.path = Path(path)
        self.settings = json.dumps(settings, sort_keys=True, default=str)
        self.interval_s = 60.0 * minutes
        self._saved_at = time.monotonic()

    def restore(self, generator: torch.Generator) -> BestSamples | None:
        """The samples seen before a stop, with ``generator`` set where it was; None to start afresh."""
        if not self.path.exists():
            return None
        state = load_weights_only(self.path, "generation checkpoint")
        if state.get("settings") != self.settings:
            LOG.warning("%s is from other models or sampling settings: starting afresh", self.path)
            self.path.unlink()
            return None
        generator.set_state(state["generator"])
        best = BestSamples.from_state_dict(state["best"])
        LOG.info("resuming generation after %d samples from %s", best.count, self.path)
        return best

    def save(self, best: BestSamples, generator: torch.Generator) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"settings": self.settings, "generator": generator.get_state(), "best": best.state_dict()}
        save_atomic(state, self.path)
        self._saved_at = time.monotonic()

    def save_if_due(self, best: BestSamples, generator: torch.Generator, of: int) -> None:
        """Call between batches: saves when the interval has passed or a stop was asked for, then stops."""
        signum = stop_requested()
        if signum is None and time.monotonic() - self._saved_at < self.interval_s:
            return
        self.save(best, generator)
        if signum is not None:
            where = f" after {best.count} of {of} samples"
            raise TrainingInterrupted(self.path, None, None, signum, what="generation", where=where)

    def finish(self) -> None:
        """Generation is written: its resume state goes, and a forced rerun starts afresh."""
        self.path.unlink(missing_ok=True)
        if self.path.parent.exists() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()
