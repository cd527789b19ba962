"""Resuming a long generation: its scores, kept tokens and sampler state, saved atomically.

At UK Biobank scale one sub-population draws 100 samples per kept one for longer than a cluster's time
limit. The state is saved at batch boundaries every few minutes and when the cluster asks the job to stop;
the rerun restores the sampler's generator, so it draws exactly the samples the stopped run would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from morphgen.errors import ConfigError
from morphgen.models.base import REQUESTS_TSV, SCORES_TSV, sample_filename
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.models.engine.data import torch_generator
from morphgen.models.engine.preemption import TrainingInterrupted, stop_requested
from morphgen.models.engine.selection import BestSamples
from morphgen.nifti import atomic_output, save_volume
from morphgen.weights import load_weights_only, sha256sum

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


def checked_counts(n_generate: int, n_keep: int) -> tuple[int, int]:
    n_generate, n_keep = int(n_generate), int(n_keep)
    if n_generate < 1 or not 0 <= n_keep <= n_generate:
        raise ConfigError(
            f"generation needs 1 <= n_generate and 0 <= n_keep <= n_generate, got {n_generate}, {n_keep}"
        )
    return n_generate, n_keep


def generation_checkpoint(
    out_dir: Path,
    sampling_cfg: dict,
    seed: int,
    device: torch.device,
    counts: tuple[int, int],
    model_path: Path,
    prior_path: Path,
) -> GenerationCheckpoint:
    """The resume state of one sub-population's generation, valid for these models and settings only."""
    settings = {
        "n_generate": counts[0],
        "n_keep": counts[1],
        "sampling": {k: v for k, v in sampling_cfg.items() if k != "checkpoint_minutes"},
        "seed": seed,
        "device": device.type,
        "autoencoder": sha256sum(model_path),
        "prior": sha256sum(prior_path),
    }
    minutes = float(sampling_cfg.get("checkpoint_minutes", 10))
    return GenerationCheckpoint(Path(out_dir) / "checkpoints" / "generate.pt", settings, minutes)


def write_kept(
    best: BestSamples,
    decode: Callable[[torch.Tensor], torch.Tensor],
    out_dir: Path,
    affine: np.ndarray,
    batch_size: int,
    description: str,
    columns: pd.DataFrame | None = None,
) -> None:
    """Decode the kept payloads (best first) to ``sample-0000.nii.gz`` ... and write ``scores.tsv``.

    ``decode`` maps a batch of payloads to volumes (batch, 1, x, y, z) in [0, 1]. ``scores.tsv`` has one row
    per sample drawn: index, score, kept, file (empty when not kept), then ``columns`` (one row per sample).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[int, str] = {}
    kept = best.kept()
    for start in range(0, len(kept), batch_size):
        chunk = kept[start : start + batch_size]
        volumes = decode(torch.stack([payload for _, _, payload in chunk])).cpu().numpy()
        for offset, ((index, _, _), volume) in enumerate(zip(chunk, volumes, strict=True)):
            name = sample_filename(start + offset)
            save_volume(out_dir / name, volume[0], affine, description=description)
            files[index] = name
    n = best.count
    table = pd.DataFrame(
        {
            "index": range(n),
            "score": [f"{s:.9g}" for s in best.scores],
            "kept": [i in files for i in range(n)],
            "file": [files.get(i, "") for i in range(n)],
        }
    )
    if columns is not None:
        table = pd.concat([table, columns.reset_index(drop=True)], axis=1)
    with atomic_output(out_dir / SCORES_TSV) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.7g")


class ConditionedSampler(Protocol):
    """What :func:`generate_on_drawn_covariates` needs of a conditioned family's loaded models."""

    device: torch.device
    training: torch.Tensor  # each training subject's normalised covariates
    scaler: Any  # morphgen.models.covariates.CovariateScaler

    def draw(self, covariates: torch.Tensor, generator: torch.Generator, progress: bool) -> torch.Tensor: ...

    def score(self, latents: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def generate_on_drawn_covariates(
    sampler: ConditionedSampler,
    covariates: pd.DataFrame | None,
    counts: tuple[int, int],
    sampling_cfg: dict,
    family_seed: int,
    paths: tuple[Path, Path],
    out_dir: Path,
    affine: np.ndarray,
    description: str,
    progress: bool = True,
) -> None:
    """A conditioned family's ``generate``: each of ``counts[0]`` samples conditioned on the covariates of a
    subject drawn from ``covariates`` (default: the prior's training subjects), the ``counts[1]`` best by
    score kept and written with ``scores.tsv``, which also holds every sample's covariates. Resumable
    (``checkpoints/generate.pt``), for the models at ``paths`` (autoencoder, prior) and those subjects only.
    """
    n_generate, n_keep = checked_counts(*counts)
    seed = int(sampling_cfg.get("seed", family_seed))  # model.sampling.seed, else model.seed
    pool = sampler.training
    if covariates is not None:
        if covariates.empty:
            raise ConfigError("generate: the covariate table to draw conditions from is empty")
        pool = torch.from_numpy(sampler.scaler.transform(covariates))
    conditions = pool[torch.randint(len(pool), (n_generate,), generator=torch_generator(seed, "covariates"))]
    batch_size = int(sampling_cfg.get("batch_size", 8))
    # a saved state is only this run's if it drew from the same subjects' covariates
    settings = {**sampling_cfg, "conditions": hashlib.sha256(pool.numpy().tobytes()).hexdigest()}
    resume = generation_checkpoint(out_dir, settings, seed, sampler.device, (n_generate, n_keep), *paths)
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    best = resume.restore(generator) or BestSamples(n_keep)
    with tqdm(total=n_generate, initial=best.count, desc="samples", disable=not progress) as bar:
        while best.count < n_generate:
            cov = conditions[best.count : best.count + batch_size]
            latents = sampler.draw(cov, generator, progress)
            for latent, score in zip(latents.cpu(), sampler.score(latents).tolist(), strict=True):
                best.add(score, latent.clone())
            bar.update(len(cov))
            if best.count < n_generate:
                resume.save_if_due(best, generator, of=n_generate)
    columns = sampler.scaler.inverse(conditions.numpy())
    write_kept(best, sampler.decode, out_dir, affine, batch_size, description, columns=columns)
    resume.finish()


def write_requests(
    asked: pd.DataFrame,
    normalised: np.ndarray,
    scaler,
    scores: list[float],
    out_dir: Path,
    **columns,
) -> pd.DataFrame:
    """``out_dir/requests.tsv`` of conditioned samples, returned: the covariates ``asked``
    (:func:`morphgen.models.covariates.request_table`), each sample's file and discriminator score, any
    further ``columns`` (one value per row), each covariate normalised by ``scaler``
    (``<covariate>_normalised``) and ``outside_range``."""
    from morphgen.models.covariates import OUTSIDE, REQUEST_ID

    table = asked.assign(
        file=[f"{i}.nii.gz" for i in asked[REQUEST_ID]], score=[f"{s:.9g}" for s in scores], **columns
    )
    for i, name in enumerate(scaler.names):
        table[f"{name}_normalised"] = np.asarray(normalised)[:, i]
    table[OUTSIDE] = scaler.outside(asked)
    with atomic_output(Path(out_dir) / REQUESTS_TSV) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.7g")
    return table
