"""Each image normalised to the MNI template once; VBM and the atlas's regional volumes both read the result.

:func:`normalise_files` registers every image of a set (real subjects, or one sub-population's samples) to the
template with SyN and writes, in template space:

- ``<id>_jacobian.nii.gz``: the Jacobian determinant of the template-to-image map (tensor-based morphometry);
- ``<id>_mwp1.nii.gz``: the grey-matter probability, warped and modulated by the Jacobian (SPM's name:
  modulated, warped, tissue class 1), not yet smoothed;

and returns one row per image with the atlas's regional volumes (:mod:`morphgen.segmentation.atlas`).
:func:`contrast_vbm` then compares two groups' modulated maps for real and for synthetic images and measures
how alike the two t-maps are; :func:`paired_vbm` compares each subject's original with its reconstruction.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from morphgen.errors import SubjectError, paired_subjects
from morphgen.metrics import vbm
from morphgen.nifti import load_volume, save_volume
from morphgen.segmentation.base import image_data

log = logging.getLogger(__name__)

ID_COLUMN = "participant_id"


def jacobian_path(out_dir: str | Path, image_id: str) -> Path:
    return Path(out_dir) / f"{image_id}_jacobian.nii.gz"


def modulated_path(out_dir: str | Path, image_id: str) -> Path:
    return Path(out_dir) / f"{image_id}_mwp1.nii.gz"


def normalise_files(
    images: Mapping[str, str | Path],
    tissue_maps: Mapping[str, Mapping[str, str | Path]],
    template: nib.Nifti1Image,
    out_dir: str | Path,
    *,
    fractions: Mapping[str, np.ndarray] | None = None,
    tissue_of: Mapping[str, str | None] | None = None,
    registration: dict | None = None,
    progress: bool = True,
    on_error: str = "record",
) -> pd.DataFrame:
    """Normalise every image (id -> path) to ``template``; write its Jacobian and modulated GM map.

    ``tissue_maps`` (id -> {``gm``, ``wm``, ``csf``} -> probability map on the image's grid) come from the
    segmentation stage; ``gm`` is required. ``fractions`` (region -> fractions on the template grid) add the
    regional volumes (``<region>_ml``, :func:`~morphgen.segmentation.atlas.regional_volumes`), each of the
    tissue ``tissue_of[region]``.
    Returns participant_id, registration_seconds and the regional volumes; an image that fails is kept with
    NaN volumes and its reason in ``normalisation_error`` (``on_error="raise"`` stops at it), so one bad
    sample does not lose the others. Errors name the image and its file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    registration = dict(registration or {})
    rows = []
    for image_id, path in tqdm(
        images.items(), desc="normalising to MNI", unit="image", file=sys.stderr, disable=not progress
    ):
        try:
            row = _normalise_one(
                image_id,
                path,
                tissue_maps.get(image_id, {}),
                template,
                out_dir,
                fractions,
                tissue_of,
                registration,
            )
        except SubjectError as exc:
            if on_error == "raise":
                raise
            log.warning("%s", exc)
            row = {ID_COLUMN: image_id, "normalisation_error": str(exc)}
        rows.append(row)
    table = pd.DataFrame(rows)
    columns = [ID_COLUMN, "registration_seconds"] + [f"{r}_ml" for r in (fractions or {})]
    if "normalisation_error" in table.columns:
        columns.append("normalisation_error")
    return table.reindex(columns=columns)


def _normalise_one(image_id, path, maps, template, out_dir, fractions, tissue_of, registration) -> dict:
    image = load_volume(path, subject=image_id)
    if "gm" not in maps:
        raise SubjectError(image_id, path, "no grey-matter map from the segmentation stage")
    tissue_data = {t: vbm.tissue_on_grid(image_id, p, image, p, t) for t, p in maps.items()}
    try:
        with tempfile.TemporaryDirectory(prefix="morphgen-norm-") as work:
            norm = vbm.normalise_to_template(image, template, work, **registration)
            jac = vbm.jacobian_determinant(template, norm.fwd_transforms)
            warped = {
                t: vbm.warp_to_template(d, image.affine, template, norm.fwd_transforms)
                for t, d in tissue_data.items()
            }
    except Exception as exc:
        raise SubjectError(image_id, path, f"registration to the MNI template failed ({exc})") from exc
    if not np.all(np.isfinite(jac)) or float(jac.min()) <= 0:
        log.warning("%s: the deformation folds (Jacobian min %.3g)", image_id, float(np.nanmin(jac)))
    save_volume(jacobian_path(out_dir, image_id), jac, template.affine, description="Jacobian")
    save_volume(
        modulated_path(out_dir, image_id),
        warped["gm"] * jac,
        template.affine,
        description="modulated warped grey matter",
    )
    row = {ID_COLUMN: image_id, "registration_seconds": round(norm.seconds, 2)}
    if fractions:
        from morphgen.segmentation.atlas import regional_volumes

        volumes = regional_volumes(jac, template.affine, dict(fractions), warped, dict(tissue_of or {}))
        for name, ml in volumes.items():
            row[f"{name}_ml"] = round(ml, 4)
    return row


# -------------------------------------------------------------------------------------------------- VBM


def _load_maps(paths: Sequence[str | Path], fwhm_mm: float) -> np.ndarray:
    """The maps, each smoothed with ``fwhm_mm``, stacked subjects first."""
    smoothed = []
    for p in paths:
        img = load_volume(p)
        smoothed.append(vbm.smooth(image_data(img), img.affine, fwhm_mm))
    return np.stack(smoothed)


def contrast_vbm(
    real_a: Sequence[str | Path],
    real_b: Sequence[str | Path],
    synthetic_a: Sequence[str | Path],
    synthetic_b: Sequence[str | Path],
    template: nib.Nifti1Image,
    out_dir: str | Path,
    out_png: str | Path,
    *,
    labels: tuple[str, str] = ("a", "b"),
    fwhm_mm: float = 8.0,
    mask_threshold: float = 0.05,
    p_threshold: float = 0.001,
) -> dict:
    """VBM of group a vs b on real and on synthetic modulated GM maps; NIfTI maps, Fig. 2-like figure, row.

    Both analyses use one mask: voxels where the mean smoothed real map exceeds ``mask_threshold`` (SPM's
    absolute threshold masking), so the two t-maps cover the same voxels. Writes ``real_t.nii.gz``,
    ``real_p.nii.gz``, ``synthetic_t.nii.gz``, ``synthetic_p.nii.gz`` and ``mask.nii.gz`` to ``out_dir``.
    The returned row holds the group sizes, voxels at uncorrected ``p < p_threshold`` for each source, and
    the voxel-wise Pearson correlation of the two t-maps inside the mask (the number the paper lacks); a
    side with fewer than two images gets NaN.
    """
    out_dir = Path(out_dir)
    if len(real_a) < 2 or len(real_b) < 2:
        raise ValueError(
            f"{labels[0]} vs {labels[1]}: VBM needs two real images per group, "
            f"got {len(real_a)} and {len(real_b)}"
        )
    real = [_load_maps(real_a, fwhm_mm), _load_maps(real_b, fwhm_mm)]
    mask = np.concatenate(real).mean(axis=0) > mask_threshold
    if not mask.any():
        raise ValueError(f"the VBM mask is empty (mask_threshold {mask_threshold})")
    save_volume(out_dir / "mask.nii.gz", mask, template.affine, dtype=np.uint8)
    row = {
        "contrast": f"{labels[0]} vs {labels[1]}",
        "n_real_a": len(real_a),
        "n_real_b": len(real_b),
        "n_synthetic_a": len(synthetic_a),
        "n_synthetic_b": len(synthetic_b),
        "mask_voxels": int(mask.sum()),
    }
    desc = f"Welch t, {labels[0]} - {labels[1]}, FWHM {fwhm_mm:g} mm"
    t_maps, figure_rows = {}, []
    for source, groups in (
        ("real", (real_a, real_b)),
        ("synthetic", (synthetic_a, synthetic_b)),
    ):
        if min(len(groups[0]), len(groups[1])) < 2:
            log.warning("%s vs %s: fewer than two %s images in a group", *labels, source)
            row[f"{source}_significant_voxels"] = math.nan
            continue
        stacks = real if source == "real" else [_load_maps(g, fwhm_mm) for g in groups]
        t, p = vbm.welch_t_map(stacks[0], stacks[1], mask)
        vbm.save_map(out_dir / f"{source}_t.nii.gz", t, template, desc)
        vbm.save_map(out_dir / f"{source}_p.nii.gz", p, template, desc)
        significant = mask & (p < p_threshold)
        row[f"{source}_significant_voxels"] = int(significant.sum())
        t_maps[source] = t
        figure_rows.append((f"{source}: {labels[0]} vs {labels[1]}", t, significant))
    row["t_map_correlation"] = (
        vbm.t_map_correlation(t_maps["real"], t_maps["synthetic"], mask) if len(t_maps) == 2 else math.nan
    )
    row["p_threshold"] = p_threshold
    row["fwhm_mm"] = fwhm_mm
    vbm.t_maps_figure(
        figure_rows,
        template,
        out_png,
        title=f"GM VBM, p < {p_threshold:g} uncorrected; red: {labels[0]} larger",
    )
    return row


def paired_vbm(
    originals: Mapping[str, str | Path],
    reconstructions: Mapping[str, str | Path],
    template: nib.Nifti1Image,
    out_dir: str | Path,
    out_png: str | Path,
    *,
    fwhm_mm: float = 8.0,
    mask_threshold: float = 0.05,
    p_threshold: float = 0.001,
    alpha: float = 0.05,
) -> dict:
    """VBM of each subject's reconstruction against its original (subject -> modulated GM map, both).

    The paired t-map (reconstruction minus original) of an autoencoder that keeps the anatomy is near empty
    (seed 003, Fig. 4). The mask is the voxels where the mean smoothed original exceeds ``mask_threshold``.
    Writes ``t.nii.gz``, ``p.nii.gz`` and ``mask.nii.gz`` to ``out_dir`` and the figure; the row holds the
    voxels at uncorrected ``p < p_threshold``, those significant after Bonferroni correction of ``alpha`` over
    the mask, the largest |t| and the mean GM change in percent of the original's.
    """
    subjects = paired_subjects(reconstructions, originals, "map")
    if len(subjects) < 2:
        raise ValueError(f"VBM of reconstructions needs at least 2 subjects, got {len(subjects)}")
    original = _load_maps([originals[s] for s in subjects], fwhm_mm)
    reconstructed = _load_maps([reconstructions[s] for s in subjects], fwhm_mm)
    if original.shape != reconstructed.shape:
        raise ValueError(f"the maps differ in grid: {original.shape[1:]} vs {reconstructed.shape[1:]}")
    mask = original.mean(axis=0) > mask_threshold
    if not mask.any():
        raise ValueError(f"the VBM mask is empty (mask_threshold {mask_threshold})")
    out_dir = Path(out_dir)
    t, p = vbm.paired_t_map(reconstructed, original, mask)
    desc = f"paired t, reconstruction - original, FWHM {fwhm_mm:g} mm"
    vbm.save_map(out_dir / "t.nii.gz", t, template, desc)
    vbm.save_map(out_dir / "p.nii.gz", p, template, desc)
    save_volume(out_dir / "mask.nii.gz", mask, template.affine, dtype=np.uint8)
    n_voxels = int(mask.sum())
    significant = mask & (p < p_threshold)
    bonferroni = mask & (p < alpha / n_voxels)
    change = (reconstructed[:, mask].sum(axis=1) / original[:, mask].sum(axis=1) - 1.0) * 100.0
    vbm.t_maps_figure(
        [("reconstruction vs original", t, significant)],
        template,
        out_png,
        title=f"GM VBM, paired, p < {p_threshold:g} uncorrected; red: more GM in the reconstruction",
    )
    log.info(
        "VBM of %d reconstructions against their originals: %d of %d voxels at p < %g, %d after Bonferroni",
        len(subjects),
        int(significant.sum()),
        n_voxels,
        p_threshold,
        int(bonferroni.sum()),
    )
    return {
        "n_subjects": len(subjects),
        "mask_voxels": n_voxels,
        "significant_voxels": int(significant.sum()),
        "significant_fraction": float(significant.sum() / n_voxels),
        "bonferroni_voxels": int(bonferroni.sum()),
        "max_abs_t": float(np.abs(t[mask]).max()),
        "gm_change_pct": float(change.mean()),
        "p_threshold": p_threshold,
        "alpha": alpha,
        "fwhm_mm": fwhm_mm,
    }
