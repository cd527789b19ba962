"""Conversions between NIfTI (RAS+ world) and ANTs (ITK, LPS+ world) images, ITK threads and ANTs' seed.

NIfTI affines map voxels to RAS+ millimetres; ITK places voxels in LPS+ millimetres. The two worlds differ by
a flip of x and y, so ``lps = FLIP @ ras``. Keeping this in one place avoids silent left-right errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import numpy as np

log = logging.getLogger(__name__)

# RAS+ <-> LPS+ (its own inverse)
FLIP = np.diag([-1.0, -1.0, 1.0])
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


@contextlib.contextmanager
def ants_seed(seed: int | None) -> Iterator[None]:
    """Pass ``--random-seed`` to antsRegistration inside the block (fixes its random metric sampling);
    ``None`` keeps ANTs' own. ``ants.config`` is module state, so the previous value is restored."""
    import ants.config

    previous = getattr(ants.config, "_random_seed", None)
    ants.config._random_seed = None if seed is None else int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = previous


def set_itk_threads(threads: int) -> bool:
    """Ask ITK (inside antspyx) to use ``threads`` threads.

    ITK sizes its thread pool once, when antspyx is first imported; the variable has no effect afterwards.
    Returns True when the setting can still take effect.
    """
    if "ants" in sys.modules:
        if os.environ.get(ITK_THREADS_ENV) != str(threads):
            log.warning(
                "antspyx is already imported: set %s=%d before importing it to limit ITK threads",
                ITK_THREADS_ENV,
                threads,
            )
        return False
    os.environ[ITK_THREADS_ENV] = str(int(threads))
    return True


def to_ants(data: np.ndarray, affine: np.ndarray):
    """ANTs image holding ``data`` placed in the world by the NIfTI ``affine`` (shear is not supported)."""
    import ants

    affine = np.asarray(affine, dtype=float)
    linear = affine[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    direction = FLIP @ linear / spacing
    origin = FLIP @ affine[:3, 3]
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(float(o) for o in origin),
        spacing=tuple(float(s) for s in spacing),
        direction=direction,
    )


def from_ants(img) -> tuple[np.ndarray, np.ndarray]:
    """``(data, affine)``: the voxel array of an ANTs image and its NIfTI (RAS+) affine."""
    affine = np.eye(4)
    affine[:3, :3] = FLIP @ np.asarray(img.direction, dtype=float) @ np.diag(img.spacing)
    affine[:3, 3] = FLIP @ np.asarray(img.origin, dtype=float)
    return img.numpy().astype(np.float32), affine


def ants_affine_to_ras(parameters: np.ndarray, fixed_parameters: np.ndarray) -> np.ndarray:
    """4x4 matrix, in RAS+ mm, of an ITK affine transform given by its parameters.

    ITK stores the 3x3 matrix row by row, then the translation; the fixed parameters are the centre c.
    The transform maps a point x of the fixed image to ``M (x - c) + c + t`` in the moving image (LPS+).
    """
    p = np.asarray(parameters, dtype=float)
    matrix = p[:9].reshape(3, 3)
    centre = np.asarray(fixed_parameters, dtype=float)[:3]
    offset = p[9:12] + centre - matrix @ centre
    out = np.eye(4)
    out[:3, :3] = FLIP @ matrix @ FLIP
    out[:3, 3] = FLIP @ offset
    return out
