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
