"""VQ-VAE pieces: networks, losses, data, deterministic and resumable training, model.pt, token encoding."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_AUTOENCODER, cpu_exact, phantom

from morphgen.errors import ConfigError, SubjectError
from morphgen.models.autoencoders import training as autoencoder_training
from morphgen.models.autoencoders import vqvae as vqvae_module
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.codecs import VQCodec
from morphgen.models.autoencoders.discriminator import build_discriminator, discriminator_output_shape
from morphgen.models.autoencoders.latents import encode_subjects, load_token_sequences
from morphgen.models.autoencoders.losses import ReconstructionLoss, build_perceptual_loss
from morphgen.models.autoencoders.training import AutoencoderTrainer
from morphgen.models.autoencoders.vqvae import build_vqvae, network_config, restart_dead_codes
from morphgen.models.engine.data import VolumeAugmentation, VolumeDataset
from morphgen.nifti import save_volume
from morphgen.space import Grid

torch.set_num_threads(1)

VQ = VQCodec({})
GRID = Grid(4.0, (16, 24, 16))  # not cubic, so axis order mistakes change shapes

AE_CFG = {
    "channels": [4, 4],  # two levels: tokens on a 4 x 6 x 4 grid
    **TINY_AUTOENCODER,
    "epochs": 2,
    "adversarial_start_epoch": 1,  # the second epoch trains the GAN too, so resuming must restore it
    "augment": {"enabled": True},  # resuming must also reproduce the augmentation draws
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(1)
    return {
        f"sub-{i:02d}": save_volume(root / f"sub-{i:02d}.nii.gz", phantom(rng, GRID.shape), GRID.affine)
        for i in range(7)
    }


def split(cohort):
    paths = list(cohort.values())
    return paths[:5], paths[5:]


def all_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint dict, keyed by its path."""
    out = {}
    for key, value in state.items():
        name = f"{prefix}/{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            out.update(all_tensors(value, name))
    return out


# ---- networks and losses ---------------------------------------------------------------------------------


def test_network_config_checks_grid_and_discriminator_depth():
    net = network_config(AE_CFG, GRID.shape)
    assert net["latent_shape"] == [4, 6, 4]
    with pytest.raises(ConfigError, match="divisible by 4"):
        network_config(AE_CFG, (16, 22, 16))
    with pytest.raises(ConfigError, match="disc_layers"):
        network_config({**AE_CFG, "disc_layers": 3}, GRID.shape)
    # the predicted patch grid is what MONAI's discriminator really outputs
    for layers in (1, 2):
        disc = build_discriminator({"disc_channels": 2, "disc_layers": layers})
        out = disc(torch.zeros(2, 1, *GRID.shape))[-1]
        assert list(out.shape[2:]) == discriminator_output_shape(GRID.shape, layers)


def test_normalized_latents_lie_on_a_sphere_of_radius_sqrt_channels():
    torch.manual_seed(0)
    net = network_config({**AE_CFG, "normalize_latents": True}, GRID.shape)
    vqvae = build_vqvae(net)
    z = vqvae.encode(torch.rand(2, 1, *GRID.shape) * 1e-3)  # tiny inputs: the scale must not follow them
    norms = z.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, AE_CFG["embedding_dim"] ** 0.5))
    plain = build_vqvae(network_config(AE_CFG, GRID.shape))
    assert len(plain.encoder.blocks) == len(vqvae.encoder.blocks) - 1
    assert plain.state_dict().keys() == vqvae.state_dict().keys()  # no weights added


def test_subtract_mean_codes_differences_from_the_training_mean(cohort, tmp_path):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "subtract_mean": True, "augment": {"enabled": False}}
    path = AutoencoderTrainer(train, val, cfg, tmp_path, seed=0).fit(progress=False)
    vqvae, _, network = load_autoencoder(path)
    assert network["subtract_mean"]
    mean = np.mean([nib.load(p).get_fdata() for p in train], axis=0)
    first, last = vqvae.encoder.blocks[0], vqvae.decoder.blocks[-1]
    np.testing.assert_allclose(first.image[0, 0].numpy(), mean, atol=1e-6)
    image = torch.rand(1, 1, *GRID.shape)
    torch.testing.assert_close(first(image), image - first.image)
    torch.testing.assert_close(last(image), image + first.image)


