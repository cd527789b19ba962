"""Memorisation check: is a synthetic brain a (near-)copy of a training brain?

For every kept synthetic sample we find its nearest training image and the distance to it. What counts as
"too close" is calibrated on real data that the model never saw: the distance from each *test* image to its
nearest *training* image. Two different real brains are never closer than that distribution allows, so a
sample closer to a training image than the ``percentile``-th percentile (default 1st) of the test-to-train
nearest distances is flagged as a likely copy.

Distances, on the working grid with intensities in [0, 1] (images ``[N, X, Y, Z]`` or file paths):

``"mse"`` (default)
    mean squared voxel difference, ``mean((q - r)²)``: 0 for an exact copy, in the units of the grid
    intensities squared. Sensitive to global intensity differences as well as to anatomy.
``"correlation"``
    ``1 - r`` with r the Pearson correlation over all voxels: 0 for a copy up to an affine intensity change
    ``a·r + b`` (a > 0), so it ignores global brightness / contrast differences.

Both are computed with a matrix product in float64 (``|q|² + |r|² - 2 q·r`` for MSE, clipped at 0), so an
exact copy gives 0 up to rounding (about 1e-16 relative to ``mean(q²)``).

Threshold: ``numpy.percentile(test_distances, percentile)`` with numpy's default *linear* interpolation
(method ``"linear"``), for every number of test subjects. With n test subjects the 1st percentile lies at
rank ``0.01 · (n - 1)`` of the sorted distances, so for n ≤ 101 it lies between the smallest and the
second-smallest test distance (it is the minimum itself only for n = 1 or when the two smallest tie): with a
small test set the rule is in effect "closer to a training image than (about) the closest real test
subject". A sample is flagged when its distance is *strictly* below the threshold.

Memory: the queries (synthetic or test images) are held in memory as one ``[Q, D]`` float array; the
references (training images) are streamed ``chunk`` at a time, from an array (a slice, so a ``np.memmap``
is read lazily) or from NIfTI paths (loaded chunk by chunk with
:func:`~morphgen.metrics.fidelity.stack_volumes`).
At most ``chunk`` reference volumes and a ``[Q, chunk]`` distance block are held besides the queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from morphgen.metrics.fidelity import as_image_stack, stack_volumes

DISTANCES = ("mse", "correlation")

ImagesOrPaths = np.ndarray | Sequence[str | Path]


def _is_paths(images: ImagesOrPaths) -> bool:
    return not isinstance(images, np.ndarray) and all(isinstance(p, str | Path) for p in images)


def _load_all(images: ImagesOrPaths, name: str) -> np.ndarray:
    if _is_paths(images):
        return stack_volumes(list(images))
    return as_image_stack(images, name)


def _prepare(flat: np.ndarray, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 rows ready for the matrix product, and their squared norms / D (used by MSE only)."""
    rows = flat.astype(np.float64, copy=True)
    if distance == "correlation":
        rows -= rows.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("the correlation distance is undefined for a constant image")
        rows /= norms
        return rows, np.zeros(len(rows))
    return rows, np.einsum("ij,ij->i", rows, rows) / rows.shape[1]


