"""MNI152 2009 anatomy that ships inside nilearn, resampled onto a working grid. Never downloads."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from morphgen import resample as resample_module
from morphgen.nifti import atomic_output
from morphgen.resample import resample_array
from morphgen.space import Grid

log = logging.getLogger(__name__)

# Box (MNI mm) that holds the lateral ventricles and little sulcal CSF; with CSF > 0.5 inside the filled
# brain and the two largest components, it gives about 25 ml on the 1 mm template.
VENTRICLE_BOX_MM = ((-32.0, 32.0), (-50.0, 35.0), (-8.0, 35.0))


@functools.lru_cache(maxsize=1)
def mni_1mm() -> dict[str, np.ndarray]:
    """T1 (scaled to [0, 1]), GM, WM, CSF probabilities, brain mask and ventricles on the 1 mm grid."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    affine = t1_img.affine.copy()
    t1 = t1_img.get_fdata(dtype=np.float32)
    t1 = t1 / float(t1.max())
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = ndi.binary_fill_holes(ndi.binary_closing((gm + wm) > 0.5, iterations=3))
    gm = gm * brain
    wm = wm * brain
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    ventricles = _ventricles(csf, brain, affine)
    return {
        "affine": affine,
        "t1": t1.astype(np.float32),
        "gm": gm.astype(np.float32),
        "wm": wm.astype(np.float32),
        "csf": csf.astype(np.float32),
        "brain": brain.astype(np.float32),
        "ventricles": ventricles.astype(np.float32),
    }


def _ventricles(csf: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(csf.shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape((3,) + csf.shape)
    box = np.ones(csf.shape, dtype=bool)
    for axis, (lo, hi) in enumerate(VENTRICLE_BOX_MM):
        box &= (xyz[axis] > lo) & (xyz[axis] < hi)
    candidates = box & brain & (csf > 0.5)
    labels, n = ndi.label(candidates)
    if n == 0:
        return np.zeros_like(csf, dtype=bool)
    sizes = ndi.sum(candidates, labels, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    return np.isin(labels, keep)


def resample_to_grid(data: np.ndarray, affine: np.ndarray, grid: Grid, order: int = 1) -> np.ndarray:
    """Resample a volume given in ``affine`` space onto ``grid`` (smoothed first when the grid is coarser,
    so probability maps keep their sums)."""
    return resample_array(data, affine, grid.affine, grid.shape, order=order)


_ON_GRID = ("t1", "gm", "wm", "csf", "brain", "ventricles")


def cache_dir() -> Path:
    """Where derived template arrays are kept between jobs: ``$MORPHGEN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/morphgen`` or ``~/.cache/morphgen``."""
    if os.environ.get("MORPHGEN_CACHE_DIR"):
        return Path(os.environ["MORPHGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "morphgen"


def _cache_key(grid: Grid) -> str:
    """The template on ``grid`` depends on the grid, nilearn's copy of MNI152 and the code that derives it."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    digest.update(np.asarray(grid.affine, dtype=np.float64).tobytes())
    digest.update(repr(tuple(grid.shape)).encode())
    digest.update(version("nilearn").encode())
    for module in (__file__, resample_module.__file__):  # any change to the derivation is another key
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:24]


@functools.lru_cache(maxsize=8)
def _mni_on_grid(grid: Grid) -> dict[str, np.ndarray]:
    """The template's maps on ``grid``, computed once per machine and grid (several seconds: every
    preprocessing, segmentation and normalisation job needs them) and then read from :func:`cache_dir`."""
    path = cache_dir() / f"mni152_{_cache_key(grid)}.npz"
    try:
        with np.load(path) as cached:
            return {key: cached[key] for key in _ON_GRID}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # absent, or written by a job that was killed: compute it again
    src = mni_1mm()
    out = {key: resample_to_grid(src[key], src["affine"], grid) for key in _ON_GRID}
    try:
        with atomic_output(path) as tmp:
            np.savez(tmp, **out)
    except OSError as exc:  # a read-only home costs time, not results
        log.warning("cannot cache the MNI152 template on the working grid in %s (%s)", path.parent, exc)
    return out


def mni_t1(grid: Grid) -> nib.Nifti1Image:
    """MNI152 T1 (brain only, [0, 1]) on ``grid``."""
    return grid.image(_mni_on_grid(grid)["t1"])


def mni_tissue_priors(grid: Grid) -> dict[str, np.ndarray]:
    """GM, WM and CSF probability maps on ``grid``; they sum to the brain mask."""
    d = _mni_on_grid(grid)
    return {"gm": d["gm"].copy(), "wm": d["wm"].copy(), "csf": d["csf"].copy()}


def mni_brain_mask(grid: Grid) -> np.ndarray:
    return _mni_on_grid(grid)["brain"] > 0.5


def ventricle_roi(grid: Grid, dilate_mm: float = 6.0) -> np.ndarray:
    """Region that may hold the lateral ventricles, dilated so enlarged ventricles stay inside it."""
    vent = _mni_on_grid(grid)["ventricles"] > 0.25
    iterations = max(1, int(round(dilate_mm / grid.voxel_size)))
    return ndi.binary_dilation(vent, iterations=iterations) & mni_brain_mask(grid)
