"""One training run's resume state, kept the same way by every trainer (autoencoder, transformer prior,
diffusion model): ``checkpoints/last.pt``, written atomically with the run's format and fingerprint, the
random states, and the stop signal that writes it and ends the run.

The fingerprint is what a run and its resumption must share (network, data, settings, seed). A checkpoint
with another one is of another run: it is set aside (``last.stale.pt``) with a warning that names what
differs, and training starts afresh. Nothing is lost, and a rerun after an upstream change (a retrained
autoencoder gives the prior other tokens) is never blocked by an old checkpoint.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import NoReturn

import torch

from morphgen.models.base import LAST_CHECKPOINT
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.models.engine.preemption import TrainingInterrupted
from morphgen.weights import load_weights_only

LOG = logging.getLogger(__name__)


def random_state(device: torch.device | None = None) -> dict:
    """Torch's CPU random state, and the CUDA one of ``device`` when it is a GPU."""
    state = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_random_state(state: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


class RunCheckpoint:
    """``out_dir/checkpoints/last.pt`` of one run of kind ``what`` ("autoencoder", "prior" ...)."""

    def __init__(self, out_dir: str | Path, format: str, fingerprint, what: str):
        self.path = Path(out_dir) / LAST_CHECKPOINT
        self.format = format
        self.fingerprint = fingerprint
        self.what = what

    @property
    def stale_path(self) -> Path:
        return self.path.with_name("last.stale.pt")

    def difference(self, state: dict) -> str:
        """In words, why ``state`` is not of this run ('' when it is)."""
        if state.get("format") != self.format:
            return f"format {state.get('format')!r}, expected {self.format!r}"
        saved = state.get("fingerprint")
        if saved == self.fingerprint:
            return ""
        if isinstance(saved, dict) and isinstance(self.fingerprint, dict):
            keys = sorted(k for k in {*saved, *self.fingerprint} if saved.get(k) != self.fingerprint.get(k))
            return f"another {', '.join(keys)}"
        return "other data, settings or seed"

    def load(self, set_aside: bool = True) -> dict | None:
        """The saved state of this run, or None to start afresh. ``set_aside``: move a checkpoint of another
        run out of the way (one process of a distributed run does it; the others only read)."""
        if not self.path.exists():
            return None
        try:
            state = load_weights_only(self.path, f"{self.what} checkpoint")
        except Exception:
            if not self.path.exists():  # set aside by another process meanwhile
                return None
            raise
        why = self.difference(state)
        if not why:
            return state
        message = (
            f"{self.path} is of another {self.what} run ({why}): "
            f"{'set aside as ' + self.stale_path.name + '; ' if set_aside else ''}training starts afresh"
        )
        if set_aside:
            os.replace(self.path, self.stale_path)
        LOG.warning(message)
        warnings.warn(message, stacklevel=2)
        return None

    def save(self, state: dict) -> Path:
        return save_atomic({**state, "format": self.format, "fingerprint": self.fingerprint}, self.path)

    def stop(self, state: dict | None, epoch: int, step: int | None, signum: int) -> NoReturn:
        """Save ``state`` (None: the caller saved it) and end the run with :class:`TrainingInterrupted`."""
        if state is not None:
            self.save(state)
        raise TrainingInterrupted(self.path, epoch, step, signum)
