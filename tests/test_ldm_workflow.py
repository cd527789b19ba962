"""``model.family: ldm`` through the workflow: the same rules and file names, a prior conditioned on the
measured covariates, samples that carry them, samples asked for by a table and a grid, and the check that
segments them. Starts from the end-to-end run's preprocessed and segmented cohort."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, copy_upstream, e2e_config_args, run_snakemake

pytestmark = pytest.mark.slow

SUBPOP = "age-old"
SUBPOPS = ("age-young", "age-old", "diagnosis-cn", "diagnosis-ad")
PRIOR = "cohort"  # one conditioned prior for the cohort; a sub-population is sampled through its covariates
REQUESTS = ["middle-aged", "large-ventricles", "ventricles-01", "ventricles-02", "ventricles-03"]


@pytest.fixture(scope="module")
def ldm_run(e2e_run, tmp_path_factory):
    _, first = e2e_run
    work = tmp_path_factory.mktemp("ldm")
    results = work / "results"
    copy_upstream(first, results)
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    table = work / "requests.yaml"
    table.write_text(
        f"model: {{conditioning: {{requests: {{table: {REPO / 'tests/data/ldm_requests.tsv'}}}}}}}\n"
    )
    args = e2e_config_args(results)
    at = args.index("--config")
    args[at:at] = [
        str(REPO / "configs/demo/ldm.yaml"),
        str(REPO / "tests/data/config_ldm_tiny.yaml"),
        str(table),
    ]
    targets = [results / "tables/conditioning.tsv", results / f"figures/conditioning_grid_{PRIOR}.png"]
    run_snakemake(work, *args, "--cores", "2", "--", *map(str, targets))
    return results


def test_the_ldm_family_runs_through_the_same_rules(ldm_run):
    results = ldm_run
    network = torch.load(results / "models/autoencoder/model.pt", weights_only=True)["network"]
    assert network["kind"] == "kl"
    latents = np.load(next((results / "latents/tokens").glob("*.npy")))
    assert latents.dtype == np.float32 and latents.shape[:2] == (2, 3)  # 1 + 1 copies, 3 latent channels
    prior = torch.load(results / f"models/prior/{PRIOR}/model.pt", weights_only=True)
    assert prior["info"]["covariates"]["names"] == ["age", "sex", "ventricles", "brain"]
    subjects = pd.read_csv(results / "split/subjects.tsv", sep="\t")
    assert len(prior["info"]["training_covariates"]) == (subjects.split == "train").sum()  # the cohort's
    assert (results / f"models/prior/{PRIOR}/heldout.tsv").exists()
    assert not (results / f"models/prior/{SUBPOP}").exists()

    # each sample was asked for the covariates of one of the sub-population's training subjects
    scores = pd.read_csv(results / f"samples/{SUBPOP}/scores.tsv", sep="\t")
    assert len(scores) == 4 and scores["kept"].sum() == 2
    members = pd.read_csv(results / f"subpopulations/{SUBPOP}.tsv", sep="\t")
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


def test_requested_samples_are_written_flagged_and_segmented(ldm_run):
    results = ldm_run
    asked = pd.read_csv(results / f"conditioned/{PRIOR}/requests.tsv", sep="\t", keep_default_na=False)
    assert list(asked["sample_id"]) == REQUESTS
    big = asked.set_index("sample_id").loc["large-ventricles"]
    assert float(big["ventricles"]) == 200.0 and "ventricles" in big["outside_range"].split(",")
    grid = asked[asked["vary"] == "ventricles"]
    np.testing.assert_allclose(grid["ventricles_normalised"].astype(float), [0.0, 0.75, 1.5], atol=1e-5)
    assert list(grid["outside_range"]) == ["", "", "ventricles"]
    assert grid["age"].nunique() == 1  # the others at their median
    for name in REQUESTS:
        image = nib.load(results / f"conditioned/{PRIOR}/{name}.nii.gz")
        assert image.shape == (48, 64, 48) and np.allclose(
            image.affine,
            nib.load(next((results / "preprocessed").glob("*/anat/*_desc-preproc_T1w.nii.gz"))).affine,
        )
    measured = pd.read_csv(results / f"volumes/conditioned/{PRIOR}.tsv", sep="\t")
    assert sorted(measured["participant_id"]) == sorted(REQUESTS)


def test_the_conditioning_check_covers_both_sources(ldm_run):
    table = pd.read_csv(ldm_run / "tables/conditioning.tsv", sep="\t")
    assert set(table["source"]) == {"generated", "requested"}
    generated = table[table.source == "generated"]
    assert set(generated["subpopulation"]) == {*SUBPOPS, "all"}
    assert set(table.loc[table.source == "requested", "subpopulation"]) == {PRIOR}
    assert set(table["covariate"]) == {"ventricles", "brain"}  # what segmentation measures
    pooled = generated[(generated.subpopulation == "all") & (generated.covariate == "ventricles")]
    assert pooled.set_index("samples").loc["all", "n"] == 2 * len(SUBPOPS)  # the kept samples
    requested = table[(table.source == "requested") & (table.covariate == "ventricles")].set_index("samples")
    assert requested.loc["all", "n"] == len(REQUESTS)
    asked = pd.read_csv(ldm_run / f"conditioned/{PRIOR}/requests.tsv", sep="\t", keep_default_na=False)
    inside = asked["outside_range"].eq("").sum()
    assert 2 <= inside < len(REQUESTS)
    assert requested.loc["in range", "n"] == inside  # not the extrapolated ones
    grid = asked[asked["vary"] == "ventricles"]
    assert requested.loc["grid row", "n"] == len(grid) >= 2  # the grid's row alone, not the table's rows
    for png in ("figures/conditioning.png", f"figures/conditioning_grid_{PRIOR}.png"):
        assert (ldm_run / png).stat().st_size > 10_000
