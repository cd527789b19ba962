"""Image-fidelity metrics of Table 1 (Tudosiu et al. 2022, section 4.1): batch-wise MMD² and pairwise MS-SSIM.

Both work on stacks of images on the working grid, ``[N, X, Y, Z]`` or ``[N, 1, X, Y, Z]``, T1 in [0, 1].

bMMD² uses a linear (dot-product) kernel normalised by the number of voxels, ``K(x, y) = x·y / D``, so values
do not depend on the grid size. The default estimator is the *biased* (V-statistic) one, which for a linear
kernel is exactly ``||mean(x_batch) - mean(y_batch)||² / D``. That is the estimator the paper's numbers imply:
its real-vs-real baselines are positive with a small spread (0.00208 ± 0.00026), as the biased estimator's
``2 tr(Σ) / (b D)`` floor gives, whereas the unbiased one would scatter around 0. MONAI's ``MMDMetric``
computes the *unbiased* (U-statistic, Gretton et al. 2012 eq. 3) estimator; it is available as
``estimator="unbiased"`` (divided by D to share the biased one's scale) and needs batches of at least 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from morphgen.errors import SubjectError
from morphgen.nifti import load_volume

ESTIMATORS = ("biased", "unbiased")


def as_image_stack(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Return ``images`` as a float array ``[N, X, Y, Z]``; accepts a singleton channel axis.

    float32 and float64 input are kept as they are (no copy: paper-scale stacks are gigabytes); sums are taken
    in float64 where it matters.
    """
    arr = np.asarray(images)
    if arr.ndim == 5 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected an array [N, X, Y, Z] or [N, 1, X, Y, Z], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: holds NaN or Inf values")
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)


def stack_volumes(paths: Sequence[str | Path], subjects: Sequence[str] | None = None) -> np.ndarray:
    """Load NIfTI volumes (checked by :func:`morphgen.nifti.load_volume`) into a float32 array [N, X, Y, Z].

    Every volume must have the shape of the first; the error names the subject and file that does not.
    """
    if subjects is not None and len(subjects) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(subjects)} subject ids")
    arrays = []
    for k, path in enumerate(paths):
        subject = None if subjects is None else subjects[k]
        data = load_volume(path, subject).get_fdata(dtype=np.float32)
        if arrays and data.shape != arrays[0].shape:
            raise SubjectError(
                subject, path, f"shape {data.shape} differs from {arrays[0].shape} of {paths[0]}"
            )
        arrays.append(data)
    if not arrays:
        raise ValueError("no volumes given")
    return np.stack(arrays)


