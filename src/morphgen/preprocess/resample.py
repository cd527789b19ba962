"""Resampling of native volumes onto the working grid through the MNI-to-native affine."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from morphgen.resample import voxel_sizes
from morphgen.space import Grid


def antialias_sigma(native_affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Gaussian sigma (native voxels, per axis) before downsampling to ``grid``.

    Same rule as :func:`morphgen.resample.resample_array` (sigma = ratio / 2.355 when ratio > 1), so the
    subject and the MNI reference on the grid carry the same blur.
    """
    ratio = grid.voxel_size / voxel_sizes(native_affine)
    return np.where(ratio > 1.0, ratio / 2.355, 0.0)


def native_to_grid(
    data: np.ndarray,
    native_affine: np.ndarray,
    mni_to_native: np.ndarray,
    grid: Grid,
    order: int = 1,
    antialias: bool = True,
) -> np.ndarray:
    """Sample the native volume ``data`` at the MNI points of every ``grid`` voxel.

    The grid is the target: whatever lies outside it is cropped, missing parts are zero.
    """
    src = np.asarray(data, dtype=np.float32)
    if antialias:
        sigma = antialias_sigma(native_affine, grid)
        if np.any(sigma > 0):
            src = ndi.gaussian_filter(src, sigma=sigma)
    # grid voxel -> MNI mm -> native mm -> native voxel
    mapping = np.linalg.inv(native_affine) @ np.asarray(mni_to_native, dtype=float) @ grid.affine
    out = ndi.affine_transform(
        src, mapping[:3, :3], offset=mapping[:3, 3], output_shape=grid.shape, order=order, mode="constant"
    )
    return out.astype(np.float32)


def mask_to_grid(
    mask: np.ndarray, native_affine: np.ndarray, mni_to_native: np.ndarray, grid: Grid
) -> np.ndarray:
    """Native mask on ``grid``: the smoothed mask resampled linearly, then thresholded at one half."""
    frac = native_to_grid(mask.astype(np.float32), native_affine, mni_to_native, grid, order=1)
    return frac >= 0.5
