"""Settings shared by the model tests."""

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
