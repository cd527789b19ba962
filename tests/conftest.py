"""Settings and phantoms shared by the model tests."""

import numpy as np

# A tiny VQ-VAE + PatchGAN, fast enough for unit tests on one CPU thread; tests override what they exercise.
TINY_AUTOENCODER = {
    "num_res_layers": 1,
    "num_res_channels": 4,
    "codebook_size": 16,
    "embedding_dim": 4,
    "commitment_cost": 0.25,
    "decay": 0.5,
    "epochs": 1,
    "batch_size": 3,
    "lr": 1e-3,
    "lr_decay": 0.999,
    "disc_lr": 5e-4,
    "disc_channels": 4,
    "disc_layers": 2,
    "l1_weight": 1.0,
    "fft_weight": 1.0,
    "adversarial_weight": 0.01,
    "adversarial_start_epoch": 0,
    "perceptual": {"weights": None},
}


def phantom(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A two-compartment ellipsoid with a random centre and size, intensities 0 / 0.6 / 0.9."""
    ii, jj, kk = np.indices(shape)
    centre = np.asarray(shape) / 2 + rng.uniform(-1, 1, 3)
    radii = np.asarray(shape) * 0.38 * rng.uniform(0.85, 1.1)
    d = sum(((ax - c) / r) ** 2 for ax, c, r in zip((ii, jj, kk), centre, radii, strict=True))
    return (np.where(d < 1, 0.6, 0.0) + np.where(d < 0.3, 0.3, 0.0)).astype(np.float32)
