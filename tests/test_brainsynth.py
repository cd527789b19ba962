"""Seed 002's pieces: the split residual quantiser against a brute-force two-step nearest-code search, and the
streaming GLM recovering a planted linear effect of the covariates."""

from __future__ import annotations

import pytest
import torch

from morphgen.models.families.brainsynth.glm import StreamingGLM
from morphgen.models.families.brainsynth.quantiser import SplitResidualQuantizer


def brute_force(z: torch.Tensor, codebook: torch.Tensor, splits: int, depth: int) -> torch.Tensor:
    """Each voxel's parts coded step by step by the nearest code, one vector at a time."""
    b, c, *grid = z.shape
    out = torch.zeros_like(z)
    part = c // splits
    for n in range(b):
        for i in range(grid[0]):
            for j in range(grid[1]):
                for k in range(grid[2]):
                    for s in range(splits):
                        residual = z[n, s * part : (s + 1) * part, i, j, k].clone()
                        for _ in range(depth):
                            nearest = codebook[torch.cdist(residual[None], codebook).argmin()]
                            out[n, s * part : (s + 1) * part, i, j, k] += nearest
                            residual = residual - nearest
    return out


def test_residual_quantisation_is_the_two_step_nearest_code_search():
    torch.manual_seed(0)
    quantiser = SplitResidualQuantizer(channels=8, num_embeddings=32, splits=2, depth=2).eval()
    z = torch.randn(2, 8, 3, 2, 2)
    quantised, loss, indices = quantiser(z)
    assert indices.shape == (2, 2, 2, 3, 2, 2)  # four indices per position: two parts, two steps
    expected = brute_force(z, quantiser.embedding.weight, 2, 2)
    torch.testing.assert_close(quantised, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(quantiser.lookup(indices), expected, rtol=0, atol=1e-6)
    one_step = brute_force(z, quantiser.embedding.weight, 2, 1)
    assert (z - quantised).norm() < (z - one_step).norm()  # the second step codes what the first left
    assert loss > 0


def test_the_codebook_follows_its_residuals_and_dead_codes_restart():
    torch.manual_seed(1)
    quantiser = SplitResidualQuantizer(channels=4, num_embeddings=16, splits=2, depth=2, decay=0.5).train()
    z = torch.randn(4, 4, 2, 2, 2)
    before = quantiser.embedding.weight.clone()
    _, _, indices = quantiser(z)
    used = torch.unique(indices)
    assert not torch.allclose(quantiser.embedding.weight[used], before[used])  # the EMA moved them
    quantiser.ema_cluster_size[:] = 1.0
    quantiser.ema_cluster_size[:3] = 0.0
    generator = torch.Generator().manual_seed(0)
    assert quantiser.restart_codes(z, threshold=0.01, generator=generator) == 3
    parts = z.reshape(4, 2, 2, 2, 2, 2).movedim(2, -1).reshape(-1, 2)
    for code in quantiser.embedding.weight[:3]:
        assert torch.isclose(parts, code).all(1).any()  # each restarted at one of the encoder's parts


def test_the_glm_recovers_a_planted_effect_and_streams():
    torch.manual_seed(2)
    n, features = 200, 6
    age = torch.rand(n) * 60 + 20
    sex = (torch.rand(n) > 0.5).double()
    covariates = torch.stack([age, sex], 1).double()
    z = (covariates - covariates.mean(0)) / covariates.std(0, unbiased=False)
    planted = torch.randn(2, features, dtype=torch.float64)
    latents = z @ planted + 0.01 * torch.randn(n, features, dtype=torch.float64) + 3.0
    glm = StreamingGLM(2, features)
    for chunk in range(0, n, 37):  # subjects arrive in batches
        glm.add(covariates[chunk : chunk + 37], latents[chunk : chunk + 37].reshape(-1, 2, 3))
    weights = glm.solve()
    torch.testing.assert_close(weights, planted, atol=0.01, rtol=0)
    whole = StreamingGLM(2, features)
    whole.add(covariates, latents)
    torch.testing.assert_close(whole.solve(), weights, atol=1e-10, rtol=0)
    residual = glm.residual(covariates, latents.float().reshape(-1, 2, 3)).reshape(n, -1).double()
    assert residual.mean().item() == pytest.approx(3.0, abs=0.01)  # no intercept: r keeps the latents' mean
    centred = residual - residual.mean(0)
    assert (glm.standardise(covariates).T @ centred).abs().max() < 1e-4 * n  # nothing of m is left in r
    with pytest.raises(ValueError, match="do not vary"):
        constant = StreamingGLM(2, features)
        constant.add(torch.stack([age, torch.ones(n)], 1), latents)
        constant.solve()


def test_a_training_step_lowers_the_loss_on_masked_tokens():
    from morphgen.models.families.brainsynth.absorbing import MaskedTokenTransformer, mask_tokens, masked_loss

    torch.manual_seed(3)
    model = MaskedTokenTransformer(vocabulary=8, length=12, steps=16, d_model=32, layers=1, heads=2)
    tokens = torch.randint(0, 8, (6, 12))
    previous = torch.randint(0, 8, (6, 12))
    t = torch.full((6,), 8)
    noisy, masked = mask_tokens(tokens, t, 16, model.mask_id, torch.Generator().manual_seed(0))
    assert (
        masked.any() and (noisy[masked] == model.mask_id).all() and (noisy[~masked] == tokens[~masked]).all()
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss():
        return masked_loss(model(noisy, t, previous), tokens, masked, t, 16)

    before = loss()
    before.backward()
    optimiser.step()
    assert loss().item() < before.item()
    unmasked_only = masked_loss(model(noisy, t, previous), tokens, torch.zeros_like(masked), t, 16)
    assert unmasked_only.item() == 0.0  # only masked tokens are scored


def test_sampling_fills_every_mask_and_repeats_with_its_generator():
    from morphgen.models.families.brainsynth.absorbing import MaskedTokenTransformer, sample

    torch.manual_seed(4)
    model = MaskedTokenTransformer(vocabulary=8, length=10, steps=32, d_model=16, layers=1, heads=2).eval()
    first = sample(model, 3, 10, 32, model.mask_id, generator=torch.Generator().manual_seed(5))
    again = sample(model, 3, 10, 32, model.mask_id, generator=torch.Generator().manual_seed(5))
    assert first.shape == (3, 10) and 0 <= int(first.min()) and int(first.max()) < 8  # no mask is left
    assert torch.equal(first, again)
    conditioned = sample(
        model, 3, 10, 32, model.mask_id, condition=first, generator=torch.Generator().manual_seed(5)
    )
    assert int(conditioned.max()) < 8


RVQ_CFG = {
    "channels": [8, 8, 8],
    "num_res_layers": [0, 1, 1],
    "norm_num_groups": 4,
    "embedding_dim": 8,
    "splits": 2,
    "depth": 2,
    "codebook_size": 32,
    "dead_code_threshold": 0.5,  # high, so that restarts happen in these few steps
    "epochs": 2,
    "batch_size": 2,
    "lr": 1e-3,
    "lr_decay": 1.0,
    "disc_lr": 5e-4,
    "disc_channels": 4,
    "disc_layers": 2,
    "l1_weight": 1.0,  # seed 002: L1 and the PatchGAN
    "fft_weight": 0.0,
    "adversarial_weight": 0.01,
    "adversarial_start_epoch": 1,
    "perceptual": {"weights": None},
}


def test_the_shared_trainer_trains_the_residual_vq_autoencoder(tmp_path):
    """Stage I through the shared trainer: four indices per position stored, the reconstruction decoded from
    them, dead codes restarted, and the stored model rebuilt from its own file."""
    import nibabel as nib
    import numpy as np
    from conftest import phantom

    from morphgen.models.autoencoders.checkpoint import load_autoencoder
    from morphgen.models.autoencoders.codecs import codec_of
    from morphgen.models.autoencoders.training import train_autoencoder
    from morphgen.models.families.brainsynth.codec import ResidualVQCodec
    from morphgen.nifti import save_volume
    from morphgen.space import Grid
    from morphgen.tsv import read_tsv

    grid, rng = Grid(4.0, (16, 24, 16)), np.random.default_rng(5)
    paths = [
        save_volume(tmp_path / f"sub-{i}.nii.gz", phantom(rng, grid.shape), grid.affine) for i in range(5)
    ]
    model_path = train_autoencoder(
        paths[:4], paths[4:], RVQ_CFG, tmp_path / "ae", seed=0, progress=False, codec=ResidualVQCodec(RVQ_CFG)
    )
    rows = read_tsv(tmp_path / "ae/loss.tsv")
    assert {"quantisation", "val_quantisation", "codes_restarted"} <= set(rows.columns)
    assert rows["codes_restarted"].sum() > 0
    model, _, network = load_autoencoder(model_path)
    assert network["kind"] == "rvq" and network["latent_shape"] == [4, 6, 4]
    model.eval()
    codec = codec_of(network, RVQ_CFG)
    images = torch.stack([torch.from_numpy(nib.load(p).get_fdata()).float() for p in paths[4:]])[:, None]
    latents = codec.latents(model, images)
    assert latents.shape == (1, 2, 2, 4, 6, 4) and latents.dtype == np.int16
    decoded = model.decoder(model.quantizer.lookup(torch.from_numpy(latents).long()))
    torch.testing.assert_close(codec.reconstruction(model, images), decoded)


def test_a_sub_code_is_a_run_of_whole_slabs_along_the_first_axis():
    from morphgen.models.families.brainsynth.family import codes_to_tokens, tokens_to_codes
    from morphgen.models.families.brainsynth.prior import subcode_examples

    codes = torch.randint(0, 50, (2, 2, 2, 6, 4, 3))  # (N, splits, depth, h, w, d)
    tokens = codes_to_tokens(codes)
    assert torch.equal(tokens_to_codes(tokens, tuple(codes.shape[1:])), codes)
    target, previous, index = subcode_examples(tokens, 3)
    assert target.shape == (6, 2 * 4 * 3 * 4) and index.tolist() == [0, 1, 2, 0, 1, 2]
    slab = codes[1, :, :, 2:4]  # the second sub-code of the second image: slices 2 and 3
    assert sorted(target[4].tolist()) == sorted(slab.flatten().tolist())
    assert torch.equal(previous[4], target[3]) and (previous[3] == -1).all()


def test_the_heldout_elbo_of_a_uniform_model_is_log_vocabulary():
    """A model that predicts every code with probability 1/V: sum_t (1/t) E[masked] log V = L log V."""
    import math

    from morphgen.models.families.brainsynth.absorbing import MaskedTokenTransformer
    from morphgen.models.families.brainsynth.prior import heldout_elbo

    model = MaskedTokenTransformer(
        vocabulary=16, length=64, steps=32, d_model=8, layers=1, heads=1, subcodes=2
    )
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    tokens = torch.randint(0, 16, (40, 128))
    assert heldout_elbo(model, tokens, strata=8, seed=0) == pytest.approx(math.log(16), rel=0.03)


def test_the_masked_prior_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Dropout on, so the random state must come back with the checkpoint too."""
    import morphgen.models.engine.loop as loop_module
    import morphgen.models.families.brainsynth.prior as prior_module
    from morphgen.models.engine.preemption import TrainingInterrupted
    from morphgen.tsv import read_tsv

    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 12, (10, 24), generator=generator).numpy()
    val = torch.randint(0, 12, (3, 24), generator=generator).numpy()
    cfg = {
        "layers": 1,
        "d_model": 16,
        "heads": 2,
        "dropout": 0.2,
        "epochs": 2,
        "batch_size": 6,
        "lr": 1e-3,
        "steps": 10,
        "subcodes": 2,
    }
    whole = prior_module.train_masked_prior(train, val, 12, cfg, tmp_path / "whole", seed=3, progress=False)

    calls = {"n": 0}

    def stop_at_the_third_step():
        calls["n"] += 1
        return 15 if calls["n"] == 3 else None

    monkeypatch.setattr(loop_module, "stop_requested", stop_at_the_third_step)
    with pytest.raises(TrainingInterrupted):
        prior_module.train_masked_prior(train, val, 12, cfg, tmp_path / "resumed", seed=3, progress=False)
    resumed = prior_module.train_masked_prior(
        train, val, 12, cfg, tmp_path / "resumed", seed=3, progress=False
    )
    a, _ = prior_module.load_masked_prior(whole)
    b, _ = prior_module.load_masked_prior(resumed)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert read_tsv(tmp_path / "whole/loss.tsv").equals(read_tsv(tmp_path / "resumed/loss.tsv"))
    assert (tmp_path / "whole/heldout.tsv").read_text() == (tmp_path / "resumed/heldout.tsv").read_text()


def test_sampled_sequences_have_every_sub_code_filled():
    from morphgen.models.families.brainsynth.absorbing import MaskedTokenTransformer
    from morphgen.models.families.brainsynth.prior import sample_sequences

    model = MaskedTokenTransformer(
        vocabulary=8, length=6, steps=12, d_model=16, layers=1, heads=2, subcodes=3
    )
    model.eval()
    tokens = sample_sequences(model, 4, torch.Generator().manual_seed(1))
    assert tokens.shape == (4, 18) and tokens.min() >= 0 and tokens.max() < 8
    again = sample_sequences(model, 4, torch.Generator().manual_seed(1))
    assert torch.equal(tokens, again)
