"""``model.family: ldm`` through the workflow: the same rules and file names, a prior conditioned on the
measured covariates, samples that carry them. Starts from the end-to-end run's preprocessed cohort."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, e2e_config_args, run_snakemake

pytestmark = pytest.mark.slow

SUBPOP = "age-old"
UPSTREAM = ("demo_cohort", "qc", "split", "subpopulations", "preprocessed")


@pytest.fixture(scope="module")
def ldm_run(e2e_run, tmp_path_factory):
    _, first = e2e_run
    work = tmp_path_factory.mktemp("ldm")
    results = work / "results"
    for part in UPSTREAM:  # with their times, so Snakemake sees them as up to date
        shutil.copytree(first / part, results / part)
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    args = e2e_config_args(results)
    at = args.index("--config")
    args[at:at] = [str(REPO / "configs/demo/ldm.yaml"), str(REPO / "tests/data/config_ldm_tiny.yaml")]
    run_snakemake(work, *args, "--cores", "2", "--", str(results / f"samples/{SUBPOP}/scores.tsv"))
    return results


def test_the_ldm_family_runs_through_the_same_rules(ldm_run):
    results = ldm_run
    network = torch.load(results / "models/autoencoder/model.pt", weights_only=True)["network"]
    assert network["kind"] == "kl"
    latents = np.load(next((results / "latents/tokens").glob("*.npy")))
    assert latents.dtype == np.float32 and latents.shape[:2] == (2, 3)  # 1 + 1 copies, 3 latent channels
    prior = torch.load(results / f"models/prior/{SUBPOP}/model.pt", weights_only=True)
    assert prior["info"]["covariates"]["names"] == ["age", "sex", "ventricles", "brain"]
    assert (results / f"models/prior/{SUBPOP}/heldout.tsv").exists()

    # each sample was asked for the covariates of one of the sub-population's training subjects
    scores = pd.read_csv(results / f"samples/{SUBPOP}/scores.tsv", sep="\t")
    assert len(scores) == 4 and scores["kept"].sum() == 2
    members = pd.read_csv(results / f"subpopulations/{SUBPOP}.tsv", sep="\t")
    subjects = pd.read_csv(results / "split/subjects.tsv", sep="\t")
    train = subjects[subjects.participant_id.isin(members.loc[members.split == "train", "participant_id"])]
    volumes = pd.read_csv(results / "volumes/real.tsv", sep="\t").set_index("participant_id")
    for _, row in scores.iterrows():
        match = train[(train.age - row.age).abs() < 1e-3]
        assert len(match) >= 1 and row.sex in set(match.sex)
        measured = volumes.loc[match.participant_id, "ventricles_ml"]
        assert np.isclose(measured, row.ventricles, rtol=1e-4).any()
    for name in scores.loc[scores.kept, "file"]:
        image = nib.load(results / f"samples/{SUBPOP}" / name)
        assert image.shape == (48, 64, 48) and np.isfinite(image.get_fdata()).all()