def test_spectral_term_is_mean_squared_fft_amplitude_difference():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 8, 6, 4, generator=gen), torch.rand(2, 1, 8, 6, 4, generator=gen)
    total, terms = ReconstructionLoss(l1_weight=2.0, fft_weight=3.0)(x, y)
    amp = [torch.fft.fftn(t, dim=(1, 2, 3, 4), norm="ortho").abs() for t in (x, y)]
    expected = torch.mean((amp[0] - amp[1]) ** 2)
    assert torch.allclose(terms["spectral"], expected, rtol=1e-5)
    assert torch.allclose(terms["l1"], torch.mean(torch.abs(x - y)))
    assert torch.allclose(total, 2.0 * terms["l1"] + 3.0 * expected, rtol=1e-5)


def test_perceptual_weights_raise_not_implemented(cohort, tmp_path):
    assert build_perceptual_loss({"weights": None, "weight": 0.001}) == (None, 0.0)
    with pytest.raises(ConfigError, match="not implemented yet"):
        build_perceptual_loss({"weights": "alexnet.pt"})
    train, val = split(cohort)
    cfg = {**AE_CFG, "perceptual": {"weights": "alexnet.pt", "weight": 0.001}}
    with pytest.raises(ConfigError, match="perceptual"):
        AutoencoderTrainer(train, val, cfg, tmp_path, seed=0)


def test_dead_codes_restart_on_encoder_outputs():
    net = network_config(AE_CFG, GRID.shape)
    torch.manual_seed(0)
    vqvae = build_vqvae(net).train()
    x = torch.from_numpy(np.stack([phantom(np.random.default_rng(i), GRID.shape) for i in range(2)]))[:, None]
    z = vqvae.encode(x)
    vqvae.quantize(z)  # one EMA update: only the chosen entries have usage
    quantizer = vqvae.quantizer.quantizer
    dead = quantizer.ema_cluster_size < 0.01
    live_before = quantizer.embedding.weight[~dead].clone()
    assert 0 < int(dead.sum()) < net["codebook_size"]
    n = restart_dead_codes(vqvae, z, 0.01, torch.Generator().manual_seed(0))
    assert n == int(dead.sum())
    assert torch.equal(quantizer.embedding.weight[~dead], live_before)
    rows = z.detach().movedim(1, -1).reshape(-1, net["embedding_dim"])
    for vector in quantizer.embedding.weight[dead]:
        assert (rows == vector).all(1).any()  # each restarted entry is one of the encoder outputs
    assert restart_dead_codes(vqvae, z, 0.01, torch.Generator().manual_seed(0)) == 0
    # the next EMA update leaves an unchosen restarted entry where it was put (ema_w / usage is consistent)
    chosen = torch.zeros_like(dead)
    chosen[quantizer.quantize(z)[2].flatten()] = True
    idle = dead & ~chosen
    assert idle.any()
    before = quantizer.embedding.weight[idle].clone()
    vqvae.quantize(z)
    assert torch.allclose(quantizer.embedding.weight[idle], before, rtol=1e-3, atol=1e-5)


# ---- data --------------------------------------------------------------------------------------------------


