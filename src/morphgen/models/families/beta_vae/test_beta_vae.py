"""The β-VAE baseline through its files: a voxel decoder, M³AE's prior and generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphgen.models import build_family
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.nifti import load_volume, save_volume
from morphgen.space import Grid
from morphgen.tsv import read_tsv

GRID = Grid(4.0, (16, 24, 16))
MODEL_CFG = {
    "family": "beta_vae",
    "seed": 0,
    "autoencoder": {
        "channels": [4, 8, 8],
        "latent_dim": 8,
        "beta_ramp_epochs": 1,
        "optimizer": "adamw",
        "epochs": 2,
        "batch_size": 2,
        "lr": 3e-3,
        "lr_decay": 1.0,
        "disc_lr": 1e-4,
        "disc_channels": 4,
        "disc_layers": 2,
        "l1_weight": 1.0,
        "fft_weight": 0.0,
        "adversarial_weight": 0.0,
        "adversarial_start_epoch": 0,
        "perceptual": {"weights": None},
    },
    "latent_prior": {"sample_from": "standard_normal"},
    "sampling": {"n_keep": 2, "oversample": 2, "batch_size": 4},
}


def ellipsoid(rng: np.random.Generator) -> np.ndarray:
    ii, jj, kk = np.indices(GRID.shape)
    centre = np.asarray(GRID.shape) / 2 + rng.uniform(-1, 1, 3)
    radii = np.asarray(GRID.shape) * 0.38 * rng.uniform(0.85, 1.1)
    d = sum(((ax - c) / r) ** 2 for ax, c, r in zip((ii, jj, kk), centre, radii, strict=True))
    return np.where(d < 1, 0.8, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("beta_vae")
    rng = np.random.default_rng(0)
    images = {
        f"sub-{i}": save_volume(root / f"sub-{i}.nii.gz", ellipsoid(rng), GRID.affine) for i in range(5)
    }
    family = build_family(MODEL_CFG)
    paths = list(images.values())
    family.fit_autoencoder(paths[:4], paths[4:], root / "ae", progress=False)
    family.encode(root / "ae/model.pt", images, root / "latents", augmented_copies=0, progress=False)
    latents = [root / "latents" / f"{s}.npy" for s in images]
    family.fit_prior(latents[:4], latents[4:], root / "prior", progress=False)
    return root, family


def test_the_decoder_paints_voxels_without_a_template(run):
    root, _ = run
    model, _, network = load_autoencoder(root / "ae/model.pt")
    assert type(model).__name__ == "BetaVAE" and network["kind"] == "beta_vae"
    assert not hasattr(model, "template") and not (root / "ae/template.nii.gz").exists()
    rows = read_tsv(root / "ae/loss.tsv")
    assert rows["kl"].iloc[0] == 0 and rows["kl"].iloc[1] > 0  # beta ramps over one epoch


def test_samples_from_the_standard_normal(run, tmp_path):
    root, family = run
    family.generate(
        root / "ae/model.pt", root / "prior/model.pt", 4, 2, tmp_path, GRID.affine, progress=False
    )
    scores = read_tsv(tmp_path / "scores.tsv")
    assert len(scores) == 4 and scores["kept"].sum() == 2
    sample = load_volume(tmp_path / "sample-0000.nii.gz")
    assert sample.shape == GRID.shape and not (tmp_path / "jacobian").exists()
    np.testing.assert_allclose(sample.affine, GRID.affine)
