"""Seed 002's family through its files: the rvq autoencoder, the GLM split of its latents with an age effect
planted in the images, the masked prior, generation and counterfactual rows."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from morphgen.errors import ConfigError
from morphgen.models import build_family
from morphgen.models.families.brainsynth.family import codes_to_tokens
from morphgen.models.families.brainsynth.prior import load_masked_prior
from morphgen.nifti import save_volume
from morphgen.space import Grid
from morphgen.tsv import read_tsv

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = Grid(4.0, (16, 24, 16))
AXES = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in GRID.shape], indexing="ij"))
INNER = ((AXES[0] / 6) ** 2 + (AXES[1] / 10) ** 2 + (AXES[2] / 6) ** 2) < 1  # inside every head
AGES = np.linspace(50.0, 85.0, 12)

MODEL_CFG = {
    "family": "brainsynth",
    "seed": 0,
    "autoencoder": {
        "channels": [8, 8, 16],
        "num_res_layers": 1,
        "norm_num_groups": 4,
        "embedding_dim": 8,
        "splits": 2,
        "depth": 2,
        "codebook_size": 32,
        "dead_code_threshold": 0.0,
        "epochs": 40,
        "batch_size": 4,
        "lr": 5e-3,
        "lr_decay": 1.0,
        "disc_lr": 1e-3,
        "disc_channels": 4,
        "disc_layers": 2,
        "l1_weight": 1.0,
        "fft_weight": 0.0,
        "adversarial_weight": 0.0,
        "adversarial_start_epoch": 1000,
        "perceptual": {"weights": None},
    },
    "prior": {
        "layers": 1,
        "d_model": 32,
        "heads": 2,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "steps": 8,
        "subcodes": 2,
    },
    "conditioning": {"covariates": {"age": "age", "sex": "sex"}},
    "latents": {"augmented_copies": 0},
    "sampling": {"n_keep": 2, "oversample": 2, "batch_size": 3},
}


def head(ventricle_radius: float, rng: np.random.Generator) -> np.ndarray:
    """A bright head with a dark ventricle whose size is ``ventricle_radius``."""
    brain = ((AXES[0] / 7) ** 2 + (AXES[1] / 11) ** 2 + (AXES[2] / 7) ** 2) < 1
    r = ventricle_radius
    ventricle = ((AXES[0] / r) ** 2 + (AXES[1] / (1.6 * r)) ** 2 + (AXES[2] / r) ** 2) < 1
    volume = np.where(brain, 0.7, 0.0)
    volume[ventricle] = 0.15
    return np.clip(volume + rng.normal(0, 0.02, GRID.shape), 0, 1).astype(np.float32)


def dark_voxels(volume: np.ndarray) -> int:
    return int(((volume < 0.4) & INNER).sum())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Twelve heads whose ventricles grow with age (radius 1.5 to 4.5 voxels); nine train, three test."""
    root = tmp_path_factory.mktemp("brainsynth")
    rng = np.random.default_rng(0)
    subjects = [f"sub-{i:02d}" for i in range(len(AGES))]
    images = {
        s: save_volume(root / "img" / f"{s}.nii.gz", head(1.5 + 3.0 * (a - 50) / 35, rng), GRID.affine)
        for s, a in zip(subjects, AGES, strict=True)
    }
    covariates = pd.DataFrame({"participant_id": subjects, "age": AGES, "sex": ["F", "M"] * 6})
    train = [s for i, s in enumerate(subjects) if i % 4 != 3]
    test = [s for i, s in enumerate(subjects) if i % 4 == 3]
    family = build_family(MODEL_CFG)
    family.fit_autoencoder([images[s] for s in train], [images[s] for s in test], root / "ae", False)
    family.encode(root / "ae/model.pt", images, root / "latents", augmented_copies=0, progress=False)
    latent = {s: root / "latents" / f"{s}.npy" for s in subjects}
    family.fit_prior(
        [latent[s] for s in train],
        [latent[s] for s in test],
        root / "prior",
        progress=False,
        covariates=covariates,
        model_path=root / "ae/model.pt",
    )
    return {"root": root, "family": family, "subjects": subjects, "covariates": covariates, "latent": latent}


