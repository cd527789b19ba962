"""Dense deformation fields on a voxel grid: what the demo cohort's warps and a metamorphic model's samples
share."""

from __future__ import annotations

import numpy as np


def jacobian_determinant(displacement: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """det(I + du/dx) of the map x -> x + u(x) at every voxel (central differences, one-sided at the edges).

    ``displacement``: shape ``(3, *shape)``, component k along array axis k, in the units of ``spacing``.
    Above 1 the map expands tissue there, below 1 it shrinks it; at or below 0 it folds."""
    grads = [np.gradient(np.asarray(displacement[k], dtype=np.float64), spacing) for k in range(3)]
    jac = np.empty((*displacement.shape[1:], 3, 3), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            jac[..., i, j] = grads[i][j] + (1.0 if i == j else 0.0)
    return np.linalg.det(jac)