def mmd2_linear(x: np.ndarray, y: np.ndarray, estimator: str = "biased") -> float:
    """Squared MMD between two batches with the voxel-normalised linear kernel ``x·y / D``.

    ``biased``: mean K(x,x') + mean K(y,y') - 2 mean K(x,y) over all pairs, diagonals included, which equals
    ``||mean(x) - mean(y)||² / D``. ``unbiased``: MONAI ``MMDMetric`` (diagonals of the within-set terms left
    out), divided by D; needs two batches of equal size (MONAI's rule), at least 2.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    x = as_image_stack(x, "x")
    y = as_image_stack(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x images {x.shape[1:]} and y images {y.shape[1:]} differ in shape")
    return _mmd2_flat(x.reshape(len(x), -1), y.reshape(len(y), -1), estimator)


def _mmd2_flat(x: np.ndarray, y: np.ndarray, estimator: str) -> float:
    """:func:`mmd2_linear` on already checked arrays ``[B, D]``."""
    n_voxels = x.shape[1]
    if estimator == "biased":
        diff = x.mean(axis=0, dtype=np.float64) - y.mean(axis=0, dtype=np.float64)
        return float(diff @ diff / n_voxels)
    if len(x) < 2 or len(x) != len(y):
        raise ValueError(
            "the unbiased MMD estimator (MONAI) needs two batches of the same size, at least 2; "
            f"got {len(x)} and {len(y)}"
        )
    import torch
    from monai.metrics import MMDMetric

    # float64: the three kernel means are ~0.1 each while their difference is ~1e-3
    value = MMDMetric()(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y.astype(np.float64)))
    return float(value) / n_voxels


def bmmd2(
    real: np.ndarray,
    synth: np.ndarray,
    batch_size: int,
    seed: int,
    *,
    n_batches: int = 100,
    estimator: str = "biased",
    progress: bool = True,
) -> tuple[float, float]:
    """Batch-wise squared MMD between two image sets: mean and sd over ``n_batches`` random batch pairs.

    Each repetition draws ``batch_size`` distinct images from each set (independently) and computes
    :func:`mmd2_linear`. Returns ``(mean, sd)`` with the sample sd (ddof=1; NaN for one repetition).
    """
    real = as_image_stack(real, "real")
    synth = as_image_stack(synth, "synth")
    if real.shape[1:] != synth.shape[1:]:
        raise ValueError(
            f"real images {real.shape[1:]} and synthetic images {synth.shape[1:]} differ in shape"
        )
    if batch_size < 1 or batch_size > min(len(real), len(synth)):
        raise ValueError(
            f"batch_size {batch_size} must be between 1 and the smaller set size "
            f"(real {len(real)}, synthetic {len(synth)})"
        )
    if n_batches < 1:
        raise ValueError(f"n_batches must be at least 1, got {n_batches}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    real_flat, synth_flat = real.reshape(len(real), -1), synth.reshape(len(synth), -1)
    rng = np.random.default_rng(seed)
    values = []
    for _ in tqdm(range(n_batches), desc="bMMD²", disable=not progress, leave=False):
        i = rng.choice(len(real), size=batch_size, replace=False)
        j = rng.choice(len(synth), size=batch_size, replace=False)
        values.append(_mmd2_flat(real_flat[i], synth_flat[j], estimator))
    return _mean_sd(values)


def paired_bmmd2(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    batch_size: int,
    seed: int,
    *,
    n_batches: int = 100,
    progress: bool = True,
) -> tuple[float, float]:
    """bMMD² of reconstructions against their originals: mean and sd over ``n_batches`` random batches.

    Image ``i`` of both stacks is one subject, and each batch takes the same subjects from both, so the value
    measures what the autoencoder changes, not how subjects differ (seed 003's log MMD, reconstruction vs
    original). Biased linear-kernel estimator: ``||mean(batch) - mean(reconstructed batch)||² / D``.
    """
    originals = as_image_stack(originals, "originals")
    reconstructions = as_image_stack(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"{len(reconstructions)} reconstructions of shape {reconstructions.shape[1:]} do not pair with "
            f"{len(originals)} originals of shape {originals.shape[1:]}"
        )
    if batch_size < 1 or batch_size > len(originals):
        raise ValueError(f"batch_size {batch_size} must be between 1 and the {len(originals)} subjects")
    if n_batches < 1:
        raise ValueError(f"n_batches must be at least 1, got {n_batches}")
    x_flat = originals.reshape(len(originals), -1)
    y_flat = reconstructions.reshape(len(reconstructions), -1)
    rng = np.random.default_rng(seed)
    values = []
    for _ in tqdm(range(n_batches), desc="bMMD² of reconstructions", disable=not progress, leave=False):
        i = rng.choice(len(originals), size=batch_size, replace=False)
        values.append(_mmd2_flat(x_flat[i], y_flat[i], "biased"))
    return _mean_sd(values)


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``range(n)`` (the first gets the extra one when n is odd)."""
    order = np.random.default_rng(seed).permutation(n)
    half = (n + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def real_baseline_bmmd2(
    real: np.ndarray,
    batch_size: int,
    seed: int,
    *,
    n_batches: int = 100,
    estimator: str = "biased",
    progress: bool = True,
) -> tuple[float, float]:
    """The paper's real-vs-real baseline: :func:`bmmd2` between two disjoint random halves of the real set."""
    real = as_image_stack(real, "real")
    first, second = split_halves(len(real), seed)
    return bmmd2(
        real[first],
        real[second],
        batch_size,
        seed + 1,
        n_batches=n_batches,
        estimator=estimator,
        progress=progress,
    )


def check_msssim_size(shape: Sequence[int], kernel_size: int, n_scales: int = 5) -> None:
    """Raise ValueError unless every side // (n_scales - 1)² (16 for 5 scales) exceeds ``kernel_size - 1``.

    This is MONAI's own rule, checked up front so the message says which setting to change.
    """
    divisor = max(1, n_scales - 1) ** 2
    for side in shape:
        if side // divisor <= kernel_size - 1:
            raise ValueError(
                f"MS-SSIM with {n_scales} scales and kernel {kernel_size} needs every side of the image "
                f"to be at least {(kernel_size - 1) * divisor + divisor}; image shape is {tuple(shape)}. "
                "Use a smaller kernel (evaluation.msssim_kernel), e.g. 3 at 48x64x48."
            )


def pairwise_msssim(
    images: np.ndarray,
    n_pairs: int,
    seed: int,
    kernel_size: int,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[float, float]:
    """Mean and sd of MS-SSIM over random distinct pairs of images (diversity: lower = more diverse).

    Uses MONAI ``MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel_size)`` with its
    default Gaussian kernel (sigma 1.5) and five scales. Pairs ``(i, j)``, ``i < j``, are drawn without
    replacement; when ``n_pairs`` is at least the number of distinct pairs, all of them are used. Returns
    ``(nan, nan)`` for fewer than 2 images.
    """
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    images = as_image_stack(images, "images")
    n = len(images)
    if n < 2:
        return float("nan"), float("nan")
    check_msssim_size(images.shape[1:], kernel_size)
    pairs = sample_pairs(n, n_pairs, seed)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel_size, reduction="none")
    values: list[float] = []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(pairs), batch_size), desc="MS-SSIM", disable=not progress, leave=False
        ):
            chunk = pairs[start : start + batch_size]
            a = torch.from_numpy(images[chunk[:, 0]][:, None].astype(np.float32))
            b = torch.from_numpy(images[chunk[:, 1]][:, None].astype(np.float32))
            values.extend(metric(y_pred=a, y=b).reshape(-1).tolist())
    return _mean_sd(values)


