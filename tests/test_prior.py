"""Tests of the transformer prior: key/value cache, sampling, training, resume and model files."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from morphgen.errors import ConfigError
from morphgen.models.engine.preemption import TrainingInterrupted, stop_on_signals
from morphgen.models.engine.resume import RunCheckpoint
from morphgen.models.families.vqvae_transformer import prior
from morphgen.models.families.vqvae_transformer.prior import (
    heldout_nll,
    load_prior,
    sample_tokens,
    train_prior,
)
from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer

torch.set_num_threads(1)


def peaky_model(codebook_size: int = 16, seq_len: int = 40, dtype=torch.float64) -> CausalTransformer:
    """A small random model with large weights, so its next-token distributions depend strongly on context."""
    torch.manual_seed(7)
    model = CausalTransformer(codebook_size + 1, seq_len, d_model=32, layers=2, heads=4, dropout=0.0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.4)
    return model.to(dtype).eval()


def markov_sequences(n: int, length: int, k: int, seed: int) -> np.ndarray:
    """Sequences from a Markov chain on k states: mostly s -> s+1, sometimes s -> s+3, rarely anything."""
    transition = np.full((k, k), 0.05 / (k - 2))
    for s in range(k):
        transition[s, (s + 1) % k] = 0.85
        transition[s, (s + 3) % k] = 0.10
    rng = np.random.default_rng(seed)
    out = np.empty((n, length), dtype=np.int64)
    out[:, 0] = rng.integers(0, k, n)
    for t in range(1, length):
        cum = transition[out[:, t - 1]].cumsum(axis=1)
        out[:, t] = (rng.random((n, 1)) > cum).sum(axis=1)
    return out


# --------------- cache and sampling


def test_cached_forward_matches_full_forward_in_chunks():
    model = peaky_model()
    tokens = torch.randint(0, 16, (3, 41), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = model.bos_token
    full = model(tokens)
    cache = model.new_cache(3)
    pieces, start = [], 0
    for size in (1, 5, 1, 12, 22):  # single tokens and chunks after a prefix (explicit mask)
        pieces.append(model(tokens[:, start : start + size], cache))
        start += size
    assert cache.length == 41
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-10)
    assert full.shape == (3, 41, 16)  # BOS is never predicted
    with pytest.raises(ValueError, match="exceed"):
        model(tokens[:, :1], cache)  # the cache is full: position 41 does not exist


@pytest.mark.parametrize(("temperature", "top_k"), [(0.7, None), (1.3, 5), (1.0, 1)])
def test_cached_and_uncached_sampling_give_identical_tokens(temperature, top_k):
    model = peaky_model()
    model.train()  # sample_tokens must switch to eval and restore
    kwargs = dict(n=5, batch_size=3, temperature=temperature, top_k=top_k, seed=11, progress=False)
    cached = list(sample_tokens(model, use_cache=True, **kwargs))
    assert model.training and torch.is_grad_enabled()
    uncached = list(sample_tokens(model, use_cache=False, **kwargs))
    assert [b.shape for b in cached] == [(3, 40), (2, 40)]
    for a, b in zip(cached, uncached, strict=True):
        np.testing.assert_array_equal(a, b)
    tokens = np.concatenate(cached)
    assert tokens.min() >= 0 and tokens.max() < 16
    if top_k != 1:  # sampling is random: another seed must give other sequences
        other = np.concatenate(list(sample_tokens(model, use_cache=True, **{**kwargs, "seed": 12})))
        assert not np.array_equal(tokens, other)


def test_top_k_one_is_greedy_decoding():
    model = peaky_model()
    seq = torch.full((4, 1), model.bos_token)
    with torch.no_grad():
        for _ in range(model.seq_len):
            next_token = model(seq)[:, -1].argmax(dim=-1, keepdim=True)
            seq = torch.cat([seq, next_token], dim=1)
    greedy = seq[:, 1:].numpy()
    for seed in (0, 5):  # greedy decoding does not depend on the random draws
        sampled = np.concatenate(
            list(sample_tokens(model, 4, 4, temperature=0.5, top_k=1, seed=seed, progress=False))
        )
        np.testing.assert_array_equal(sampled, greedy)


def test_each_position_draws_only_from_its_token_range():
    """A multi-level sequence: the first 10 positions hold one level's values (0-3), the rest another's."""
    model = peaky_model()
    ranges = np.array([(0, 4)] * 10 + [(4, 16)] * 30)
    kwargs = dict(n=6, batch_size=4, seed=3, progress=False, token_ranges=ranges)
    cached = np.concatenate(list(sample_tokens(model, use_cache=True, **kwargs)))
    uncached = np.concatenate(list(sample_tokens(model, use_cache=False, **kwargs)))
    np.testing.assert_array_equal(cached, uncached)
    assert cached[:, :10].max() < 4 and cached[:, 10:].min() >= 4 and cached[:, 10:].max() < 16
    free = np.concatenate(list(sample_tokens(model, n=6, batch_size=4, seed=3, progress=False)))
    assert (free[:, :10] >= 4).any()  # without the ranges this model draws other values there
    with pytest.raises(ValueError, match="token_ranges"):
        next(sample_tokens(model, n=1, batch_size=1, progress=False, token_ranges=ranges[:5]))


def test_float32_model_samples_and_cache_agrees_to_rounding():
    # exact token equality is demanded in float64 above; in float32 the two paths differ by rounding only
    model = peaky_model(dtype=torch.float32)
    tokens = torch.randint(0, 16, (2, 41), generator=torch.Generator().manual_seed(2))
    tokens[:, 0] = model.bos_token
    cache = model.new_cache(2)
    stepped = torch.cat([model(tokens[:, i : i + 1], cache) for i in range(41)], dim=1)
    torch.testing.assert_close(stepped, model(tokens), rtol=0, atol=1e-5)
    sampled = next(sample_tokens(model, 2, 2, top_k=4, seed=3, progress=False))
    assert sampled.dtype == np.int64 and sampled.shape == (2, 40)


# --------------- training

CODEBOOK = 8
MARKOV_CFG = dict(layers=2, d_model=32, heads=2, dropout=0.05, epochs=20, batch_size=16, lr=0.003)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train = markov_sequences(192, 24, CODEBOOK, seed=0)
    val = markov_sequences(48, 24, CODEBOOK, seed=1)
    out = tmp_path_factory.mktemp("prior")
    train_prior(train, val, CODEBOOK, MARKOV_CFG, out, seed=0, progress=False)  # 20 epochs x 12 steps
    return out, train, val


def test_training_beats_unigram_baseline(trained):
    out, train, val = trained
    nll = pd.read_csv(out / "heldout.tsv", sep="\t")
    assert list(nll.columns) == [
        "model_nll_per_token",
        "unigram_nll_per_token",
        "ratio",
        "val_sequences",
        "val_tokens",
    ]
    row = nll.iloc[0]
    # the baseline is the Laplace-smoothed frequency model of the training codes
    counts = np.bincount(train.ravel(), minlength=CODEBOOK) + 1.0
    expected_unigram = -np.log(counts / counts.sum())[val.ravel()].mean()
    assert row["unigram_nll_per_token"] == pytest.approx(expected_unigram, abs=1e-5)
    # the chain's conditional entropy is ~0.65 nats against ~ln 8 = 2.08 for the unigram model
    assert row["model_nll_per_token"] < 0.5 * row["unigram_nll_per_token"]
    assert row["ratio"] == pytest.approx(row["model_nll_per_token"] / row["unigram_nll_per_token"], rel=1e-4)
    assert (row["val_sequences"], row["val_tokens"]) == (48, 48 * 24)
    loss = pd.read_csv(out / "loss.tsv", sep="\t")
    assert list(loss["epoch"]) == list(range(1, 21))
    assert loss["val_nll_per_token"].iloc[-1] < loss["val_nll_per_token"].iloc[0]
    assert loss["val_nll_per_token"].iloc[-1] == pytest.approx(row["model_nll_per_token"], abs=1e-5)


def test_load_prior_round_trip(trained, tmp_path):
    out, _, val = trained
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    checkpoint = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == MARKOV_CFG["epochs"]
    model = load_prior(out / "model.pt")
    assert not model.training
    assert (model.codebook_size, model.seq_len, model.layers, model.d_model) == (CODEBOOK, 24, 2, 32)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["state_dict"][name])
        assert torch.equal(tensor, checkpoint["parts"]["model"][name])
    assert heldout_nll(model, val) == pytest.approx(saved["val_nll"], abs=1e-6)
    tokens = next(sample_tokens(model, 3, 3, progress=False))
    assert tokens.shape == (3, 24)
    not_a_model = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, not_a_model)
    with pytest.raises(ConfigError, match="not a morphgen prior"):
        load_prior(not_a_model)


TINY_CFG = dict(layers=1, d_model=16, heads=2, dropout=0.2, epochs=4, batch_size=8, lr=0.002)


def _tiny_data():
    return markov_sequences(36, 12, CODEBOOK, seed=2), markov_sequences(6, 12, CODEBOOK, seed=3)


def _assert_same(a, b, where="checkpoint"):
    """Equality of nested checkpoint contents, tensors compared exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    train, val = _tiny_data()
    train_prior(train, val, CODEBOOK, TINY_CFG, tmp_path / "whole", seed=4, progress=False)

    real_save = RunCheckpoint.save
    saved_epochs = []

    def killed_after_two_epochs(self, state):
        real_save(self, state)
        saved_epochs.append(state["epoch"])
        if len(saved_epochs) == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(RunCheckpoint, "save", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train_prior(train, val, CODEBOOK, TINY_CFG, tmp_path / "resumed", seed=4, progress=False)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    monkeypatch.setattr(RunCheckpoint, "save", real_save)

    trained_epochs = []
    real_permutation = prior._epoch_permutation

    def recording_permutation(n, seed, epoch):
        trained_epochs.append(epoch)
        return real_permutation(n, seed, epoch)

    monkeypatch.setattr(prior, "_epoch_permutation", recording_permutation)
    train_prior(train, val, CODEBOOK, TINY_CFG, tmp_path / "resumed", seed=4, progress=False)
    assert trained_epochs == [2, 3]  # resumed, not restarted

    for name in ("model.pt", "checkpoints/last.pt"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        resumed = torch.load(tmp_path / "resumed" / name, weights_only=True)
        _assert_same(whole, resumed, name)
    for name in ("loss.tsv", "heldout.tsv"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "resumed" / name).read_text()


def test_sigterm_mid_epoch_checkpoints_there_and_the_rerun_ends_with_identical_weights(tmp_path, monkeypatch):
    train, val = _tiny_data()
    train_prior(train, val, CODEBOOK, TINY_CFG, tmp_path / "whole", seed=4, progress=False)

    real_step, steps = prior.training_step, []

    def sigterm_during_fourth_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(prior, "training_step", sigterm_during_fourth_step)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM"):
        train_prior(train, val, CODEBOOK, TINY_CFG, tmp_path / "resumed", seed=4, progress=False)
    state = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    per_epoch = -(-len(train) // TINY_CFG["batch_size"])
    assert 4 % per_epoch != 0, "the signal must fall inside an epoch"
    assert (
        state["epoch"] == 4 // per_epoch
        and state["position"]["next"] == (4 % per_epoch) * TINY_CFG["batch_size"]
    )
    assert not (tmp_path / "resumed/model.pt").exists()
    monkeypatch.setattr(prior, "training_step", real_step)

    torch.manual_seed(7)  # dropout continues from the checkpointed random state, not from this one
    train_prior(train, val, CODEBOOK, TINY_CFG, tmp_path / "resumed", seed=4, progress=False)
    _assert_same(
        torch.load(tmp_path / "whole/model.pt", weights_only=True),
        torch.load(tmp_path / "resumed/model.pt", weights_only=True),
    )
    for name in ("loss.tsv", "heldout.tsv"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "resumed" / name).read_text()


def test_checkpoint_from_other_settings_is_set_aside(tmp_path):
    train, val = _tiny_data()
    cfg = {**TINY_CFG, "epochs": 1}
    train_prior(train, val, CODEBOOK, cfg, tmp_path / "reused", seed=1, progress=False)
    with pytest.warns(UserWarning, match="of another prior run .*set aside as last.stale.pt"):
        train_prior(train, val, CODEBOOK, cfg, tmp_path / "reused", seed=2, progress=False)
    assert (tmp_path / "reused/checkpoints/last.stale.pt").exists()  # nothing is lost
    train_prior(train, val, CODEBOOK, cfg, tmp_path / "fresh", seed=2, progress=False)
    _assert_same(
        torch.load(tmp_path / "fresh" / "model.pt", weights_only=True),
        torch.load(tmp_path / "reused" / "model.pt", weights_only=True),
    )


def test_training_is_deterministic_and_keeps_caller_rng(tmp_path):
    train, val = _tiny_data()
    cfg = {**TINY_CFG, "epochs": 1}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_prior(train, val, CODEBOOK, cfg, tmp_path / "a", seed=9, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    train_prior(train, val, CODEBOOK, cfg, tmp_path / "b", seed=9, progress=False)
    _assert_same(
        torch.load(tmp_path / "a" / "model.pt", weights_only=True),
        torch.load(tmp_path / "b" / "model.pt", weights_only=True),
    )


def test_bad_tokens_are_rejected(tmp_path):
    train, val = _tiny_data()
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        train_prior(train + 1, val, CODEBOOK, TINY_CFG, tmp_path, seed=0, progress=False)
    with pytest.raises(ValueError, match="length"):
        train_prior(train, val[:, :-1], CODEBOOK, TINY_CFG, tmp_path, seed=0, progress=False)
    with pytest.raises(ValueError, match="held-out"):
        train_prior(train, val[:0], CODEBOOK, TINY_CFG, tmp_path, seed=0, progress=False)
