"""Seed 002's family through the same rules as every other: the prior reads the autoencoder, samples carry
a training subject's age and sex, a grid row shares one R-code, and the age effect is measured."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, copy_upstream, e2e_config_args, run_snakemake

from morphgen.tsv import read_tsv

pytestmark = pytest.mark.slow

SUBPOP = "age-young"
PRIOR = "cohort"


@pytest.fixture(scope="module")
def brainsynth_run(e2e_run, tmp_path_factory):
    _, first = e2e_run
    work = tmp_path_factory.mktemp("brainsynth")
    results = work / "results"
    copy_upstream(first, results)
    args = e2e_config_args(results)
    at = args.index("--config")
    args[at:at] = [
        str(REPO / "configs/demo/brainsynth.yaml"),
        str(REPO / "tests/data/config_brainsynth_tiny.yaml"),
    ]
    targets = [
        results / "tables/conditioning_effects.tsv",
        results / "tables/brain_age.tsv",
        results / f"figures/conditioning_grid_{PRIOR}.png",
    ]
    run_snakemake(work, *args, "--cores", "2", "--", *map(str, targets))
    return results


def test_the_prior_splits_the_autoencoders_latents(brainsynth_run):
    results = brainsynth_run
    latents = np.load(next((results / "latents/tokens").glob("*.npy")))
    assert latents.dtype == np.int16 and latents.shape == (1, 2, 2, 6, 8, 6)
    glm = read_tsv(results / f"models/prior/{PRIOR}/glm.tsv")
    subjects = read_tsv(results / "split/subjects.tsv")
    assert list(glm["split"]) == ["train", "test"]
    assert glm.set_index("split").loc["train", "subjects"] == (subjects.split == "train").sum()
    assert not (results / f"models/prior/{SUBPOP}").exists()  # one prior for the cohort


def test_each_sample_takes_a_training_subjects_age_and_sex(brainsynth_run):
    results = brainsynth_run
    scores = read_tsv(results / f"samples/{SUBPOP}/scores.tsv")
    assert len(scores) == 2 and scores["kept"].astype(bool).sum() == 1
    subjects = read_tsv(results / "split/subjects.tsv")
    members = read_tsv(results / f"subpopulations/{SUBPOP}.tsv")
    train = subjects[subjects.participant_id.isin(members.loc[members.split == "train", "participant_id"])]
    for _, row in scores.iterrows():
        match = train[(train.age.astype(float) - float(row.age)).abs() < 1e-3]
        assert len(match) >= 1 and row.sex in set(match.sex)


def test_a_grid_row_shares_one_r_code_and_its_age_effect_is_measured(brainsynth_run):
    results = brainsynth_run
    asked = read_tsv(results / f"conditioned/{PRIOR}/requests.tsv")
    grid = asked[asked["vary"] == "age"]
    assert len(grid) == 2 and grid["rcode"].nunique() == 1
    effects = read_tsv(results / "tables/conditioning_effects.tsv")
    assert set(effects["source"]) == {"generated", "requested"}
    assert set(effects["covariate"]) == {"age"} and set(effects["volume"]) == {"ventricles", "brain"}
    rows = effects.set_index(["source", "volume"])
    assert rows.loc[("requested", "ventricles"), "n"] == 2
    assert rows.loc[("generated", "ventricles"), "n"] == 4  # the kept sample of each of four sub-populations
    real = read_tsv(results / "volumes/real.tsv").merge(subjects_table(results), on="participant_id")
    expected = np.polyfit(real["age"].astype(float), real["ventricles_ml"].astype(float), 1)[0]
    assert float(rows.loc[("generated", "ventricles"), "real_slope"]) == pytest.approx(expected, rel=1e-4)
    assert (results / f"figures/conditioning_grid_{PRIOR}.png").stat().st_size > 10_000


def test_the_brain_age_table_reads_real_and_synthetic_images(brainsynth_run):
    results = brainsynth_run
    table = read_tsv(results / "tables/brain_age.tsv")
    subjects = read_tsv(results / "split/subjects.tsv")
    n_train, n_test = (subjects.split == "train").sum(), (subjects.split == "test").sum()
    assert list(table["evaluated"]) == ["real test", "generated", "requested", "real test"]
    assert list(table["n"]) == [n_test, 4, 2, n_test]
    assert list(table["training_images"]) == [n_train] * 3 + [n_train + 4]
    assert np.isfinite(table["mae_years"].astype(float)).all()


def subjects_table(results) -> pd.DataFrame:
    return read_tsv(results / "split/subjects.tsv")[["participant_id", "age"]]
