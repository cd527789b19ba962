"""The latent diffusion family (seed 004) through its files: KL autoencoder, latents, conditioned prior,
generation with covariates."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import phantom

from morphgen.errors import ConfigError, SubjectError
from morphgen.models import build_family
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.families.ldm.diffusion import FORMER_PROCESS, make_scheduler
from morphgen.models.families.ldm.training import load_diffusion
from morphgen.nifti import save_volume
from morphgen.space import Grid
from morphgen.tsv import read_tsv

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = Grid(4.0, (16, 24, 16))
MODEL_CFG = {
    "family": "ldm",
    "seed": 0,
    "autoencoder": {
        "channels": [4, 8],
        "latent_channels": 2,
        "num_res_blocks": 1,
        "norm_num_groups": 4,
        "kl_weight": 1e-4,
        "epochs": 1,
        "batch_size": 3,
        "lr": 1e-3,
        "lr_decay": 1.0,
        "disc_lr": 5e-4,
        "disc_channels": 4,
        "disc_layers": 2,
        "l1_weight": 1.0,
        "fft_weight": 0.0,
        "adversarial_weight": 0.01,
        "adversarial_start_epoch": 0,
        "perceptual": {"weights": None},
    },
    "diffusion": {
        "channels": [8, 16],
        "attention_levels": [False, True],
        "num_res_blocks": 1,
        "num_head_channels": [0, 8],
        "norm_num_groups": 4,
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
    },
    "conditioning": {"covariates": {"age": "age", "sex": "sex", "ventricles": "ventricles_ml"}},
    "sampling": {"n_keep": 2, "oversample": 2, "batch_size": 3, "sampler": "ddim", "steps": 5},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ldm")
    rng = np.random.default_rng(5)
    subjects = [f"sub-{i:02d}" for i in range(6)]
    images = {
        s: save_volume(root / "img" / f"{s}.nii.gz", phantom(rng, GRID.shape), GRID.affine) for s in subjects
    }
    covariates = pd.DataFrame(
        {
            "participant_id": subjects,
            "age": [50.0, 55.0, 60.0, 65.0, 70.0, 75.0],
            "sex": ["F", "M", "F", "M", "F", "M"],
            "ventricles": [10.0, 14.0, 18.0, 22.0, 26.0, 30.0],
        }
    )
    family = build_family(MODEL_CFG)
    family.fit_autoencoder(
        [images[s] for s in subjects[:4]], [images[s] for s in subjects[4:]], root / "ae", False
    )
    family.encode(root / "ae/model.pt", images, root / "latents", augmented_copies=1, progress=False)
    latents = [root / "latents" / f"{s}.npy" for s in subjects]
    family.fit_prior(latents[:4], latents[4:], root / "prior", progress=False, covariates=covariates)
    return {"root": root, "family": family, "images": images, "subjects": subjects, "covariates": covariates}


def test_files_of_each_stage(run):
    root = run["root"]
    autoencoder, _, network = load_autoencoder(root / "ae/model.pt")
    assert network["kind"] == "kl" and type(autoencoder).__name__ == "AutoencoderKL"
    latents = np.load(root / "latents/sub-00.npy")
    assert latents.shape == (2, 2, 8, 12, 8) and latents.dtype == np.float32  # (copies, channels, grid)
    assert not np.array_equal(latents[0], latents[1])  # the augmented copy differs
    _, saved = load_diffusion(root / "prior/model.pt")
    covs = saved["info"]["covariates"]
    assert covs["names"] == ["age", "sex", "ventricles"]
    assert covs["minimum"] == [50.0, 0.0, 10.0] and covs["maximum"] == [65.0, 1.0, 22.0]  # training subjects
    assert saved["info"]["training_covariates"].shape == (4, 3)
    heldout = read_tsv(root / "prior/heldout.tsv")
    assert {"model_mse", "no_estimate_mse", "ratio"} <= set(heldout.columns)
    loss = read_tsv(root / "prior/loss.tsv")
    assert list(loss["epoch"]) == [1, 2] and np.isfinite(loss["val_mse"]).all()


def test_the_sampler_follows_the_noise_process_of_its_model_file(run, tmp_path):
    family, autoencoder = run["family"], run["root"] / "ae/model.pt"
    scheduler = family._sampler(autoencoder, run["root"] / "prior/model.pt").scheduler
    assert scheduler.prediction_type == "epsilon"
    assert torch.allclose(scheduler.betas, make_scheduler("ddpm").betas)  # seed 004's schedule
    saved = torch.load(run["root"] / "prior/model.pt", weights_only=True)
    velocity = {"schedule": "linear_beta", "prediction": "v_prediction"}
    torch.save({**saved, "process": velocity}, tmp_path / "v.pt")
    assert family._sampler(autoencoder, tmp_path / "v.pt").scheduler.prediction_type == "v_prediction"
    del saved["process"]  # a file written before the process was kept: what such models were trained with
    torch.save(saved, tmp_path / "former.pt")
    former = family._sampler(autoencoder, tmp_path / "former.pt").scheduler
    assert former.prediction_type == "epsilon"
    assert torch.allclose(former.betas, make_scheduler("ddpm", process=FORMER_PROCESS).betas)
    assert not torch.allclose(former.betas, scheduler.betas)


def test_generation_keeps_the_top_scores_with_their_covariates(run, tmp_path):
    root, family = run["root"], run["family"]
    out = tmp_path / "gen"
    family.generate(root / "ae/model.pt", root / "prior/model.pt", 4, 2, out, GRID.affine, progress=False)
    table = read_tsv(out / "scores.tsv")
    assert list(table.columns[:4]) == ["index", "score", "kept", "file"]
    assert table["kept"].sum() == 2 and sorted(table.loc[table.kept, "file"]) == [
        "sample-0000.nii.gz",
        "sample-0001.nii.gz",
    ]
    best = table.sort_values("score", ascending=False, kind="stable").head(2)
    assert list(best["file"]) == ["sample-0000.nii.gz", "sample-0001.nii.gz"]
    training = run["covariates"].iloc[:4]
    for _, row in table.iterrows():  # each sample was conditioned on a training subject's covariates
        match = training[(training.age.sub(row.age).abs() < 1e-3) & (training.sex == row.sex)]
        assert len(match) == 1 and match.ventricles.iloc[0] == pytest.approx(row.ventricles, abs=1e-3)
    img = nib.load(str(out / "sample-0000.nii.gz"))
    assert np.allclose(img.affine, GRID.affine) and img.shape == GRID.shape
    data = img.get_fdata()
    assert data.min() >= 0 and data.max() <= 1
    again = tmp_path / "again"
    family.generate(root / "ae/model.pt", root / "prior/model.pt", 4, 2, again, GRID.affine, progress=False)
    assert (again / "scores.tsv").read_text() == (out / "scores.tsv").read_text()


def test_the_prior_needs_every_subjects_covariates(run, tmp_path):
    root, family = run["root"], run["family"]
    latents = [root / "latents" / f"{s}.npy" for s in run["subjects"]]
    with pytest.raises(ConfigError, match="covariate table"):
        family.fit_prior(latents[:4], latents[4:], tmp_path / "a", progress=False)
    partial = run["covariates"].iloc[1:]
    with pytest.raises(SubjectError, match="sub-00"):
        family.fit_prior(latents[:4], latents[4:], tmp_path / "b", progress=False, covariates=partial)


def test_conditioned_samples_carry_what_was_asked(run, tmp_path):
    root, family = run["root"], run["family"]
    models = (root / "ae/model.pt", root / "prior/model.pt")
    grid = {"vary": ["ventricles"], "range": [0.0, 2.0], "steps": 3}
    asked = pd.DataFrame({"sample_id": ["old", "old-again"], "age": [80.0, 80.0], "sex": ["M", "M"]})
    table = family.generate_conditioned(*models, asked, grid, tmp_path / "a", GRID.affine, progress=False)
    written = read_tsv(tmp_path / "a/requests.tsv")
    assert list(written["sample_id"]) == [
        "old",
        "old-again",
        "ventricles-01",
        "ventricles-02",
        "ventricles-03",
    ]
    assert list(written["file"]) == [f"{i}.nii.gz" for i in written["sample_id"]]
    np.testing.assert_allclose(written["ventricles"].iloc[2:], [10.0, 22.0, 34.0])  # training range 10..22
    np.testing.assert_allclose(written["ventricles_normalised"].iloc[2:], [0.0, 1.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(written["age_normalised"].iloc[:2], [2.0, 2.0])  # age 80 beyond 50..65
    assert written["outside_range"].fillna("").tolist() == ["age", "age", "", "", "ventricles"]
    assert len(table) == 5
    images = {i: nib.load(str(tmp_path / "a" / f"{i}.nii.gz")) for i in written["sample_id"]}
    assert all(np.allclose(img.affine, GRID.affine) and img.shape == GRID.shape for img in images.values())
    # two table rows asking the same thing start from their own noise: two brains, not one
    assert not np.array_equal(images["old"].get_fdata(), images["old-again"].get_fdata())

    # the grid starts from one noise whatever else is asked: the same images without the table's rows
    alone = family.generate_conditioned(*models, None, grid, tmp_path / "b", GRID.affine, progress=False)
    assert list(alone["sample_id"]) == ["ventricles-01", "ventricles-02", "ventricles-03"]
    for name in alone["sample_id"]:
        np.testing.assert_array_equal(
            nib.load(str(tmp_path / "b" / f"{name}.nii.gz")).get_fdata(), images[name].get_fdata()
        )


def test_a_family_without_covariates_cannot_take_requests(tmp_path):
    vq = build_family({**MODEL_CFG, "family": "vqvae_transformer", "prior": {}})
    with pytest.raises(ConfigError, match="not conditioned"):
        vq.generate_conditioned(
            tmp_path / "m", tmp_path / "p", None, {"vary": ["age"]}, tmp_path, GRID.affine
        )


def test_samples_are_conditioned_on_the_subjects_given(run, tmp_path):
    """A prior shared by the cohort samples one sub-population through its subjects' covariates."""
    root, family = run["root"], run["family"]
    chosen = run["covariates"].iloc[[1, 3]]  # two of the prior's training subjects
    family.generate(
        root / "ae/model.pt", root / "prior/model.pt", 6, 2, tmp_path, GRID.affine, False, covariates=chosen
    )
    table = read_tsv(tmp_path / "scores.tsv")
    assert set(table["age"].round(3)) <= {55.0, 65.0} and set(table["sex"]) == {"M"}
    for _, row in table.iterrows():
        match = chosen[chosen.age.sub(row.age).abs() < 1e-3]
        assert match.ventricles.iloc[0] == pytest.approx(row.ventricles, abs=1e-3)


