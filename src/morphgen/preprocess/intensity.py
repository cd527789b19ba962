"""Intensity scaling of a brain on the working grid to [0, 1]."""

from __future__ import annotations

import numpy as np


def scale_to_unit(data: np.ndarray, mask: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Divide by the ``percentile`` of the brain voxels, clip to [0, 1], zero outside ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the brain mask is empty")
    reference = float(np.percentile(data[mask], percentile))
    if reference <= 0:
        raise ValueError(f"the {percentile} percentile of the brain intensities is {reference}, not positive")
    out = np.clip(np.asarray(data, dtype=np.float32) / reference, 0.0, 1.0)
    out[~mask] = 0.0
    return out.astype(np.float32)
