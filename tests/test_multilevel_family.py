"""Seed 003's multi-level VQ-VAE as a family, through its files: training, coarse-first latents with
augmented copies, the coarse-to-fine prior, generation and the reconstruction table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphgen.models import build_family
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.nifti import load_volume, save_volume
from morphgen.space import Grid
from morphgen.tsv import read_tsv

GRID = Grid(4.0, (32, 32, 32))  # MS-SSIM's five scales need 32 voxels a side
MODEL_CFG = {
    "family": "multilevel_vqvae",
    "seed": 0,
    "autoencoder": {
        "channels": [4, 8, 8],
        "levels": [
            {"stage": 2, "embedding_dim": 4, "num_embeddings": 16},
            {"stage": 1, "embedding_dim": 2, "num_embeddings": 8},
        ],
        "first_channels": 2,
        "reconstruction_loss": "baur",
        "epochs": 2,
        "batch_size": 2,
        "lr": 3e-3,
        "lr_decay": 1.0,
        "disc_lr": 1e-4,
        "disc_channels": 4,
        "disc_layers": 2,
        "l1_weight": 0.0,
        "fft_weight": 0.0,
        "adversarial_weight": 0.0,
        "adversarial_start_epoch": 0,
        "perceptual": {"weights": None},
    },
    "prior": {
        "layers": 1,
        "d_model": 16,
        "heads": 2,
        "dropout": 0.0,
        "epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
    },
    "sampling": {"n_keep": 2, "oversample": 2, "temperature": 1.0, "top_k": None, "batch_size": 2},
}
TOKENS = 4 * 4 * 4 + 8 * 8 * 8  # the coarse level (1/8) and the middle one (1/4)


def ellipsoid(rng: np.random.Generator) -> np.ndarray:
    ii, jj, kk = np.indices(GRID.shape)
    centre = np.asarray(GRID.shape) / 2 + rng.uniform(-1, 1, 3)
    radii = np.asarray(GRID.shape) * 0.38 * rng.uniform(0.85, 1.1)
    d = sum(((ax - c) / r) ** 2 for ax, c, r in zip((ii, jj, kk), centre, radii, strict=True))
    return np.where(d < 1, 0.8, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("multilevel")
    rng = np.random.default_rng(0)
    images = {
        f"sub-{i}": save_volume(root / f"sub-{i}.nii.gz", ellipsoid(rng), GRID.affine) for i in range(5)
    }
    family = build_family(MODEL_CFG)
    paths = list(images.values())
    family.fit_autoencoder(paths[:4], paths[4:], root / "ae", progress=False)
    family.encode(root / "ae/model.pt", images, root / "latents", augmented_copies=1, progress=False)
    latents = [root / "latents" / f"{s}.npy" for s in images]
    family.fit_prior(latents[:4], latents[4:], root / "prior", progress=False)
    return root, family, images


def test_latents_are_coarse_first_sequences_with_each_levels_vocabulary(run):
    root, _, images = run
    tokens = np.load(root / "latents/sub-0.npy")
    assert tokens.shape == (2, TOKENS) and tokens.dtype == np.int16  # copy 0 and one augmented copy
    assert tokens[:, :64].max() < 16 and tokens[:, 64:].min() >= 16 and tokens[:, 64:].max() < 24
    _, _, network = load_autoencoder(root / "ae/model.pt")
    assert network["codebook_size"] == 24 and network["latent_shapes"] == [[4, 4, 4], [8, 8, 8]]
    assert read_tsv(root / "prior/loss.tsv").shape[0] == 1


def test_samples_are_decoded_from_the_levels_and_ranked(run, tmp_path):
    root, family, _ = run
    family.generate(
        root / "ae/model.pt", root / "prior/model.pt", 4, 2, tmp_path / "samples", GRID.affine, False
    )
    assert len(read_tsv(tmp_path / "samples/scores.tsv")) == 4  # every sample drawn, scored
    assert len(list((tmp_path / "samples").glob("sample-*.nii.gz"))) == 2  # the better half kept
    for path in sorted((tmp_path / "samples").glob("sample-*.nii.gz")):
        image = load_volume(path)
        np.testing.assert_allclose(image.affine, GRID.affine)
        data = image.get_fdata()
        assert data.shape == GRID.shape and 0.0 <= data.min() and data.max() <= 1.0
    assert "multi-level" in load_volume(path).header["descrip"].tobytes().decode()


def test_the_reconstruction_table_of_the_family(run, tmp_path):
    root, family, images = run
    family.evaluate_reconstruction(
        root / "ae/model.pt", images, tmp_path / "reconstruction.tsv", tmp_path / "r"
    )
    table = read_tsv(tmp_path / "reconstruction.tsv")
    assert list(table["subject"]) == [*images, "mean"] and table["msssim"].between(-1, 1).all()
    assert sorted(p.name for p in (tmp_path / "r").glob("*.nii.gz")) == sorted(f"{s}.nii.gz" for s in images)


def test_fine_tuning_starts_from_the_healthy_model_with_its_learnt_loss(run, tmp_path):
    """Seed 003 trains on healthy brains, then fine-tunes on the patient group: the fine-tuning starts from
    the pre-trained network and from the shape and scale its adaptive DCT loss learnt, not afresh."""
    root, _, images = run
    paths = list(images.values())
    cfg = {**MODEL_CFG, "autoencoder": {**MODEL_CFG["autoencoder"], "reconstruction_loss": "adaptive"}}
    family = build_family(cfg)
    family.fit_autoencoder(paths[:3], paths[3:4], tmp_path / "healthy", progress=False)
    family.finetune_autoencoder(
        tmp_path / "healthy/model.pt",
        paths[3:],
        paths[:1],
        tmp_path / "patients",
        {"epochs": 1, "patience": 1, "lr": 1e-12},  # Adam moves a weight by about lr a step: nothing
        progress=False,
    )
    healthy, _, _ = load_autoencoder(tmp_path / "healthy/model.pt")
    network = torch.load(tmp_path / "healthy/model.pt", weights_only=True)["network"]
    fresh = build_family(cfg).codec.build(network)
    tuned, _, _ = load_autoencoder(tmp_path / "patients/model.pt")
    assert list(healthy.dct_loss.parameters())
    for name, weight in tuned.dct_loss.named_parameters():
        torch.testing.assert_close(weight, dict(healthy.dct_loss.named_parameters())[name], rtol=0, atol=1e-6)
    assert any(
        not torch.allclose(weight, dict(fresh.dct_loss.named_parameters())[name])
        for name, weight in healthy.dct_loss.named_parameters()
    )  # the healthy training moved the loss, so starting afresh would show
    info = torch.load(tmp_path / "patients/model.pt", weights_only=True)["info"]
    assert info["fine_tuned_from"] == str(tmp_path / "healthy/model.pt") and info["n_train"] == 2
