"""MNI152 tissue priors and the lateral-ventricle region on the voxel grid of any image in MNI space."""

from __future__ import annotations

import functools

import numpy as np

from morphgen.resample import resample_array, voxel_sizes
from morphgen.space import MNI_BRAIN_CENTER_MM, Grid
from morphgen.templates import mni_tissue_priors, ventricle_roi

# extent (mm) of the region the priors are computed on before resampling to an image that is not on a Grid
_ATLAS_EXTENT_MM = (200.0, 240.0, 200.0)


def grid_of(affine: np.ndarray, shape: tuple[int, int, int]) -> Grid | None:
    """The :class:`Grid` whose affine is ``affine`` (isotropic, axis-aligned, RAS), or None."""
    affine = np.asarray(affine, dtype=np.float64)
    size = float(affine[0, 0])
    if size <= 0 or not np.allclose(affine[:3, :3], np.diag([size] * 3), atol=1e-5 * size):
        return None
    center = affine[:3, :3] @ ((np.asarray(shape, dtype=float) - 1.0) / 2.0) + affine[:3, 3]
    grid = Grid(round(size, 6), tuple(int(s) for s in shape), tuple(round(float(c), 6) for c in center))
    return grid if np.allclose(grid.affine, affine, atol=1e-4) else None


@functools.lru_cache(maxsize=4)
def _atlas_grid(voxel_size: float) -> Grid:
    shape = tuple(int(np.ceil(e / voxel_size)) for e in _ATLAS_EXTENT_MM)
    return Grid(voxel_size, shape, MNI_BRAIN_CENTER_MM)


def mni_atlas(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(``csf``/``gm``/``wm`` prior maps, lateral-ventricle region as bool) on the grid ``affine``/``shape``.

    On a morphgen working grid these are morphgen.templates' maps; any other affine (another orientation,
    oblique, anisotropic voxels) gets them resampled from a grid of about the same voxel size.
    """
    grid = grid_of(affine, shape)
    if grid is not None:
        return mni_tissue_priors(grid), ventricle_roi(grid)
    src = _atlas_grid(round(float(np.mean(voxel_sizes(affine))), 3))
    priors = {
        k: np.clip(resample_array(v, src.affine, affine, shape, order=1), 0.0, 1.0)
        for k, v in mni_tissue_priors(src).items()
    }
    roi = resample_array(ventricle_roi(src).astype(np.float32), src.affine, affine, shape, order=1) > 0.5
    return priors, roi
