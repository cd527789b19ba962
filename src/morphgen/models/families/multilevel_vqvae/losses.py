"""Seed 003's reconstruction losses: the Baur loss and Barron's adaptive robust loss on the 3D DCT of the
residual.

* :func:`baur_loss`: L1 and L2 of the residual, plus L1 and L2 of the difference of the images' spatial
  gradients (forward differences). Means over voxels, the L2 terms squared, so the terms share a scale
  whatever the grid; the port sums them per sample instead, which makes its commitment terms negligible.
* :func:`robust_rho`: Barron's (2019) general loss ``rho(x, alpha, c)``, with its closed forms at
  ``alpha = 0`` (Cauchy), ``1`` (Charbonnier) and ``2`` (L2) and a numerically stable form elsewhere.
* :func:`log_partition`: ``log Z(alpha)`` of the distribution ``exp(-rho(x, alpha, 1)) / Z(alpha)``, from a
  table built once by numerical integration over ``alpha`` in [0, 2] and interpolated (Barron's package,
  which ships a spline table, is not on PyPI).
* :class:`AdaptiveDCTLoss`: the negative log-likelihood ``rho(r, alpha, c) + log c + log Z(alpha)`` of each
  DCT coefficient ``r`` of the residual, with its own shape ``alpha`` and scale ``c`` learnt per coefficient
  (the paper); ``learn=False`` keeps ``alpha = 1, c = 1``, the fixed Charbonnier the port trains with.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate

from morphgen.models.families.multilevel_vqvae.dct import dct3

ALPHA_RANGE = (0.001, 1.999)  # Barron's default range for a learnt shape
SCALE_MIN = 1e-5
TABLE_POINTS = 1025


def _spatial_gradients(x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.diff(x, dim=axis) for axis in (-3, -2, -1)]


def baur_loss(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """``mean|r| + mean r² + sum over axes of (mean|∇r| + mean (∇r)²)``, ``r`` the residual."""
    if x.shape != reconstruction.shape:
        raise ValueError(f"image {tuple(x.shape)} and reconstruction {tuple(reconstruction.shape)} differ")
    r = reconstruction - x
    loss = r.abs().mean() + r.pow(2).mean()
    for g in _spatial_gradients(r):
        loss = loss + g.abs().mean() + g.pow(2).mean()
    return loss


def robust_rho(x: torch.Tensor, alpha: torch.Tensor | float, scale: torch.Tensor | float) -> torch.Tensor:
    """Barron's general robust loss of ``x`` with shape ``alpha`` (>= 0 here) and scale ``scale`` (> 0)."""
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    z2 = (x / scale) ** 2
    # away from 0 and 2: (|a-2|/a) ((z²/|a-2| + 1)^(a/2) - 1), through expm1/log1p for accuracy
    a = torch.where((alpha == 0) | (alpha == 2), torch.ones_like(alpha), alpha)
    b = (a - 2).abs()
    general = (b / a) * torch.expm1(0.5 * a * torch.log1p(z2 / b))
    cauchy = torch.log1p(0.5 * z2)
    l2 = 0.5 * z2
    return torch.where(alpha == 0, cauchy, torch.where(alpha == 2, l2, general))


def _rho_scalar(x: float, alpha: float) -> float:
    """:func:`robust_rho` at scale 1 for one float (the integrand of the partition function)."""
    z2 = x * x
    if alpha == 0:
        return math.log1p(0.5 * z2)
    if alpha == 2:
        return 0.5 * z2
    b = abs(alpha - 2)
    return (b / alpha) * math.expm1(0.5 * alpha * math.log1p(z2 / b))


@lru_cache(maxsize=1)
def _log_partition_table() -> tuple[np.ndarray, np.ndarray]:
    alphas = np.linspace(0.0, 2.0, TABLE_POINTS)
    values = []
    for alpha in alphas:
        half, _ = integrate.quad(
            lambda x, a=float(alpha): math.exp(-_rho_scalar(x, a)), 0.0, math.inf, limit=200
        )
        values.append(math.log(2.0 * half))
    return alphas, np.asarray(values)


def log_partition(alpha: torch.Tensor) -> torch.Tensor:
    """``log Z(alpha)``, ``Z(alpha) = integral of exp(-rho(x, alpha, 1)) dx``, for ``alpha`` in [0, 2].

    Piecewise linear in ``alpha`` between the table's points (differentiable in ``alpha``)."""
    grid, values = _log_partition_table()
    if bool(((alpha < 0) | (alpha > 2)).any()):
        raise ValueError("log_partition is tabulated for alpha in [0, 2]")
    step = float(grid[1] - grid[0])
    position = alpha / step
    low = position.floor().clamp(max=len(grid) - 2).long()
    frac = position - low.to(alpha.dtype)
    table = torch.as_tensor(values, dtype=alpha.dtype, device=alpha.device)
    return table[low] * (1 - frac) + table[low + 1] * frac


class AdaptiveDCTLoss(torch.nn.Module):
    """Barron's adaptive loss on the orthonormal 3D DCT of the residual, one shape and scale per coefficient.

    ``shape``: the spatial shape ``(X, Y, Z)`` of the volumes. The shape parameters live in
    ``ALPHA_RANGE`` through a sigmoid, the scales above ``SCALE_MIN`` through a softplus, both starting at
    ``alpha = 1, c = 1`` as Barron's do; they are parameters of this module, so the optimiser learns them and
    the checkpoint keeps them. ``learn=False`` freezes them there (the port's fixed Charbonnier).
    """

    def __init__(self, shape: tuple[int, int, int], learn: bool = True) -> None:
        super().__init__()
        lo, hi = ALPHA_RANGE
        alpha0 = math.log((1.0 - lo) / (hi - 1.0))  # sigmoid^-1 of (1 - lo) / (hi - lo)
        scale0 = math.log(math.expm1(1.0 - SCALE_MIN))  # softplus^-1 of 1 - SCALE_MIN
        self.alpha_latent = torch.nn.Parameter(torch.full(tuple(shape), alpha0), requires_grad=learn)
        self.scale_latent = torch.nn.Parameter(torch.full(tuple(shape), scale0), requires_grad=learn)

    def alpha(self) -> torch.Tensor:
        lo, hi = ALPHA_RANGE
        return lo + (hi - lo) * torch.sigmoid(self.alpha_latent)

    def scale(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.scale_latent) + SCALE_MIN

    def forward(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean over coefficients and batch of ``rho(r, alpha, c) + log c + log Z(alpha)``."""
        if x.shape != reconstruction.shape or tuple(x.shape[-3:]) != tuple(self.alpha_latent.shape):
            raise ValueError(
                f"image {tuple(x.shape)} and reconstruction {tuple(reconstruction.shape)} must both end in "
                f"the loss's shape {tuple(self.alpha_latent.shape)}"
            )
        r = dct3((reconstruction - x).float())
        alpha, scale = self.alpha(), self.scale()
        nll = robust_rho(r, alpha, scale) + torch.log(scale) + log_partition(alpha)
        return nll.mean()
