"""Arrays with a nibabel (RAS+) affine to ANTs images and back.

ITK/ANTs put physical points in LPS+ (x towards left, y towards posterior), nibabel in RAS+. The voxel array
is shared unchanged; only the header flips the sign of the first two world axes:
``origin = diag(-1, -1, 1) @ t`` and ``direction = diag(-1, -1, 1) @ A / spacing``.
"""

from __future__ import annotations

import ants
import numpy as np

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_ants(data: np.ndarray, affine: np.ndarray) -> ants.ANTsImage:
    """A float32 ANTs image whose physical space is the LPS twin of ``affine``'s RAS space."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _RAS_TO_LPS @ affine[:3, :3] / spacing
    origin = _RAS_TO_LPS @ affine[:3, 3]
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=origin.tolist(),
        spacing=spacing.tolist(),
        direction=direction,
    )


def ras_affine(image: ants.ANTsImage) -> np.ndarray:
    """The nibabel (RAS+) affine of an ANTs image."""
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ (np.asarray(image.direction) * np.asarray(image.spacing)[None, :])
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(image.origin)
    return affine
