"""Seed 001, the metamorphic autoencoder: its flows against analytic ones, its losses, its prior, and the
family through its files."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch
from conftest import cpu_exact, phantom

from morphgen.errors import ConfigError
from morphgen.fields import jacobian_determinant
from morphgen.models import build_family
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.training import AutoencoderTrainer
from morphgen.models.engine.data import VolumeDataset
from morphgen.models.engine.distributed import current_world
from morphgen.models.engine.preemption import TrainingInterrupted, stop_on_signals
from morphgen.models.families.m3ae.codec import MetamorphicCodec
from morphgen.models.families.m3ae.gaussian import Gaussian, ledoit_wolf
from morphgen.models.families.m3ae.network import (
    MetamorphicAutoencoder,
    medoid,
    network_config,
    velocity_penalties,
)
from morphgen.nifti import load_volume, save_volume
from morphgen.space import Grid
from morphgen.tsv import read_tsv

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = Grid(4.0, (16, 24, 16))
AE_CFG = {
    # three levels: warps at 4 x 6 x 4 and 8 x 12 x 8, intensity maps at 16 x 24 x 16 too
    "channels": [4, 8, 8],
    "latent_dim": 8,
    "beta": 6.0,
    "beta_ramp_epochs": 2,
    "level_l1": [0.25, 0.5],
    "intensity": [0.6, 1.2, 2.4],
    "velocity_gradient": [0.6, 1.2],
    "velocity_divergence": [0.6, 1.2],
    "velocity_magnitude": [0.6, 1.2],
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "epochs": 3,
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
}
MODEL_CFG = {
    "family": "m3ae",
    "seed": 0,
    "autoencoder": AE_CFG,
    "latent_prior": {"sample_from": "subpopulation"},
    "sampling": {"n_keep": 3, "oversample": 2, "batch_size": 4},
}


def linear_velocity(shape, rate: float, centre=None) -> torch.Tensor:
    """v(x) = rate (x - centre) in voxels: exp(v) scales about the centre by e^rate, exactly."""
    centre = (np.asarray(shape) - 1) / 2 if centre is None else np.asarray(centre)
    grid = np.indices(shape, dtype=np.float64)
    v = np.stack([rate * (grid[k] - centre[k]) for k in range(3)])
    return torch.from_numpy(v[None].astype(np.float32))


def interior(field: np.ndarray, margin: int) -> np.ndarray:
    return field[..., margin:-margin, margin:-margin, margin:-margin]


# ---- flows ------------------------------------------------------------------------------------------------
def test_scaling_and_squaring_integrates_a_linear_flow_exactly():
    """dx/dt = a (x - c) flows to c + e^a (x - c): the displacement at t = 1 is (e^a - 1)(x - c)."""
    model = MetamorphicAutoencoder(network_config(AE_CFG, (24, 24, 24)))
    rate = 0.1
    ddf = model.integrators[0](linear_velocity((24, 24, 24), rate))[0].numpy()
    expected = (math.exp(rate) - 1.0) * linear_velocity((24, 24, 24), 1.0)[0].numpy()
    # near the border the zero padding of the squaring steps leaks in; inside, only the 2^-7 step error
    assert np.abs(interior(ddf - expected, 6)).max() < 1e-3
    assert np.abs(ddf - expected).max() > 1e-2  # the check above is not vacuous: the border does differ


def test_the_jacobian_of_a_known_expansion():
    """A scaling by e^a in every direction changes volume by e^(3a)."""
    model = MetamorphicAutoencoder(network_config(AE_CFG, (24, 24, 24)))
    for rate in (0.1, -0.15):
        ddf = model.integrators[0](linear_velocity((24, 24, 24), rate))[0].numpy()
        jac = interior(jacobian_determinant(ddf), 7)
        np.testing.assert_allclose(jac, math.exp(3 * rate), rtol=2e-3)


def test_the_deformation_composes_coarse_to_fine_levels_in_order():
    """x̂ = ((T∘phi_1) + A)∘phi_2 draws T at phi_1(phi_2(x)): a translation then a scaling does not commute."""
    shape = (24, 24, 24)
    model = MetamorphicAutoencoder(network_config(AE_CFG, shape))
    translation = torch.zeros(1, 3, *shape)
    translation[:, 0] = 2.0  # phi_1(x) = x + (2, 0, 0)
    scaling = 0.1 * linear_velocity(shape, 1.0)  # phi_2(x) = x + 0.1 (x - c)
    total = model.deformation([translation, scaling])[0].numpy()
    expected = scaling[0].numpy() + translation[0].numpy()  # phi_1(phi_2(x)) - x
    wrong = expected + 0.1 * translation[0].numpy()  # phi_2(phi_1(x)) - x
    assert np.abs(interior(total - expected, 4)).max() < 1e-4
    assert np.abs(interior(total - wrong, 4)).max() > 0.1


def test_velocity_penalties_of_a_linear_field():
    """v = a (x - c) in image voxels, sampled every ``factor`` voxels: |grad v|^2 = 3a^2, (div v)^2 = 9a^2."""
    rate, factor, coarse = 0.05, 4, (6, 8, 6)
    v = linear_velocity(coarse, rate * factor)  # per coarse voxel a*factor image voxels: a per image voxel
    penalties = velocity_penalties(v, factor)
    n = math.prod(coarse)
    assert float(penalties["gradient"][0]) == pytest.approx(3 * rate**2 * n, rel=1e-5)
    assert float(penalties["divergence"][0]) == pytest.approx(9 * rate**2 * n, rel=1e-5)
    assert float(penalties["magnitude"][0]) == pytest.approx(float((v**2).sum()), rel=1e-6)


def test_an_untrained_model_draws_the_template():
    """Every head starts at zero: no warp, no added intensity, so training starts at the template."""
    model = MetamorphicAutoencoder(network_config(AE_CFG, GRID.shape)).eval()
    template = torch.from_numpy(phantom(np.random.default_rng(0), GRID.shape))
    model.template.copy_(template[None, None])
    image, parts = model.decode(torch.randn(2, 8), parts=True)
    assert torch.allclose(image[0, 0], template, atol=1e-3)
    assert [tuple(v.shape[2:]) for v in parts["velocities"]] == [(4, 6, 4), (8, 12, 8)]
    assert [tuple(a.shape[2:]) for a in parts["intensities"]] == [(4, 6, 4), (8, 12, 8), (16, 24, 16)]
    assert model.factors() == [4, 2, 1]


def test_the_medoid_is_the_subject_nearest_the_median():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(7, 4, 4, 4))
    images[3] = np.median(images, axis=0) + 0.01
    assert medoid(images) == 3


def test_network_settings_are_checked():
    with pytest.raises(ConfigError, match="divisible by 8"):
        network_config(AE_CFG, (20, 24, 16))
    with pytest.raises(ConfigError, match="latent_dim"):
        network_config({**AE_CFG, "latent_dim": 7}, GRID.shape)
    codec = MetamorphicCodec({**AE_CFG, "intensity": [1.0, 2.0]})
    with pytest.raises(
        ConfigError, match=r"model.autoencoder.intensity: give one weight or one per level \(3\)"
    ):
        codec.level_weights(3)


# ---- prior ------------------------------------------------------------------------------------------------
def test_ledoit_wolf_equals_the_reference_estimate():
    covariance = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(2).normal(size=(12, 30)) @ np.diag(np.linspace(0.5, 2, 30))
    mean, cov, shrinkage = ledoit_wolf(x)
    reference, reference_shrinkage = covariance.ledoit_wolf(x)
    np.testing.assert_allclose(cov, reference, rtol=1e-10, atol=1e-12)
    assert shrinkage == pytest.approx(reference_shrinkage) and 0 < shrinkage < 1
    np.testing.assert_allclose(mean, x.mean(0))


def test_the_gaussian_log_density_equals_scipy():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))
    cov, mean = a @ a.T + np.eye(5), rng.normal(size=5)
    z = rng.normal(size=(4, 5))
    np.testing.assert_allclose(
        Gaussian(mean, cov).log_density(z), multivariate_normal(mean, cov).logpdf(z), rtol=1e-10
    )


# ---- the family through its files -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("m3ae")
    rng = np.random.default_rng(7)
    subjects = [f"sub-{i:02d}" for i in range(6)]
    images = {
        s: save_volume(root / "img" / f"{s}.nii.gz", phantom(rng, GRID.shape), GRID.affine) for s in subjects
    }
    torch.manual_seed(0)
    family = build_family(MODEL_CFG)
    family.fit_autoencoder(
        [images[s] for s in subjects[:4]], [images[s] for s in subjects[4:]], root / "ae", False
    )
    family.encode(root / "ae/model.pt", images, root / "latents", augmented_copies=1, progress=False)
    latents = [root / "latents" / f"{s}.npy" for s in subjects]
    family.fit_prior(latents[:4], latents[4:], root / "prior", progress=False)
    return {"root": root, "family": family, "images": images, "subjects": subjects}


def test_training_writes_its_loss_terms_and_ramps_beta(run):
    rows = read_tsv(run["root"] / "ae/loss.tsv")
    terms = ("kl", "level_l1", "intensity", "velocity_gradient", "velocity_divergence", "velocity_magnitude")
    assert set(terms) <= set(rows.columns) and {f"val_{t}" for t in terms} <= set(rows.columns)
    assert len(rows) == 3 and "codes_used" not in rows.columns
    # beta_ramp_epochs 2: epoch 1 trains without the KL term, epoch 2 with half of it, epoch 3 with all
    assert rows["kl"].iloc[0] == 0 and rows["kl"].iloc[1] > 0
    assert list(rows.columns)[-1] == "seconds"


def test_the_template_is_the_training_medoid(run):
    root, images, subjects = run["root"], run["images"], run["subjects"]
    model, _, network = load_autoencoder(root / "ae/model.pt")
    assert type(model).__name__ == "MetamorphicAutoencoder" and network["kind"] == "m3ae"
    train = np.stack([load_volume(images[s]).get_fdata() for s in subjects[:4]])
    np.testing.assert_array_equal(model.template[0, 0].numpy(), train[medoid(train)].astype(np.float32))
    written = load_volume(root / "ae/template.nii.gz")
    np.testing.assert_allclose(written.affine, GRID.affine)
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32), model.template[0, 0].numpy())


def test_fine_tuning_starts_from_the_pretrained_model_and_keeps_its_template(run, tmp_path):
    """The demo's route to an M3AE that carries the subject: pre-trained elsewhere, fine-tuned here with early
    stopping. The template is part of the model: the pre-training cohort's medoid stays."""
    root, images, subjects = run["root"], run["images"], run["subjects"]
    family = run["family"]
    family.finetune_autoencoder(
        root / "ae/model.pt",
        [images[s] for s in subjects[4:]],
        [images[s] for s in subjects[:1]],
        tmp_path / "tuned",
        {"epochs": 2, "patience": 1, "lr": 1e-3},
        progress=False,
    )
    pretrained, _, _ = load_autoencoder(root / "ae/model.pt")
    tuned, _, _ = load_autoencoder(tmp_path / "tuned/model.pt")
    torch.testing.assert_close(tuned.template, pretrained.template, rtol=0, atol=0)
    changed = [
        name
        for name, weight in tuned.state_dict().items()
        if not torch.equal(weight, pretrained.state_dict()[name])
    ]
    assert changed and "template" not in changed  # the networks learnt; the template did not move
    rows = read_tsv(tmp_path / "tuned/loss.tsv")
    assert 1 <= len(rows) <= 2 and "val_kl" in rows.columns
    written = load_volume(tmp_path / "tuned/template.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(written, pretrained.template[0, 0].numpy())


def test_latents_are_the_encoder_means(run):
    root, images = run["root"], run["images"]
    latent = np.load(root / "latents/sub-00.npy")
    assert latent.shape == (2, 8) and latent.dtype == np.float32
    model, _, _ = load_autoencoder(root / "ae/model.pt")
    mu, _ = model.encode(VolumeDataset([images["sub-00"]]).batch([0]))
    np.testing.assert_allclose(latent[0], mu[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(latent[0], latent[1])  # copy 1 is augmented


def test_the_prior_files(run):
    root = run["root"]
    heldout = read_tsv(root / "prior/heldout.tsv").iloc[0]
    assert {"model_nll_per_dim", "standard_normal_nll_per_dim", "ratio"} <= set(heldout.index)
    assert heldout["ratio"] == pytest.approx(
        heldout["model_nll_per_dim"] / heldout["standard_normal_nll_per_dim"]
    )
    blob = torch.load(root / "prior/model.pt", weights_only=True)
    train = np.concatenate([np.load(root / "latents" / f"{s}.npy") for s in run["subjects"][:4]])
    np.testing.assert_allclose(blob["mean"].numpy(), train.mean(0), rtol=1e-5, atol=1e-6)
    assert 0 <= blob["shrinkage"] <= 1 and blob["n_latents"] == 8


def test_generation_keeps_the_most_probable_and_writes_their_volume_maps(run, tmp_path):
    root, family = run["root"], run["family"]
    out = tmp_path / "samples"
    family.generate(root / "ae/model.pt", root / "prior/model.pt", 6, 3, out, GRID.affine, progress=False)
    scores = read_tsv(out / "scores.tsv")
    assert len(scores) == 6 and scores["kept"].sum() == 3
    kept = scores[scores["kept"]].sort_values("score", ascending=False)
    assert list(kept["file"]) == [f"sample-{i:04d}.nii.gz" for i in range(3)]
    assert scores.loc[~scores["kept"], "score"].max() <= kept["score"].min()
    for i in range(3):
        sample = load_volume(out / f"sample-{i:04d}.nii.gz")
        jac = load_volume(out / "jacobian" / f"sample-{i:04d}.nii.gz")
        np.testing.assert_allclose(jac.affine, GRID.affine)
        assert sample.shape == jac.shape == GRID.shape
        assert np.all(jac.get_fdata() > 0)
    again = tmp_path / "again"
    family.generate(root / "ae/model.pt", root / "prior/model.pt", 6, 3, again, GRID.affine, progress=False)
    for name in ("sample-0000.nii.gz", "jacobian/sample-0002.nii.gz"):
        np.testing.assert_array_equal(
            load_volume(out / name).get_fdata(), load_volume(again / name).get_fdata()
        )


def test_a_configured_template_must_lie_on_the_grid(tmp_path):
    path = save_volume(tmp_path / "t.nii.gz", phantom(np.random.default_rng(0), (8, 8, 8)), np.eye(4))
    codec = MetamorphicCodec({**AE_CFG, "template": str(path)})
    network = codec.network_config(GRID.shape)
    model = codec.build(network)
    data = VolumeDataset([path])
    with pytest.raises(ConfigError, match=r"model.autoencoder.template: .* shape \[8, 8, 8\]"):
        codec.initialise(model, network, data, current_world())


@cpu_exact
def test_training_stopped_mid_epoch_resumes_to_the_same_weights(run, tmp_path, monkeypatch):
    """The β ramp depends on the epoch and z on torch's generator: a resumed run must still match."""
    train = [run["images"][s] for s in run["subjects"][:4]]
    cfg = {**AE_CFG, "epochs": 2}

    def trainer(out):
        return AutoencoderTrainer(train, [], cfg, tmp_path / out, seed=3, codec=MetamorphicCodec(cfg))

    straight = trainer("straight").fit(progress=False)
    real, calls = AutoencoderTrainer._stop_now, []

    def signal_in_third_step(self):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", signal_in_third_step)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2 after step 3"):
        trainer("resumed").fit(progress=False)
    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", real)
    torch.manual_seed(999)
    resumed = trainer("resumed").fit(progress=False)
    a, b = (torch.load(p, weights_only=True) for p in (straight, resumed))
    for key, value in a["autoencoder"].items():
        assert torch.equal(value, b["autoencoder"][key]), key
