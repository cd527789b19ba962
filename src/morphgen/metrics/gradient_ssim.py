"""4-G-R-SSIM: four-component, gradient-based SSIM for 3D volumes (diversity metric of Pinaya et al. 2022).

Pinaya et al. 2022 (*Brain Imaging Generation with Latent Diffusion Models*, seed 004) report, besides
pairwise MS-SSIM, the mean "4-G-R-SSIM" over 1000 random pairs of synthetic brains as a diversity measure
(lower = more diverse), citing Rouse & Hemami 2008, Chen et al. 2006 and Li & Bovik 2010. They give no
formula; this module builds the metric from those sources, in 3D.

Taken from the literature
-------------------------
* SSIM map (Wang et al. 2004): Gaussian-weighted local means, variances and covariance (population, not
  sample, moments), ``l = (2 μx μy + C1) / (μx² + μy² + C1)``, ``cs = (2 σxy + C2) / (σx² + σy² + C2)``,
  ``C1 = (K1 L)²``, ``C2 = (K2 L)²`` with K1 = 0.01, K2 = 0.03, L = ``data_range``; Gaussian window with
  sigma 1.5 truncated at radius 5 (an 11-tap window, as Wang et al., scikit-image and MONAI use).
* G-SSIM (Chen, Yang & Xie 2006): the luminance term ``l`` from the images, the contrast-structure term
  ``cs`` computed on the two *gradient-magnitude maps* instead of the images.
* Four-component pooling (Li & Bovik 2010, *Content-partitioned structural similarity index for image
  quality assessment*, Signal Process. Image Commun. 25(7)): with ``po``, ``pd`` the gradient magnitudes of
  the reference (first) and the distorted (second) image, ``gmax = max(po)``, ``TH1 = 0.12 gmax``,
  ``TH2 = 0.06 gmax``, every voxel falls in one region:

  - R1 preserved edges: ``po > TH1`` and ``pd > TH1``;
  - R2 changed edges:   ``po > TH1`` and ``pd ≤ TH1``;
  - R3 smooth:          ``po < TH2`` and ``pd ≤ TH1``;
  - R4 texture:         every other voxel.

  The score is ``Σ w_i · mean(G-SSIM map over R_i)``.

Choices made here (not fixed by the sources, or not checkable from the seed papers)
-----------------------------------------------------------------------------------
* Weights: 0.25 for every region (``weights`` to change them). Li & Bovik discuss region weightings; we did
  not have the paper's text to confirm its recommended values, so equal weights are a choice.
* Empty regions (e.g. no changed edges between identical images) are left out and the weights of the
  non-empty regions renormalised to sum to 1, so identical images score exactly 1.
* Gradient: 3D Sobel (``scipy.ndimage.sobel`` along each axis, ``mode="nearest"``), divided by 32 so each
  component estimates the derivative in intensity units per voxel; magnitude = Euclidean norm of the three.
  (Chen et al. work in 2D; the scale matters only through ``C2``, which is applied unchanged to the gradient
  maps.)
* "R": Pinaya et al. cite Rouse & Hemami 2008, who studied SSIM with changed ("regularised") stabilising
  constants; which constants Pinaya et al. used could not be checked. We keep the standard K1 = 0.01,
  K2 = 0.03 (parameters ``k1``, ``k2``).
* Border: maps are computed with ``mode="reflect"`` and then cropped by the window radius on every side
  before any pooling (as scikit-image does; MONAI's valid convolution gives the same voxels), so pooled
  values never depend on the padding. Every side must exceed twice the radius (10 voxels by default).
* Asymmetry: the partition uses the reference's ``gmax`` and treats new edges in the second image (``po ≤
  TH1 < pd``) as texture, not as changed edges, so ``score(x, y) != score(y, x)`` in general (the SSIM map
  itself is symmetric). ``symmetric=True`` averages both orders. For diversity the order of a pair is
  arbitrary; :func:`pairwise_four_g_r_ssim` uses ``(images[i], images[j])`` with ``i < j`` by default,
  like :func:`~morphgen.metrics.fidelity.pairwise_msssim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from morphgen.metrics.fidelity import as_image_stack, sample_pairs

REGIONS = ("preserved_edge", "changed_edge", "smooth", "texture")
DEFAULT_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
TH1_FRACTION = 0.12
TH2_FRACTION = 0.06
SOBEL_NORM = 32.0  # [1, 2, 1] ⊗ [1, 2, 1] smoothing (16) times the central difference [-1, 0, 1] (2)


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 3 or x.shape != y.shape:
        raise ValueError(f"expected two 3D volumes of the same shape, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("volumes hold NaN or Inf values")
    return x, y


def window_radius(sigma: float = 1.5, truncate: float = 3.5) -> int:
    """Radius of the Gaussian window ``scipy.ndimage.gaussian_filter`` uses (5 for the defaults: 11 taps)."""
    return int(truncate * sigma + 0.5)


def _interior(shape: tuple[int, ...], radius: int) -> tuple[slice, ...]:
    if any(side <= 2 * radius for side in shape):
        raise ValueError(
            f"volume shape {shape} too small for a Gaussian window of radius {radius}: every side must "
            f"exceed {2 * radius}"
        )
    return tuple(slice(radius, side - radius) for side in shape)


def _moments(
    x: np.ndarray, y: np.ndarray, sigma: float, truncate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    return mu_x, mu_y, var_x, var_y, cov


def _luminance(mu_x: np.ndarray, mu_y: np.ndarray, c1: float) -> np.ndarray:
    return (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)


def _contrast_structure(var_x: np.ndarray, var_y: np.ndarray, cov: np.ndarray, c2: float) -> np.ndarray:
    return (2 * cov + c2) / (var_x + var_y + c2)


def ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    *,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Plain SSIM map (Wang et al. 2004) of two 3D volumes, full size (border voxels use reflect padding)."""
    x, y = _check_pair(x, y)
    mu_x, mu_y, var_x, var_y, cov = _moments(x, y, sigma, truncate)
    return _luminance(mu_x, mu_y, (k1 * data_range) ** 2) * _contrast_structure(
        var_x, var_y, cov, (k2 * data_range) ** 2
    )


