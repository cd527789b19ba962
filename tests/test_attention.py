"""Tests of the prior's attention back-ends: FAVOR+, local windows, ReZero, caches and checkpointing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morphgen.models.families.vqvae_transformer.attention import (
    CausalSelfAttention,
    FavorState,
    favor_causal,
    favor_logits,
    orthogonal_gaussian_features,
)
from morphgen.models.families.vqvae_transformer.prior import sample_tokens
from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer

torch.set_num_threads(1)


def exact_causal_softmax(q, k, v, window=None):
    """Reference: softmax(q k^T / sqrt(d)) with a causal (and optionally banded) mask, by hand."""
    t = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    return torch.softmax(scores.masked_fill(~allowed, -math.inf), -1) @ v


def qkv(t=37, d=8, b=2, h=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, h, t, d, generator=g, dtype=torch.float64) for _ in range(3)]


def test_favor_causal_equals_its_quadratic_form_in_any_chunking():
    """Blocks with running sums give exactly sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j), j <= i."""
    q, k, v = qkv(scale=2.0)  # large inputs: the stabilisers must keep this finite
    w = orthogonal_gaussian_features(16, 8, torch.Generator().manual_seed(1)).double()
    phi_q, phi_k = torch.exp(favor_logits(q, w)), torch.exp(favor_logits(k, w))
    kernel = (phi_q @ phi_k.transpose(-1, -2)).tril()
    reference = (kernel @ v) / kernel.sum(-1, keepdim=True)
    for chunk in (1, 5, 64):
        torch.testing.assert_close(favor_causal(q, k, v, w, chunk=chunk), reference, rtol=1e-10, atol=1e-12)
    # continuing a state over a prefix gives the same as one call over the whole sequence
    state = FavorState(2, 3, 16, 8, "cpu", torch.float64)
    pieces = [
        favor_causal(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], w, state)
        for a, b in ((0, 1), (1, 20), (20, 37))
    ]
    torch.testing.assert_close(torch.cat(pieces, 2), reference, rtol=1e-10, atol=1e-12)


def test_favor_approximates_softmax_attention_and_improves_with_features():
    q, k, v = qkv(t=24, d=8, scale=0.5)
    exact = exact_causal_softmax(q, k, v)
    errors = {}
    for m in (64, 4096):
        w = orthogonal_gaussian_features(m, 8, torch.Generator().manual_seed(3)).double()
        approx = favor_causal(q, k, v, w)
        errors[m] = float((approx - exact).abs().mean() / exact.abs().mean())
    assert errors[4096] < 0.05  # 0.14 with 64 features; biased (non-Haar) features stalled at 0.06
    assert errors[4096] < errors[64] / 3


def test_orthogonal_features_are_orthogonal_within_a_block():
    w = orthogonal_gaussian_features(12, 8, torch.Generator().manual_seed(0)).double()
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0)
    assert w.shape == (12, 8)


@pytest.mark.parametrize("backend", ["exact", "favor"])
def test_mixed_local_and_global_heads_match_a_reference(backend):
    torch.manual_seed(0)
    attn = CausalSelfAttention(24, heads=3, local_heads=2, window=5, backend=backend, features=32).double()
    x = torch.randn(2, 19, 24, dtype=torch.float64)
    q, k, v = attn.qkv(x).view(2, 19, 3, 3, 8).permute(2, 0, 3, 1, 4)
    local = exact_causal_softmax(q[:, :2], k[:, :2], v[:, :2], window=5)
    if backend == "exact":
        glob = exact_causal_softmax(q[:, 2:], k[:, 2:], v[:, 2:])
    else:
        glob = favor_causal(q[:, 2:], k[:, 2:], v[:, 2:], attn.projection)
    expected = attn.out(torch.cat([local, glob], 1).transpose(1, 2).reshape(2, 19, 24))
    torch.testing.assert_close(attn(x), expected, rtol=1e-10, atol=1e-12)


def test_local_heads_do_not_see_past_their_window():
    torch.manual_seed(0)
    model = CausalTransformer(9, 30, d_model=16, layers=1, heads=2, local_heads=2, local_window=4).double()
    tokens = torch.randint(0, 8, (1, 31))
    changed = tokens.clone()
    changed[0, 3] = (tokens[0, 3] + 1) % 8
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # causal: earlier positions unchanged
    assert not torch.allclose(a[:, 3:7], b[:, 3:7])  # positions 3..6 see position 3
    torch.testing.assert_close(a[:, 7:], b[:, 7:])  # later positions are outside the window


def paper_like(attention: str, dtype=torch.float64) -> CausalTransformer:
    """A small model with the paper's head layout (half local, ReZero), weights large enough to be peaky."""
    torch.manual_seed(5)
    model = CausalTransformer(
        17, 40, d_model=32, layers=2, heads=4, attention=attention, local_heads=2, local_window=7, rezero=True
    )
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.4)
    return model.to(dtype).eval()


@pytest.mark.parametrize("attention", ["exact", "favor"])
def test_cached_forward_matches_full_forward(attention):
    model = paper_like(attention)
    tokens = torch.randint(0, 16, (3, 41), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = model.bos_token
    full = model(tokens)
    cache = model.new_cache(3)
    pieces, start = [], 0
    for size in (1, 5, 1, 12, 22):
        pieces.append(model(tokens[:, start : start + size], cache))
        start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("attention", ["exact", "favor"])
def test_cached_and_uncached_sampling_agree_token_for_token(attention):
    model = paper_like(attention)
    kwargs = dict(n=4, batch_size=2, temperature=1.0, seed=3, progress=False)
    cached = np.concatenate(list(sample_tokens(model, use_cache=True, **kwargs)))
    uncached = np.concatenate(list(sample_tokens(model, use_cache=False, **kwargs)))
    np.testing.assert_array_equal(cached, uncached)
    assert len(np.unique(cached)) > 3


def test_rezero_blocks_start_as_identity():
    torch.manual_seed(0)
    model = CausalTransformer(9, 10, d_model=16, layers=3, heads=2, rezero=True).eval()
    tokens = torch.randint(0, 8, (2, 11))
    x = model.token_embedding(tokens) + model.position_embedding(torch.arange(11))
    torch.testing.assert_close(model(tokens), model.head(model.norm(x)))
    assert all(isinstance(b.norm_attn, torch.nn.Identity) for b in model.blocks)


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = CausalTransformer(
            9,
            20,
            16,
            2,
            2,
            attention="favor",
            local_heads=1,
            local_window=6,
            activation_checkpointing=recompute,
        ).double()
        tokens = torch.randint(0, 8, (2, 21), generator=torch.Generator().manual_seed(2))
        model(tokens).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_favor_features_are_saved_with_the_weights(tmp_path):
    torch.manual_seed(0)
    model = CausalTransformer(9, 10, 16, 1, 2, attention="favor")
    torch.manual_seed(1)
    other = CausalTransformer(**model.hparams())
    assert not torch.equal(other.blocks[0].attn.projection, model.blocks[0].attn.projection)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.blocks[0].attn.projection, model.blocks[0].attn.projection)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(attention="linear"), "back-end"),
        (dict(local_heads=3), "local_heads"),
        (dict(local_heads=1, local_window=0), "window"),
    ],
)
def test_bad_attention_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CausalTransformer(9, 10, 16, 1, 2, **kwargs)
