"""Finite scalar quantisation, the normalised VQ-VAE, and the paper network's configurable activation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_AUTOENCODER, phantom

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.fsq import FSQ
from morphgen.models.autoencoders.normalised_vqvae import NormalisedVQVAE
from morphgen.models.autoencoders.training import AutoencoderTrainer
from morphgen.models.autoencoders.vqvae import (
    build_vqvae,
    codebook_size_of,
    decode_tokens,
    encode_tokens,
    network_config,
    token_indices,
)
from morphgen.nifti import save_volume
from morphgen.space import Grid

torch.set_num_threads(1)

GRID = Grid(4.0, (16, 24, 16))
FSQ_CFG = {
    **TINY_AUTOENCODER,
    "architecture": "normalised",
    "quantiser": "fsq",
    "fsq_levels": [5, 4, 3],
    "channels": [4, 8, 8],  # the first level keeps the grid: tokens on 4 x 6 x 4
    "num_res_layers": [0, 1, 1],
    "norm_num_groups": 4,
    "epochs": 1,
}


@pytest.mark.parametrize("levels", [[5, 4, 3], [8, 8, 8, 5, 5], [2, 7]])
def test_fsq_reaches_every_code_exactly_and_tokens_decode_to_the_same_codes(levels):
    fsq = FSQ(levels)
    assert fsq.num_embeddings == math.prod(levels)
    # a sweep of each channel over a wide range hits every level of every channel
    sweep = torch.linspace(-6, 6, 241)
    grid = torch.stack(torch.meshgrid(*([sweep] * len(levels)), indexing="ij")) if len(levels) <= 3 else None
    if grid is None:
        z = torch.randn(1, len(levels), 40, 40, 40) * 3
    else:
        z = grid[None]
    tokens = fsq.indices(z)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < fsq.num_embeddings
    digits = fsq.digits(z)
    for channel, level in enumerate(levels):
        assert sorted(torch.unique(digits[:, channel]).tolist()) == list(range(level))
    if grid is not None:
        assert len(torch.unique(tokens)) == fsq.num_embeddings
    # the token's code is the quantised latent, exactly
    assert torch.equal(fsq.embed(tokens), fsq(z))
    assert float(fsq(z).abs().max()) <= 1.0


def test_fsq_passes_gradients_straight_through():
    fsq = FSQ([5, 5])
    z = (torch.randn(2, 2, 3, 3, 3) * 0.3).requires_grad_()
    fsq(z).sum().backward()
    assert z.grad is not None and bool((z.grad > 0).all())  # tanh bound: positive slope everywhere


def test_fsq_refuses_bad_levels_and_tokens():
    with pytest.raises(ConfigError, match="fsq_levels"):
        FSQ([1, 4])
    with pytest.raises(ValueError, match="outside"):
        FSQ([3, 3]).embed(torch.tensor([[9]]))


def test_fsq_config_sets_the_codebook_and_needs_the_normalised_network():
    net = network_config(FSQ_CFG, GRID.shape)
    assert net["codebook_size"] == 60 and net["embedding_dim"] == 3
    assert net["latent_shape"] == [4, 6, 4]
    assert codebook_size_of(FSQ_CFG) == 60
    with pytest.raises(ConfigError, match="architecture: normalised"):
        network_config({**FSQ_CFG, "architecture": "vqvae"}, GRID.shape)
    with pytest.raises(ConfigError, match="norm_num_groups"):
        network_config({**FSQ_CFG, "norm_num_groups": 3}, GRID.shape)
    with pytest.raises(ConfigError, match="model.autoencoder.quantiser"):
        network_config({**FSQ_CFG, "quantiser": "lfq"}, GRID.shape)


@pytest.mark.parametrize("quantiser", ["fsq", "ema"])
def test_normalised_network_tokens_decode_to_its_reconstruction(quantiser):
    cfg = {**FSQ_CFG, "quantiser": quantiser, "channels": [4, 8], "num_res_layers": 1, "embedding_dim": 3}
    net = network_config(cfg, GRID.shape)
    torch.manual_seed(0)
    model = build_vqvae(net).eval()
    assert isinstance(model, NormalisedVQVAE)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    x = torch.rand(2, 1, *GRID.shape)
    tokens = encode_tokens(model, x)
    assert tuple(tokens.shape) == (2, *net["latent_shape"])
    assert torch.equal(tokens, token_indices(model, model.encode(x)))
    with torch.no_grad():
        decoded, reconstructed = decode_tokens(model, tokens), model(x)[0]
    if quantiser == "fsq":  # its codes are exact; MONAI's EMA straight-through sum rounds in the last bit
        assert torch.equal(decoded, reconstructed)
    else:
        assert torch.allclose(decoded, reconstructed, atol=1e-5)


def test_leaky_relu_reaches_the_residual_units():
    """MONAI's residual unit ends in a hard ReLU; with activation: leakyrelu no unit may clip at zero."""
    base = {**TINY_AUTOENCODER, "channels": [4, 4]}
    leaky = build_vqvae(network_config({**base, "activation": "leakyrelu"}, GRID.shape))
    plain = build_vqvae(network_config({**base, "activation": "relu"}, GRID.shape))
    plain.load_state_dict(leaky.state_dict())  # same parameters either way
    units = [m for m in leaky.modules() if type(m).__name__ == "ResidualUnit"]
    assert units, "no residual unit was given the configured activation"
    x = -torch.rand(1, units[0].in_channels, 3, 3, 3) - 1.0
    with torch.no_grad():
        assert float(units[0](x).min()) < 0.0
        relu_unit = next(m for m in plain.modules() if type(m).__name__ == "VQVAEResidualUnit")
        assert float(relu_unit(x).min()) >= 0.0


