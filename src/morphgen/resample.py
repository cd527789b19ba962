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
    mapping = _voxel_mapping(src_affine, dst_affine)
    sigma, _ = _smoothing(mapping, order)
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


def _voxel_mapping(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """Destination voxel -> source voxel."""
    return np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)


def _smoothing(mapping: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """The smoothing of :func:`resample_array` per source axis (none unless ``order`` > 0 and the destination
    voxels are coarser), and how many source voxels it and the interpolation reach: gaussian_filter's
    4 sigma (its truncate), and a margin for linear interpolation."""
    # size of one destination voxel measured in source voxels, per source axis
    ratio = np.linalg.norm(mapping[:3, :3], axis=1)
    sigma = np.where(ratio > 1.0 + 1e-6, ratio / 2.355, 0.0) if order > 0 else np.zeros(3)
    return sigma, np.ceil(4.0 * sigma).astype(int) + 3


def local_reach(src_affine: np.ndarray, dst_affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Source voxels around a non-zero voxel that :func:`resample_local` reads, per axis: a crop padded by
    this much gives it the same result as the whole volume."""
    return _smoothing(_voxel_mapping(src_affine, dst_affine), order)[1]


def resample_local(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    order: int = 1,
) -> np.ndarray:
    """:func:`resample_array` (``cval`` 0) for a volume that is zero outside a small box, such as one region
    of an atlas: only the box, padded by the smoothing kernel's reach, is smoothed and sampled.

    The result equals ``resample_array``'s: outside the padded box both are zero. Nearest and linear
    interpolation only: a spline's prefilter reaches the whole volume.
    """
    if order > 1:
        raise ValueError(f"resample_local interpolates with order 0 or 1, not {order}")
    src = np.asarray(data, dtype=np.float32)
    nonzero = np.nonzero(src)
    out = np.zeros(tuple(dst_shape), dtype=np.float32)
    if len(nonzero[0]) == 0:
        return out
    mapping = _voxel_mapping(src_affine, dst_affine)
    sigma, pad = _smoothing(mapping, order)
    lo = np.maximum(np.array([a.min() for a in nonzero]) - pad, 0)
    hi = np.minimum(np.array([a.max() for a in nonzero]) + pad + 1, src.shape)
    crop = src[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    if np.any(sigma > 0):
        crop = ndi.gaussian_filter(crop, sigma=sigma)
    # the destination voxels whose source position falls inside the crop
    corners = np.array(np.meshgrid(*[[a, b - 1] for a, b in zip(lo, hi, strict=True)], indexing="ij"))
    corners = corners.reshape(3, -1)
    to_dst = np.linalg.inv(mapping)
    ijk = to_dst[:3, :3] @ corners + to_dst[:3, 3:]
    d_lo = np.maximum(np.floor(ijk.min(axis=1)).astype(int) - 1, 0)
    d_hi = np.minimum(np.ceil(ijk.max(axis=1)).astype(int) + 2, dst_shape)
    if np.any(d_hi <= d_lo):
        return out
    # destination voxel d_lo + k maps to source mapping @ (d_lo + k), i.e. crop index that minus lo
    offset = mapping[:3, :3] @ d_lo + mapping[:3, 3] - lo
    box = tuple(slice(a, b) for a, b in zip(d_lo, d_hi, strict=True))
    out[box] = ndi.affine_transform(
        crop,
        mapping[:3, :3],
        offset=offset,
        output_shape=tuple(int(b - a) for a, b in zip(d_lo, d_hi, strict=True)),
        order=order,
        mode="constant",
        cval=0.0,
    )
    return out
