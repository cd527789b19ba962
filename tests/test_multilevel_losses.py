"""Seed 003's losses and schedule: the orthonormal 3D DCT, Barron's robust loss and its partition function
against their closed forms, the adaptive loss's learnt parameters, the Baur loss and TF-style SGDR."""

import math

import numpy as np
import pytest
import scipy.fft
import torch
from scipy.special import k1

from morphgen.models.engine.schedules import sgdr_factor
from morphgen.models.families.multilevel_vqvae.dct import dct3, dct_matrix, idct3
from morphgen.models.families.multilevel_vqvae.losses import (
    AdaptiveDCTLoss,
    baur_loss,
    log_partition,
    robust_rho,
)


def test_the_3d_dct_is_orthonormal_equals_scipy_and_inverts():
    for n in (1, 5, 8):
        m = dct_matrix(n, torch.float64)
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64))
    x = torch.randn(2, 1, 6, 8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    c = dct3(x)
    np.testing.assert_allclose(c.numpy(), scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(2, 3, 4)))
    torch.testing.assert_close(idct3(c), x)
    assert float((c**2).sum()) == pytest.approx(float((x**2).sum()))  # Parseval: energy kept
    # all three axes: a per-slice 2D DCT (the port's) leaves the first axis untransformed and differs
    assert not np.allclose(c.numpy(), scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(3, 4)))


def test_barrons_rho_equals_its_closed_forms():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    c = 0.7
    z2 = (x / c) ** 2
    torch.testing.assert_close(robust_rho(x, 2.0, c), 0.5 * z2)
    torch.testing.assert_close(robust_rho(x, 0.0, c), torch.log(0.5 * z2 + 1))
    torch.testing.assert_close(robust_rho(x, 1.0, c), torch.sqrt(z2 + 1) - 1)
    # the general form runs continuously into the closed ones
    torch.testing.assert_close(robust_rho(x, 2.0 - 1e-6, c), 0.5 * z2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(robust_rho(x, 1e-6, c), torch.log(0.5 * z2 + 1), rtol=1e-4, atol=1e-6)
    # per-element shapes, as the adaptive loss uses them
    alphas = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    got = robust_rho(torch.full((3,), 1.5, dtype=torch.float64), alphas, 1.0)
    torch.testing.assert_close(
        got, torch.tensor([math.log1p(1.125), math.sqrt(3.25) - 1, 1.125], dtype=torch.float64)
    )


def test_the_partition_function_at_its_closed_forms():
    alpha = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    expected = [math.log(math.pi * math.sqrt(2)), math.log(2 * math.e * k1(1.0)), 0.5 * math.log(2 * math.pi)]
    torch.testing.assert_close(log_partition(alpha), torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha in"):
        log_partition(torch.tensor([2.5]))


def test_the_adaptive_loss_starts_at_charbonnier_and_learns_per_coefficient():
    torch.manual_seed(0)
    shape = (4, 6, 4)
    x = torch.rand(3, 1, *shape)
    # the residual's low frequencies are large, the rest small: the learnt scales must follow
    big = torch.zeros(shape)
    big[0, 0, 0] = 1.0
    noise = 0.01 * torch.randn(3, 1, *shape)
    recon = x + idct3(noise + 2.0 * big)
    loss = AdaptiveDCTLoss(shape)
    torch.testing.assert_close(loss.alpha(), torch.ones(shape), atol=1e-6, rtol=0)
    torch.testing.assert_close(loss.scale(), torch.ones(shape), atol=1e-6, rtol=0)
    r = dct3(recon - x)
    expected = (torch.sqrt(r**2 + 1) - 1 + math.log(2 * math.e * k1(1.0))).mean()
    torch.testing.assert_close(loss(x, recon), expected, atol=1e-4, rtol=1e-4)
    optimiser = torch.optim.Adam(loss.parameters(), lr=0.05)
    start = loss(x, recon).item()
    for _ in range(200):
        optimiser.zero_grad()
        value = loss(x, recon)
        value.backward()
        optimiser.step()
    assert value.item() < start - 1.0
    scale = loss.scale().detach()
    assert scale[0, 0, 0] > 10 * scale.flatten()[1:].median()  # the large coefficient got a large scale
    state = loss.state_dict()  # what the checkpoint keeps
    restored = AdaptiveDCTLoss(shape)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored(x, recon), loss(x, recon))
    fixed = AdaptiveDCTLoss(shape, learn=False)  # the port's fixed Charbonnier
    assert not any(p.requires_grad for p in fixed.parameters())


def test_the_baur_loss_sees_residuals_and_their_gradients():
    x = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    assert float(baur_loss(x, x)) == 0.0
    # a constant offset has no gradient: only the image terms, |c| + c²
    assert float(baur_loss(x, x + 0.1)) == pytest.approx(0.1 + 0.01, rel=1e-5)
    # a checkerboard of the same size adds the gradient terms
    board = torch.from_numpy((np.indices((6, 6, 6)).sum(axis=0) % 2).astype(np.float32))
    assert float(baur_loss(x, x + 0.1 * board)) > 0.1 * 0.5 + 0.01 * 0.5 + 3 * (0.1 + 0.01) - 1e-5


def test_sgdr_follows_tensorflows_cosine_decay_restarts():
    first, t_mul, m_mul, alpha = 100, 1.25, 0.95, 1e-3
    assert sgdr_factor(0, first, t_mul, m_mul, alpha) == pytest.approx(1.0)
    assert sgdr_factor(50, first, t_mul, m_mul, alpha) == pytest.approx(0.5 * (1 - alpha) + alpha)
    assert sgdr_factor(99, first, t_mul, m_mul, alpha) < 0.01
    # the second period: starts at m_mul, lasts first * t_mul steps, its midpoint halfway down
    assert sgdr_factor(100, first, t_mul, m_mul, alpha) == pytest.approx((1 - alpha) * m_mul + alpha)
    assert sgdr_factor(100 + 62.5, first, t_mul, m_mul, alpha) == pytest.approx(
        (1 - alpha) * m_mul / 2 + alpha
    )
    assert sgdr_factor(225, first, t_mul, m_mul, alpha) == pytest.approx((1 - alpha) * m_mul**2 + alpha)
    # t_mul 1: equal periods
    assert sgdr_factor(300, 100, 1.0, 0.5) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="at least one step"):
        sgdr_factor(0, 0)