def test_guidance_needs_a_model_trained_for_it_and_then_changes_the_samples(run, tmp_path):
    root = run["root"]
    grid = {"vary": ["ventricles"], "range": [0.0, 1.0], "steps": 2}
    guided_sampling = {**MODEL_CFG["sampling"], "guidance_scale": 3.0}
    family = build_family({**MODEL_CFG, "sampling": guided_sampling})
    with pytest.raises(ConfigError, match=r"prior/model.pt was trained without .*condition_dropout"):
        family.generate_conditioned(
            root / "ae/model.pt", root / "prior/model.pt", None, grid, tmp_path / "no", GRID.affine, False
        )
    dropout = {**MODEL_CFG["diffusion"], "condition_dropout": 0.5}
    trained = build_family({**MODEL_CFG, "diffusion": dropout})
    latents = [root / "latents" / f"{s}.npy" for s in run["subjects"]]
    trained.fit_prior(latents[:4], latents[4:], tmp_path / "prior", False, covariates=run["covariates"])
    models = (root / "ae/model.pt", tmp_path / "prior/model.pt")
    images = {}
    for scale in (1.0, 3.0):
        sampling = {**MODEL_CFG["sampling"], "guidance_scale": scale}
        family = build_family({**MODEL_CFG, "diffusion": dropout, "sampling": sampling})
        assert family._sampler(*models).guided
        family.generate_conditioned(*models, None, grid, tmp_path / str(scale), GRID.affine, progress=False)
        images[scale] = nib.load(str(tmp_path / str(scale) / "ventricles-01.nii.gz")).get_fdata()
    assert not np.array_equal(images[1.0], images[3.0])