def test_augmentation_is_seeded_bounded_and_centred():
    vol = phantom(np.random.default_rng(3), (24, 24, 24))
    aug = VolumeAugmentation({"rotate": 0.3, "scale": 0.1, "translate": 0.0})
    a = aug(vol, np.random.default_rng(5))
    assert np.array_equal(a, aug(vol, np.random.default_rng(5)))
    assert not np.array_equal(a, aug(vol, np.random.default_rng(6)))
    assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    # rotation and scaling act about the volume centre: a centred blob's centre of mass does not move
    ii, jj, kk = np.indices(vol.shape)
    ball = ((ii - 11.5) ** 2 + (jj - 11.5) ** 2 + (kk - 11.5) ** 2 < 36).astype(np.float32)
    no_change = {
        "rotate": 0.0,
        "scale": 0.0,
        "translate": 0.0,
        "noise_std": 0.0,
        "gamma": [1.0, 1.0],
        "shift": [0.0, 0.0],
    }
    geometric = VolumeAugmentation({**no_change, "rotate": 0.3, "scale": 0.1})
    moved = geometric(ball, np.random.default_rng(7))
    com = [float((moved * ax).sum() / moved.sum()) for ax in (ii, jj, kk)]
    assert np.allclose(com, 11.5, atol=0.05)
    # with every range at zero the augmentation is the identity
    still = VolumeAugmentation(no_change)
    assert np.allclose(still(vol, np.random.default_rng(0)), vol, atol=1e-6)
    with pytest.raises(ConfigError, match="unknown keys"):
        VolumeAugmentation({"rotation": 0.1})


def test_dataset_shapes_and_errors_name_subject(cohort, tmp_path):
    paths = list(cohort.values())
    data = VolumeDataset(paths[:3])
    assert len(data) == 3 and data.shape == GRID.shape
    assert data[1].shape == (1, *GRID.shape) and data[1].dtype == torch.float32
    assert data.batch([0, 2]).shape == (2, 1, *GRID.shape)
    odd = save_volume(tmp_path / "sub-odd.nii.gz", np.ones((16, 16, 16)) * np.arange(16), GRID.affine)
    with pytest.raises(SubjectError, match="sub-odd") as err:
        VolumeDataset([paths[0], odd]).volume(1)
    assert str(odd) in str(err.value)


# ---- training ----------------------------------------------------------------------------------------------


