"""engine.generation.generate_on_drawn_covariates, the generation of every conditioned family (LDM,
BrainSynth): each sample on a drawn subject's covariates, the best kept, and a stopped run resumed to the
files of an uninterrupted one. A stand-in sampler keeps it to the shared logic."""

from __future__ import annotations

import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from morphgen.errors import ConfigError
from morphgen.models.covariates import CovariateScaler
from morphgen.models.engine.generation import generate_on_drawn_covariates
from morphgen.models.engine.preemption import TrainingInterrupted, request_stop, stop_on_signals

SUBJECTS = pd.DataFrame({"participant_id": ["a", "b", "c"], "age": [50.0, 60.0, 70.0]})


class StandIn:
    """Latents are the covariate plus noise; the score is the latent's mean, the image the latent."""

    def __init__(self, stop_after: int | None = None):
        self.device = torch.device("cpu")
        self.scaler = CovariateScaler.fit(SUBJECTS, ["age"])
        self.training = torch.from_numpy(self.scaler.transform(SUBJECTS))
        self.drawn: list[int] = []
        self.stop_after = stop_after

    def draw(self, covariates, generator, progress):
        self.drawn.append(len(covariates))
        if len(self.drawn) == self.stop_after:
            request_stop(signal.SIGTERM)
        noise = torch.randn((len(covariates), 1, 4, 4, 4), generator=generator, dtype=torch.float64)
        return (covariates.view(-1, 1, 1, 1, 1) + 0.1 * noise).float()

    def score(self, latents):
        return latents.flatten(1).mean(1)

    def decode(self, latents):
        return latents.clamp(0, 1)


def _generate(sampler, out: Path, covariates=None, models=None):
    paths = models or (out.parent / "ae.pt", out.parent / "prior.pt")
    generate_on_drawn_covariates(
        sampler, covariates, (7, 3), {"batch_size": 3}, 0, paths, out, np.eye(4), "stand-in", progress=False
    )


@pytest.fixture
def models(tmp_path):
    for name in ("ae.pt", "prior.pt"):
        (tmp_path / name).write_bytes(name.encode())
    return tmp_path


def test_the_best_samples_are_kept_with_the_covariates_each_was_drawn_on(models):
    _generate(StandIn(), models / "whole")
    scores = pd.read_csv(models / "whole/scores.tsv", sep="\t")
    assert len(scores) == 7 and scores["kept"].sum() == 3
    assert set(scores["age"]) <= {50.0, 60.0, 70.0}
    kept = scores[scores["kept"]].sort_values("file")
    assert kept["score"].is_monotonic_decreasing  # sample-0000 is the best
    # the latent follows its covariate, so the kept samples are those drawn on the oldest subjects
    assert kept["age"].min() >= scores["age"].median()


def test_a_stopped_generation_resumes_to_the_files_of_an_uninterrupted_one(models):
    _generate(StandIn(), models / "whole")
    stopped = StandIn(stop_after=1)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM after 3 of 7 samples"):
        _generate(stopped, models / "resumed")
    assert not (models / "resumed/scores.tsv").exists()
    resumed = StandIn()
    _generate(resumed, models / "resumed")
    assert resumed.drawn == [3, 1]  # the first batch was not drawn again
    assert (models / "resumed/scores.tsv").read_text() == (models / "whole/scores.tsv").read_text()
    for name in ("sample-0000.nii.gz", "sample-0001.nii.gz", "sample-0002.nii.gz"):
        a, b = (nib.load(str(models / d / name)).get_fdata() for d in ("resumed", "whole"))
        assert np.array_equal(a, b), name


def test_conditions_come_from_the_subjects_given_and_another_pool_does_not_resume(models):
    only_young = SUBJECTS.iloc[:1]
    _generate(StandIn(), models / "young", covariates=only_young)
    assert set(pd.read_csv(models / "young/scores.tsv", sep="\t")["age"]) == {50.0}
    with pytest.raises(ConfigError, match="table to draw conditions from is empty"):
        _generate(StandIn(), models / "none", covariates=SUBJECTS.iloc[:0])
    with stop_on_signals(), pytest.raises(TrainingInterrupted):
        _generate(StandIn(stop_after=1), models / "other", covariates=only_young)
    again = StandIn()
    _generate(again, models / "other")  # the training subjects' pool: the saved state is of another run
    assert again.drawn == [3, 3, 1]
