"""A Gaussian over a sub-population's encoded means, with Ledoit-Wolf shrinkage of its covariance.

Seed 001 samples z ~ N(0, I) and has no per-sub-population prior. To give each sub-population its own
samples, as the pipeline's evaluation asks, a Gaussian is fitted to the means its training subjects encode to.
A few dozen subjects in hundreds of dimensions make the sample covariance singular; Ledoit and Wolf's (2004)
shrinkage towards a scaled identity, with the weight estimated from the data, keeps it well conditioned.
"""

from __future__ import annotations

import math

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, covariance, shrinkage) of the rows of ``x`` (n, p): (1 - s) S + s (tr S / p) I, with S the
    maximum-likelihood covariance and s Ledoit and Wolf's estimate of the best weight (in [0, 1])."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    mean = x.mean(0)
    xc = x - mean
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    if n < 2 or mu == 0:
        return mean, np.eye(p) * max(mu, 1.0), 1.0
    target = mu * np.eye(p)
    delta = np.sum((s - target) ** 2) / p  # distance of S from the target
    # how far S is from the true covariance: the spread of the outer products around S
    x2 = xc**2
    beta = (np.sum(x2.T @ x2) / n - np.sum(s**2)) / (p * n)
    shrinkage = 1.0 if delta == 0 else float(min(max(beta, 0.0), delta) / delta)
    return mean, (1.0 - shrinkage) * s + shrinkage * target, shrinkage


class Gaussian:
    """N(mean, cov), through its Cholesky factor."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.chol = np.linalg.cholesky(self.cov)
        self.log_det = 2.0 * float(np.log(np.diag(self.chol)).sum())

    @property
    def dim(self) -> int:
        return len(self.mean)

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log N(z; mean, cov) of each row of ``z``."""
        from scipy.linalg import solve_triangular

        white = solve_triangular(self.chol, (np.atleast_2d(z) - self.mean).T, lower=True)
        return -0.5 * (self.dim * LOG_2PI + self.log_det + (white**2).sum(0))

    def nll_per_dim(self, z: np.ndarray) -> float:
        return float(-self.log_density(z).mean() / self.dim)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean + rng.standard_normal((n, self.dim)) @ self.chol.T


def standard_normal(dim: int) -> Gaussian:
    return Gaussian(np.zeros(dim), np.eye(dim))
