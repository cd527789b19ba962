"""Voxel-based morphometry (VBM) after the paper's §6.5, with ANTs instead of SPM12.

Steps, one function each:

1. :func:`normalise_to_template`: non-linear (SyN) registration of a subject's T1, already affinely in MNI
   space on the working grid, to the template.
2. :func:`jacobian_determinant` and :func:`modulated_map`: the subject's tissue map pulled into template space
   and multiplied by the Jacobian determinant of the transform, so the tissue volume is preserved.
3. :func:`smooth`: isotropic Gaussian smoothing given as a FWHM in mm (SPM's default 8 mm).
4. :func:`welch_t_map`: voxel-wise two-sample Welch t-test (SPM's "Variance: unequal"), t and p maps;
   :func:`paired_t_map`: the paired test, for two images of each subject (original and reconstruction).
5. :func:`t_map_correlation`: Pearson correlation of two t-maps inside a mask (real vs synthetic).
6. :func:`t_map_figure`: thresholded t-map over the template, axial/coronal/sagittal, like the paper's Fig. 2.
7. :func:`run_vbm`: the driver, two groups of images in, t-map, p-map, mask NIfTI and figure out.

Direction convention. ``ants.registration(fixed=template, moving=subject)`` returns forward transforms
that map a point ``x`` of the template to the point ``phi(x)`` of the subject; resampling pulls the
subject's values into template space: ``warped(x) = subject(phi(x))``. The Jacobian determinant
``J(x) = det D phi(x)`` is the subject's volume per unit of template volume, so
``modulated(x) = tissue(phi(x)) * J(x)``, and by the change of variables
``sum(modulated) * template voxel volume == sum(tissue) * subject voxel volume``.
A subject larger than the template has ``J > 1``.

Not reproduced from the paper: SPM's unified segmentation (morphgen segments with its own back-end, then
registers with SyN), the correction of low-variance areas of [32], and covariates (the paper uses none).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from scipy import ndimage as ndi
from scipy import stats
from tqdm import tqdm

from morphgen.antsio import ants_seed, from_ants, to_ants
from morphgen.errors import SubjectError
from morphgen.nifti import load_volume, save_volume
from morphgen.png import save_figure
from morphgen.segmentation.base import Segmenter, image_data

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548...
TRANSFORMS = ("SyNOnly", "SyN")

ImageLike = str | Path | nib.Nifti1Image


# ------------------------------------------------------------------------------------------ registration


@dataclass
class Normalisation:
    """A subject registered to the template.

    fwd_transforms: ANTs transform files (inside the caller's ``work_dir``) mapping template points to subject
    points, in ANTs order (give them to ``ants.apply_transforms(fixed=template, moving=subject_image)``).
    warped: the subject's image resampled into template space. seconds: wall time of the registration.
    """

    fwd_transforms: list[str]
    warped: np.ndarray
    seconds: float


def _as_image(image: ImageLike, subject: str | None = None) -> nib.Nifti1Image:
    if isinstance(image, nib.Nifti1Image):
        return image
    return load_volume(image, subject)


def normalise_to_template(
    image: ImageLike,
    template: ImageLike,
    work_dir: str | Path,
    *,
    transform: str = "SyNOnly",
    reg_iterations: Sequence[int] = (40, 20, 0),
    syn_metric: str = "mattes",
    syn_sampling: int = 32,
    grad_step: float = 0.2,
    flow_sigma: float = 3.0,
    total_sigma: float = 0.0,
    seed: int = 1,
) -> Normalisation:
    """Register ``image`` (moving) to ``template`` (fixed) with ANTs SyN; transforms go to ``work_dir``.

    ``transform="SyNOnly"`` (default) adds only the deformable stage, for images already affinely in MNI space
    (morphgen's preprocessing); ``"SyN"`` runs ANTs' affine stage first. The SyN metric samples every voxel
    (no random sampling) and ``seed`` fixes antsRegistration's random seed for any stage that samples, so a
    run with one ITK thread is bit-reproducible (several threads may change the last bits of float sums).
    ``reg_iterations`` are the SyN iterations per level (coarse to fine); ANTs' defaults are (40, 20, 0).
    """
    import ants

    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    image, template = _as_image(image), _as_image(template)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    fixed = to_ants(image_data(template), template.affine)
    moving = to_ants(image_data(image), image.affine)
    start = time.perf_counter()
    with ants_seed(seed):
        out = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform=transform,
            outprefix=str(work_dir / "reg_"),
            reg_iterations=tuple(int(i) for i in reg_iterations),
            syn_metric=syn_metric,
            syn_sampling=int(syn_sampling),
            grad_step=float(grad_step),
            flow_sigma=float(flow_sigma),
            total_sigma=float(total_sigma),
            aff_random_sampling_rate=1.0,  # affine stage (transform="SyN"): every voxel, no random sample
        )
    seconds = time.perf_counter() - start
    warped, _ = from_ants(out["warpedmovout"])
    return Normalisation(fwd_transforms=list(out["fwdtransforms"]), warped=warped, seconds=seconds)


def jacobian_determinant(template: ImageLike, fwd_transforms: Sequence[str]) -> np.ndarray:
    """``det D phi`` on the template grid for the template-to-subject map ``phi`` of ``fwd_transforms``.

    The deformable part comes from ``ants.create_jacobian_determinant_image`` on the displacement field; an
    affine part (``.mat``) contributes the constant determinant of its matrix (a composition multiplies).
    """
    import ants

    template = _as_image(template)
    domain = to_ants(image_data(template), template.affine)
    jac = np.ones(template.shape[:3], dtype=np.float64)
    for path in fwd_transforms:
        if str(path).endswith(".mat"):
            params = np.asarray(ants.read_transform(str(path)).parameters, dtype=np.float64)
            jac *= abs(float(np.linalg.det(params[:9].reshape(3, 3))))
        else:
            jac *= ants.create_jacobian_determinant_image(domain, str(path)).numpy().astype(np.float64)
    return jac.astype(np.float32)


def warp_to_template(
    data: np.ndarray, affine: np.ndarray, template: ImageLike, fwd_transforms: Sequence[str]
) -> np.ndarray:
    """Pull a subject-space map (``data`` on the grid of ``affine``) into template space (linear interp.)."""
    import ants

    template = _as_image(template)
    out = ants.apply_transforms(
        fixed=to_ants(image_data(template), template.affine),
        moving=to_ants(data, affine),
        transformlist=list(fwd_transforms),
        interpolator="linear",
    )
    return out.numpy().astype(np.float32)


def modulated_map(
    tissue: np.ndarray, affine: np.ndarray, template: ImageLike, fwd_transforms: Sequence[str]
) -> np.ndarray:
    """Tissue map warped into template space and multiplied by the Jacobian determinant (modulation).

    Summed over the template grid and times the template's voxel volume, it gives the subject's tissue volume.
    """
    warped = warp_to_template(tissue, affine, template, fwd_transforms)
    return (warped * jacobian_determinant(template, fwd_transforms)).astype(np.float32)


# --------------------------------------------------------------------------------------------- smoothing


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis of ``affine``."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def fwhm_to_sigma_voxels(fwhm_mm: float, affine: np.ndarray) -> np.ndarray:
    """Gaussian sigma in voxels per axis: ``FWHM / (2 sqrt(2 ln 2)) / voxel size``."""
    if fwhm_mm < 0:
        raise ValueError(f"fwhm_mm must be >= 0, got {fwhm_mm}")
    return float(fwhm_mm) / FWHM_PER_SIGMA / voxel_sizes(affine)


def smooth(data: np.ndarray, affine: np.ndarray, fwhm_mm: float = 8.0) -> np.ndarray:
    """Gaussian smoothing with a FWHM of ``fwhm_mm`` mm in every direction.

    As SPM does, the whole volume is smoothed (no mask); zeros are assumed outside the grid, so the sum of a
    map well inside the grid is preserved. Masks belong to the statistics (:func:`welch_t_map`).
    """
    sigma = fwhm_to_sigma_voxels(fwhm_mm, affine)
    data = np.asarray(data, dtype=np.float32)
    if not np.any(sigma > 0):
        return data.copy()
    return ndi.gaussian_filter(data, sigma=sigma, mode="constant", cval=0.0, truncate=4.0)


# -------------------------------------------------------------------------------------------- statistics


def _stack(group: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    arr = np.asarray(group, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"a group must be a sequence of maps (subjects first), got shape {arr.shape}")
    return arr


def welch_t_map(
    group_a: Sequence[np.ndarray] | np.ndarray,
    group_b: Sequence[np.ndarray] | np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-wise two-sided Welch t-test of ``a`` minus ``b``: ``(t, p)`` maps.

    Same values as ``scipy.stats.ttest_ind(a, b, equal_var=False)`` at each voxel, vectorised. Outside
    ``mask`` and where both groups have zero variance, t is 0 and p is 1 (scipy gives NaN there).
    """
    a, b = _stack(group_a), _stack(group_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"the groups' maps differ in shape: {a.shape[1:]} vs {b.shape[1:]}")
    na, nb = a.shape[0], b.shape[0]
    if na < 2 or nb < 2:
        raise ValueError(f"each group needs at least 2 subjects, got {na} and {nb}")
    inside = np.ones(a.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if inside.shape != a.shape[1:]:
        raise ValueError(f"mask of shape {inside.shape} does not match maps of shape {a.shape[1:]}")
    xa, xb = a[:, inside], b[:, inside]
    va = xa.var(axis=0, ddof=1) / na
    vb = xb.var(axis=0, ddof=1) / nb
    se2 = va + vb
    ok = se2 > 0
    t_in = np.zeros(se2.shape)
    p_in = np.ones(se2.shape)
    t_in[ok] = (xa.mean(axis=0)[ok] - xb.mean(axis=0)[ok]) / np.sqrt(se2[ok])
    df = se2[ok] ** 2 / (va[ok] ** 2 / (na - 1) + vb[ok] ** 2 / (nb - 1))
    p_in[ok] = 2.0 * stats.t.sf(np.abs(t_in[ok]), df)
    t = np.zeros(a.shape[1:], dtype=np.float64)
    p = np.ones(a.shape[1:], dtype=np.float64)
    t[inside], p[inside] = t_in, p_in
    return t, p


def paired_t_map(
    group_a: Sequence[np.ndarray] | np.ndarray,
    group_b: Sequence[np.ndarray] | np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-wise two-sided paired t-test of ``a`` minus ``b`` (map ``i`` of each is one subject): ``(t, p)``.

    Same values as ``scipy.stats.ttest_rel(a, b)`` at each voxel, vectorised. Outside ``mask`` and where the
    differences do not vary, t is 0 and p is 1.
    """
    a, b = _stack(group_a), _stack(group_b)
    if a.shape != b.shape:
        raise ValueError(f"paired maps need the same subjects and grid: {a.shape} vs {b.shape}")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 subjects, got {n}")
    inside = np.ones(a.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if inside.shape != a.shape[1:]:
        raise ValueError(f"mask of shape {inside.shape} does not match maps of shape {a.shape[1:]}")
    d = a[:, inside] - b[:, inside]
    se = d.std(axis=0, ddof=1) / math.sqrt(n)
    ok = se > 0
    t_in = np.zeros(se.shape)
    p_in = np.ones(se.shape)
    t_in[ok] = d.mean(axis=0)[ok] / se[ok]
    p_in[ok] = 2.0 * stats.t.sf(np.abs(t_in[ok]), n - 1)
    t = np.zeros(a.shape[1:], dtype=np.float64)
    p = np.ones(a.shape[1:], dtype=np.float64)
    t[inside], p[inside] = t_in, p_in
    return t, p


def t_map_correlation(t_real: np.ndarray, t_synthetic: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two t-maps over the voxels of ``mask`` where both are finite.

    NaN when fewer than 2 voxels remain or a map is constant there.
    """
    x, y = np.asarray(t_real, dtype=np.float64), np.asarray(t_synthetic, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"t-maps differ in shape: {x.shape} vs {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x**2).sum()) * float((y**2).sum()))
    if denom == 0:
        return float("nan")
    return float((x * y).sum() / denom)


def save_map(path: str | Path, data: np.ndarray, template: ImageLike, description: str | None = None) -> Path:
    """Write a map on the template grid with the template's affine (float32, atomic)."""
    return save_volume(path, data, _as_image(template).affine, description=description)


# ------------------------------------------------------------------------------------------------ figure


def _slices(volume: np.ndarray, ijk: Sequence[int], convention: str) -> dict[str, np.ndarray]:
    """Axial, coronal, sagittal slices through ``ijk`` of a RAS+ volume, for ``imshow(origin="upper")``."""
    i, j, k = (int(v) for v in ijk)
    planes = {
        "axial": volume[:, :, k].T[::-1],  # rows A->P, columns L->R
        "coronal": volume[:, j, :].T[::-1],  # rows S->I, columns L->R
        "sagittal": volume[i, :, :].T[::-1, ::-1],  # rows S->I, columns A->P
    }
    if convention == "radiological":  # patient's right on the viewer's left
        planes["axial"], planes["coronal"] = planes["axial"][:, ::-1], planes["coronal"][:, ::-1]
    return planes


def t_map_figure(
    t_map: np.ndarray,
    template: ImageLike,
    out_png: str | Path,
    *,
    threshold: float | None = None,
    significant: np.ndarray | None = None,
    cut_ijk: Sequence[int] | None = None,
    title: str = "VBM t-map",
    convention: str = "radiological",
) -> Path:
    """Template slices with the t-map overlaid where it is significant (Fig. 2), written atomically as PNG.

    Shown voxels: ``significant`` (bool) if given, else ``|t| >= threshold``. Slices pass through ``cut_ijk``
    (default: the voxel of largest |t|). Red: t > 0 (group a larger), blue: t < 0. Template and t-map must
    lie on the same grid; both are reoriented to RAS+ for display.
    """
    if significant is None:
        if threshold is None:
            raise ValueError("give threshold or significant")
        significant = np.abs(np.asarray(t_map)) >= threshold
    return t_maps_figure(
        [(title, t_map, significant)], template, out_png, cut_ijk=cut_ijk, convention=convention
    )


def t_maps_figure(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray]],
    template: ImageLike,
    out_png: str | Path,
    *,
    cut_ijk: Sequence[int] | None = None,
    convention: str = "radiological",
    title: str | None = None,
) -> Path:
    """One row of axial/coronal/sagittal slices per ``(label, t_map, significant)``, like the paper's Fig. 2.

    All rows cut through the same voxel (``cut_ijk``, default the largest |t| of the first row) and share one
    colour scale, so a real and a synthetic map can be compared by eye.
    """
    if convention not in ("radiological", "neurological"):
        raise ValueError(f"convention must be radiological or neurological, got {convention!r}")
    if not rows:
        raise ValueError("no t-map to draw")
    template = _as_image(template)
    ornt = nib.orientations.io_orientation(template.affine)
    to_ras = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    t1 = nib.orientations.apply_orientation(image_data(template), to_ras)
    maps = []
    for label, t_map, significant in rows:
        t_map = np.asarray(t_map, dtype=np.float32)
        if t_map.shape != template.shape[:3]:
            raise ValueError(
                f"{label}: t-map of shape {t_map.shape} does not lie on the template grid {template.shape}"
            )
        # reorient everything to RAS+ (the working grid is RAS+ already; this keeps other grids right)
        tt = nib.orientations.apply_orientation(t_map, to_ras)
        sig = nib.orientations.apply_orientation(np.asarray(significant, dtype=bool), to_ras)
        maps.append((label, tt, sig))
    if cut_ijk is None:
        first = maps[0][1]
        cut_ijk = np.unravel_index(int(np.argmax(np.abs(first))), first.shape)
    else:  # given in the template's own voxel order: move it with the data
        flip = np.zeros(3, dtype=int)
        ijk = np.asarray(cut_ijk, dtype=int)
        for src_axis, (dst_axis, sign) in enumerate(to_ras):
            size = template.shape[src_axis]
            flip[int(dst_axis)] = ijk[src_axis] if sign > 0 else size - 1 - ijk[src_axis]
        cut_ijk = flip
    # a robust scale: voxels where almost no subject has tissue give huge |t| that would wash out the rest
    shown = np.concatenate([np.abs(tt[sig]) for _, tt, sig in maps if sig.any()] or [np.ones(1)])
    vmax = max(float(np.percentile(shown, 98)), 1e-6)
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    bg = _slices(t1, cut_ijk, convention)
    lr = ("R", "L") if convention == "radiological" else ("L", "R")
    edges = {"axial": (*lr, "A", "P"), "coronal": (*lr, "S", "I"), "sagittal": ("A", "P", "S", "I")}
    top = 0.15 if title else 0.0  # a strip for the overall title, in units of one row's height
    fig = Figure(figsize=(10.5, 3.4 * (len(maps) + top)))
    ratios = ([top] if title else []) + [1.0] * len(maps)
    subfigs = list(np.atleast_1d(fig.subfigures(len(ratios), 1, height_ratios=ratios)))
    if title:
        subfigs.pop(0).suptitle(title, fontsize=11)
    image = None
    for subfig, (label, tt, sig) in zip(subfigs, maps, strict=True):
        fg = _slices(np.where(sig, tt, np.nan), cut_ijk, convention)
        axes = subfig.subplots(1, 3)
        for ax, plane in zip(axes, ("axial", "coronal", "sagittal"), strict=True):
            ax.imshow(bg[plane], cmap="gray", origin="upper", interpolation="nearest")
            image = ax.imshow(fg[plane], cmap="RdBu_r", norm=norm, origin="upper", interpolation="nearest")
            left, right, top, bottom = edges[plane]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{left}  \u2190  \u2192  {right}", fontsize=7)
            ax.set_ylabel(f"{bottom}  \u2190  \u2192  {top}", fontsize=7)
        subfig.colorbar(image, ax=list(axes), shrink=0.8, label="t", extend="both")
        subfig.suptitle(f"{label} ({int(sig.sum())} voxels shown)", fontsize=10)
    return save_figure(fig, out_png)


# ------------------------------------------------------------------------------------------------ driver


@dataclass
class VBMResult:
    """What :func:`run_vbm` wrote and measured."""

    t_map: Path
    p_map: Path
    mask: Path
    figure: Path
    n_a: int
    n_b: int
    n_voxels: int
    n_significant: int
    registration_seconds: dict[str, float] = field(default_factory=dict)


def _ids(ids: Sequence[str] | None, images: Sequence[ImageLike], prefix: str) -> list[str]:
    if ids is None:
        return [
            Path(im).name.split(".")[0] if isinstance(im, (str, Path)) else f"{prefix}{n:03d}"
            for n, im in enumerate(images)
        ]
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")
    return [str(i) for i in ids]


def tissue_on_grid(
    subject: str, tissue_map: ImageLike, image: nib.Nifti1Image, where: str | Path | None, tissue: str
) -> np.ndarray:
    """A tissue map's data, checked to lie on ``image``'s grid; the error names the subject and ``where``."""
    tmap = _as_image(tissue_map, subject)
    if tmap.shape[:3] != image.shape[:3] or not np.allclose(tmap.affine, image.affine, atol=1e-3):
        raise SubjectError(subject, where, f"the {tissue} map does not lie on the image's grid")
    return image_data(tmap)


def _subject_map(
    subject: str,
    image: ImageLike,
    tissue_map: ImageLike | None,
    segmenter: Segmenter | None,
    tissue: str,
    template: nib.Nifti1Image,
    fwhm_mm: float,
    registration: dict,
) -> tuple[np.ndarray, float]:
    """Smoothed modulated tissue map of one subject in template space, and its registration time."""
    path = image if isinstance(image, (str, Path)) else None
    img = _as_image(image, subject)
    if tissue_map is not None:
        where = tissue_map if isinstance(tissue_map, (str, Path)) else path
        tdata = tissue_on_grid(subject, tissue_map, img, where, tissue)
    else:
        try:
            tdata = segmenter.segment(img).probabilities[tissue]
        except Exception as exc:
            raise SubjectError(subject, path, f"segmentation failed ({exc})") from exc
    try:
        with tempfile.TemporaryDirectory(prefix="morphgen-vbm-") as work:
            norm = normalise_to_template(img, template, work, **registration)
            modulated = modulated_map(tdata, img.affine, template, norm.fwd_transforms)
    except SubjectError:
        raise
    except Exception as exc:
        raise SubjectError(subject, path, f"registration to the template failed ({exc})") from exc
    return smooth(modulated, template.affine, fwhm_mm), norm.seconds


def run_vbm(
    images_a: Sequence[ImageLike],
    images_b: Sequence[ImageLike],
    template: ImageLike,
    out_dir: str | Path,
    *,
    gm_maps_a: Sequence[ImageLike] | None = None,
    gm_maps_b: Sequence[ImageLike] | None = None,
    segmenter: Segmenter | None = None,
    tissue: str = "gm",
    ids_a: Sequence[str] | None = None,
    ids_b: Sequence[str] | None = None,
    fwhm_mm: float = 8.0,
    mask: np.ndarray | None = None,
    mask_threshold: float = 0.05,
    p_threshold: float = 0.001,
    registration: dict | None = None,
    labels: tuple[str, str] = ("a", "b"),
    progress: bool = True,
) -> VBMResult:
    """VBM of group a against group b: writes ``t_map``, ``p_map``, ``mask`` (.nii.gz) and ``vbm.png``.

    Each image (path or NIfTI image, affinely in MNI space) is registered to ``template`` (T1 on the working
    grid) by :func:`normalise_to_template` (``registration``: its keyword arguments). Its tissue map comes
    from ``gm_maps_a`` / ``gm_maps_b`` (same grid as the image; any tissue, despite the name) or, when those
    are None, from ``segmenter.segment(image).probabilities[tissue]``. Maps are modulated, smoothed with
    ``fwhm_mm``, and compared with :func:`welch_t_map` (t > 0: group a has more tissue). The analysis mask is
    ``mask`` or the voxels whose mean smoothed map over all subjects exceeds ``mask_threshold`` (like SPM's
    absolute threshold masking). The figure shows uncorrected ``p < p_threshold`` as in Fig. 2.
    Errors name the subject and its file (:class:`SubjectError`).
    """
    template = _as_image(template)
    registration = dict(registration or {})
    out_dir = Path(out_dir)
    groups = []
    for name, images, maps, ids in (
        (labels[0], images_a, gm_maps_a, ids_a),
        (labels[1], images_b, gm_maps_b, ids_b),
    ):
        if maps is None and segmenter is None:
            raise ValueError(f"group {name}: give its tissue maps or a segmenter")
        if maps is not None and len(maps) != len(images):
            raise ValueError(f"group {name}: {len(maps)} tissue maps for {len(images)} images")
        if len(images) < 2:
            raise ValueError(f"group {name} needs at least 2 subjects, got {len(images)}")
        groups.append(
            (name, list(images), None if maps is None else list(maps), _ids(ids, images, f"{name}-"))
        )

    seconds: dict[str, float] = {}
    stacks = []
    for name, images, maps, ids in groups:
        smoothed = []
        bar = tqdm(range(len(images)), desc=f"VBM: registering group {name}", disable=not progress)
        for n in bar:
            subject = ids[n]
            data, secs = _subject_map(
                subject,
                images[n],
                None if maps is None else maps[n],
                segmenter,
                tissue,
                template,
                fwhm_mm,
                registration,
            )
            seconds[subject] = secs
            smoothed.append(data)
        stacks.append(np.stack(smoothed))
    if mask is None:
        mask = np.concatenate(stacks).mean(axis=0) > mask_threshold
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError(f"the analysis mask is empty (mask_threshold {mask_threshold})")
    t, p = welch_t_map(stacks[0], stacks[1], mask)
    significant = mask & (p < p_threshold)
    desc = f"Welch t, {labels[0]} - {labels[1]}, FWHM {fwhm_mm:g} mm"
    t_path = save_map(out_dir / "t_map.nii.gz", t, template, desc)
    p_path = save_map(out_dir / "p_map.nii.gz", p, template, desc)
    m_path = save_volume(out_dir / "mask.nii.gz", mask, template.affine, dtype=np.uint8)
    fig = t_map_figure(
        t,
        template,
        out_dir / "vbm.png",
        significant=significant,
        title=f"{labels[0]} vs {labels[1]}: {tissue}, p < {p_threshold:g} uncorrected",
    )
    log.info(
        "VBM %s vs %s: %d of %d voxels at p < %g",
        labels[0],
        labels[1],
        int(significant.sum()),
        int(mask.sum()),
        p_threshold,
    )
    return VBMResult(
        t_map=t_path,
        p_map=p_path,
        mask=m_path,
        figure=fig,
        n_a=len(stacks[0]),
        n_b=len(stacks[1]),
        n_voxels=int(mask.sum()),
        n_significant=int(significant.sum()),
        registration_seconds=seconds,
    )