def test_fsq_autoencoder_trains_counts_codes_and_rebuilds_from_model_pt(tmp_path):
    rng = np.random.default_rng(4)
    images = [
        save_volume(tmp_path / f"sub-{i}.nii.gz", phantom(rng, GRID.shape), GRID.affine) for i in range(4)
    ]
    trainer = AutoencoderTrainer(images[:3], images[3:], FSQ_CFG, tmp_path / "model", seed=0)
    path = trainer.fit(progress=False)
    header, row = (line.split("\t") for line in (tmp_path / "model/loss.tsv").read_text().splitlines()[:2])
    used = int(float(row[header.index("codes_used")]))
    assert 1 <= used <= 60
    assert int(float(row[header.index("codes_restarted")])) == 0  # FSQ has nothing to restart
    model, _, network = load_autoencoder(path)
    x = torch.from_numpy(phantom(rng, GRID.shape))[None, None]
    trainer.autoencoder.eval()
    assert torch.equal(encode_tokens(model, x), encode_tokens(trainer.autoencoder, x))
    assert network["quantiser"] == "fsq" and network["fsq_levels"] == [5, 4, 3]


def test_fsq_token_is_the_mixed_radix_number_of_the_channel_levels():
    fsq = FSQ([3, 4])
    codes = torch.tensor([[[-1.0]], [[0.5]]])[None]  # channel 0 at level 0 of 3, channel 1 at level 3 of 4
    z = torch.atanh(codes.clamp(-0.99, 0.99)) * 3  # far enough out to round to the end levels
    assert fsq.digits(z)[0, :, 0, 0].tolist() == [0, 3]
    assert int(fsq.indices(z)[0, 0, 0]) == 0 + 3 * 3



def test_a_decoder_without_group_norm_is_built_saved_and_rebuilt_without_it(tmp_path):
    """decoder_norm: none takes GroupNorm out of the decoder only (the encoder keeps it), and model.pt
    rebuilds the same network; the default writes the network as before the key existed."""
    assert "decoder_norm" not in network_config(FSQ_CFG, GRID.shape)  # files written before still fine-tune
    with pytest.raises(ConfigError, match="decoder_norm"):
        network_config({**FSQ_CFG, "decoder_norm": "batch"}, GRID.shape)
    rng = np.random.default_rng(0)
    paths = [save_volume(tmp_path / f"{i}.nii.gz", phantom(rng, GRID.shape), GRID.affine) for i in range(2)]
    cfg = {**FSQ_CFG, "decoder_norm": "none"}
    path = AutoencoderTrainer(paths, [], cfg, tmp_path / "ae", seed=0).fit(progress=False)
    model, _, network = load_autoencoder(path)
    assert network["decoder_norm"] == "none"

    def group_norms(module):
        return sum(isinstance(m, torch.nn.GroupNorm) for m in module.modules())

    assert group_norms(model.decoder) == 0 and group_norms(model.encoder) > 0
    assert group_norms(NormalisedVQVAE(network_config(FSQ_CFG, GRID.shape)).decoder) > 0
