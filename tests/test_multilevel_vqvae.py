"""Seed 003's multi-level VQ-VAE: shapes of every level, FixUp blocks that start as their skip, tokens that
decode to the reconstruction, one flat sequence per image and back, and per-level dead-code restarts."""

import pytest
import torch

from morphgen.models.families.multilevel_vqvae.network import (
    FixUpBlock,
    MultiLevelVQVAE,
    latent_shapes,
    restart_dead_codes_per_level,
    split_sequence,
    token_sequence,
)

CHANNELS = [4, 8, 8, 16]
LEVELS = [
    {"stage": 3, "embedding_dim": 8, "num_embeddings": 16},
    {"stage": 1, "embedding_dim": 2, "num_embeddings": 32},
]
SHAPE = (32, 48, 32)


def _model(seed: int = 0) -> MultiLevelVQVAE:
    torch.manual_seed(seed)
    return MultiLevelVQVAE(CHANNELS, LEVELS, first_channels=2)


def _images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_every_level_has_its_grid_and_the_output_the_input_shape():
    model = _model()
    recon, loss, encodings = model(_images())
    assert recon.shape == (2, 1, *SHAPE) and loss.ndim == 0 and loss.item() >= 0
    shapes = latent_shapes(SHAPE, LEVELS)
    assert shapes == [(2, 3, 2), (8, 12, 8)]
    assert [tuple(z.shape) for z in encodings] == [(2, 8, 2, 3, 2), (2, 2, 8, 12, 8)]
    recon.mean().backward()  # the gradient reaches the first block through every level
    assert model.stem.conv1.weight.grad is not None
    with pytest.raises(ValueError, match="coarse to fine"):
        MultiLevelVQVAE(CHANNELS, list(reversed(LEVELS)))
    with pytest.raises(ValueError, match="does not divide"):
        latent_shapes((30, 48, 32), LEVELS)


def test_a_fixup_block_starts_as_its_skip():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6, 6)
    block = FixUpBlock(4, 4, "same", n_branches=9)
    torch.testing.assert_close(block(x), x)  # conv2 is zero: the residual branch adds nothing
    down, up = FixUpBlock(4, 8, "down"), FixUpBlock(4, 8, "up")
    assert down(x).shape == (1, 8, 3, 3, 3) and up(x).shape == (1, 8, 12, 12, 12)
    # He init scaled by L^-1/2
    wide = FixUpBlock(4, 4, "same", n_branches=1).conv1.weight.std()
    narrow = FixUpBlock(4, 4, "same", n_branches=16).conv1.weight.std()
    assert (narrow / wide).item() == pytest.approx(0.25, rel=0.15)


def test_tokens_decode_to_the_reconstruction_and_round_trip_through_one_sequence():
    model = _model().eval()
    images = _images()
    tokens = model.tokens(images)
    assert [tuple(t.shape) for t in tokens] == [(2, 2, 3, 2), (2, 8, 12, 8)]
    with torch.no_grad():
        recon = model(images)[0]
    torch.testing.assert_close(model.decode_tokens(tokens), recon, atol=1e-5, rtol=1e-5)
    sequence = token_sequence(tokens, LEVELS)
    assert sequence.shape == (2, 12 + 768)
    assert int(sequence[:, :12].max()) < 16 and int(sequence[:, 12:].min()) >= 16  # the fine level offset
    back = split_sequence(sequence, LEVELS, latent_shapes(SHAPE, LEVELS))
    for a, b in zip(tokens, back, strict=True):
        assert torch.equal(a.long(), b)
    bad = sequence.clone()
    bad[0, 0] = 16  # a coarse token in the fine level's range
    with pytest.raises(ValueError, match="outside its vocabulary"):
        split_sequence(bad, LEVELS, latent_shapes(SHAPE, LEVELS))
    with pytest.raises(ValueError, match="does not hold"):
        split_sequence(sequence[:, :-1], LEVELS, latent_shapes(SHAPE, LEVELS))


def test_restarts_revive_the_dead_codes_of_each_level():
    model = _model()
    images = _images(4)
    for quantizer in (q.quantizer for q in model.quantizers):  # every code but one far from any output
        with torch.no_grad():
            quantizer.embedding.weight[1:] = 1e3
            quantizer.ema_cluster_size.zero_()
            quantizer.ema_cluster_size[0] = 10.0
    model.eval()
    before = [len(torch.unique(t)) for t in model.tokens(images)]
    assert before == [1, 1]
    _, _, encodings = model(images)
    restarted = restart_dead_codes_per_level(model, encodings, 0.5, torch.Generator().manual_seed(0))
    assert restarted == [15, 31]
    after = [len(torch.unique(t)) for t in model.tokens(images)]
    assert after[0] > 1 and after[1] > 1
    assert restart_dead_codes_per_level(model, encodings, 0.5, torch.Generator().manual_seed(0)) == [0, 0]