@cpu_exact
def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(cohort, tmp_path, monkeypatch):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 3}  # crash in epoch 3, when the discriminator and its optimiser have state
    straight = AutoencoderTrainer(train, val, cfg, tmp_path / "straight", seed=3)
    straight.fit(progress=False)

    # a run that crashes while training its third epoch ...
    real_train_epoch = AutoencoderTrainer.train_epoch

    def crash_in_third_epoch(self, bar=None):
        if self.epoch == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_train_epoch(self, bar)

    monkeypatch.setattr(AutoencoderTrainer, "train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        AutoencoderTrainer(train, val, cfg, tmp_path / "resumed", seed=3).fit(progress=False)
    assert (tmp_path / "resumed/checkpoints/last.pt").exists()
    assert not (tmp_path / "resumed/model.pt").exists()
    monkeypatch.setattr(AutoencoderTrainer, "train_epoch", real_train_epoch)
    torch.manual_seed(12345)  # the resumed run must not depend on the global random state it starts from
    # ... and is resumed by a fresh process-like object
    resumed = AutoencoderTrainer(train, val, cfg, tmp_path / "resumed", seed=3)
    resumed.fit(progress=False)

    for name in ("model.pt", "checkpoints/last.pt"):
        a = all_tensors(torch.load(tmp_path / "straight" / name, weights_only=True))
        b = all_tensors(torch.load(tmp_path / "resumed" / name, weights_only=True))
        assert a.keys() == b.keys() and len(a) > 20
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"

    def losses(run):
        lines = (tmp_path / run / "loss.tsv").read_text().splitlines()
        return [line.rsplit("\t", 1)[0] for line in lines]  # drop the wall-time column

    assert losses("straight") == losses("resumed") and len(losses("straight")) == 4
    assert (tmp_path / "resumed/loss.png").stat().st_size > 0
    # the adversarial terms are nan in the warm-up epoch only
    header, first, second, _ = (line.split("\t") for line in losses("straight"))
    col = header.index("discriminator")
    assert first[col] == "nan" and second[col] != "nan"


def test_checkpoint_from_another_configuration_is_set_aside(cohort, tmp_path):
    train, val = split(cohort)
    AutoencoderTrainer(train, val, {**AE_CFG, "epochs": 1}, tmp_path, seed=0).fit(progress=False)
    changed = AutoencoderTrainer(train, val, {**AE_CFG, "codebook_size": 8, "epochs": 1}, tmp_path, seed=0)
    with pytest.warns(UserWarning, match="of another autoencoder run \\(another network\\): set aside"):
        changed.fit(progress=False)
    assert (tmp_path / "checkpoints/last.stale.pt").exists()  # nothing is lost
    cfg = {**AE_CFG, "codebook_size": 8, "epochs": 1}
    AutoencoderTrainer(train, val, cfg, tmp_path / "fresh", seed=0).fit(progress=False)
    a, b = (torch.load(p / "model.pt", weights_only=True) for p in (tmp_path, tmp_path / "fresh"))
    for key, value in a["autoencoder"].items():  # started afresh: the same as a run that had no checkpoint
        assert torch.equal(value, b["autoencoder"][key]), key


def test_model_pt_loads_weights_only_and_reproduces_outputs(cohort, tmp_path):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "adversarial_start_epoch": 0}
    trainer = AutoencoderTrainer(train, val, cfg, tmp_path, seed=0, device="cpu")  # the loader's device
    path = trainer.fit(progress=False)
    blob = torch.load(path, weights_only=True)
    assert blob["network"]["image_shape"] == list(GRID.shape) and blob["info"]["epochs"] == 1
    assert isinstance(blob["network"], dict) and all(
        isinstance(v, (int, float, list, str)) for v in blob["network"].values()
    )

    vqvae, disc, network = load_autoencoder(path)  # rebuilt from the file alone
    x = VolumeDataset(val).batch([0, 1])
    trainer.autoencoder.eval()
    trainer.disc.eval()
    with torch.no_grad():
        assert torch.equal(vqvae(x)[0], trainer.autoencoder(x)[0])
        assert torch.equal(disc(x)[-1], trainer.disc(x)[-1])
        assert torch.equal(vqvae.index_quantize(x), trainer.autoencoder.index_quantize(x))
    assert not vqvae.training and not disc.training


@cpu_exact
def test_training_is_deterministic_from_scratch(cohort, tmp_path, monkeypatch):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "adversarial_start_epoch": 0}
    a = AutoencoderTrainer(train, val, cfg, tmp_path / "a", seed=5).fit(progress=False)
    torch.manual_seed(999)
    b = AutoencoderTrainer(train, val, cfg, tmp_path / "b", seed=5).fit(progress=False)
    ta = all_tensors(torch.load(a, weights_only=True))
    tb = all_tensors(torch.load(b, weights_only=True))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert autoencoder_training.TrainingSettings.from_config(cfg).adversarial_on(0)


def test_activation_checkpointing_trains_to_the_same_weights(cohort, tmp_path, monkeypatch):
    """Recomputing activations in the backward pass changes memory, not the result."""
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "adversarial_start_epoch": 0, "augment": {"enabled": False}}
    a = AutoencoderTrainer(train, val, cfg, tmp_path / "a", seed=5).fit(progress=False)
    calls = []
    original = vqvae_module.checkpoint
    monkeypatch.setattr(vqvae_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    recompute = {**cfg, "activation_checkpointing": True}
    b = AutoencoderTrainer(train, val, recompute, tmp_path / "b", seed=5).fit(progress=False)
    assert calls  # the blocks really were checkpointed
    ta = all_tensors(torch.load(a, weights_only=True))
    tb = all_tensors(torch.load(b, weights_only=True))
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=1e-5, atol=1e-6, msg=key)