def sample_pairs(n: int, n_pairs: int, seed: int) -> np.ndarray:
    """``min(n_pairs, n(n-1)/2)`` distinct index pairs ``(i, j)`` with ``i < j``, as an array ``[P, 2]``."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
    i, j = np.triu_indices(n, k=1)
    all_pairs = np.stack([i, j], axis=1)
    if n_pairs >= len(all_pairs):
        return all_pairs
    pick = np.random.default_rng(seed).choice(len(all_pairs), size=n_pairs, replace=False)
    return all_pairs[np.sort(pick)]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
    return float(arr.mean()), sd


BRAIN_THRESHOLD = 0.05  # skull-stripped T1 in [0, 1]: background is 0, the dimmest CSF well above this


def snr(images: np.ndarray, threshold: float = BRAIN_THRESHOLD) -> tuple[float, float]:
    """Signal-to-noise ratio, mean ± sd over images: each image's mean intensity over its standard deviation
    inside the brain (voxels above ``threshold``). Seed 002 reports an SNR it does not define; this is the
    definition its evaluation section suggests, stated so that a real baseline can be computed beside it.
    Images without brain voxels are left out; NaN when none has any."""
    stack = as_image_stack(images)
    values = []
    for image in stack.reshape(len(stack), -1):
        brain = image[image > threshold].astype(np.float64)
        if brain.size >= 2 and brain.std() > 0:
            values.append(float(brain.mean() / brain.std()))
    return _mean_sd(values) if values else (float("nan"), float("nan"))
