"""Partial-volume tissue fractions from one T1 intensity per voxel and a spatial prior (a mixel model).

Why: at 4 mm (and, for CSF, even at 1 mm) most tissue lies in voxels that mix classes. A classifier's
posteriors count a 50/50 CSF/WM ventricle wall (intensity = GM) as GM and a thin sulcus as GM, so CSF and
ventricle volumes come out wrong and barely respond to enlarged ventricles.

Model (Santago & Gage 1993; Shattuck et al. 2001; Tohka et al. 2004, with a spatial prior): every voxel is
either pure class k, with intensity ~ N(mu_k, sigma^2), or a mixel of two classes a/b with a fraction
t ~ U(0, 1) and intensity ~ N((1 - t) mu_a + t mu_b, sigma^2). Classes are background (mu = 0, only allowed
where the caller says: the rim of the brain mask), CSF, GM and WM. A configuration's prior is
``(1 - w) s_k`` for pure k and ``2 w sqrt(s_a s_b)`` for a mixel, where ``s`` is the spatial prior of the
classes at that voxel (e.g. atlas and posterior), so that which classes may mix is decided by anatomy and the
fraction by intensity. The expected fractions given the intensity are summed over configurations.
Tissue means and sigma are re-estimated by EM-like steps (means by least squares of intensity on the expected
fractions, sigma from the pure voxels).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import special

CLASSES = ("background", "csf", "gm", "wm")
_PAIRS = tuple(combinations(range(len(CLASSES)), 2))
_SQRT2 = np.sqrt(2.0)
_EPS = 1e-12


@dataclass
class PartialVolumeFit:
    fractions: np.ndarray  # (4, n): background, csf, gm, wm; each column sums to 1
    means: np.ndarray  # (4,): background (0), csf, gm, wm
    sigma: float


def _pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


def _cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * special.erfc(-z / _SQRT2)


def _mixel(x: np.ndarray, mu_lo: float, mu_hi: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Likelihood of x for a lo/hi mixel with a uniform fraction, and E[fraction of hi | x]."""
    span = max(mu_hi - mu_lo, 1e-3)
    lik = np.clip(_cdf((x - mu_lo) / sigma) - _cdf((x - mu_hi) / sigma), _EPS, None) / span
    # t | x is a normal N((x - mu_lo) / span, (sigma / span)^2) truncated to [0, 1]
    m, s = (x - mu_lo) / span, sigma / span
    a, b = -m / s, (1.0 - m) / s
    z = np.clip(_cdf(b) - _cdf(a), _EPS, None)
    t = np.clip(m + s * (_pdf(a) - _pdf(b)) / z, 0.0, 1.0)
    return lik, t


def _expected_fractions(
    x: np.ndarray, prior: np.ndarray, means: np.ndarray, sigma: float, mix_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected fractions (4, n) and the responsibility of each pure class (4, n)."""
    n_cls = len(CLASSES)
    pure = np.empty((n_cls, x.size))
    for k in range(n_cls):
        pure[k] = (1.0 - mix_weight) * prior[k] * _pdf((x - means[k]) / sigma) / sigma
    fractions = pure.copy()
    total = pure.sum(axis=0)
    for a, b in _PAIRS:
        lo, hi = (a, b) if means[a] <= means[b] else (b, a)
        lik, t = _mixel(x, means[lo], means[hi], sigma)
        weight = 2.0 * mix_weight * np.sqrt(prior[a] * prior[b]) * lik
        fractions[hi] += weight * t
        fractions[lo] += weight * (1.0 - t)
        total += weight
    total = np.clip(total, 1e-300, None)
    return fractions / total, pure / total


def fit_partial_volume(
    intensity: np.ndarray,
    prior: np.ndarray,
    means: tuple[float, float, float],
    sigma: float = 0.05,
    mix_weight: float = 0.5,
    n_iter: int = 8,
    min_sigma: float = 0.005,
    affine: bool = False,
) -> PartialVolumeFit:
    """Fit the mixel model to the voxels ``intensity`` (n,) with spatial prior ``prior`` (4, n).

    ``prior`` rows are background, csf, gm, wm (need not be normalised; background 0 where the brain cannot
    end). ``means`` are starting csf, gm, wm intensities (background is fixed at 0). With ``affine``, the
    tissue means stay ``a + b * means`` (b > 0): the image's contrast is fitted as an affine map of the given
    one, so the tissues keep their order however smooth the image is.
    """
    x = np.asarray(intensity, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    mu = np.concatenate([[0.0], np.asarray(means, dtype=np.float64)])
    anchor = mu[1:].copy()
    for it in range(n_iter):
        fractions, pure = _expected_fractions(x, prior, mu, sigma, mix_weight)
        if it == n_iter - 1:
            break
        # x ~ sum_k f_k mu_k with mu_bg = 0: normal equations of the three tissue means
        f = fractions[1:]
        if affine:  # x ~ a * sum_k f_k + b * sum_k f_k anchor_k
            design = np.stack([f.sum(axis=0), anchor @ f])
            gram = design @ design.T
            if np.linalg.cond(gram) < 1e8:
                a, b = np.linalg.solve(gram, design @ x)
                if b > 0:
                    mu[1:] = a + b * anchor
        else:
            gram = f @ f.T
            if np.linalg.cond(gram) < 1e8:
                mu[1:] = np.linalg.solve(gram, f @ x)
        w = pure[1:]
        resid = sum(float(np.sum(w[k] * (x - mu[k + 1]) ** 2)) for k in range(3))
        sigma = max(np.sqrt(resid / max(float(w.sum()), 1.0)), min_sigma)
    return PartialVolumeFit(fractions=fractions, means=mu, sigma=float(sigma))
