"""Stopping training cleanly when the cluster asks: SIGTERM (time limit, pre-emption, scancel) or SIGUSR1.

SLURM sends SIGTERM to every process of a job at its time limit and on pre-emption, and ``--signal`` sends
one earlier (the SLURM profile asks for SIGTERM 5 minutes before the limit). A handler only sets a flag; the
trainer looks at it after each optimiser step, writes an atomic checkpoint of exactly where it is (mid-epoch
included) and raises :class:`TrainingInterrupted`. The rule then exits with :data:`INTERRUPTED_EXIT` and
Snakemake's retry (or SLURM's requeue) reruns it, which resumes from that checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from morphgen.errors import MorphgenError

# EX_TEMPFAIL of sysexits.h: "temporary failure, the user is invited to retry"
INTERRUPTED_EXIT = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[int] = []


class TrainingInterrupted(MorphgenError):
    """Training (or generation) stopped on a signal after writing ``checkpoint``; a rerun resumes from it.

    A launcher of several processes knows neither the checkpoint nor the step (None): each process has said
    where it stopped in the log.
    """

    def __init__(
        self,
        checkpoint: Path | None,
        epoch: int | None,
        step: int | None,
        signum: int | None = None,
        what: str = "training",
        where: str | None = None,
    ):
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.epoch, self.step, self.signum = epoch, step, signum
        name = signal.Signals(signum).name if signum else "a stop request"
        if where is None:
            where = "" if epoch is None else f" in epoch {epoch + 1} after step {step}"
        saved = "each process's checkpoint (log above)" if checkpoint is None else f"checkpoint {checkpoint}"
        super().__init__(f"{what} stopped on {name}{where}; {saved} written, a rerun resumes from it")


def stop_requested() -> int | None:
    """The first stop signal received since :func:`stop_on_signals` was entered, or None."""
    return _received[0] if _received else None


def request_stop(signum: int = signal.SIGTERM) -> None:
    """What the handler does; also the way for in-process callers to ask for a stop."""
    _received.append(int(signum))


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    request_stop(signum)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` set the stop flag instead of killing the process.

    Outside the main thread (where handlers cannot be installed) it does nothing.
    """
    _received.clear()
    try:
        previous = {s: signal.signal(s, _handler) for s in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()
