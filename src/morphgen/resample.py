"""Resampling a voxel array between two affines (both voxel -> the same world mm)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def resample_array(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """``data`` (on ``src_affine``) sampled on the grid ``dst_affine`` / ``dst_shape``.

    Going to coarser voxels with ``order`` > 0, the source is first smoothed along each axis (FWHM = the size
    ratio), so that probability maps keep their sums rather than being point-sampled.
    """
    src = np.asarray(data, dtype=np.float32)
    mapping = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(
        dst_affine, dtype=np.float64
    )
    if order > 0:
        # size of one destination voxel measured in source voxels, per source axis
        ratio = np.linalg.norm(mapping[:3, :3], axis=1)
        sigma = np.where(ratio > 1.0 + 1e-6, ratio / 2.355, 0.0)
        if np.any(sigma > 0):
            src = ndi.gaussian_filter(src, sigma=sigma)
    if np.allclose(mapping, np.eye(4)) and tuple(dst_shape) == src.shape:
        return src.copy()
    out = ndi.affine_transform(
        src,
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=tuple(dst_shape),
        order=order,
        mode="constant",
        cval=cval,
    )
    return out.astype(np.float32)
