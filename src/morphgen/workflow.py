"""Glue between Snakemake rule scripts and the package: logging, threads, and failure reporting."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from morphgen.models.engine.preemption import INTERRUPTED_EXIT, TrainingInterrupted

LOG = logging.getLogger("morphgen")


def set_threads(n: int) -> None:
    """Bound every numeric library to the threads Snakemake granted the job."""
    from morphgen.antsio import set_itk_threads

    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    set_itk_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # stages without torch
        pass


# sections a config file gives whole: a later file's sub-populations replace the earlier ones instead of
# being merged key by key into them (Snakemake's merge would keep config.yaml's demo sub-populations)
REPLACED_SECTIONS = ("subpopulations",)


def replace_sections(config: dict, sources: list[dict], keys: tuple[str, ...] = REPLACED_SECTIONS) -> dict:
    """Set each of ``keys`` in ``config`` to its value in the last of ``sources`` (the command line's config
    files, then ``--config``) that defines it; keys no source defines are left as they are."""
    import copy

    for key in keys:
        given = [source[key] for source in sources if isinstance(source, dict) and key in source]
        if given:
            config[key] = copy.deepcopy(given[-1])
    return config


def command_line_config(configfiles: list, overrides: dict) -> list[dict]:
    """The command line's config sources in the order Snakemake applies them: each --configfile, then
    --config."""
    import yaml

    sources = [yaml.safe_load(Path(path).read_text()) or {} for path in configfiles]
    return [*sources, dict(overrides or {})]


def batches(ids: list[str], size: int) -> dict[str, list[str]]:
    """Consecutive runs of ``size`` ids, named ``0001``, ``0002``, ...: one job segments or registers one run.

    Segmenting or registering a UK Biobank cohort in one job would take weeks; in runs of ``size`` images each
    job fits a cluster's time limit, and a job that fails loses only its own run.
    """
    if size < 1:
        raise ValueError(f"images per job must be at least 1, not {size}")
    return {f"{k + 1:04d}": list(ids[i : i + size]) for k, i in enumerate(range(0, len(ids), size))}


@contextlib.contextmanager
def logged(smk: Any) -> Iterator[logging.Logger]:
    """Run a rule's body with stdout/stderr (progress bars included) appended to the rule's log file.

    The process's file descriptors 1 and 2 go there too, so what C++ libraries (ITK's warnings of a failing
    registration) and child processes print lands in the log instead of the terminal. ``smk`` is the
    ``snakemake`` object of a script. The traceback of a failure goes to the log and the
    exception is re-raised so Snakemake marks the job failed and removes its outputs.
    """
    log_path = Path(smk.log[0]) if len(smk.log) else None
    set_threads(getattr(smk, "threads", 1))
    if log_path is None:
        yield LOG
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        start = time.time()
        old_out, old_err = sys.stdout, sys.stderr
        for stream in (old_out, old_err):
            stream.flush()
        saved_fds = _redirect_fds(fh)
        sys.stdout = sys.stderr = fh
        wc = dict(smk.wildcards.items()) if hasattr(smk.wildcards, "items") else {}
        LOG.info("rule %s %s started, %s thread(s)", smk.rule, wc, getattr(smk, "threads", 1))
        if os.environ.get("SLURM_JOB_ID"):  # where the job ran, for users reading logs on a cluster
            LOG.info(
                "SLURM job %s, partition %s, node %s, CUDA_VISIBLE_DEVICES=%s",
                os.environ["SLURM_JOB_ID"],
                os.environ.get("SLURM_JOB_PARTITION", "?"),
                os.environ.get("SLURMD_NODENAME", "?"),
                os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            )
        try:
            yield LOG
        except TrainingInterrupted as exc:  # SLURM's time limit or pre-emption: a rerun resumes
            LOG.warning("rule %s %s stopped: %s", smk.rule, wc, exc)
            # also in the job's own output (the SLURM log): Snakemake empties the rule log when it reruns
            os.write(saved_fds[1], f"morphgen: rule {smk.rule} {wc} stopped: {exc}\n".encode())
            raise SystemExit(INTERRUPTED_EXIT) from None
        except BaseException:
            LOG.error("rule %s %s failed:\n%s", smk.rule, wc, traceback.format_exc())
            raise
        else:
            LOG.info("rule %s %s finished in %.1f s", smk.rule, wc, time.time() - start)
        finally:
            fh.flush()
            _restore_fds(saved_fds)
            sys.stdout, sys.stderr = old_out, old_err
            LOG.removeHandler(handler)


def _redirect_fds(fh) -> tuple[int, int]:
    """Point file descriptors 1 and 2 at ``fh``; returns copies of the old ones for :func:`_restore_fds`."""
    saved = (os.dup(1), os.dup(2))
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    return saved


def _restore_fds(saved: tuple[int, int]) -> None:
    for fd, old in zip((1, 2), saved, strict=True):
        os.dup2(old, fd)
        os.close(old)