def test_bf16_training_runs_in_bfloat16_and_keeps_float32_weights(cohort, tmp_path, monkeypatch):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "adversarial_start_epoch": 0, "precision": "bf16"}
    seen = []
    original = vqvae_module.decode

    def spy(vqvae, quantised, recompute=False):
        out = original(vqvae, quantised, recompute)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(vqvae_module, "decode", spy)
    path = AutoencoderTrainer(train, val, cfg, tmp_path, seed=5).fit(progress=False)
    assert seen and set(seen) == {torch.bfloat16}
    weights = all_tensors(torch.load(path, weights_only=True))
    assert all(t.dtype != torch.bfloat16 for t in weights.values())
    losses = (tmp_path / "loss.tsv").read_text().splitlines()[1].split("\t")
    assert all(np.isfinite(float(v)) for v in losses if v not in ("", "nan"))
    with pytest.raises(ConfigError, match="precision"):
        AutoencoderTrainer(train, val, {**cfg, "precision": "fp16"}, tmp_path / "x", seed=5)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step")  # the spy replaces step after the scheduler
def test_grad_clip_bounds_the_gradient_the_optimiser_sees_and_logs_it_unclipped(cohort, tmp_path):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "adversarial_start_epoch": 1, "augment": {"enabled": False}}
    norms = {}
    for clip in (0.0, 1e-3):
        trainer = AutoencoderTrainer(train, val, {**cfg, "grad_clip": clip}, tmp_path / str(clip), seed=5)
        seen = norms[clip] = []
        step = trainer.opt_g.step

        def spy(*args, _step=step, _seen=seen, _params=trainer.trainable, **kwargs):
            _seen.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in _params]))))
            return _step(*args, **kwargs)

        trainer.opt_g.step = spy
        trainer.fit(progress=False)
        logged = pd.read_csv(tmp_path / str(clip) / "loss.tsv", sep="\t")["grad_norm"]
        assert (logged > 1e-3).all()  # the norm before clipping
    assert min(norms[0.0]) > 1e-3 and max(norms[1e-3]) <= 1e-3 * (1 + 1e-5)
    with pytest.raises(ConfigError, match="grad_clip"):
        AutoencoderTrainer(train, val, {**cfg, "grad_clip": -1}, tmp_path / "x", seed=5)


def test_fine_tuning_starts_from_the_pretrained_model(cohort, tmp_path):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 1, "adversarial_start_epoch": 0, "augment": {"enabled": False}}
    pretrained = AutoencoderTrainer(train, val, cfg, tmp_path / "a", seed=1).fit(progress=False)
    blob = torch.load(pretrained, weights_only=True)
    tuned = AutoencoderTrainer(val + train[:1], val, cfg, tmp_path / "b", seed=2, init_from=pretrained)
    for name, state in (
        ("autoencoder", tuned.autoencoder.state_dict()),
        ("discriminator", tuned.disc.state_dict()),
    ):
        assert all(torch.equal(state[k], blob[name][k]) for k in state), name  # codebook included
    scratch = AutoencoderTrainer(val + train[:1], val, cfg, tmp_path / "c", seed=2)
    assert not torch.equal(
        scratch.autoencoder.state_dict()["encoder.blocks.0.conv.weight"],
        blob["autoencoder"]["encoder.blocks.0.conv.weight"],
    )
    path = tuned.fit(progress=False)
    saved = torch.load(path, weights_only=True)
    assert saved["info"]["fine_tuned_from"] == str(pretrained)
    assert not torch.equal(
        saved["autoencoder"]["encoder.blocks.0.conv.weight"],
        blob["autoencoder"]["encoder.blocks.0.conv.weight"],
    )
    with pytest.raises(ConfigError, match="codebook_size"):
        AutoencoderTrainer(
            train, val, {**cfg, "codebook_size": 8}, tmp_path / "d", seed=2, init_from=pretrained
        )