def structural_similarity(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    *,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean SSIM over the voxels whose whole window lies inside the volume (border cropped by the radius)."""
    full = ssim_map(x, y, data_range, sigma=sigma, truncate=truncate, k1=k1, k2=k2)
    return float(full[_interior(full.shape, window_radius(sigma, truncate))].mean())


def gradient_magnitude(volume: np.ndarray) -> np.ndarray:
    """3D Sobel gradient magnitude, each component scaled to intensity units per voxel (see module doc)."""
    volume = np.asarray(volume, dtype=np.float64)
    squares = sum(
        (ndimage.sobel(volume, axis=axis, mode="nearest") / SOBEL_NORM) ** 2 for axis in range(volume.ndim)
    )
    return np.sqrt(squares)


def gssim_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    *,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
    gradients: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """G-SSIM map (Chen et al. 2006): luminance from the volumes, contrast-structure from their gradients."""
    x, y = _check_pair(x, y)
    gx, gy = gradients if gradients is not None else (gradient_magnitude(x), gradient_magnitude(y))
    mu_x, mu_y, _, _, _ = _moments(x, y, sigma, truncate)
    _, _, var_gx, var_gy, cov_g = _moments(gx, gy, sigma, truncate)
    return _luminance(mu_x, mu_y, (k1 * data_range) ** 2) * _contrast_structure(
        var_gx, var_gy, cov_g, (k2 * data_range) ** 2
    )


def partition_regions(grad_ref: np.ndarray, grad_other: np.ndarray) -> dict[str, np.ndarray]:
    """Li & Bovik's four disjoint regions (boolean masks) from the two gradient-magnitude maps."""
    gmax = float(np.max(grad_ref))
    th1, th2 = TH1_FRACTION * gmax, TH2_FRACTION * gmax
    ref_edge = grad_ref > th1
    other_edge = grad_other > th1
    preserved = ref_edge & other_edge
    changed = ref_edge & ~other_edge
    smooth = (grad_ref < th2) & ~other_edge
    texture = ~(preserved | changed | smooth)
    return {"preserved_edge": preserved, "changed_edge": changed, "smooth": smooth, "texture": texture}


@dataclass
class FourGResult:
    """4-G-R-SSIM of one pair, with what it is made of (all pooled over the border-cropped interior)."""

    score: float
    region_means: dict[str, float] = field(default_factory=dict)  # mean G-SSIM per region (NaN if empty)
    region_counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)  # as given, before renormalisation
    gssim_mean: float = float("nan")  # G-SSIM map, uniform pooling
    ssim_mean: float = float("nan")  # plain SSIM map, uniform pooling
    ssim_region_means: dict[str, float] = field(default_factory=dict)  # plain SSIM map per region