def nearest_distances(
    queries: ImagesOrPaths,
    references: ImagesOrPaths,
    chunk: int = 16,
    *,
    distance: str = "mse",
) -> tuple[np.ndarray, np.ndarray]:
    """For every query image, the distance to its nearest reference image and that reference's index.

    ``queries``, ``references``: arrays ``[N, X, Y, Z]`` (or ``[N, 1, X, Y, Z]``) or sequences of NIfTI
    paths, all on the same grid. References are streamed ``chunk`` at a time (see the module docstring).
    Returns ``(distances [Q] float64, indices [Q] int)``; ties go to the lowest reference index.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    query_stack = _load_all(queries, "queries")
    n_refs = len(references)
    if len(query_stack) == 0 or n_refs == 0:
        raise ValueError(f"need at least one query and one reference, got {len(query_stack)} and {n_refs}")
    grid = query_stack.shape[1:]
    q, q_sq = _prepare(query_stack.reshape(len(query_stack), -1), distance)
    best = np.full(len(q), np.inf)
    best_index = np.zeros(len(q), dtype=int)
    ref_paths = _is_paths(references)
    for start in range(0, n_refs, chunk):
        block = references[start : start + chunk]
        block = stack_volumes(list(block)) if ref_paths else as_image_stack(block, "references")
        if block.shape[1:] != grid:
            raise ValueError(f"reference images {block.shape[1:]} and query images {grid} differ in shape")
        r, r_sq = _prepare(block.reshape(len(block), -1), distance)
        dot = q @ r.T
        if distance == "mse":
            dist = np.maximum(q_sq[:, None] + r_sq[None, :] - 2.0 * dot / q.shape[1], 0.0)
        else:
            dist = 1.0 - dot
        local = np.argmin(dist, axis=1)
        local_best = dist[np.arange(len(q)), local]
        better = local_best < best
        best[better] = local_best[better]
        best_index[better] = start + local[better]
    return best, best_index


def memorisation_threshold(test_dists: Sequence[float] | np.ndarray, percentile: float = 1.0) -> float:
    """``numpy.percentile(test_dists, percentile)`` (linear interpolation); see the module docstring."""
    arr = np.asarray(test_dists, dtype=np.float64)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError("test distances must be a non-empty 1D sequence")
    if not np.all(np.isfinite(arr)):
        raise ValueError("test distances hold NaN or Inf values")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
    return float(np.percentile(arr, percentile, method="linear"))


def memorisation_table(
    sample_ids: Sequence[str],
    sample_dists: Sequence[float] | np.ndarray,
    nearest_ids: Sequence[str],
    test_dists: Sequence[float] | np.ndarray,
    percentile: float = 1.0,
) -> pd.DataFrame:
    """One row per synthetic sample, in the given order.

    Columns: ``sample_id``; ``nearest_train_id`` (the nearest training subject); ``distance`` (to it);
    ``threshold`` (:func:`memorisation_threshold` of the test-to-train nearest distances, the same on every
    row); ``test_percentile``: the percentage of test-to-train nearest distances that are ≤ the sample's
    distance (0 = closer to the training set than every real test image); ``flagged``: distance < threshold.
    """
    dists = np.asarray(sample_dists, dtype=np.float64)
    test = np.asarray(test_dists, dtype=np.float64)
    if not (len(sample_ids) == len(dists) == len(nearest_ids)):
        raise ValueError(
            f"{len(sample_ids)} sample ids, {len(dists)} distances and {len(nearest_ids)} nearest ids differ"
        )
    if not np.all(np.isfinite(dists)):
        raise ValueError("sample distances hold NaN or Inf values")
    threshold = memorisation_threshold(test, percentile)
    rank = np.searchsorted(np.sort(test), dists, side="right")
    return pd.DataFrame(
        {
            "sample_id": [str(s) for s in sample_ids],
            "nearest_train_id": [str(s) for s in nearest_ids],
            "distance": dists,
            "threshold": threshold,
            "test_percentile": 100.0 * rank / len(test),
            "flagged": dists < threshold,
        }
    )


def memorisation_summary(table: pd.DataFrame, percentile: float = 1.0) -> dict[str, float | int]:
    """n samples, n flagged, fraction flagged, the threshold and the percentile it was taken at."""
    n = len(table)
    n_flagged = int(table["flagged"].sum())
    return {
        "n_samples": n,
        "n_flagged": n_flagged,
        "fraction_flagged": n_flagged / n if n else float("nan"),
        "threshold": float(table["threshold"].iloc[0]) if n else float("nan"),
        "percentile": float(percentile),
        "min_distance": float(table["distance"].min()) if n else float("nan"),
    }


def memorisation(
    samples: ImagesOrPaths,
    sample_ids: Sequence[str],
    train: ImagesOrPaths,
    train_ids: Sequence[str],
    test: ImagesOrPaths,
    *,
    chunk: int = 16,
    distance: str = "mse",
    percentile: float = 1.0,
) -> tuple[pd.DataFrame, dict[str, float | int]]:
    """The whole check: sample-to-train and test-to-train nearest distances, the table and its summary."""
    if len(sample_ids) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(sample_ids)} sample ids")
    if len(train_ids) != len(train):
        raise ValueError(f"{len(train)} training images but {len(train_ids)} training ids")
    sample_dists, sample_idx = nearest_distances(samples, train, chunk, distance=distance)
    test_dists, _ = nearest_distances(test, train, chunk, distance=distance)
    nearest = [train_ids[i] for i in sample_idx]
    table = memorisation_table(sample_ids, sample_dists, nearest, test_dists, percentile)
    return table, memorisation_summary(table, percentile)
