"""The KL autoencoder: its grid arithmetic, KL term, latent scale, and that it learns a phantom."""

import math

import pytest
import torch
from conftest import cpu_exact

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.kl_autoencoder import (
    build_autoencoder_kl,
    kl_divergence,
    latent_means,
    network_config,
    scale_factor,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"channels": [8, 16], "latent_channels": 2, "num_res_blocks": 1, "norm_num_groups": 4}


def test_latent_grid_follows_the_levels():
    assert network_config({}, (160, 224, 160))["latent_shape"] == [3, 20, 28, 20]  # seed 004's grid
    net = network_config(TINY, (16, 24, 16))
    assert net["latent_shape"] == [2, 8, 12, 8]
    model = build_autoencoder_kl(net)
    z_mu, z_sigma = model.encode(torch.rand(2, 1, 16, 24, 16))
    assert z_mu.shape == z_sigma.shape == (2, *net["latent_shape"])
    assert model.decode(z_mu).shape == (2, 1, 16, 24, 16)
    with pytest.raises(ConfigError, match="divisible by 8"):
        network_config({"channels": [8, 8, 8, 8]}, (16, 20, 16))
    with pytest.raises(ConfigError, match="attention_levels"):
        network_config({**TINY, "attention_levels": [False]}, (16, 16, 16))


def test_kl_is_zero_at_the_unit_gaussian_and_matches_the_closed_form():
    mu, sigma = torch.zeros(3, 2, 4, 4, 4), torch.ones(3, 2, 4, 4, 4)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(0.0, abs=1e-6)
    mu, sigma = torch.full((1, 1, 2, 2, 2), 0.5), torch.full((1, 1, 2, 2, 2), 2.0)
    per_voxel = 0.5 * (0.25 + 4.0 - math.log(4.0) - 1)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(8 * per_voxel, rel=1e-6)


def test_scale_factor_gives_unit_variance():
    latents = 3.0 * torch.randn(4, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    assert float((latents * scale_factor(latents)).std()) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ConfigError, match="constant"):
        scale_factor(torch.ones(2, 2, 2))


def test_training_reconstructs_a_phantom_better():
    """A few L1 + KL steps: the reconstruction error falls and the means stay finite and deterministic."""
    torch.manual_seed(0)
    model = build_autoencoder_kl(network_config(TINY, (16, 16, 16)))
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 16)] * 3, indexing="ij"))
    phantom = ((grid**2).sum(0) < 0.6).float()[None, None].repeat(2, 1, 1, 1, 1)

    def l1():
        with torch.no_grad():
            return float(torch.nn.functional.l1_loss(model.decode(latent_means(model, phantom)), phantom))

    before = l1()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(40):
        recon, z_mu, z_sigma = model(phantom)
        loss = torch.nn.functional.l1_loss(recon, phantom) + 1e-6 * kl_divergence(z_mu, z_sigma)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert l1() < 0.5 * before
    assert torch.equal(latent_means(model, phantom), latent_means(model, phantom))


# ---- trained by the shared autoencoder trainer -----------------------------------------------------------

KL_CFG = {
    "channels": [4, 8],
    "latent_channels": 2,
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "kl_weight": 1e-4,
    "epochs": 2,
    "batch_size": 2,
    "lr": 1e-3,
    "lr_decay": 0.999,
    "disc_lr": 5e-4,
    "disc_channels": 4,
    "disc_layers": 2,
    "l1_weight": 1.0,
    "fft_weight": 0.0,
    "adversarial_weight": 0.01,
    "adversarial_start_epoch": 1,  # the GAN joins in epoch 2, where the run is stopped
    "perceptual": {"weights": None},
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import numpy as np
    from conftest import phantom

    from morphgen.nifti import save_volume
    from morphgen.space import Grid

    grid, root = Grid(4.0, (16, 24, 16)), tmp_path_factory.mktemp("kl_cohort")
    rng = np.random.default_rng(3)
    paths = [save_volume(root / f"sub-{i}.nii.gz", phantom(rng, grid.shape), grid.affine) for i in range(5)]
    return paths[:4], paths[4:]


@cpu_exact
def test_kl_training_stopped_mid_epoch_resumes_to_the_same_weights(images, tmp_path, monkeypatch):
    """The KL autoencoder draws its latents from torch's global generator: the checkpoint must carry it."""
    import os
    import signal

    from morphgen.models.autoencoders.checkpoint import load_autoencoder
    from morphgen.models.autoencoders.codecs import KLCodec
    from morphgen.models.autoencoders.training import AutoencoderTrainer
    from morphgen.models.engine.preemption import TrainingInterrupted, stop_on_signals
    from morphgen.tsv import read_tsv

    train, val = images

    def trainer(out):
        return AutoencoderTrainer(train, val, KL_CFG, tmp_path / out, seed=4, codec=KLCodec(KL_CFG))

    straight = trainer("straight").fit(progress=False)
    real, calls = AutoencoderTrainer._stop_now, []

    def signal_in_third_step(self):  # epoch 2, step 1: the GAN has begun
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", signal_in_third_step)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2 after step 3"):
        trainer("resumed").fit(progress=False)
    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", real)
    torch.manual_seed(999)  # the resumed run must not depend on the global state it starts from
    resumed = trainer("resumed").fit(progress=False)

    a, b = (torch.load(p, weights_only=True) for p in (straight, resumed))
    for part in ("autoencoder", "discriminator"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    model, disc, network = load_autoencoder(straight)
    assert type(model).__name__ == "AutoencoderKL" and network["kind"] == "kl"
    assert network["latent_shape"] == [2, 8, 12, 8]
    rows = read_tsv(tmp_path / "straight/loss.tsv")
    assert {"kl", "val_kl", "discriminator"} <= set(rows.columns) and "codes_used" not in rows.columns
    assert (rows["kl"] > 0).all() and len(rows) == 2
    assert (tmp_path / "resumed/loss.tsv").read_text().count("\n") == 3


def test_decoder_norm_none_takes_group_norm_out_of_the_decoder_only():
    assert "decoder_norm" not in network_config(TINY, (16, 16, 16))  # as networks described before the key
    with pytest.raises(ConfigError, match="model.autoencoder.decoder_norm"):
        network_config({**TINY, "decoder_norm": "layer"}, (16, 16, 16))

    def group_norms(module):
        return sum(isinstance(m, torch.nn.GroupNorm) for m in module.modules())

    plain = build_autoencoder_kl(network_config({**TINY, "decoder_norm": "none"}, (16, 16, 16)))
    grouped = build_autoencoder_kl(network_config(TINY, (16, 16, 16)))
    assert group_norms(plain.decoder) == 0 and group_norms(plain.encoder) == group_norms(grouped.encoder) > 0
    assert group_norms(grouped.decoder) > 0
    reconstruction, _, _ = plain(torch.rand(1, 1, 16, 16, 16))
    assert reconstruction.shape == (1, 1, 16, 16, 16)
