"""What a segmentation back-end returns, the interface every back-end implements, and the factory."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from morphgen.errors import ConfigError

TISSUES = ("csf", "gm", "wm")
# values of Segmentation.labels
TISSUE_LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3}
# volumes every back-end reports (ml); ventricles is NaN when a back-end cannot measure it
CORE_VOLUMES = ("gm", "wm", "csf", "ventricles", "brain")


@dataclass
class Segmentation:
    """Tissue segmentation of one image, on that image's voxel grid.

    probabilities: ``csf``, ``gm``, ``wm`` maps in [0, 1] (the back-end's posteriors).
    labels: uint8, 0 background, 1 csf, 2 gm, 3 wm.
    volumes_ml: ``gm``, ``wm``, ``csf``, ``ventricles`` (NaN if not measured), ``brain`` (gm + wm),
    then any regional volumes of the back-end, all in ml of the image's space (MNI for morphgen's grids).
    fractions: partial-volume fractions the volumes were summed from, when the back-end estimates them.
    intensities: the tissue intensities the fractions were unmixed with (``csf``, ``gm``, ``wm`` and the
    noise ``sigma``), when the back-end models intensity.
    """

    probabilities: dict[str, np.ndarray]
    labels: np.ndarray
    volumes_ml: dict[str, float]
    fractions: dict[str, np.ndarray] | None = field(default=None)
    intensities: dict[str, float] | None = field(default=None)


class Segmenter(abc.ABC):
    """A segmentation back-end: a preprocessed T1 (skull-stripped, [0, 1]) in, a :class:`Segmentation` out."""

    @abc.abstractmethod
    def segment(self, image: nib.Nifti1Image, mask: np.ndarray | None = None) -> Segmentation:
        """Segment ``image``; ``mask`` (bool, the image's shape) is the brain mask; derived if None."""

    def with_reference(self, intensities: dict[str, float], affine: bool = False) -> Segmenter:
        """This back-end measuring with the real cohort's tissue ``intensities`` (``csf``, ``gm``, ``wm``,
        ``sigma``) instead of each image's own; with ``affine``, with an affine map of them fitted to each
        image. Back-ends that do not model intensity ignore them."""
        return self


def image_data(image: nib.Nifti1Image) -> np.ndarray:
    """The image as a float32 3D array (a 4D file with one volume is accepted)."""
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    return data


def voxel_volume_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def derive_brain_mask(data: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Brain mask of a skull-stripped image: voxels above ``threshold``, largest component, holes filled.

    Synthetic images come without a mask and carry faint background noise; the largest connected component
    drops isolated specks, filling the holes keeps dark ventricles inside.
    """
    above = data > threshold
    lab, n = ndi.label(above)
    if n == 0:
        raise ValueError(
            f"no voxel above the mask threshold {threshold}: is the image empty or not in [0, 1]?"
        )
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(lab == int(np.argmax(sizes)))


def check_mask(mask: np.ndarray | None, data: np.ndarray, threshold: float) -> np.ndarray:
    """The given mask as bool (shape checked), or one derived from the image."""
    if mask is None:
        return derive_brain_mask(data, threshold)
    mask = np.asarray(mask)
    if mask.shape != data.shape:
        raise ValueError(f"brain mask of shape {mask.shape} does not match the image shape {data.shape}")
    mask = mask > 0.5 if mask.dtype.kind == "f" else mask.astype(bool)
    if not mask.any():
        raise ValueError("the brain mask is empty")
    return mask


def tissue_volumes(
    maps: dict[str, np.ndarray], voxel_ml: float, ventricles_ml: float = math.nan
) -> dict[str, float]:
    """Core volumes (ml) from per-voxel tissue amounts; brain is the parenchyma, gm + wm (CSF excluded)."""
    vols = {t: float(np.sum(maps[t], dtype=np.float64)) * voxel_ml for t in ("gm", "wm", "csf")}
    vols["ventricles"] = float(ventricles_ml)
    vols["brain"] = vols["gm"] + vols["wm"]
    return vols


def labels_from_probabilities(
    probabilities: dict[str, np.ndarray], mask: np.ndarray | None = None
) -> np.ndarray:
    """uint8 tissue labels (0 bg, 1 csf, 2 gm, 3 wm): the most probable class; background where all are 0."""
    stack = np.stack([probabilities[t] for t in TISSUES])
    labels = (np.argmax(stack, axis=0) + 1).astype(np.uint8)
    labels[stack.max(axis=0) <= 0] = 0
    if mask is not None:
        labels[~mask] = 0
    return labels


def generated_intensities(cfg: dict) -> bool:
    """Whether generated images are unmixed with real tissue intensities (samples: the cohort's median;
    reconstructions: their subject's): ``segmentation.atropos.generated_intensities`` is ``real`` (default),
    back-end Atropos."""
    seg = cfg.get("segmentation", cfg)
    if seg.get("backend", "atropos") != "atropos":
        return False
    choice = (seg.get("atropos") or {}).get("generated_intensities", "real")
    if choice not in ("real", "own"):
        raise ConfigError(f"segmentation.atropos.generated_intensities must be real or own, got {choice!r}")
    return choice == "real"
