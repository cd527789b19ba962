"""Training on several GPUs of one node: torchrun processes with DistributedDataParallel.

A rule asks for ``model.distributed.gpus`` GPUs (``resources: gpu=N``: one SLURM job with N GPUs). With
N > 1 the rule script calls :func:`launch`, which runs ``torchrun --standalone --nproc-per-node N`` on
``python -m morphgen.models.engine.distributed <job.json>``; every process calls the same training function,
which finds the process group through :func:`current_world`. Without a GPU the processes use the gloo back-end
on CPU, which is how the tests run it.

Scaling by world size: ``batch_size`` stays what one process (one GPU) holds, so the global batch is
``N x batch_size``, and the learning rates grow with it by ``model.distributed.lr_scaling`` (sqrt, the rule
for Adam of Malladi et al. 2022; linear, Goyal et al. 2017; or none).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from morphgen.errors import ConfigError
from morphgen.models.engine.preemption import (
    INTERRUPTED_EXIT,
    TrainingInterrupted,
    stop_on_signals,
    stop_requested,
)
from morphgen.nifti import atomic_output

LR_SCALINGS = ("sqrt", "linear", "none")
JOB_FORMAT = "morphgen-distributed-job-1"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 writes the files)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    # ---- collectives (no-ops for one process) ----------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or max) over processes, in place; returns the tensor."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each key's value summed over processes (every process must hold the same keys)."""
        keys = sorted(values)
        totals = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        return {k: float(v) for k, v in zip(keys, self.all_reduce(totals).cpu(), strict=True)}

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's tensor along dim 0, in rank order (first dims may differ)."""
        if not self.distributed:
            return tensor
        sizes = [torch.zeros(1, dtype=torch.int64, device=tensor.device) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(tensor)], device=tensor.device))
        longest = int(max(sizes))
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[: int(n)] for part, n in zip(parts, sizes, strict=True)])

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def share(self, n: int) -> range:
        """This process's contiguous share of ``n`` items (the first ``n % size`` shares get one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))


def current_world() -> World:
    """The process group set up by :func:`init_from_env`, or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def scaled_lr(lr: float, world_size: int, rule: str) -> float:
    """The learning rate for a global batch ``world_size`` times the configured one."""
    if rule not in LR_SCALINGS:
        known = ", ".join(LR_SCALINGS)
        raise ConfigError(f"model.distributed.lr_scaling must be one of {known}, got {rule!r}")
    factor = {"sqrt": math.sqrt(world_size), "linear": float(world_size), "none": 1.0}[rule]
    return lr * factor


def distributed_settings(model_cfg: dict) -> tuple[int, str]:
    """(processes per training job, lr scaling rule) from ``config['model']['distributed']``."""
    cfg = model_cfg.get("distributed") or {}
    gpus = int(cfg.get("gpus", 1))
    rule = str(cfg.get("lr_scaling", "sqrt"))
    if gpus < 1:
        raise ConfigError(f"model.distributed.gpus must be at least 1, got {gpus}")
    scaled_lr(1.0, 1, rule)  # validates the rule
    return gpus, rule


def init_from_env() -> World:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on CPU)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return current_world()


# ---- launching -----------------------------------------------------------------------------------------
def torchrun_command(nproc: int, job_file: Path) -> list[str]:
    """torchrun on this interpreter: one node, ``nproc`` processes, a free local port (--standalone)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "-m",
        "morphgen.models.engine.distributed",
        str(job_file),
    ]


def launch(entry: str, kwargs: dict, nproc: int, job_file: Path) -> None:
    """Run ``entry`` (``"module:function"``) with ``kwargs`` in ``nproc`` torchrun processes and wait.

    Output of every process goes to this process's stdout (the rule's log). A stop signal received here is
    passed on to torchrun, which passes it to the processes; they checkpoint and exit, and this raises
    :class:`TrainingInterrupted`. Any other failure raises RuntimeError naming the job file.
    """
    job_file = Path(job_file)
    job = {"format": JOB_FORMAT, "entry": entry, "kwargs": kwargs}
    with atomic_output(job_file) as tmp:
        tmp.write_text(json.dumps(job, indent=1, default=str))
    sys.stdout.flush()
    with stop_on_signals():
        command = torchrun_command(nproc, job_file)
        proc = subprocess.Popen(command, stdout=sys.stdout, stderr=subprocess.STDOUT)
        forwarded = False
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                signum = stop_requested()
                if signum is not None and not forwarded:
                    proc.send_signal(signum)
                    forwarded = True
        signum = stop_requested()
    if code == INTERRUPTED_EXIT or (code != 0 and signum is not None):
        raise TrainingInterrupted(None, None, None, signum)
    if code != 0:
        raise RuntimeError(
            f"distributed training ({nproc} processes, job {job_file}) failed with exit code {code}; "
            "the log above holds each process's error"
        )


def _resolve(entry: str):
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    """One torchrun process: join the group, run the job's entry, leave. Exit 75 when stopped by a signal."""
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    if job.get("format") != JOB_FORMAT:
        raise ConfigError(f"{argv[0]} is not a morphgen distributed job")
    with stop_on_signals():  # a signal while joining the group is kept for the first step
        world = init_from_env()
        try:
            _resolve(job["entry"])(**job["kwargs"], progress=world.is_main)
        except TrainingInterrupted as exc:
            print(f"rank {world.rank}: {exc}", file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        finally:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
