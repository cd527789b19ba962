"""Tests of the training-memory estimates used to pick batch sizes per GPU tier."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_AUTOENCODER

from morphgen.models.autoencoders.vqvae import build_vqvae, network_config
from morphgen.models.memory import (
    GIB,
    MemoryEstimate,
    estimate_autoencoder_training,
    estimate_prior_training,
    largest_batch,
)

AE = {**TINY_AUTOENCODER, "channels": [8, 8]}
SHAPE = (16, 24, 16)


def saved_on_cpu(ae_cfg: dict, shape: tuple) -> int:
    """What autograd really saves for the VQ-VAE's encoder and decoder on CPU, storages counted once."""
    torch.manual_seed(0)
    vqvae = build_vqvae(network_config(ae_cfg, shape))
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    images = torch.rand(1, 1, *shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vqvae.decoder(vqvae.encoder(images))
    return sum(seen.values())


def test_meta_trace_counts_what_a_real_forward_saves(monkeypatch):
    import morphgen.models.memory as memory

    parts = {}
    original = memory._block_costs

    def spy(blocks, x, seen):
        out = original(blocks, x, seen)
        parts["network"] = sum(seen.values())
        return out

    monkeypatch.setattr(memory, "_block_costs", spy)
    estimate_autoencoder_training(AE, SHAPE)
    assert parts["network"] == saved_on_cpu(AE, SHAPE)


def test_checkpointing_and_bf16_lower_the_estimate_and_batch_scales_linearly():
    fp32 = estimate_autoencoder_training(AE, SHAPE)
    recompute = estimate_autoencoder_training(AE, SHAPE, recompute=True)
    bf16 = estimate_autoencoder_training(AE, SHAPE, precision="bf16")
    assert recompute.per_sample < fp32.per_sample
    assert 0.4 < bf16.per_sample / fp32.per_sample < 0.75  # activations halve; the losses stay float32
    assert bf16.fixed > fp32.fixed  # bf16 weight copies on top of the float32 master weights
    params = sum(p.numel() for p in build_vqvae(network_config(AE, SHAPE)).parameters())
    assert fp32.fixed > 16 * params  # weights, gradients and two Adam moments of the VQ-VAE alone
    assert fp32.total(3) - fp32.total(2) == fp32.per_sample


def test_largest_batch_fits_the_budget():
    est = MemoryEstimate(fixed=2 * GIB, per_sample=3 * GIB)
    assert largest_batch(est, 24, headroom=1.0) == 7  # 2 + 7 * 3 = 23 <= 24 < 26
    assert largest_batch(est, 4, headroom=1.0) == 0
    assert largest_batch(est, 24, headroom=0.5) == 3


@pytest.mark.parametrize("attention", ["exact", "favor"])
def test_prior_estimate_grows_with_length_and_shrinks_with_checkpointing(attention):
    cfg = {"layers": 2, "d_model": 32, "heads": 4, "dropout": 0.1, "attention": attention}
    short = estimate_prior_training(cfg, 64, 32)
    long = estimate_prior_training(cfg, 256, 32)
    recompute = estimate_prior_training({**cfg, "activation_checkpointing": True}, 256, 32)
    assert long.per_sample > 3 * short.per_sample
    assert recompute.per_sample < long.per_sample
    assert long.fixed - short.fixed == 16 * 32 * (256 - 64)  # the longer position table, in four copies