def test_early_stopping_keeps_the_best_epoch(cohort, tmp_path, monkeypatch):
    train, val = split(cohort)
    cfg = {**AE_CFG, "epochs": 10, "patience": 2, "adversarial_start_epoch": 0, "augment": {"enabled": False}}
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.0, 1.0])  # best at epoch 2, then two epochs without improvement
    real_validate = AutoencoderTrainer.validate
    weights_after = {}

    def validate(self):
        terms = real_validate(self)
        weights_after[self.epoch + 1] = {k: v.clone() for k, v in self.autoencoder.state_dict().items()}
        return {**terms, "total": next(scripted)}

    monkeypatch.setattr(AutoencoderTrainer, "validate", validate)
    trainer = AutoencoderTrainer(train, val, cfg, tmp_path, seed=3)
    path = trainer.fit(progress=False)
    assert trainer.epoch == 4 and trainer.stopped_early
    saved = torch.load(path, weights_only=True)
    assert saved["info"]["best_epoch"] == 2
    for key, value in saved["autoencoder"].items():
        assert torch.equal(value, weights_after[2][key]), key
    assert not torch.equal(
        saved["autoencoder"]["decoder.blocks.0.conv.weight"], weights_after[4]["decoder.blocks.0.conv.weight"]
    )
    with pytest.raises(ConfigError, match="validation"):
        AutoencoderTrainer(train, [], cfg, tmp_path / "x", seed=3)


# ---- tokens ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model(cohort, tmp_path_factory) -> Path:
    train, val = split(cohort)
    out = tmp_path_factory.mktemp("model")
    return AutoencoderTrainer(train, val, {**AE_CFG, "epochs": 1}, out, seed=0).fit(progress=False)


def test_encode_writes_token_grids_with_unaugmented_copy_zero(cohort, trained_model, tmp_path):
    vqvae, _, network = load_autoencoder(trained_model)
    aug = VolumeAugmentation({"rotate": 0.2, "translate": 2.0})
    images = dict(list(cohort.items())[:3])
    encode_subjects(vqvae, images, tmp_path / "aug", 2, aug, seed=0, batch_size=2, progress=False, codec=VQ)
    encode_subjects(vqvae, images, tmp_path / "plain", 0, aug, seed=0, progress=False, codec=VQ)
    encode_subjects(
        vqvae, dict(reversed(images.items())), tmp_path / "again", 2, aug, seed=0, progress=False, codec=VQ
    )
    for subject, path in images.items():
        tokens = np.load(tmp_path / "aug" / f"{subject}.npy")
        assert tokens.shape == (3, *network["latent_shape"]) and tokens.dtype == np.int16
        assert tokens.min() >= 0 and tokens.max() < network["codebook_size"]
        plain = np.load(tmp_path / "plain" / f"{subject}.npy")
        assert plain.shape == (1, 4, 6, 4)
        assert np.array_equal(tokens[0], plain[0])
        # copy 0 is the direct encoding of the image, axes in image order
        direct = vqvae.index_quantize(VolumeDataset([path]).batch([0]))[0].numpy()
        assert np.array_equal(plain[0], direct)
        # augmented copies depend only on (seed, subject, copy), not on the order of subjects
        assert np.array_equal(tokens, np.load(tmp_path / "again" / f"{subject}.npy"))

    seqs = load_token_sequences([tmp_path / "aug" / f"{s}.npy" for s in images])
    assert seqs.shape == (9, 96)
    first = load_token_sequences([tmp_path / "aug" / f"{s}.npy" for s in images], copies="first")
    assert np.array_equal(first[1], np.load(tmp_path / "aug" / f"{list(images)[1]}.npy")[0].reshape(-1))


def test_encoding_leaves_the_codebook_unchanged(cohort, trained_model, tmp_path):
    vqvae, _, _ = load_autoencoder(trained_model)
    before = copy.deepcopy(vqvae.state_dict())
    encode_subjects(
        vqvae, dict(list(cohort.items())[:2]), tmp_path, 1, VolumeAugmentation(), 0, progress=False, codec=VQ
    )
    assert all(torch.equal(before[k], v) for k, v in vqvae.state_dict().items())