def test_the_autoencoder_trainer_follows_sgdr_when_asked():
    from morphgen.errors import ConfigError
    from morphgen.models.autoencoders.training import TrainingSettings

    base = {
        "epochs": 1,
        "batch_size": 1,
        "lr": 0.01,
        "lr_decay": 0.9,
        "disc_lr": 0.0,
        "l1_weight": 1.0,
        "fft_weight": 0.0,
        "adversarial_weight": 0.0,
        "adversarial_start_epoch": 0,
    }
    sgdr = {"first_steps": 4, "t_mul": 2.0, "m_mul": 0.5, "alpha": 0.01}
    settings = TrainingSettings.from_config({**base, "lr_schedule": "sgdr", "sgdr": sgdr})
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = settings.scheduler(optimiser)
    lrs = []
    for _ in range(12):
        lrs.append(scheduler.get_last_lr()[0])
        optimiser.step()
        scheduler.step()
    assert lrs == pytest.approx([0.01 * sgdr_factor(s, **sgdr) for s in range(12)])
    assert lrs[4] == pytest.approx(0.01 * (0.99 * 0.5 + 0.01))  # the first restart, at half height
    exponential = TrainingSettings.from_config(base).scheduler(optimiser)  # the default: lr_decay per step
    assert isinstance(exponential, torch.optim.lr_scheduler.ExponentialLR) and exponential.gamma == 0.9
    with pytest.raises(ConfigError, match="model.autoencoder.lr_schedule"):
        TrainingSettings.from_config({**base, "lr_schedule": "cosine"})
    with pytest.raises(ConfigError, match="model.autoencoder.sgdr needs first_steps"):
        TrainingSettings.from_config({**base, "lr_schedule": "sgdr", "sgdr": {"t_mul": 2.0}})
