"""The orthonormal 3D DCT-II of a volume (and its inverse), as three matrix products, one per spatial axis.

Seed 003 puts its adaptive loss on the 3D DCT of the residual. The authors' port permutes the volume so that
its "3D" DCT is a per-slice 2D one; this is the separable transform over all three axes, equal to
``scipy.fft.dctn(x, type=2, norm="ortho")``. The matrices are orthonormal, so the inverse is the transpose.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=16)
def _dct_matrix_cpu(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def dct_matrix(
    n: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The ``n x n`` orthonormal DCT-II matrix ``M``: ``M @ x`` transforms a length-``n`` signal."""
    if n < 1:
        raise ValueError(f"a DCT needs at least one sample, got {n}")
    return _dct_matrix_cpu(int(n)).to(dtype=dtype, device=device)


def _along_axes(x: torch.Tensor, transpose: bool) -> torch.Tensor:
    if x.dim() < 3:
        raise ValueError(f"a 3D DCT needs at least 3 dimensions (..., X, Y, Z), got shape {tuple(x.shape)}")
    for axis in (-3, -2, -1):
        m = dct_matrix(x.shape[axis], x.dtype, x.device)
        if transpose:
            m = m.T
        x = torch.movedim(torch.movedim(x, axis, -1) @ m.T, -1, axis)
    return x


def dct3(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II over the last three axes of ``x`` (``(..., X, Y, Z)``)."""
    return _along_axes(x, transpose=False)


def idct3(coefficients: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`dct3` (orthonormal DCT-III over the last three axes)."""
    return _along_axes(coefficients, transpose=True)