def test_files_of_each_stage(run):
    root = run["root"]
    latents = np.load(run["latent"]["sub-00"])
    assert latents.shape == (1, 2, 2, 4, 6, 4) and latents.dtype == np.int16  # copies, splits, depth, grid
    glm = read_tsv(root / "prior/glm.tsv")
    assert list(glm["split"]) == ["train", "test"] and list(glm["subjects"]) == [9, 3]
    assert (glm["requantisation_error"].between(0, 1)).all() and np.isfinite(glm["psnr_db"]).all()
    assert (glm["metadata_fraction"] > 0).all()
    heldout = read_tsv(root / "prior/heldout.tsv")
    assert {"model_nll_per_token", "unigram_nll_per_token", "ratio", "val_sequences"} <= set(heldout.columns)
    assert list(read_tsv(root / "prior/loss.tsv")["epoch"]) == [1, 2]
    model, saved = load_masked_prior(root / "prior/model.pt")
    info = saved["info"]
    assert info["code_shape"] == [2, 2, 4, 6, 4] and info["covariates"]["names"] == ["age", "sex"]
    assert model.length == 4 * 6 * 4 * 4 // 2  # two sub-codes of two slabs, four codes per position
    assert info["training_covariates"].shape == (9, 2)


def test_one_r_code_decoded_older_has_larger_ventricles(run):
    """The planted effect through the GLM alone: a test subject's R-code with P m for ages 50 to 85."""
    family, root = run["family"], run["root"]
    sampler = family._sampler(root / "ae/model.pt", root / "prior/model.pt")
    quantizer = sampler.autoencoder.quantizer
    with torch.no_grad():
        q = quantizer.lookup(torch.from_numpy(np.load(run["latent"]["sub-07"]).astype(np.int64)))
        own = torch.from_numpy(sampler.scaler.transform(run["covariates"].iloc[[7]]))
        rcode = codes_to_tokens(quantizer.quantize(sampler.glm.residual(own, q)))
        dark = []
        for age in (50.0, 60.0, 70.0, 80.0, 85.0):
            asked = torch.from_numpy(sampler.scaler.transform(pd.DataFrame({"age": [age], "sex": ["M"]})))
            dark.append(dark_voxels(sampler.decode(sampler.latents(rcode, asked))[0, 0].numpy()))
    assert dark == sorted(dark) and dark[-1] > dark[0] + 50, dark  # the true ventricles: 16 to 504 voxels


def test_grid_rows_share_one_r_code_and_table_rows_draw_their_own(run, tmp_path):
    family, root = run["family"], run["root"]
    requests = pd.DataFrame({"sample_id": ["young", "old"], "age": [55.0, 80.0]})
    grid = {"vary": ["age"], "range": [0.0, 1.0], "steps": 3}
    table = family.generate_conditioned(
        root / "ae/model.pt", root / "prior/model.pt", requests, grid, tmp_path, GRID.affine, False
    )
    assert list(table["sample_id"]) == ["young", "old", "age-01", "age-02", "age-03"]
    on_grid = table[table["vary"] == "age"]
    assert on_grid["rcode"].nunique() == 1
    assert table["rcode"].nunique() == 3  # each table row its own, the grid one more
    assert list(table["sex"]) == ["F"] * 5  # what a row leaves out takes the typical value
    images = [nib.load(tmp_path / f).get_fdata() for f in on_grid["file"]]
    assert not np.array_equal(images[0], images[-1])  # only P m changes along the row, and it changes
    assert read_tsv(tmp_path / "requests.tsv")["rcode"].tolist() == table["rcode"].tolist()


def test_generation_keeps_the_best_and_repeats_for_its_seed(run, tmp_path):
    family, root = run["family"], run["root"]
    args = (root / "ae/model.pt", root / "prior/model.pt", 5, 2)
    family.generate(*args, tmp_path / "a", GRID.affine, False)
    scores = read_tsv(tmp_path / "a/scores.tsv")
    assert len(scores) == 5 and scores["kept"].sum() == 2
    assert set(scores["sex"]) <= {"F", "M"} and scores["age"].between(AGES.min(), AGES.max()).all()
    kept = nib.load(tmp_path / "a/sample-0000.nii.gz")
    assert np.allclose(kept.affine, GRID.affine) and kept.shape == GRID.shape
    family.generate(*args, tmp_path / "b", GRID.affine, False)
    assert (tmp_path / "b/scores.tsv").read_text() == (tmp_path / "a/scores.tsv").read_text()


def test_the_prior_needs_the_autoencoder_and_slabs_that_divide_the_latent(run, tmp_path):
    family, latent = run["family"], run["latent"]
    paths = [latent[s] for s in run["subjects"]]
    with pytest.raises(ConfigError, match="needs the autoencoder"):
        family.fit_prior(paths[:9], paths[9:], tmp_path, False, covariates=run["covariates"])
    odd = build_family({**MODEL_CFG, "prior": {**MODEL_CFG["prior"], "subcodes": 3}})
    with pytest.raises(ConfigError, match=r"model.prior.subcodes: the latent's first axis \(4\)"):
        odd.fit_prior(
            paths[:9],
            paths[9:],
            tmp_path,
            False,
            covariates=run["covariates"],
            model_path=run["root"] / "ae/model.pt",
        )
