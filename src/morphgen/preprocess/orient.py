"""Reorientation of native volumes to RAS+ axis order."""

from __future__ import annotations

import nibabel as nib


def axcodes(img: nib.spatialimages.SpatialImage) -> str:
    """Orientation of the stored voxel axes, e.g. ``'LAS'`` or ``'RAS'``."""
    return "".join(nib.aff2axcodes(img.affine))


def to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Permute and flip the voxel axes so that they point to R, A and S; the world image is unchanged.

    Only axis order and direction change (no resampling): an oblique acquisition keeps its rotation in the
    affine, which the registration to MNI then absorbs.
    """
    return nib.as_closest_canonical(img)