ML_CFG = {
    "channels": [4, 8, 8],
    "levels": [
        {"stage": 2, "embedding_dim": 4, "num_embeddings": 16},
        {"stage": 0, "embedding_dim": 2, "num_embeddings": 16},
    ],
    "first_channels": 2,
    "reconstruction_loss": "adaptive",
    "dead_code_threshold": 0.5,  # high, so that restarts happen in these few steps
    "epochs": 2,
    "batch_size": 2,
    "lr": 1e-3,
    "lr_decay": 1.0,
    "lr_schedule": "sgdr",
    "sgdr": {"first_steps": 3, "t_mul": 1.25, "m_mul": 0.95, "alpha": 1e-3},
    "disc_lr": 5e-4,
    "disc_channels": 4,
    "disc_layers": 2,
    "l1_weight": 0.0,  # the family's own reconstruction term only
    "fft_weight": 0.0,
    "adversarial_weight": 0.01,
    "adversarial_start_epoch": 1,
    "perceptual": {"weights": None},
}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    import numpy as np
    from conftest import phantom

    from morphgen.nifti import save_volume
    from morphgen.space import Grid

    grid, root = Grid(4.0, (16, 24, 16)), tmp_path_factory.mktemp("multilevel_cohort")
    rng = np.random.default_rng(5)
    paths = [save_volume(root / f"sub-{i}.nii.gz", phantom(rng, grid.shape), grid.affine) for i in range(5)]
    return paths[:4], paths[4:]


def test_the_shared_trainer_trains_it_restarts_each_level_and_resumes_exactly(
    phantoms, tmp_path, monkeypatch
):
    """Through the shared trainer: the adaptive loss's shape and scale are learnt and kept in the model, each
    level's dead codes restart, and a run stopped mid-epoch ends with the uninterrupted run's weights."""
    import os
    import signal

    import nibabel as nib
    from conftest import GPU_TESTS

    from morphgen.models.autoencoders.checkpoint import load_autoencoder
    from morphgen.models.autoencoders.codecs import codec_of
    from morphgen.models.autoencoders.training import AutoencoderTrainer
    from morphgen.models.engine.preemption import TrainingInterrupted, stop_on_signals
    from morphgen.models.families.multilevel_vqvae.codec import MultiLevelCodec
    from morphgen.tsv import read_tsv

    train, val = phantoms

    def trainer(out):
        return AutoencoderTrainer(train, val, ML_CFG, tmp_path / out, seed=2, codec=MultiLevelCodec(ML_CFG))

    straight = trainer("straight").fit(progress=False)
    rows = read_tsv(tmp_path / "straight/loss.tsv")
    assert {"reconstruction", "quantisation", "val_reconstruction", "codes_restarted"} <= set(rows.columns)
    assert rows["codes_restarted"].sum() > 0 and "codes_used" not in rows.columns
    model, _, network = load_autoencoder(straight)
    assert network["kind"] == "multilevel_vqvae" and network["latent_shapes"] == [[2, 3, 2], [8, 12, 8]]
    alpha = model.dct_loss.alpha().detach()
    assert not torch.allclose(alpha, torch.ones_like(alpha), atol=1e-4)  # learnt, and in the saved model
    codec = codec_of(network, ML_CFG)
    images = torch.stack([torch.from_numpy(nib.load(p).get_fdata()).float() for p in val])[:, None]
    sequence = codec.latents(model.eval(), images)
    assert sequence.shape == (1, 12 + 768) and sequence.dtype.kind == "i"
    assert codec.reconstruction(model, images).shape == images.shape
    if GPU_TESTS:
        return
    real, calls = AutoencoderTrainer._stop_now, []

    def signal_in_third_step(self):  # epoch 2, step 1: the GAN has begun
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", signal_in_third_step)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2"):
        trainer("resumed").fit(progress=False)
    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", real)
    torch.manual_seed(999)
    resumed = trainer("resumed").fit(progress=False)
    a, b = (torch.load(p, weights_only=True) for p in (straight, resumed))
    for part in ("autoencoder", "discriminator"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    straight_rows, resumed_rows = (read_tsv(tmp_path / d / "loss.tsv") for d in ("straight", "resumed"))
    assert list(resumed_rows.columns) == list(straight_rows.columns)
    assert list(resumed_rows["codes_restarted"]) == list(straight_rows["codes_restarted"])
