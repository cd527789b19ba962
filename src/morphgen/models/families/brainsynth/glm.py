"""Seed 002's stage II split: the quantised latent Q = P m + r, with m the z-scored covariates (no intercept,
so that r keeps the codebook's mean) and P their least-squares fit over the training subjects.

The fit is exact and streams: it accumulates sums over subjects (n, sum of x, x xᵀ, x qᵀ, q) in float64, and
the z-scoring is applied to those sums when solving, so a cohort of any size passes through once.
"""

from __future__ import annotations

import torch


class StreamingGLM:
    """Least squares of ``n_features`` latent values on ``n_covariates`` z-scored covariates."""

    def __init__(self, n_covariates: int, n_features: int):
        self.n = 0
        self.sum_x = torch.zeros(n_covariates, dtype=torch.float64)
        self.sum_xx = torch.zeros(n_covariates, n_covariates, dtype=torch.float64)
        self.sum_xq = torch.zeros(n_covariates, n_features, dtype=torch.float64)
        self.sum_q = torch.zeros(n_features, dtype=torch.float64)
        self.mean: torch.Tensor | None = None
        self.sd: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None  # P: (n_covariates, n_features)

    def add(self, covariates: torch.Tensor, latents: torch.Tensor) -> None:
        """Accumulate subjects: ``covariates`` (n, p) in their own units, ``latents`` (n, ...) flattened."""
        x = covariates.to(torch.float64).reshape(len(covariates), -1)
        q = latents.to(torch.float64).reshape(len(latents), -1)
        if len(x) != len(q):
            raise ValueError(f"{len(x)} rows of covariates for {len(q)} latents")
        self.n += len(x)
        self.sum_x += x.sum(0)
        self.sum_xx += x.T @ x
        self.sum_xq += x.T @ q
        self.sum_q += q.sum(0)

    def solve(self) -> torch.Tensor:
        """P from the accumulated sums; also sets the covariates' mean and sd (population) used to z-score."""
        if self.n < 2:
            raise ValueError(f"the GLM needs at least 2 subjects, got {self.n}")
        mean = self.sum_x / self.n
        variance = torch.diagonal(self.sum_xx) / self.n - mean**2
        if (variance <= 1e-12).any():
            constant = torch.nonzero(variance <= 1e-12).flatten().tolist()
            raise ValueError(f"covariate(s) {constant} do not vary over the training subjects")
        sd = variance.sqrt()
        zz = (self.sum_xx - self.n * torch.outer(mean, mean)) / torch.outer(sd, sd)
        zq = (self.sum_xq - torch.outer(mean, self.sum_q)) / sd[:, None]
        self.mean, self.sd = mean, sd
        self.weights = torch.linalg.solve(zz, zq)
        return self.weights

    def standardise(self, covariates: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("solve() the GLM first")
        x = covariates.to(torch.float64).reshape(len(covariates), -1)
        return (x - self.mean) / self.sd

    def metadata_part(self, covariates: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """P m for each row of covariates, as latents of ``shape`` (float32)."""
        part = self.standardise(covariates) @ self.weights
        return part.reshape(len(covariates), *shape).float()

    def residual(self, covariates: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """r = Q - P m."""
        return latents - self.metadata_part(covariates, tuple(latents.shape[1:])).to(latents.dtype)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "weights": self.weights, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.sd, self.weights, self.n = state["mean"], state["sd"], state["weights"], state["n"]