def four_g_r_ssim_components(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    *,
    weights: tuple[float, float, float, float] = DEFAULT_WEIGHTS,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> FourGResult:
    """:func:`four_g_r_ssim` of ``(x, y)`` (x the reference) with its per-region parts; see the module doc."""
    x, y = _check_pair(x, y)
    if len(weights) != 4 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be 4 non-negative numbers with a positive sum, got {weights}")
    inner = _interior(x.shape, window_radius(sigma, truncate))
    gx, gy = gradient_magnitude(x), gradient_magnitude(y)
    settings = {"sigma": sigma, "truncate": truncate, "k1": k1, "k2": k2}
    g_map = gssim_map(x, y, data_range, gradients=(gx, gy), **settings)[inner]
    s_map = ssim_map(x, y, data_range, **settings)[inner]
    regions = partition_regions(gx[inner], gy[inner])
    means, ssim_means, counts = {}, {}, {}
    total, weight_sum = 0.0, 0.0
    for name, w in zip(REGIONS, weights, strict=True):
        mask = regions[name]
        counts[name] = int(mask.sum())
        if counts[name] == 0:
            means[name] = ssim_means[name] = float("nan")
            continue
        means[name] = float(g_map[mask].mean())
        ssim_means[name] = float(s_map[mask].mean())
        total += w * means[name]
        weight_sum += w
    score = total / weight_sum if weight_sum > 0 else float(g_map.mean())
    return FourGResult(
        score=float(score),
        region_means=means,
        region_counts=counts,
        weights=dict(zip(REGIONS, map(float, weights), strict=True)),
        gssim_mean=float(g_map.mean()),
        ssim_mean=float(s_map.mean()),
        ssim_region_means=ssim_means,
    )


def four_g_r_ssim(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    *,
    symmetric: bool = False,
    weights: tuple[float, float, float, float] = DEFAULT_WEIGHTS,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """4-G-R-SSIM of two 3D volumes, ``x`` the reference; 1 for identical volumes, lower = less similar.

    ``symmetric=True`` returns the mean of the ``(x, y)`` and ``(y, x)`` scores.
    """
    settings = {"weights": weights, "sigma": sigma, "truncate": truncate, "k1": k1, "k2": k2}
    score = four_g_r_ssim_components(x, y, data_range, **settings).score
    if symmetric:
        score = 0.5 * (score + four_g_r_ssim_components(y, x, data_range, **settings).score)
    return float(score)


def pairwise_four_g_r_ssim(
    images: np.ndarray,
    n_pairs: int,
    seed: int,
    *,
    data_range: float = 1.0,
    symmetric: bool = False,
    progress: bool = True,
) -> tuple[float, float]:
    """Mean and sd (ddof=1) of 4-G-R-SSIM over random distinct pairs (diversity: lower = more diverse).

    Pairs are drawn as by :func:`~morphgen.metrics.fidelity.pairwise_msssim`
    (:func:`~morphgen.metrics.fidelity.sample_pairs`: ``i < j`` without replacement, all pairs when
    ``n_pairs`` is at least their number), so with the same seed both metrics see the same pairs; the first
    image of a pair is the reference. Returns ``(nan, nan)`` for fewer than 2 images.
    """
    images = as_image_stack(images, "images")
    if len(images) < 2:
        return float("nan"), float("nan")
    pairs = sample_pairs(len(images), n_pairs, seed)
    values = [
        four_g_r_ssim(images[i], images[j], data_range, symmetric=symmetric)
        for i, j in tqdm(pairs, desc="4-G-R-SSIM", disable=not progress, leave=False)
    ]
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
